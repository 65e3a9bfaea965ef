"""``python -m tilt.suite``: the command of :mod:`tilt.cli.suite`."""

from tilt.cli._run import end_process
from tilt.cli.suite import main

end_process(main())
