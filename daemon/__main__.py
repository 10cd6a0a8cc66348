"""``python -m adaptd`` is the same as the ``adaptd`` console script."""

from adaptd.cli import main

raise SystemExit(main())
