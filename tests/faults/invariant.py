"""The invariant every fault scenario checks after every trial, in three parts.

1. No committed row points at a missing object (:func:`assert_no_committed_row_points_at_a_missing_object`).
2. No object is visible at a final key unless it is complete (:func:`assert_only_complete_objects`):
   every object a backend lists has exactly the bytes of one of the contents the trial stored.
3. No incomplete upload survives its cleanup (:func:`local_temp_files`, :func:`s3_incomplete_uploads`):
   after ``remove_incomplete_uploads`` (or the library's own abort), none is left.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from granite_storage import StorageBackend, StorageManager, StoredObjectRef

from ..orm.models import Document

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: The local backend's temporary files: ``.granite-<random>.part`` beside the object's final path.
LOCAL_TEMP_PREFIX, LOCAL_TEMP_SUFFIX = ".granite-", ".part"


def digest(content: bytes) -> str:
    """The sha256 of ``content``, in hex (as a reference records it)."""
    return hashlib.sha256(content).hexdigest()


def committed_refs(engine: Engine) -> dict[uuid.UUID, StoredObjectRef | None]:
    """Each committed document's reference, read on a connection of its own."""
    with Session(engine) as session:
        return dict(session.execute(select(Document.id, Document._file_ref)).all())


def assert_no_committed_row_points_at_a_missing_object(engine: Engine, manager: StorageManager) -> None:
    """Part 1: every committed document's object exists."""
    missing = [
        (doc_id, ref.location)
        for doc_id, ref in committed_refs(engine).items()
        if ref is not None and not manager.exists(ref)
    ]
    assert missing == []


def assert_only_complete_objects(backend: StorageBackend, digests: Collection[str], prefix: str = "") -> int:
    """Part 2: every object listed under ``prefix`` has one of ``digests``; returns how many there are."""
    incomplete = []
    listed = 0
    for info in backend.list(prefix):
        listed += 1
        sha256 = hashlib.sha256()
        with backend.open(info.key) as stream:
            while chunk := stream.read(1024 * 1024):
                sha256.update(chunk)
        if sha256.hexdigest() not in digests:
            incomplete.append((info.key, info.size))
    assert incomplete == [], "objects visible at their final key with content no trial stored"
    return listed


def local_temp_files(root: Path) -> list[str]:
    """Part 3 on local disk: the temporary files of uploads below ``root`` (relative paths)."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.startswith(LOCAL_TEMP_PREFIX) and name.endswith(LOCAL_TEMP_SUFFIX):
                found.append((Path(directory) / name).relative_to(root).as_posix())
    return sorted(found)


def s3_incomplete_uploads(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Part 3 on S3: the keys of the multipart uploads under ``prefix`` that are neither done nor aborted."""
    uploads = []
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        uploads += [upload["Key"] for upload in page.get("Uploads", [])]
    return uploads
