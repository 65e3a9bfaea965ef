"""``python -m tilt.compare``: the command of :mod:`tilt.cli.compare`."""

from tilt.cli.compare import main

raise SystemExit(main())
