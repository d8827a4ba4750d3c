"""A small application over the FastAPI integration, for its tests: uploads, downloads, errors."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from anyio import to_thread
from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import Response

from granite_storage import (
    BackendUnavailableError,
    ConfigurationError,
    IncompleteUploadError,
    ObjectNotFoundError,
    StorageManager,
    StoragePermissionError,
    StoredObjectRef,
)
from granite_storage.integrations.fastapi import (
    StorageManagerDep,
    install_storage,
    storage_response,
    store_request_body,
    store_upload,
)

SECRET = "/srv/secret-bucket/private/key.bin"

ERRORS: dict[str, Exception] = {
    "not-found": ObjectNotFoundError(SECRET),
    "unavailable": BackendUnavailableError(f"cannot reach {SECRET}"),
    "permission": StoragePermissionError(f"access denied to {SECRET}"),
    "incomplete": IncompleteUploadError(f"partial object at {SECRET}"),
    "configuration": ConfigurationError(f"no backend for {SECRET}"),
}


class GatedFile(io.RawIOBase):
    """An upload's file that, after its first chunk, blocks its reader until ``release`` is set."""

    def __init__(self, content: bytes) -> None:
        self._content = io.BytesIO(content)
        self.reading = threading.Event()
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.reading.is_set() and not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the upload")
        self.reading.set()
        return self._content.readinto(buffer)


@dataclass
class GatedUpload:
    """An ``UploadFileLike`` over a :class:`GatedFile`."""

    file: BinaryIO
    filename: str | None = "gated.bin"
    content_type: str | None = "application/octet-stream"


@dataclass
class Service:
    """The app and what its endpoints stored, by name."""

    app: FastAPI
    refs: dict[str, StoredObjectRef] = field(default_factory=dict)
    gates: list[GatedFile] = field(default_factory=list)
    #: Names of the raw-body uploads whose handler has ended, stored or not.
    bodies_done: set[str] = field(default_factory=set)


def build_service(manager: StorageManager) -> Service:
    app = FastAPI()
    install_storage(app, manager)
    service = Service(app)

    def key(name: str) -> dict[str, Any]:
        return {"storage_key": "files", "model_name": "test", "entity_id": name, "field_name": "file"}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @app.post("/uploads/{name}", status_code=201)
    async def upload(name: str, file: UploadFile, manager: StorageManagerDep) -> dict[str, Any]:
        service.refs[name] = ref = await store_upload(manager, file, **key(name))
        return ref.to_dict()

    @app.post("/gated-uploads/{name}", status_code=201)
    async def gated_upload(name: str, file: UploadFile, manager: StorageManagerDep) -> dict[str, Any]:
        gated = GatedFile(await file.read())
        service.gates.append(gated)
        service.refs[name] = ref = await store_upload(
            manager, GatedUpload(cast(BinaryIO, gated)), **key(name)
        )
        return ref.to_dict()

    @app.put("/bodies/{name}", status_code=201)
    async def body(name: str, request: Request, manager: StorageManagerDep) -> dict[str, Any]:
        try:
            service.refs[name] = ref = await store_request_body(
                manager, request, filename=f"{name}.bin", **key(name)
            )
        finally:
            service.bodies_done.add(name)
        return ref.to_dict()

    @app.api_route("/objects/{name}", methods=["GET", "HEAD"])
    async def download(
        name: str,
        request: Request,
        manager: StorageManagerDep,
        redirect: bool = False,
        inline: bool = False,
        cache_control: str | None = None,
    ) -> Response:
        return storage_response(
            manager,
            service.refs[name],
            request,
            redirect=redirect,
            disposition="inline" if inline else "attachment",
            headers={"Cache-Control": cache_control} if cache_control else None,
        )

    @app.put("/default-threads/{tokens}", status_code=204)
    async def limit_default_threads(tokens: int) -> None:
        """Shrink the worker threads AnyIO lends blocking work (40 by default), for a test to exhaust."""
        to_thread.current_default_thread_limiter().total_tokens = tokens

    @app.get("/errors/{kind}")
    async def fail(kind: str) -> None:
        raise ERRORS[kind]

    return service
