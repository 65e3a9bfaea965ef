"""``python -m tilt.suite``: the command of :mod:`tilt.cli.suite`."""

from tilt.cli.suite import main

raise SystemExit(main())
