"""``python -m tilt.neural``: see :mod:`tilt.neural._command`."""

from tilt.neural._command import main

raise SystemExit(main())
