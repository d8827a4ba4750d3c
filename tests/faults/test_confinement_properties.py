"""Confinement, searched for by hypothesis: no key, reference or filename reaches outside its place.

Every example is thrown at a backend and at a manager from three sides: as a key given to the backend,
as the location of a reference read back from a database row, and as the caller values a key is built
from (model, entity id, filename). Whatever happens (success, a typed refusal, not found), no byte
outside the backend's root (local disk) or prefix (S3) is read, written or deleted, and a reference of
one slot never reads or deletes an object of another slot.

The number of examples is ``GRANITE_TEST_HYPOTHESIS_EXAMPLES`` (default 300, so that a laptop run is
quick); CI sets it to 10,000.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from granite_storage import (
    PluginHost,
    StorageBackend,
    StorageError,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage.keys import is_within_prefix
from granite_storage_local import LocalStorageBackend
from granite_storage_s3 import S3StorageBackend

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
EXAMPLES = int(os.environ.get("GRANITE_TEST_HYPOTHESIS_EXAMPLES", "300"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: What a hostile key or reference may meet: a typed error (InvalidKeyError, InvalidReferenceError,
#: ObjectNotFoundError, or a StorageError for a key the disk cannot hold, such as a name too long or
#: one that names a directory). A raw OSError, UnicodeError or anything else fails the test.
REFUSED = (StorageError,)
SECRET = b"outside: must never be read, written or deleted"
LIVE = b"the other slot's live object"

# Path-like pieces that have escaped storage libraries before, mixed with arbitrary text.
_PIECES = st.sampled_from(
    [
        "..",
        ".",
        "",
        "a",
        "b",
        "secret",
        "%2e%2e",
        "..\\..",
        "\\",
        "C:",
        "~",
        "\x00",
        "\n",
        "\udcff",
        "caf\u00e9",
        "cafe\u0301",
        "A",
        "B",
        "x" * 300,
        "/",
        "//",
        "a/../b",
        ".hidden",
    ]
)
KEYS = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=6).map("/".join),
    st.lists(_PIECES, min_size=1, max_size=6).map("".join),
)


def _refused_or(action: Callable[[], T]) -> T | None:
    """Run ``action``; a typed refusal (or not found) is an acceptable outcome and gives ``None``."""
    try:
        return action()
    except REFUSED:
        return None


def exercise_backend(backend: StorageBackend, key: str) -> None:
    """Every backend operation with ``key``: each succeeds inside the backend or is refused."""
    _refused_or(lambda: backend.put(key, io.BytesIO(b"probe")))
    for opener in (lambda: backend.open(key), lambda: backend.open_range(key, 1, 3)):
        stream = _refused_or(opener)
        if stream is not None:
            with stream:
                stream.read()
    _refused_or(lambda: backend.get(key))
    _refused_or(lambda: backend.stat(key))
    _refused_or(lambda: backend.exists(key))
    _refused_or(lambda: list(backend.list(key)))
    _refused_or(lambda: backend.delete(key))
    _refused_or(lambda: backend.delete_many([key]))


def exercise_manager(manager: StorageManager, location: str, *, live: StoredObjectRef) -> None:
    """A reference of slot ``a`` forged with ``location``: it never reads or deletes slot ``b``'s object."""
    ref = StoredObjectRef(storage_key="a", backend=live.backend, location=location, size=len(LIVE))
    assert _refused_or(lambda: manager.get(ref)) != LIVE, f"slot 'a' read slot 'b''s object: {location!r}"
    for opener in (lambda: manager.open(ref), lambda: manager.open(ref, start=0, end=len(LIVE))):
        stream = _refused_or(opener)
        if stream is not None:
            with stream:
                assert stream.read() != LIVE, f"slot 'a' opened slot 'b''s object: {location!r}"
    _refused_or(lambda: manager.delete(ref))
    assert manager.get(live) == LIVE, f"slot 'a' deleted slot 'b''s object through {location!r}"


def exercise_filenames(manager: StorageManager, model: str, entity: str, filename: str) -> None:
    ref = manager.put_bytes(
        storage_key="a",
        model_name=model,
        entity_id=entity,
        field_name=filename,
        content=b"named",
        original_filename=filename,
    )
    assert is_within_prefix(ref.location, "a"), ref.location
    assert manager.get(ref) == b"named"
    manager.delete(ref)


# -- local disk ---------------------------------------------------------------------------------------


def _tree(directory: Path) -> dict[str, str]:
    """Every entry below ``directory``: what it is and, for files, a digest of their content."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "symlink:" + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "directory"
    return found


class LocalWorld:
    """A root inside an outer directory holding secrets, and a manager with slots ``a`` and ``b``."""

    def __init__(self, base: Path) -> None:
        self.outer = base
        self.root = base / "root"
        (base / "secret").write_bytes(SECRET)
        (base / "rootsecret").mkdir()
        (base / "rootsecret" / "file").write_bytes(SECRET)
        self.backend = LocalStorageBackend(self.root)
        self.manager = StorageManager(
            backends={"local": self.backend},
            policies={
                "a": StoragePolicy("a", backend_key="local", key_prefix="a"),
                "b": StoragePolicy("b", backend_key="local", key_prefix="b"),
            },
            plugins=PluginHost(strict=False, disabled=()),
        )
        self.live = self.manager.put_bytes(
            storage_key="b", model_name="m", entity_id="1", field_name="f", content=LIVE
        )
        self.outside = self.snapshot_outside()

    def snapshot_outside(self) -> dict[str, str]:
        return {
            name: kind for name, kind in _tree(self.outer).items() if not Path(name).is_relative_to(self.root)
        }

    def check(self) -> None:
        assert self.snapshot_outside() == self.outside, "something outside the root changed"
        for path in self.root.rglob("*"):
            assert not path.is_symlink(), f"a symlink appeared inside the root: {path}"
            assert path.resolve().is_relative_to(self.root.resolve()), path


@pytest.fixture(scope="module")
def local_world(tmp_path_factory: pytest.TempPathFactory) -> LocalWorld:
    return LocalWorld(tmp_path_factory.mktemp("confinement"))


@PROPERTY_SETTINGS
@given(key=KEYS)
def test_no_key_given_to_the_local_backend_reaches_outside_its_root(
    local_world: LocalWorld, key: str
) -> None:
    exercise_backend(local_world.backend, key)
    local_world.check()


@PROPERTY_SETTINGS
@given(location=KEYS)
def test_no_reference_location_reaches_another_slot_on_local_disk(
    local_world: LocalWorld, location: str
) -> None:
    exercise_manager(local_world.manager, location, live=local_world.live)
    local_world.check()


@PROPERTY_SETTINGS
@given(model=st.text(max_size=20), entity=KEYS, filename=KEYS)
def test_no_caller_value_moves_a_built_key_out_of_its_slot_on_local_disk(
    local_world: LocalWorld, model: str, entity: str, filename: str
) -> None:
    exercise_filenames(local_world.manager, model, entity, filename)
    local_world.check()


# -- S3 (moto) ----------------------------------------------------------------------------------------


class S3World:
    """A backend under the prefix ``app`` of a bucket that holds secrets beside it, and another bucket.

    Every request the backend's client sends is recorded (botocore's ``before-parameter-build``
    event, which sees the bucket, key, prefix and batch of keys of each call), so that a check
    proves no request, read or write, named anything outside the prefix. The secrets are compared
    again when the module ends, through a client of their own.
    """

    BUCKET = "confined"
    OTHER_BUCKET = "neighbour"

    def __init__(self, client: S3Client, observer: S3Client) -> None:
        self.observer = observer
        for bucket in (self.BUCKET, self.OTHER_BUCKET):
            observer.create_bucket(Bucket=bucket)
        for bucket, key in [
            (self.BUCKET, "secret"),
            (self.BUCKET, "app-secret"),
            (self.BUCKET, "other/app/secret"),
            (self.OTHER_BUCKET, "app/secret"),
        ]:
            observer.put_object(Bucket=bucket, Key=key, Body=SECRET)
        self.requests: list[tuple[str, str, list[str]]] = []
        client.meta.events.register("before-parameter-build.s3", self._record)
        self.backend = S3StorageBackend(bucket=self.BUCKET, prefix="app", client=client)
        self.manager = StorageManager(
            backends={"s3": self.backend},
            policies={
                "a": StoragePolicy("a", backend_key="s3", key_prefix="a"),
                "b": StoragePolicy("b", backend_key="s3", key_prefix="b"),
            },
            plugins=PluginHost(strict=False, disabled=()),
        )
        self.live = self.manager.put_bytes(
            storage_key="b", model_name="m", entity_id="1", field_name="f", content=LIVE
        )
        self.outside = self.snapshot_outside()

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        names = [params[field] for field in ("Key", "Prefix", "KeyMarker") if params.get(field)]
        names += [item["Key"] for item in params.get("Delete", {}).get("Objects", [])]
        self.requests.append((model.name, params.get("Bucket", ""), names))

    def _objects(self, bucket: str) -> dict[str, str]:
        found = {}
        for page in self.observer.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["ETag"]
        return found

    def snapshot_outside(self) -> dict[str, dict[str, str]]:
        outside = {key: tag for key, tag in self._objects(self.BUCKET).items() if not key.startswith("app/")}
        return {self.BUCKET: outside, self.OTHER_BUCKET: self._objects(self.OTHER_BUCKET)}

    def check(self) -> None:
        """Every request since the last check named the bucket, and only keys under ``app/``."""
        requests, self.requests = self.requests, []
        for operation, bucket, names in requests:
            assert bucket == self.BUCKET, f"{operation} reached bucket {bucket!r}"
            for name in names:
                assert name.startswith("app/"), f"{operation} named {name!r}, outside the prefix"

    def check_secrets(self) -> None:
        assert self.snapshot_outside() == self.outside, "something outside the prefix changed"


@pytest.fixture(scope="module")
def s3_world() -> Iterator[S3World]:
    with mock_aws():
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        world = S3World(session.client("s3"), observer=session.client("s3"))
        yield world
        world.check_secrets()


@PROPERTY_SETTINGS
@given(key=KEYS)
def test_no_key_given_to_the_s3_backend_reaches_outside_its_prefix(s3_world: S3World, key: str) -> None:
    exercise_backend(s3_world.backend, key)
    s3_world.check()


@PROPERTY_SETTINGS
@given(location=KEYS)
def test_no_reference_location_reaches_another_slot_on_s3(s3_world: S3World, location: str) -> None:
    exercise_manager(s3_world.manager, location, live=s3_world.live)
    s3_world.check()


@PROPERTY_SETTINGS
@given(model=st.text(max_size=20), entity=KEYS, filename=KEYS)
def test_no_caller_value_moves_a_built_key_out_of_its_slot_on_s3(
    s3_world: S3World, model: str, entity: str, filename: str
) -> None:
    exercise_filenames(s3_world.manager, model, entity, filename)
    s3_world.check()


def test_the_s3_request_record_sees_a_request_outside_the_prefix(s3_world: S3World) -> None:
    s3_world.check()
    s3_world.backend.client.list_objects_v2(Bucket=S3World.BUCKET, Prefix="other/")
    with pytest.raises(AssertionError, match="outside the prefix"):
        s3_world.check()
    s3_world.backend.client.head_bucket(Bucket=S3World.OTHER_BUCKET)
    with pytest.raises(AssertionError, match="reached bucket 'neighbour'"):
        s3_world.check()
