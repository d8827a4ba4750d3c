"""granite-storage 0.1.0's module of the backend protocol; the protocol itself is gone.

0.1.0's ``StorageBackend`` protocol (``put_bytes``, ``put_stream``, ``get``, ``open``, ``delete`` and
``exists`` taking references, and ``iter_locations``) had each backend build the reference itself,
with no guarantee that a failed upload leaves nothing behind. Importing it raises
:class:`ImportError` naming what replaces it: subclass :class:`granite_storage.StorageBackend` and
implement ``put``, ``open``, ``stat``, ``delete`` and ``list``, which take keys; the manager keeps size
limits, checksums and references for every backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from granite_storage._compat import BACKEND_PROTOCOL_REPLACEMENT, removed_names

__all__: list[str] = []

if not TYPE_CHECKING:
    __getattr__ = removed_names(__name__, {"StorageBackend": BACKEND_PROTOCOL_REPLACEMENT})
