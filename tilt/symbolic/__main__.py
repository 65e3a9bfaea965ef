"""``python -m tilt.symbolic``: the command of :mod:`tilt.cli.symbolic`."""

from tilt.cli._run import end_process
from tilt.cli.symbolic import main

end_process(main())
