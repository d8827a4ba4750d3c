"""Storage errors as HTTP responses, and the dependencies, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from granite_storage import PluginHost, StorageManager, StoragePolicy
from granite_storage.integrations.fastapi import (
    StorageManagerDep,
    get_async_session,
    get_session,
    install_exception_handlers,
    install_storage,
)
from granite_storage_local import LocalStorageBackend

from .conftest import serve
from .service import ERRORS, SECRET, Service, build_service


@pytest.fixture
def manager(local_backend: LocalStorageBackend, empty_host: PluginHost) -> StorageManager:
    policy = StoragePolicy("files", backend_key="local")
    return StorageManager(backends={"local": local_backend}, policies={"files": policy}, plugins=empty_host)


@pytest.fixture
def base_url(manager: StorageManager) -> Iterator[str]:
    service: Service = build_service(manager)
    with serve(service.app) as url:
        yield url


@pytest.mark.parametrize(
    ("kind", "status", "detail"),
    [
        ("not-found", 404, "stored object not found"),
        ("unavailable", 503, "storage is unavailable, try again later"),
        ("permission", 502, "the storage backend failed"),
        ("incomplete", 502, "the storage backend failed"),
        ("configuration", 500, "internal storage error"),
    ],
)
def test_storage_errors_map_to_statuses_without_internal_details(
    base_url: str, kind: str, status: int, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.get(f"{base_url}/errors/{kind}")
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    assert "secret" not in response.text
    if status >= 500:  # logged for the operator, with the exception
        (record,) = [r for r in caplog.records if r.name == "granite_storage.integrations.fastapi"]
        assert record.exc_info is not None
        assert record.exc_info[1] is ERRORS[kind]
        assert SECRET not in record.getMessage()


@pytest.mark.parametrize("content_type", ["text/plain\x7f", "image/png; x=y, text/html"])
def test_an_invalid_content_type_from_the_client_is_a_400(base_url: str, content_type: str) -> None:
    files = {"file": ("a.png", b"<script>alert(1)</script>", content_type)}
    response = httpx.post(f"{base_url}/uploads/bad", files=files)
    assert response.status_code == 400
    assert "not a valid content type" in response.json()["detail"]


def test_install_exception_handlers_alone_maps_errors() -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise ERRORS["not-found"]

    with serve(app) as url:
        assert httpx.get(f"{url}/missing").status_code == 404


def test_the_dependencies_hand_out_the_installed_manager_and_sessions(
    manager: StorageManager, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'deps.db'}")
    app = FastAPI()
    install_storage(app, manager, sessions=sessionmaker(engine))
    seen: list[Session] = []

    @app.get("/deps")
    def deps(
        manager: StorageManagerDep, session: Annotated[Session, Depends(get_session)]
    ) -> dict[str, object]:
        seen.append(session)
        return {"policies": sorted(manager.policies), "one": session.scalar(text("SELECT 1"))}

    with serve(app) as url:
        assert httpx.get(f"{url}/deps").json() == {"policies": ["files"], "one": 1}
    assert seen[0].get_transaction() is None  # closed after the request
    engine.dispose()


def test_dependencies_without_install_storage_are_a_configuration_error(manager: StorageManager) -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/manager")
    async def needs_manager(manager: StorageManagerDep) -> None:
        raise AssertionError("not reached")

    @app.get("/session")
    async def needs_session(session: Annotated[object, Depends(get_async_session)]) -> None:
        raise AssertionError("not reached")

    with serve(app) as url:
        unconfigured = httpx.get(f"{url}/manager")
        install_storage(app, manager)  # a manager, but no session factory
        no_sessions = httpx.get(f"{url}/session")
    for response in (unconfigured, no_sessions):  # a ConfigurationError, through the handler
        assert (response.status_code, response.json()) == (500, {"detail": "internal storage error"})
    with pytest.raises(TypeError):
        install_storage(app, object())  # type: ignore[arg-type]
