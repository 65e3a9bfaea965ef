"""``python -m tilt.compare``: the command of :mod:`tilt.cli.compare`."""

from tilt.cli._run import end_process
from tilt.cli.compare import main

end_process(main())
