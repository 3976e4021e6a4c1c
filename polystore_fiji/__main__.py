"""``python -m polystore_fiji``: run the Fiji bridge (see :mod:`polystore_fiji.bridge`)."""

from __future__ import annotations

import sys

from polystore_fiji.bridge import main

if __name__ == "__main__":
    sys.exit(main())
