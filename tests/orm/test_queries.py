"""iter_model_storage_refs: every reference, streamed, on every database; flat memory on a million rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from granite_storage import ConfigurationError, StoredObjectRef, iter_model_storage_refs

from .conftest import server_url
from .models import Document, User


def add_documents(session: Session, count: int) -> list[StoredObjectRef]:
    refs = []
    for number in range(count):
        doc = Document(title=f"doc {number}")
        session.add(doc)
        session.flush()
        refs.append(doc.set_content(f"content {number}".encode()))
    return refs


@pytest.mark.usefixtures("schema")
def test_yields_the_reference_of_every_row_that_has_one(engine: Engine) -> None:
    with Session(engine) as session:
        refs = add_documents(session, 5)
        session.add(Document(title="no content"))
        session.commit()
        # What granite-storage 0.1.0 wrote for "no file": a JSON null, not SQL NULL.
        session.execute(text("UPDATE document SET _file_ref = 'null' WHERE title = 'no content'"))
        found = list(iter_model_storage_refs(session, Document, "_file_ref", batch_size=2))
    assert sorted(found, key=lambda ref: ref.location) == sorted(refs, key=lambda ref: ref.location)


@pytest.mark.usefixtures("schema")
def test_each_call_on_a_long_lived_session_sees_what_was_committed_since(engine: Engine) -> None:
    # A garbage collector's session lives for many runs. Had the first run's transaction stayed
    # open, MariaDB's REPEATABLE READ would show every later run the rows of the first one, and a
    # document committed since would look orphaned.
    with Session(engine) as collector_session:
        assert list(iter_model_storage_refs(collector_session, Document, "_file_ref")) == []
        assert not collector_session.in_transaction()
        with Session(engine) as writer:
            [ref] = add_documents(writer, 1)
            writer.commit()
        assert list(iter_model_storage_refs(collector_session, Document, "_file_ref")) == [ref]


@pytest.mark.usefixtures("schema")
def test_inside_a_transaction_the_refs_are_read_in_it(engine: Engine) -> None:
    with Session(engine) as session:
        [ref] = add_documents(session, 1)  # flushed, not committed: only this transaction sees it
        assert list(iter_model_storage_refs(session, Document, "_file_ref")) == [ref]
        assert session.in_transaction()
        session.rollback()
        assert list(iter_model_storage_refs(session, Document, "_file_ref")) == []


@pytest.mark.usefixtures("schema")
def test_takes_the_attribute_itself_and_any_field_of_a_multi_file_model(engine: Engine) -> None:
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        avatar = user.avatar.set_content(b"a")
        session.commit()
        assert list(iter_model_storage_refs(session, User, User.avatar_ref)) == [avatar]
        assert list(iter_model_storage_refs(session, User, "avatar")) == [avatar]
        assert list(iter_model_storage_refs(session, User, "thumbnail_ref")) == []


@pytest.mark.usefixtures("schema")
@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_refuses_a_column_that_does_not_hold_references(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(ConfigurationError, match=r"Document.title is not a StoredObjectRefType"):
            next(iter_model_storage_refs(session, Document, "title"))
        with pytest.raises(ValueError, match="batch_size"):
            next(iter_model_storage_refs(session, Document, "_file_ref", batch_size=0))


# -- memory at scale ----------------------------------------------------------------------------------

MEASURE = """
import json, re, sys
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from granite_storage import StoredObjectRef, StoredObjectRefType, iter_model_storage_refs

url, rows = sys.argv[1], int(sys.argv[2])


class Base(DeclarativeBase):
    pass


class ScaleDocument(Base):
    __tablename__ = "granite_scale_document"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType())


REF = json.dumps({
    "storage_key": "documents", "backend": "local",
    "location": "docs/document/NUMBER/file_ref/00112233445566778899aabbccddeeff.pdf",
    "size": 1234, "checksum": "sha256:" + "ab" * 32, "content_type": "application/pdf",
    "original_filename": "report.pdf", "created_at": "2025-06-01T12:30:00+00:00", "extra": {},
})
FILL = {
    # Generated in the database: a million rows arrive in seconds, none of them through Python.
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) "
              "INSERT INTO granite_scale_document SELECT x, replace('{ref}', 'NUMBER', x) FROM n",
    "postgresql": "INSERT INTO granite_scale_document SELECT x, replace('{ref}', 'NUMBER', x::text)::jsonb "
                  "FROM generate_series(1, {rows}) AS x",
    "mysql": "INSERT INTO granite_scale_document WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL "
             "SELECT x + 1 FROM n WHERE x < {rows}) SELECT x, replace('{ref}', 'NUMBER', x) FROM n",
}


def memory_kib():
    with open("/proc/self/status") as file:
        status = file.read()
    return {name: int(re.search(name + r":\\s+(\\d+) kB", status).group(1)) for name in ("VmRSS", "VmHWM")}


engine = create_engine(url)
Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)
try:
    with engine.begin() as connection:
        if engine.dialect.name == "mysql":
            connection.exec_driver_sql("SET SESSION max_recursive_iterations = {rows}".format(rows=rows))
        connection.exec_driver_sql(FILL[engine.dialect.name].format(rows=rows, ref=REF).replace("%", "%%"))
    with Session(engine) as session:
        before = memory_kib()
        count, last = 0, None
        for ref in iter_model_storage_refs(session, ScaleDocument, "file_ref"):
            count += 1
            last = ref
        after = memory_kib()
    print(json.dumps({"count": count, "growth_kib": after["VmHWM"] - before["VmRSS"], "last": last.location}))
finally:
    Base.metadata.drop_all(engine)
    engine.dispose()
"""

LIMIT_KIB = 32 * 1024  # the references themselves would take hundreds of MiB


def measure(url: str, rows: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, url, str(rows)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_million_rows_stream_in_flat_memory_on_sqlite(tmp_path: Path) -> None:
    figures = measure(f"sqlite:///{tmp_path / 'scale.db'}", 1_000_000)
    assert figures["count"] == 1_000_000
    assert figures["growth_kib"] <= LIMIT_KIB, figures


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
def test_servers_stream_through_a_server_side_cursor(database: str) -> None:
    from .conftest import server_engine

    server_engine(database).dispose()  # skips (or fails in CI) when the server is not reachable
    figures = measure(server_url(database), 200_000)
    assert figures["count"] == 200_000
    assert figures["growth_kib"] <= LIMIT_KIB, figures
