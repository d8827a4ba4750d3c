"""The example service (examples/fastapi_app) end to end over real HTTP: SQLite + local disk, and
PostgreSQL + a real S3 server where those are reachable."""

from __future__ import annotations

import contextlib
import hashlib
import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from granite_storage.headers import content_disposition

from ..conftest import files_under
from ..orm.conftest import configured_url, unreachable
from .conftest import ROOT, load_module, serve

example = load_module("documents_app", ROOT / "examples/fastapi_app/documents_app.py")

MIB = 1024 * 1024
BIG = 200 * MIB
BLOCK = bytes(range(256)) * 4096  # 1 MiB


class RepeatingFile(io.RawIOBase):
    """``size`` bytes of :data:`BLOCK`, repeated: a large upload that is never held in memory."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.remaining, len(BLOCK) - self.offset)
        buffer[:count] = BLOCK[self.offset : self.offset + count]
        self.offset = (self.offset + count) % len(BLOCK)
        self.remaining -= count
        return count


def repeating_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // len(BLOCK)):
        digest.update(BLOCK)
    digest.update(BLOCK[: size % len(BLOCK)])
    return digest.hexdigest()


def write_config(path: Path, backend: dict[str, Any], max_size: str) -> Path:
    options = "\n".join(f"{name} = {value!r}".replace("'", '"') for name, value in backend.items())
    path.write_text(
        f"[backends.files]\n{options}\n\n"
        f'[policies.documents]\nbackend = "files"\nmax_size = "{max_size}"\ndelete_replaced = true\n'
    )
    return path


Start = Callable[..., contextlib.AbstractContextManager[httpx.Client]]


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def start(tmp_path: Path, storage_root: Path) -> Start:
    """Start the example with a local storage config of the given limit, on SQLite; yield a client."""

    @contextlib.contextmanager
    def start(max_size: str = "300MB", **settings: Any) -> Iterator[httpx.Client]:
        config = write_config(
            tmp_path / "storage.toml", {"type": "local", "root": str(storage_root)}, max_size
        )
        settings.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'documents.db'}")
        app = example.create_app(example.Settings(storage_config=config, **settings))
        with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client

    return start


def upload(client: httpx.Client, name: str, content: Any, content_type: str = "text/plain") -> httpx.Response:
    return client.post("/documents", files={"file": (name, content, content_type)}, data={"title": name})


def test_the_documents_api_uploads_lists_downloads_replaces_and_deletes(
    start: Start, storage_root: Path
) -> None:
    with start() as client:
        created = upload(client, "notes.txt", b"first version")
        assert created.status_code == 201, created.text
        document = created.json()
        assert document["filename"] == "notes.txt"
        assert document["sha256"] == hashlib.sha256(b"first version").hexdigest()
        assert [d["id"] for d in client.get("/documents").json()] == [document["id"]]
        assert client.get(f"/documents/{document['id']}").json() == document
        assert client.get(f"/documents/{document['id']}/content").content == b"first version"
        (first_file,) = files_under(storage_root)

        replaced = client.put(
            f"/documents/{document['id']}/content", files={"file": ("notes-v2.txt", b"second", "text/plain")}
        )
        assert replaced.status_code == 200
        assert client.get(f"/documents/{document['id']}/content").content == b"second"
        (second_file,) = files_under(storage_root)  # the replaced file was deleted after commit
        assert second_file != first_file

        assert client.delete(f"/documents/{document['id']}").status_code == 204
        assert client.get(f"/documents/{document['id']}").status_code == 404
        assert client.get("/documents").json() == []
        assert files_under(storage_root) == []
        assert client.get("/docs").status_code == 200
        assert "/documents/{document_id}/content" in client.get("/openapi.json").json()["paths"]


def test_a_200_mb_upload_streams_in_and_out_with_ranges(start: Start) -> None:
    with start() as client:
        created = upload(client, "big.bin", RepeatingFile(BIG), "application/octet-stream")
        assert created.status_code == 201, created.text
        document = created.json()
        assert (document["size"], document["sha256"]) == (BIG, repeating_sha256(BIG))

        digest, size = hashlib.sha256(), 0
        with client.stream("GET", f"/documents/{document['id']}/content") as response:
            for chunk in response.iter_bytes(MIB):
                digest.update(chunk)
                size += len(chunk)
        assert (size, digest.hexdigest()) == (BIG, document["sha256"])

        tail = client.get(f"/documents/{document['id']}/content", headers={"range": f"bytes={BIG - 10}-"})
        assert tail.status_code == 206
        assert tail.headers["content-range"] == f"bytes {BIG - 10}-{BIG - 1}/{BIG}"
        assert tail.content == BLOCK[-10:]


def test_a_download_in_progress_holds_no_database_connection(tmp_path: Path, storage_root: Path) -> None:
    """A slow client can take minutes over a download: it must not keep a pooled connection that long
    (a pool of 5 + 10 would be exhausted by 15 slow downloads, and every other request would wait)."""
    config = write_config(tmp_path / "storage.toml", {"type": "local", "root": str(storage_root)}, "1GiB")
    app = example.create_app(
        example.Settings(
            storage_config=config, database_url=f"sqlite+aiosqlite:///{tmp_path / 'documents.db'}"
        )
    )
    pool = app.state.granite_storage_sessions.kw["bind"].sync_engine.pool
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        document = upload(client, "large.bin", RepeatingFile(64 * MIB), "application/octet-stream").json()
        with client.stream("GET", f"/documents/{document['id']}/content") as response:
            assert response.status_code == 200
            next(response.iter_raw(MIB))  # the response has started; most of it is still unsent
            assert pool.checkedout() == 0


def test_an_over_limit_upload_is_refused_with_413_leaving_no_file_and_no_row(
    start: Start, storage_root: Path
) -> None:
    with start(max_size="1MiB") as client:
        refused = upload(client, "big.bin", RepeatingFile(MIB + 1), "application/octet-stream")
        assert refused.status_code == 413
        assert refused.json() == {"detail": f"content exceeds the maximum size of {MIB} bytes"}
        assert client.get("/documents").json() == []
        assert upload(client, "fits.bin", RepeatingFile(MIB), "application/octet-stream").status_code == 201
    assert len(files_under(storage_root)) == 1


def test_a_matching_etag_answers_304_and_a_range_206(start: Start) -> None:
    with start() as client:
        document = upload(client, "abc.txt", b"abcdefghij").json()
        url = f"/documents/{document['id']}/content"
        etag = client.get(url).headers["etag"]
        assert etag == f'"{document["sha256"]}"'
        assert client.get(url, headers={"if-none-match": etag}).status_code == 304
        ranged = client.get(url, headers={"range": "bytes=2-4"})
        assert (ranged.status_code, ranged.content) == (206, b"cde")
        assert client.head(url).headers["content-length"] == "10"


@pytest.mark.parametrize(
    "filename",
    [
        "../../../etc/passwd",
        "semi;colon 'quoted' back\\slash.txt",
        "Ünïcödé 📄 résumé.pdf",
        "..",
        "CON.txt",
        "long " * 100 + ".pdf",
    ],
)
def test_hostile_filenames_are_kept_as_metadata_and_never_reach_a_path_or_header(
    start: Start, storage_root: Path, filename: str
) -> None:
    with start() as client:
        created = client.post("/documents", files={"file": (filename, b"hostile", "text/plain")})
        assert created.status_code == 201, created.text
        document = created.json()
        download = client.get(f"/documents/{document['id']}/content")
        assert download.content == b"hostile"
        assert document["filename"] == filename  # kept as it came, as metadata
        assert download.headers["content-disposition"] == content_disposition(filename)
    for path in files_under(storage_root):
        assert path.startswith("documents/example_document/")
        assert ".." not in path.split("/")


# -- PostgreSQL and a real S3 server --------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[URL]:
    """A schema of its own on the test PostgreSQL server; the example's async URL into it."""
    url = configured_url("postgresql")
    schema = f"granite_example_{secrets.token_hex(4)}"
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # any driver's connection error
        unreachable("postgresql", url, exc)
    try:
        yield url.set(drivername="postgresql+psycopg", query={"options": f"-csearch_path={schema}"})
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def test_the_example_runs_on_postgresql_and_s3_by_configuration(
    tmp_path: Path, postgres_url: URL, real_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", real_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", real_s3.secret_key)
    prefix = f"example-{secrets.token_hex(4)}"
    backend = {
        "type": "s3",
        "bucket": real_s3.bucket,
        "prefix": prefix,
        "endpoint_url": real_s3.endpoint_url,
        "region_name": real_s3.region,
        "addressing_style": "path",
    }
    config = write_config(tmp_path / "s3.toml", backend, "20MB")
    monkeypatch.setenv("GRANITE_EXAMPLE_STORAGE_CONFIG", str(config))
    monkeypatch.setenv("GRANITE_EXAMPLE_DATABASE_URL", postgres_url.render_as_string(hide_password=False))
    s3 = real_s3.client()

    def keys() -> list[str]:
        listing = s3.list_objects_v2(Bucket=real_s3.bucket, Prefix=f"{prefix}/")
        return [item["Key"] for item in listing.get("Contents", [])]

    app = example.create_app()  # from the environment alone
    content = BLOCK * 12  # 12 MiB: a multipart upload on S3
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        document = upload(client, "Ünïcödé report.bin", content, "application/octet-stream").json()
        assert document["sha256"] == hashlib.sha256(content).hexdigest()
        content_url = f"/documents/{document['id']}/content"
        ranged = client.get(content_url, headers={"range": "bytes=100-199"})
        assert (ranged.status_code, ranged.content) == (206, content[100:200])
        assert client.get(content_url, headers={"if-none-match": ranged.headers["etag"]}).status_code == 304

        redirected = client.get(content_url, params={"redirect": True})
        assert redirected.status_code == 307
        from_s3 = httpx.get(redirected.headers["location"], timeout=60)
        assert from_s3.content == content
        assert (
            "filename*=UTF-8''%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20report.bin"
            in from_s3.headers["content-disposition"]
        )

        refused = upload(client, "big.bin", RepeatingFile(20 * MIB + 1), "application/octet-stream")
        assert refused.status_code == 413
        assert [d["id"] for d in client.get("/documents").json()] == [document["id"]]
        assert len(keys()) == 1

        assert client.delete(f"/documents/{document['id']}").status_code == 204
        assert keys() == []
