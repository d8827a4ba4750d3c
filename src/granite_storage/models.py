"""granite-storage 0.1.0's import path of the reference class, now in :mod:`granite_storage.refs`.

New code imports it from :mod:`granite_storage`. 0.2.0's reference is immutable (frozen) and its
``created_at`` a timezone-aware ``datetime``; the upgrade guide lists what else changed.
"""

from __future__ import annotations

from granite_storage.refs import StoredObjectRef

__all__ = ["StoredObjectRef"]
