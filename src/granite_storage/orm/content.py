"""File-aware models: the mixin for one file field, and :class:`StoredContent` for several."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Protocol, overload

from sqlalchemy import inspect

from granite_storage._threads import put_in_thread
from granite_storage.errors import ConfigurationError
from granite_storage.keys import sanitize_segment
from granite_storage.manager import StorageManager
from granite_storage.orm import tracking
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import Readable

__all__ = [
    "BoundStoredContent",
    "ReplaceContentResult",
    "StoredContent",
    "StoredContentMixin",
    "StoredContentOperations",
    "UploadFileLike",
    "configure_storage_manager",
]


class UploadFileLike(Protocol):
    """What :meth:`~StoredContentOperations.set_content_from_uploadfile` needs of an upload.

    FastAPI's and Starlette's ``UploadFile`` fit; so does anything with these three attributes.
    """

    @property
    def file(self) -> BinaryIO:
        """The uploaded bytes, as a blocking binary file."""
        ...

    @property
    def filename(self) -> str | None:
        """The filename the client sent, if any."""
        ...

    @property
    def content_type(self) -> str | None:
        """The content type the client sent, if any."""
        ...


@dataclass(frozen=True, slots=True)
class ReplaceContentResult:
    """What :meth:`~StoredContentOperations.replace_content` did.

    Attributes:
        previous_ref: The reference the model held before, or ``None``. Its object is not deleted
            here: with session tracking it can be deleted after commit, else it stays in storage.
        new_ref: The reference of the content just stored, now held by the model.
    """

    previous_ref: StoredObjectRef | None
    new_ref: StoredObjectRef


def configure_storage_manager(model: type, manager: StorageManager) -> None:
    """Give ``model`` (and its subclasses) the manager its file fields store through.

    Configuring a declarative base configures every model derived from it; a model can override
    its base's manager. :meth:`StoredContentMixin.configure_storage_manager` does the same.
    """
    if not isinstance(manager, StorageManager):
        raise TypeError(f"expected a StorageManager, got {type(manager).__name__}")
    model.__storage_manager__ = manager  # type: ignore[attr-defined]


class StoredContentOperations:
    """The operations on one file field of one model instance, written once for every way to declare it.

    :class:`StoredContentMixin` offers them on the model itself, for its one field; a
    :class:`StoredContent` field offers them on ``instance.<field>``. Storing needs the manager
    configured on the instance's class, and works on a new instance too, before it is added to a
    session or flushed: the row's INSERT then carries the reference (one statement, no UPDATE). Only
    a slot with ``key_layout="entity"`` needs the primary key first.
    """

    __slots__ = ()

    def _content_field(self) -> tuple[object, str, str, str]:
        """The instance, its reference attribute, its default storage key and its key segment."""
        raise NotImplementedError

    @property
    def content_ref(self) -> StoredObjectRef | None:
        """The reference the field holds now, or ``None``."""
        instance, attribute, _, _ = self._content_field()
        ref: StoredObjectRef | None = getattr(instance, attribute)
        return ref

    def set_content(
        self,
        content: bytes | str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        storage_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
        delete_previous: bool | None = None,
    ) -> StoredObjectRef:
        """Store ``content`` and point the field at it; returns the new reference.

        ``str`` content is stored as UTF-8, as ``text/plain`` unless the filename or
        ``content_type`` says otherwise, with ``charset=utf-8`` added to a ``text/*`` type.
        ``content_type`` is otherwise guessed from ``filename``. ``storage_key`` overrides the
        field's slot for this call. A reference the field held before is released: with session
        tracking it is deleted after commit if ``delete_previous`` (or else its policy's
        ``delete_replaced``) says so.

        Works on a new instance, transient or pending, as on a loaded one. With session tracking
        (:func:`granite_storage.orm.track_storage`), an object stored for an instance in no session
        belongs to the instance until it joins a session (``session.add()``); that session's
        transaction then decides: a certain rollback deletes the object.

        Raises:
            UnsavedEntityError: the slot's ``key_layout`` is ``"entity"`` and the instance has no
                primary key yet (add it and ``flush()`` first); nothing was stored.
            ConfigurationError: no manager is configured for the model, or the slot is unknown.
            ContentTooLargeError: the content is over the slot's ``max_size``; nothing changed.
        """
        if isinstance(content, str):
            if content_type is None and filename:
                content_type = mimetypes.guess_type(filename, strict=False)[0]
            content_type = _text_content_type(content_type)
            payload = content.encode("utf-8")
        else:
            payload = content
        return self._store(
            lambda manager, key: manager.put_bytes(content=payload, **key),
            filename=filename,
            content_type=content_type,
            storage_key=storage_key,
            extra=extra,
            delete_previous=delete_previous,
        )

    def set_content_from_stream(
        self,
        stream: Readable,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        storage_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
        delete_previous: bool | None = None,
    ) -> StoredObjectRef:
        """Stream ``stream`` into storage and point the field at it; as :meth:`set_content`.

        The stream is read once, in chunks, so memory stays flat whatever its size; the slot's
        ``max_size`` is enforced while reading.
        """
        return self._store(
            lambda manager, key: manager.put_stream(stream=stream, **key),
            filename=filename,
            content_type=content_type,
            storage_key=storage_key,
            extra=extra,
            delete_previous=delete_previous,
        )

    async def set_content_from_uploadfile(
        self,
        upload_file: UploadFileLike,
        *,
        storage_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
        delete_previous: bool | None = None,
    ) -> StoredObjectRef:
        """Store an uploaded file (FastAPI's ``UploadFile``) without blocking the event loop.

        The upload's file is rewound and streamed to the backend in chunks in a worker thread
        (AnyIO's when it is installed, as it is with FastAPI, else asyncio's), so other requests
        keep being served and memory stays flat. Its filename and content type are recorded. The
        model is updated back on the event loop's thread; as :meth:`set_content` otherwise.

        If the awaiting task is cancelled, the upload runs on in its thread and the object it stores
        is deleted when it ends; the field is not changed.
        """
        file = upload_file.file

        def put(manager: StorageManager, key: dict[str, Any]) -> StoredObjectRef:
            if file.seekable():
                file.seek(0)
            return manager.put_stream(stream=file, **key)

        return await self._store_async(
            put,
            filename=upload_file.filename,
            content_type=upload_file.content_type,
            storage_key=storage_key,
            extra=extra,
            delete_previous=delete_previous,
        )

    def replace_content(
        self,
        content: bytes | str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        storage_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
        delete_previous: bool | None = None,
    ) -> ReplaceContentResult:
        """Store new content in place of the current one; returns both references.

        As :meth:`set_content`, which replaces too; this also tells what it replaced.
        """
        previous_ref = self.content_ref
        new_ref = self.set_content(
            content,
            filename=filename,
            content_type=content_type,
            storage_key=storage_key,
            extra=extra,
            delete_previous=delete_previous,
        )
        return ReplaceContentResult(previous_ref=previous_ref, new_ref=new_ref)

    def clear_content_reference(self, *, delete: bool | None = None) -> StoredObjectRef | None:
        """Set the field to ``None`` and return the reference it held.

        The object itself is not deleted now: with session tracking it is deleted after commit if
        ``delete`` (or else its policy's ``delete_replaced``) says so, and kept on a rollback.

        Raises:
            StorageError: ``delete=True`` but the instance is not in a tracked session.
        """
        instance, attribute, _, _ = self._content_field()
        previous_ref = self.content_ref
        if previous_ref is not None:
            tracking.record_released(instance, self._manager(), previous_ref, delete=delete)
        setattr(instance, attribute, None)
        return previous_ref

    def get_content(self) -> bytes | None:
        """The whole content as bytes, or ``None`` if the field holds no reference.

        Raises:
            ObjectNotFoundError: the referenced object is missing from storage.
        """
        ref = self.content_ref
        return None if ref is None else self._manager().get(ref)

    def get_content_text(self, encoding: str | None = None, errors: str = "strict") -> str | None:
        """The content decoded as text, or ``None`` if the field holds no reference.

        ``encoding`` defaults to the ``charset`` of the stored content type, else UTF-8; ``errors``
        is as for ``bytes.decode``.
        """
        ref = self.content_ref
        if ref is None:
            return None
        return self._manager().get(ref).decode(encoding or _charset(ref.content_type) or "utf-8", errors)

    def open_content(self) -> BinaryIO | None:
        """Open the content for streaming reads (a context manager), or ``None`` without a reference."""
        ref = self.content_ref
        return None if ref is None else self._manager().open(ref)

    # -- implementation -----------------------------------------------------------------------------

    def _manager(self) -> StorageManager:
        instance = self._content_field()[0]
        manager = getattr(type(instance), "__storage_manager__", None)
        if not isinstance(manager, StorageManager):
            name = type(instance).__name__
            raise ConfigurationError(
                f"no storage manager is configured for {name}; call "
                f"{name}.configure_storage_manager(manager) (or configure_storage_manager({name}, "
                "manager)) at startup"
            )
        return manager

    def _key_arguments(
        self,
        *,
        filename: str | None,
        content_type: str | None,
        storage_key: str | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """What the manager's ``put_*`` needs besides the content: read on the caller's thread."""
        instance, _, default_storage_key, field_name = self._content_field()
        return {
            "storage_key": storage_key or default_storage_key,
            "model_name": getattr(type(instance), "__tablename__", None) or type(instance).__name__,
            "entity_id": _entity_id(instance),
            "field_name": field_name,
            "content_type": content_type,
            "original_filename": filename,
            "extra": extra,
        }

    def _store(
        self,
        put: Callable[[StorageManager, dict[str, Any]], StoredObjectRef],
        *,
        delete_previous: bool | None,
        **key: Any,
    ) -> StoredObjectRef:
        manager, previous_ref = self._prepare(delete_previous)
        new_ref = put(manager, self._key_arguments(**key))
        self._point_at(manager, new_ref, previous_ref, delete_previous=delete_previous)
        return new_ref

    def _prepare(self, delete_previous: bool | None) -> tuple[StorageManager, StoredObjectRef | None]:
        """The manager and the reference to replace, checked before anything is stored."""
        manager = self._manager()
        previous_ref = self.content_ref
        if delete_previous and previous_ref is not None and not tracking.is_tracked(self._content_field()[0]):
            tracking.raise_untracked()
        return manager, previous_ref

    async def _store_async(
        self,
        put: Callable[[StorageManager, dict[str, Any]], StoredObjectRef],
        *,
        delete_previous: bool | None,
        **key: Any,
    ) -> StoredObjectRef:
        manager, previous_ref = self._prepare(delete_previous)
        arguments = self._key_arguments(**key)
        new_ref = await put_in_thread(manager, lambda: put(manager, arguments))
        self._point_at(manager, new_ref, previous_ref, delete_previous=delete_previous)
        return new_ref

    def _point_at(
        self,
        manager: StorageManager,
        new_ref: StoredObjectRef,
        previous_ref: StoredObjectRef | None,
        *,
        delete_previous: bool | None,
    ) -> None:
        instance, attribute, _, _ = self._content_field()
        tracking.record_stored(instance, manager, new_ref)
        setattr(instance, attribute, new_ref)
        if previous_ref is not None:
            tracking.record_released(instance, manager, previous_ref, delete=delete_previous)


class StoredContentMixin(StoredContentOperations):
    """Makes a model file-aware: one file field, its operations on the model itself.

    Declare the attribute holding the reference (a :class:`StoredObjectRefType` column) and the slot
    its content goes to, then configure the manager once at startup::

        class Document(StoredContentMixin, Base):
            __tablename__ = "document"
            __stored_content_field_name__ = "_file_ref"
            __stored_content_storage_key__ = "documents"
            ...
            _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType())

        Document.configure_storage_manager(manager)

    Object keys use the attribute name without leading underscores (``file_ref``) as their field
    segment. For several file fields on one model, use :class:`StoredContent` instead.
    """

    __stored_content_field_name__: ClassVar[str]
    __stored_content_storage_key__: ClassVar[str]
    # Annotated, not assigned: a manager configured on the declarative base must stay visible.
    __storage_manager__: ClassVar[StorageManager]

    @classmethod
    def configure_storage_manager(cls, manager: StorageManager) -> None:
        """Use ``manager`` for this model and the models derived from it."""
        configure_storage_manager(cls, manager)

    def _content_field(self) -> tuple[object, str, str, str]:
        cls = type(self)
        try:
            attribute = cls.__stored_content_field_name__
            storage_key = cls.__stored_content_storage_key__
        except AttributeError as exc:
            raise ConfigurationError(
                f"{cls.__name__} uses StoredContentMixin but does not set {exc.name}"
            ) from None
        return self, attribute, storage_key, sanitize_segment(attribute.lstrip("_") or attribute)


class StoredContent:
    """A file field of a model: its reference column and its slot, for models with several files.

    Each field is used through the instance, with the operations of
    :class:`StoredContentOperations`::

        class User(Base):
            __tablename__ = "user_account"
            id: Mapped[int] = mapped_column(primary_key=True)
            avatar_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType())
            thumbnail_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType())

            avatar = StoredContent("avatar_ref", storage_key="avatars")
            thumbnail = StoredContent("thumbnail_ref", storage_key="thumbnails")

        configure_storage_manager(User, manager)
        user.avatar.set_content(png_bytes, filename="me.png")

    Object keys use the field's name (``avatar``) as their field segment.

    Args:
        ref_attribute: The name of the mapped attribute that holds the reference.
        storage_key: The slot the field's content goes to.
    """

    def __init__(self, ref_attribute: str, *, storage_key: str) -> None:
        if not ref_attribute or not storage_key:
            raise ConfigurationError("StoredContent needs a reference attribute and a storage key")
        self.ref_attribute = ref_attribute
        self.storage_key = storage_key
        self.name = ref_attribute

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> StoredContent: ...

    @overload
    def __get__(self, instance: object, owner: type) -> BoundStoredContent: ...

    def __get__(self, instance: object | None, owner: type) -> StoredContent | BoundStoredContent:
        if instance is None:
            return self
        return BoundStoredContent(instance, self)


class BoundStoredContent(StoredContentOperations):
    """One :class:`StoredContent` field of one instance: ``user.avatar``."""

    __slots__ = ("_field", "_instance")

    def __init__(self, instance: object, field: StoredContent) -> None:
        self._instance = instance
        self._field = field

    def _content_field(self) -> tuple[object, str, str, str]:
        field = self._field
        return self._instance, field.ref_attribute, field.storage_key, sanitize_segment(field.name)


def _entity_id(instance: object) -> str | None:
    """The instance's primary key as text (composite keys joined with ``-``), or ``None`` before it has one.

    Read from the instance's state, so a new instance's unset key is never loaded or flushed.
    """
    state = inspect(instance)
    identity = state.identity
    if identity is None:
        values = state.mapper.primary_key_from_instance(instance)
        if any(value is None for value in values):
            return None
        identity = tuple(values)
    return "-".join(str(value) for value in identity)


def _text_content_type(content_type: str | None) -> str:
    content_type = content_type or "text/plain"
    if content_type.startswith("text/") and _charset(content_type) is None:
        return f"{content_type}; charset=utf-8"
    return content_type


def _charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None
