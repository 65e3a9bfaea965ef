"""``python -m tilt.audit``: the command of :mod:`tilt.cli.audit`."""

from tilt.cli._run import end_process
from tilt.cli.audit import main

end_process(main())
