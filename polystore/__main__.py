"""``python -m polystore``: the command line (see :mod:`polystore.cli`)."""

from polystore.cli import main

raise SystemExit(main())
