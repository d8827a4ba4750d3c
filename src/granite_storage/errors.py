"""Exceptions raised by granite-storage.

Every error the library raises on purpose is a :class:`StorageError`, so one ``except StorageError``
catches them all. Where a builtin exception means the same thing, the library's error is that builtin
too, so code that already handles ``FileNotFoundError`` or ``PermissionError`` keeps working::

    StorageError
    ├── ConfigurationError            an unknown policy, backend or backend type; a bad config value
    │   └── PluginError               a plugin failed to load, or two plugins claim one backend name
    ├── ContentTooLargeError          content passed its policy's max_size
    ├── InvalidKeyError (ValueError)  a key or reference that could escape its backend or prefix
    ├── InvalidReferenceError (ValueError)
    │   │                             reference data that cannot be read, or names another backend
    │   │                             than its slot's
    │   └── UnverifiableReferenceError
    │                                 a reference without a sha256 checksum asked to verify
    ├── InvalidMetadataError (ValueError)
    │                                 a content type that cannot be stored safely
    ├── ContentTypeNotAllowedError (ValueError)
    │                                 content whose type its slot does not accept, or that is not
    │                                 the type it was declared as
    ├── ObjectNotFoundError (FileNotFoundError)
    │                                 no object at the key
    ├── StoragePermissionError (PermissionError)
    │                                 the backend refused access
    ├── BackendUnavailableError (ConnectionError)
    │                                 the backend could not be reached
    ├── UnsupportedOperationError (NotImplementedError)
    │                                 the backend cannot do this (e.g. a local disk has no URLs)
    ├── IncompleteUploadError         a backend returned before reading its whole stream
    └── UnsavedEntityError            a model instance has no primary key, and its slot's key layout
                                      files content under it

Errors that wrap a foreign exception (an ``OSError`` from the disk, an import failure in a plugin) are
raised ``from`` it, so the original stays on ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ContentTooLargeError",
    "ContentTypeNotAllowedError",
    "IncompleteUploadError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidReferenceError",
    "ObjectNotFoundError",
    "PluginError",
    "StorageError",
    "StoragePermissionError",
    "UnsavedEntityError",
    "UnsupportedOperationError",
    "UnverifiableReferenceError",
]


class StorageError(Exception):
    """Root of every error granite-storage raises on purpose."""


class ConfigurationError(StorageError):
    """The configuration asks for something that does not exist or cannot work.

    Raised for an unknown storage key (policy), backend name or backend type, and for invalid
    configuration values. The message names what *is* configured, so the fix is visible.
    """


class PluginError(ConfigurationError):
    """A plugin could not be loaded, or two plugins registered the same backend type name."""


class ContentTooLargeError(StorageError):
    """Content passed the ``max_size`` of its storage policy.

    Attributes:
        max_size: The limit, in bytes, that was passed.
    """

    def __init__(self, max_size: int, message: str | None = None) -> None:
        self.max_size = max_size
        super().__init__(message or f"content exceeds the maximum size of {max_size} bytes")


class InvalidKeyError(StorageError, ValueError):
    """A key, key segment or reference location is unsafe: it could leave the backend's root or prefix.

    Attributes:
        key: The offending value.
    """

    def __init__(self, key: object, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid storage key {key!r}: {reason}")


class InvalidReferenceError(StorageError, ValueError):
    """Reference data cannot be used.

    Raised when stored data (a database row's JSON) cannot be turned into a reference, and when a
    reference names a backend other than its slot's, as a tampered row might.
    """


class UnverifiableReferenceError(InvalidReferenceError):
    """The reference carries no checksum the library can verify an object against.

    Raised by :meth:`StorageManager.verify <granite_storage.StorageManager.verify>` for a reference
    whose ``checksum`` is not ``sha256:<64 hex digits>``: ``None``, ``""`` as granite-storage 0.1.0
    allowed, or another algorithm. The object itself may be intact and still reads; only its
    integrity cannot be checked.
    """


class InvalidMetadataError(StorageError, ValueError):
    """Object metadata given by a caller (a content type) cannot be stored safely."""


class ContentTypeNotAllowedError(StorageError, ValueError):
    """Content its slot refuses for its type, as the content's first bytes tell it.

    Raised before anything is stored, for a slot whose policy has ``allowed_types``: the type read
    from the content is not among them, or it contradicts the type the content was declared as (its
    ``content_type``, or its filename's extension).

    Attributes:
        content_type: The type read from the content (``type/subtype``).
        allowed_types: The slot's ``allowed_types``.
        declared: The declared type the content contradicts; ``None`` when the content's own type is
            not accepted.
    """

    def __init__(
        self,
        content_type: str,
        *,
        allowed_types: tuple[str, ...],
        declared: str | None = None,
        message: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.allowed_types = allowed_types
        self.declared = declared
        if message is None:
            if declared is None:
                message = f"content of type {content_type} is not accepted here; accepted: " + ", ".join(
                    allowed_types
                )
            else:
                message = f"the content is {content_type}, not the {declared} it was declared as"
        super().__init__(message)


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object exists at the key. Also a :class:`FileNotFoundError`.

    Attributes:
        key: The key that was looked up.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no stored object at {key!r}")


class StoragePermissionError(StorageError, PermissionError):
    """The backend refused the operation for lack of permission. Also a :class:`PermissionError`."""


class BackendUnavailableError(StorageError, ConnectionError):
    """The backend could not be reached (connection failure, timeout). Also a :class:`ConnectionError`."""


class IncompleteUploadError(StorageError):
    """A backend returned from ``put`` without reading its stream to the end.

    The manager deletes whatever the backend stored before raising this, because the recorded size and
    checksum would not describe it.
    """


class UnsupportedOperationError(StorageError, NotImplementedError):
    """The backend does not support the operation, e.g. URLs from a backend that has none.

    Also a :class:`NotImplementedError`. The message names the backend and the operation.
    """


class UnsavedEntityError(StorageError):
    """A model instance has no primary key yet, and its slot's key layout needs one.

    Raised only for a slot with ``key_layout="entity"`` (keys that hold the entity id): add the
    instance to a session and ``flush()`` before storing content (database-generated and
    ``default=`` keys are assigned at flush). The default layout needs no primary key.
    """
