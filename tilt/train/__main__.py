"""``python -m tilt.train``: the command of :mod:`tilt.cli.train`."""

from tilt.cli.train import main

raise SystemExit(main())
