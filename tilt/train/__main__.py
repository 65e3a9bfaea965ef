"""``python -m tilt.train``: the command of :mod:`tilt.cli.train`."""

from tilt.cli._run import end_process
from tilt.cli.train import main

end_process(main())
