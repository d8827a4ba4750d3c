"""granite-storage 0.1.0's helper module; its helpers are gone, and importing one says what replaces it.

0.2.0 builds keys, checksums and content types inside :class:`~granite_storage.StorageManager`, so no
application code needs them. Importing a 0.1.0 helper from here raises :class:`ImportError`:

* ``build_storage_object_key``: :func:`granite_storage.keys.build_object_key` (0.2.0's key layout,
  every part sanitised, 128 random bits).
* ``sha256_bytes``: ``"sha256:" + hashlib.sha256(content).hexdigest()``; references carry that
  checksum already.
* ``guess_content_type``: :func:`mimetypes.guess_type`; the manager guesses from the filename.
* ``safe_suffix``: :func:`granite_storage.keys.safe_extension`.
* ``utcnow_iso``: ``datetime.now(UTC).isoformat()``.
* ``DEFAULT_STREAM_CHUNK_SIZE``: :data:`granite_storage.streams.DEFAULT_CHUNK_SIZE`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from granite_storage._compat import removed_names

__all__: list[str] = []

if not TYPE_CHECKING:
    __getattr__ = removed_names(
        __name__,
        {
            "build_storage_object_key": "use granite_storage.keys.build_object_key",
            "sha256_bytes": "use 'sha256:' + hashlib.sha256(content).hexdigest()",
            "guess_content_type": "use mimetypes.guess_type",
            "safe_suffix": "use granite_storage.keys.safe_extension",
            "utcnow_iso": "use datetime.now(UTC).isoformat()",
            "DEFAULT_STREAM_CHUNK_SIZE": "use granite_storage.streams.DEFAULT_CHUNK_SIZE",
        },
    )
