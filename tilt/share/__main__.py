"""``python -m tilt.share``: see :mod:`tilt.share._cli`."""

from tilt.share._cli import main

raise SystemExit(main())
