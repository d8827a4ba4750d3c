# mypy: ignore-errors
# (This script runs under granite-storage 0.2.0 before issue 15, not under the code mypy checks it against.)
"""Write the 0.2.0-layout fixtures: data stored by granite-storage 0.2.0 under its first key layout.

Until issue 15, 0.2.0 named every key ``<prefix>/<model>/<entity id>/<field>/<token><.ext>``. This
script must run under a checkout of that code (the integration branch before issue 15 merged, e.g. the
main worktree's virtualenv), never under this branch::

    <checkout before issue 15>/.venv/bin/python tests/legacy/generate_v020.py

It writes, under ``tests/legacy/v020/<name>/``, the files ``v010/`` has (see ``v010/README.md``):
``config.json``, ``app.db`` (the seed's ``Document`` model and a ``users`` table whose ``avatar`` holds
references from ``put_stream`` / ``put_bytes``), ``storage/`` (the local backend's root) and
``expected.json`` (each row's reference, the orphans, the deleted objects). The data is stored with
the flow 0.2.0 documented (add, flush, store, commit), and read back before it is written out.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from models import Base, Document, User  # this directory's models.py: the script runs from here
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from granite_storage import StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_local import LocalStorageBackend

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
LAYOUT = re.compile(r"[^/]+/(document|user)/[^/]+/(file_ref|avatar)/[0-9a-f]{32}(\.[a-z0-9]+)?")
CONFIGURATIONS = {"local_key_prefix": ("avatars", "docs"), "local_no_key_prefix": (None, None)}


def content(label: str, size: int) -> bytes:
    return random.Random(label).randbytes(size)


def describe(ref: StoredObjectRef, data: bytes) -> dict[str, Any]:
    return {
        "storage_key": ref.storage_key,
        "location": ref.location,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def generate(name: str, avatars_prefix: str | None, documents_prefix: str | None) -> None:
    directory = HERE / "v020" / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    config = {
        "backends": {"local": {"type": "local", "root": "storage"}},
        "policies": {
            "avatars": {"backend": "local", "max_size": 2 * MIB}
            | ({"key_prefix": avatars_prefix} if avatars_prefix else {}),
            "documents": {"backend": "local", "max_size": 10 * MIB}
            | ({"key_prefix": documents_prefix} if documents_prefix else {}),
        },
    }
    manager = StorageManager(
        backends={"local": LocalStorageBackend(directory / "storage")},
        policies={
            "avatars": StoragePolicy(
                "avatars", backend_key="local", max_size=2 * MIB, key_prefix=avatars_prefix
            ),
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * MIB, key_prefix=documents_prefix
            ),
        },
    )
    Document.configure_storage_manager(manager)
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/app.db")
        Base.metadata.create_all(engine)
        rows: dict[str, list[dict[str, Any]]] = {"document": [], "users": []}
        orphans: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        contents: dict[str, bytes] = {}
        with Session(engine) as session:
            documents = {}
            for title, data, filename in [
                ("Annual Report", b"%PDF-1.7\n" + content("annual", 2000), "Annual Report.PDF"),
                ("Notes", content("notes", 300), "notes.txt"),
                ("Empty", b"", "empty.bin"),
                ("Replaced", b"%PDF-1.7\n" + content("first", 1500), "first.pdf"),
                ("Cleared", content("cleared", 700), "cleared.csv"),
                ("No content", None, None),
            ]:
                doc = Document(title=title)
                session.add(doc)
                session.flush()
                if data is not None:
                    if title == "Notes":
                        doc.set_content_from_stream(io.BytesIO(data), filename=filename)
                    else:
                        doc.set_content(data, filename=filename)
                    contents[doc._file_ref.location] = data
                documents[title] = doc
            replaced = documents["Replaced"]
            second = b"%PDF-1.7\n" + content("second", 1600)
            result = replaced.replace_content(second, filename="second.pdf")
            contents[result.new_ref.location] = second
            orphans.append(
                describe(result.previous_ref, contents[result.previous_ref.location]) | {"why": "replaced"}
            )
            cleared = documents["Cleared"].clear_content_reference()
            orphans.append(describe(cleared, contents[cleared.location]) | {"why": "cleared"})
            for user_id, name, size, extension in [
                (1, "alice", 4000, "jpg"),
                (2, "bob", 3000, "png"),
                (3, "carol", 0, ""),
            ]:
                data = content(name, size)
                if user_id == 1:
                    ref = manager.put_stream(
                        storage_key="avatars",
                        model_name="user",
                        entity_id=str(user_id),
                        field_name="avatar",
                        stream=io.BytesIO(data),
                        original_filename=f"{name}.{extension}",
                    )
                else:
                    ref = manager.put_bytes(
                        storage_key="avatars",
                        model_name="user",
                        entity_id=str(user_id),
                        field_name="avatar",
                        content=data,
                        original_filename=f"{name}.{extension}" if extension else None,
                    )
                contents[ref.location] = data
                session.add(User(id=user_id, name=name, avatar=ref))
            gone = manager.put_bytes(
                storage_key="avatars", model_name="user", entity_id="4", field_name="avatar", content=b"gone"
            )
            manager.delete(gone)
            deleted.append({"storage_key": "avatars", "location": gone.location})
            session.add(User(id=4, name="dave", avatar=None))
            session.commit()
        with Session(engine) as session:  # read everything back through 0.2.0 itself
            for doc in session.scalars(select(Document).order_by(Document.title)):
                ref = doc._file_ref
                if ref is not None:
                    assert LAYOUT.fullmatch(ref.location), ref.location
                    assert manager.get(ref) == contents[ref.location]
                item = {"id": str(doc.id), "title": doc.title}
                rows["document"].append(
                    item | {"ref": None if ref is None else describe(ref, contents[ref.location])}
                )
            for user in session.scalars(select(User).order_by(User.id)):
                ref = user.avatar
                if ref is not None:
                    assert LAYOUT.fullmatch(ref.location), ref.location
                    assert manager.get(ref) == contents[ref.location]
                item = {"id": user.id, "name": user.name}
                rows["users"].append(
                    item | {"ref": None if ref is None else describe(ref, contents[ref.location])}
                )
        engine.dispose()
        shutil.copyfile(Path(scratch) / "app.db", directory / "app.db")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    expected = {"rows": rows, "orphans": orphans, "deleted": deleted}
    (directory / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", "utf-8")
    del Document.__storage_manager__


def main() -> None:
    for name, (avatars_prefix, documents_prefix) in CONFIGURATIONS.items():
        generate(name, avatars_prefix, documents_prefix)
        print(f"wrote {HERE / 'v020' / name}")


if __name__ == "__main__":
    main()
