"""``python -m tilt.sample``: the command of :mod:`tilt.cli.sample`."""

from tilt.cli.sample import main

raise SystemExit(main())
