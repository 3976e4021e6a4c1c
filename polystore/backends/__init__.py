"""Built-in storage backends (importing this module registers them)."""

from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend

__all__ = ["DiskBackend", "MemoryBackend"]
