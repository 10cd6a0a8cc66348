"""``python -m daemon`` is the same as the ``adaptd`` console script."""

from daemon.cli import main

raise SystemExit(main())
