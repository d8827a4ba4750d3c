"""StoredObjectRef: the frozen value a database row keeps, and its 0.1.0-compatible JSON form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from granite_storage import InvalidReferenceError, StorageError, StoredObjectRef

CONTENT_SHA256 = hashlib.sha256(b"avatar bytes").hexdigest()
LOCATION = "avatars/user/42/avatar/0123456789abcdef0123456789abcdef.jpg"

#: A row as granite-storage 0.1.0 wrote it, typed out by hand: these are the only names 0.1.0 used.
ROW_0_1_0 = f"""
{{
    "storage_key": "avatars",
    "backend": "local",
    "location": "{LOCATION}",
    "size": 12,
    "checksum": "sha256:{CONTENT_SHA256}",
    "content_type": "image/jpeg",
    "original_filename": "photo.jpg",
    "created_at": "2024-05-01T12:30:00+00:00",
    "extra": {{}}
}}
"""

FIELD_NAMES_0_1_0 = [
    "storage_key",
    "backend",
    "location",
    "size",
    "checksum",
    "content_type",
    "original_filename",
    "created_at",
    "extra",
]


def make_ref(**changes: Any) -> StoredObjectRef:
    values: dict[str, Any] = {
        "storage_key": "avatars",
        "backend": "local",
        "location": LOCATION,
        "size": 12,
        "checksum": f"sha256:{CONTENT_SHA256}",
        "content_type": "image/jpeg",
        "original_filename": "photo.jpg",
        "created_at": datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC),
        "extra": {"etag": "abc", "parts": [1, 2]},
    }
    values.update(changes)
    return StoredObjectRef(**values)


def row(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ROW_0_1_0)
    data.update(changes)
    return data


# -- a frozen, hashable value -----------------------------------------------------------------------


def test_is_frozen() -> None:
    ref = make_ref()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.size = 13  # type: ignore[misc]


def test_extra_cannot_be_mutated_through_the_reference() -> None:
    extra = {"etag": "abc"}
    ref = make_ref(extra=extra)
    extra["etag"] = "changed"
    assert ref.extra["etag"] == "abc"
    with pytest.raises(TypeError):
        ref.extra["etag"] = "changed"  # type: ignore[index]


def test_is_hashable_and_equal_references_hash_alike() -> None:
    first, second = make_ref(), make_ref()
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, make_ref(size=13)}) == 2


def test_sha256_is_the_hex_digest_of_the_checksum() -> None:
    assert make_ref().sha256 == CONTENT_SHA256
    assert make_ref(checksum=None).sha256 is None
    assert make_ref(checksum="md5:0123abcd").sha256 is None


@pytest.mark.parametrize(
    "checksum",
    ["", "sha256", "sha256:", "sha256:not-hex", "SHA256:AB", "sha256:" + "ab" * 31, "sha256:" + "AB" * 32],
)
def test_a_checksum_the_library_cannot_use_is_kept_but_gives_no_sha256(checksum: str) -> None:
    ref = make_ref(checksum=checksum)
    assert ref.checksum == checksum
    assert ref.sha256 is None


def test_created_at_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC)
    ref = StoredObjectRef(storage_key="avatars", backend="local", location=LOCATION, size=0)
    assert ref.created_at.tzinfo is not None
    assert before <= ref.created_at <= datetime.now(UTC)


def test_a_naive_created_at_is_taken_as_utc() -> None:
    ref = make_ref(created_at=datetime(2024, 5, 1, 12, 30))
    assert ref.created_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_created_at_is_held_in_utc_whatever_offset_it_was_given() -> None:
    ref = StoredObjectRef.from_dict(row(created_at="2024-05-01T14:30:00+02:00"))
    assert ref.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", -1),
        ("checksum", 1234),
        ("created_at", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_constructor_refuses_invalid_values(field: str, value: object) -> None:
    with pytest.raises(InvalidReferenceError):
        make_ref(**{field: value})


# -- the JSON form ----------------------------------------------------------------------------------


def test_to_dict_uses_exactly_the_0_1_0_field_names() -> None:
    assert list(make_ref().to_dict()) == FIELD_NAMES_0_1_0


def test_to_dict_values() -> None:
    assert make_ref().to_dict() == {
        "storage_key": "avatars",
        "backend": "local",
        "location": LOCATION,
        "size": 12,
        "checksum": f"sha256:{CONTENT_SHA256}",
        "content_type": "image/jpeg",
        "original_filename": "photo.jpg",
        "created_at": "2024-05-01T12:30:00.123456+00:00",
        "extra": {"etag": "abc", "parts": [1, 2]},
    }


def test_to_dict_writes_created_at_as_iso_8601_utc() -> None:
    ref = make_ref(created_at=datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))))
    written = ref.to_dict()["created_at"]
    assert written == "2024-05-01T12:30:00+00:00"
    assert datetime.fromisoformat(written).utcoffset() == timedelta(0)


def test_to_dict_is_json_serialisable() -> None:
    text = json.dumps(make_ref().to_dict())
    assert json.loads(text)["checksum"] == f"sha256:{CONTENT_SHA256}"


def test_round_trip_through_json_gives_an_equal_reference() -> None:
    ref = make_ref()
    assert StoredObjectRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


def test_round_trip_keeps_extra() -> None:
    ref = StoredObjectRef.from_dict(json.loads(json.dumps(make_ref().to_dict())))
    assert dict(ref.extra) == {"etag": "abc", "parts": [1, 2]}


# -- rows written by 0.1.0 --------------------------------------------------------------------------


def test_a_0_1_0_row_loads() -> None:
    ref = StoredObjectRef.from_dict(json.loads(ROW_0_1_0))
    assert ref == StoredObjectRef(
        storage_key="avatars",
        backend="local",
        location=LOCATION,
        size=12,
        checksum=f"sha256:{CONTENT_SHA256}",
        content_type="image/jpeg",
        original_filename="photo.jpg",
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "created_at",
    ["2024-05-01T12:30:00Z", "2024-05-01T12:30:00+00:00", "2024-05-01T12:30:00", "2024-05-01T14:30:00+02:00"],
    ids=["zulu", "offset", "naive", "other-offset"],
)
def test_0_1_0_timestamps_load_as_the_same_utc_instant(created_at: str) -> None:
    ref = StoredObjectRef.from_dict(row(created_at=created_at))
    assert ref.created_at.tzinfo is not None
    assert ref.created_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_a_row_written_back_keeps_the_0_1_0_shape() -> None:
    written = StoredObjectRef.from_dict(json.loads(ROW_0_1_0)).to_dict()
    assert written == json.loads(ROW_0_1_0)


def test_unknown_keys_are_tolerated() -> None:
    ref = StoredObjectRef.from_dict(row(added_in_0_3={"anything": True}, version=3))
    assert ref.location == LOCATION


@pytest.mark.parametrize("missing", ["checksum", "content_type", "original_filename", "extra"])
def test_optional_keys_may_be_missing(missing: str) -> None:
    data = row()
    del data[missing]
    ref = StoredObjectRef.from_dict(data)
    assert ref.location == LOCATION


def test_null_optional_values_load_as_none() -> None:
    ref = StoredObjectRef.from_dict(row(checksum=None, content_type=None, original_filename=None, extra=None))
    assert (ref.checksum, ref.content_type, ref.original_filename) == (None, None, None)
    assert dict(ref.extra) == {}


def test_a_row_without_created_at_loads_as_the_epoch() -> None:
    data = row()
    del data["created_at"]
    assert StoredObjectRef.from_dict(data).created_at == datetime.fromtimestamp(0, UTC)


# -- unreadable rows --------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["storage_key", "backend", "location", "size"])
def test_a_missing_required_key_raises_invalid_reference_error(missing: str) -> None:
    data = row()
    del data[missing]
    with pytest.raises(InvalidReferenceError, match=missing):
        StoredObjectRef.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("storage_key", 7),
        ("storage_key", ""),
        ("backend", None),
        ("location", ["a", "b"]),
        ("location", ""),
        ("size", "12"),
        ("size", 12.0),
        ("size", True),
        ("size", None),
        ("size", -1),
        ("checksum", 1234),
        ("content_type", 1),
        ("original_filename", {"name": "x"}),
        ("created_at", 1714566600),
        ("created_at", "yesterday"),
        ("created_at", "0001-01-01T00:00:00+01:00"),
        ("created_at", "9999-12-31T23:59:59-01:00"),
        ("location", "docs/../../etc/passwd"),
        ("location", "/etc/passwd"),
        ("location", "docs/.hidden"),
        ("location", "docs\\a"),
        ("storage_key", "\ud800"),
        ("backend", "lo\udfffcal"),
        ("location", "docs/\udc80.txt"),
        ("content_type", "text/\ud800"),
        ("original_filename", "\udc00.pdf"),
        ("checksum", "sha256:\ud800"),
        ("created_at", "2024-05-01T12:30:00\ud800"),
        ("extra", {"note": "\ud800"}),
        ("extra", {"\ud800": 1}),
        ("extra", {"nested": [{"deep": "\udbff"}]}),
    ],
)
def test_a_wrong_type_or_value_raises_invalid_reference_error(field: str, value: object) -> None:
    with pytest.raises(InvalidReferenceError):
        StoredObjectRef.from_dict(row(**{field: value}))


@pytest.mark.parametrize("checksum", ["", "sha256 with spaces", "md5:0123", "SHA256:AB"])
def test_any_checksum_string_loads_and_round_trips(checksum: str) -> None:
    ref = StoredObjectRef.from_dict(row(checksum=checksum))
    assert ref.checksum == checksum
    assert ref.sha256 is None
    assert StoredObjectRef.from_dict(ref.to_dict()) == ref


@pytest.mark.parametrize("extra", [None, ["not", "a", "mapping"], "text", 3])
def test_an_extra_that_is_not_a_json_object_loads_as_empty(extra: object) -> None:
    assert StoredObjectRef.from_dict(row(extra=extra)).extra == {}


def test_an_unsafe_location_is_an_invalid_reference_naming_the_key() -> None:
    with pytest.raises(InvalidReferenceError, match=r"'location' is not a valid key.*'\.\./x'") as raised:
        StoredObjectRef.from_dict(row(location="../x"))
    assert isinstance(raised.value.__cause__, ValueError)


@pytest.mark.parametrize("data", [None, [], "a string", 42], ids=["null", "array", "string", "number"])
def test_data_that_is_not_a_json_object_raises_invalid_reference_error(data: Any) -> None:
    with pytest.raises(InvalidReferenceError):
        StoredObjectRef.from_dict(data)


def test_invalid_reference_error_is_a_value_error_and_a_storage_error() -> None:
    with pytest.raises(ValueError, match="'size'") as raised:
        StoredObjectRef.from_dict(row(size="big"))
    assert isinstance(raised.value, StorageError)
