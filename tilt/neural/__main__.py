"""``python -m tilt.neural``: the command of :mod:`tilt.cli.neural`."""

from tilt.cli.neural import main

raise SystemExit(main())
