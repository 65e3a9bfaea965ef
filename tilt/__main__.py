"""``python -m tilt COMMAND ...``: the commands of :mod:`tilt.cli`."""

from tilt.cli import main

raise SystemExit(main())
