"""``python -m tilt`` runs ``tilt.compare``."""

from tilt.compare import main

raise SystemExit(main())
