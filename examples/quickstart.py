"""The quick start, run by ``make demo``: store, read, refuse and delete files on local disk.

Objects go under ``./var/storage`` (created if missing); every object the demo stores, it deletes.
"""

from __future__ import annotations

import io
import json
import uuid

from granite_storage import ContentTooLargeError, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage.backends.local import LocalStorageBackend


def main() -> None:
    """Walk through the storage API and print what each step did."""
    manager = StorageManager(
        backends={"local": LocalStorageBackend("./var/storage")},
        policies={
            "avatars": StoragePolicy(
                storage_key="avatars", backend_key="local", max_size=2 * 1024 * 1024, key_prefix="avatars"
            ),
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * 1024 * 1024, key_prefix="docs"
            ),
        },
    )
    user_id = uuid.uuid4()

    image_stream = io.BytesIO(b"\xff\xd8\xff\xe0" + b"\x00" * 4096)  # stands in for an uploaded JPEG
    ref = manager.put_stream(
        storage_key="avatars",
        model_name="user",
        entity_id=str(user_id),
        field_name="avatar",
        stream=image_stream,
        content_type="image/jpeg",
        original_filename="photo.jpg",
    )
    print(f"stored {ref.size} bytes at {ref.backend}:{ref.location}")
    print(f"  checksum {ref.checksum}")

    stored_json = json.dumps(ref.to_dict())
    print(f"  the database row keeps {len(stored_json)} bytes of JSON")
    ref = StoredObjectRef.from_dict(json.loads(stored_json))
    print(f"read back {len(manager.get(ref))} bytes; exists: {manager.exists(ref)}")

    report = manager.put_bytes(
        storage_key="documents",
        model_name="document",
        entity_id="42",
        field_name="file",
        content=b"Quarterly report\n",
        original_filename="Q3 report.TXT",
    )
    with manager.open(report) as stream:
        print(f"stored {report.location} as {report.content_type}: {stream.read()!r}")

    try:
        manager.put_bytes(
            storage_key="avatars",
            model_name="user",
            entity_id=str(user_id),
            field_name="avatar",
            content=b"\x00" * (2 * 1024 * 1024 + 1),
        )
    except ContentTooLargeError as exc:
        print(f"refused an avatar one byte over the limit: {exc}")

    for stored in (ref, report):
        manager.delete(stored)
    print(f"deleted both objects; exists: {manager.exists(ref)}, {manager.exists(report)}")


if __name__ == "__main__":
    main()
