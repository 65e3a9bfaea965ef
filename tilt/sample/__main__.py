"""``python -m tilt.sample``: the command of :mod:`tilt.cli.sample`."""

from tilt.cli._run import end_process
from tilt.cli.sample import main

end_process(main())
