"""``python -m polystore_napari --port N --host H``: a napari viewer with the stream receiver open."""

from __future__ import annotations

from polystore_napari.launcher import main

raise SystemExit(main())
