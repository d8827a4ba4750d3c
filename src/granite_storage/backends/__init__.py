"""Import paths kept from granite-storage 0.1.0 for the backends, now shipped as plugins.

``granite_storage.backends.local`` and ``granite_storage.backends.s3`` re-export the plugin classes, and
raise an :class:`ImportError` naming the pip command when the plugin is not installed. As in 0.1.0,
``from granite_storage.backends import LocalStorageBackend, S3StorageBackend`` works too; each class
is imported on first use, so importing this package does not import boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from granite_storage.backends.local import LocalStorageBackend
    from granite_storage.backends.s3 import S3StorageBackend

__all__ = ["LocalStorageBackend", "S3StorageBackend"]

_MODULES = {"LocalStorageBackend": "local", "S3StorageBackend": "s3"}

# For the interpreter only: type checkers see the imports above, so a misspelt name fails there.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> type:
        module = _MODULES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value: type = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return value
