"""``python -m tilt.share``: the command of :mod:`tilt.cli.share`."""

from tilt.cli.share import main

raise SystemExit(main())
