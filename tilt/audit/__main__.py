"""``python -m tilt.audit``: the command of :mod:`tilt.cli.audit`."""

from tilt.cli.audit import main

raise SystemExit(main())
