"""``python -m tilt.symbolic``: the command of :mod:`tilt.cli.symbolic`."""

from tilt.cli.symbolic import main

raise SystemExit(main())
