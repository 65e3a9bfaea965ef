"""``python -m tilt COMMAND ...``: the commands of :mod:`tilt.cli`."""

from tilt.cli import end_process, main

end_process(main())
