"""``python -m gradcore.bench`` / ``python -m bench`` (source checkout)."""

from . import main

raise SystemExit(main())
