"""``python -m tilt.neural``: the command of :mod:`tilt.cli.neural`."""

from tilt.cli._run import end_process
from tilt.cli.neural import main

end_process(main())
