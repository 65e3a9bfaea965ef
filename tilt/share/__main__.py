"""``python -m tilt.share``: the command of :mod:`tilt.cli.share`."""

from tilt.cli._run import end_process
from tilt.cli.share import main

end_process(main())
