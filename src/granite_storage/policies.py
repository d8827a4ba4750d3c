"""granite-storage 0.1.0's import path of the policy class, now in :mod:`granite_storage.policy`.

New code imports it from :mod:`granite_storage`.
"""

from __future__ import annotations

from granite_storage.policy import StoragePolicy

__all__ = ["StoragePolicy"]
