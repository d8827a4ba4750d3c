"""Keys: sanitised segments, safe extensions, validation and prefix matching."""

from __future__ import annotations

import re

import pytest

from granite_storage import InvalidKeyError
from granite_storage.keys import (
    MAX_KEY_LENGTH,
    build_object_key,
    is_within_prefix,
    prefixes_overlap,
    safe_extension,
    sanitize_segment,
    validate_key,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("user", "user"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "_"),
        ("...hidden", "hidden"),
        ("trailing.", "trailing"),
        ("a b/c\\d", "a_b_c_d"),
        ("", "_"),
        (42, "42"),
    ],
)
def test_a_segment_keeps_only_safe_characters(value: object, expected: str) -> None:
    assert sanitize_segment(value) == expected


@pytest.mark.parametrize("name", ["CON", "con", "nul.txt", "COM1", "lpt9.log", "AUX"])
def test_a_windows_device_name_never_becomes_a_segment_as_it_is(name: str) -> None:
    segment = sanitize_segment(name)
    assert segment == "_" + name
    assert validate_key(segment) == segment


def test_a_segment_is_at_most_64_characters() -> None:
    assert len(sanitize_segment("x" * 5000)) == 64
    assert len(sanitize_segment("CON" + "x" * 5000)) == 64


@pytest.mark.parametrize(
    ("filename", "extension"),
    [
        ("photo.JPG", ".jpg"),
        ("archive.tar.gz", ".gz"),
        ("C:\\Users\\me\\report.PDF", ".pdf"),
        (".bashrc", ""),
        ("noext", ""),
        ("weird.ex e", ""),
        ("long." + "x" * 17, ""),
        ("trailing.pdf\n", ""),  # a regex's "$" matches before a final newline
        (None, ""),
    ],
)
def test_only_a_short_alphanumeric_extension_is_kept(filename: str | None, extension: str) -> None:
    assert safe_extension(filename) == extension


def test_a_built_key_has_the_prefix_the_sanitised_segments_and_a_128_bit_token() -> None:
    key = build_object_key(
        "docs/v1", model_name="Doc", entity_id="../7", field_name="file", original_filename="a.PDF"
    )
    *segments, token = key.split("/")
    assert segments == ["docs", "v1", "Doc", "_7", "file"]
    stem, extension = token.split(".")
    assert extension == "pdf"
    assert re.fullmatch(r"[0-9a-f]{32}", stem)


@pytest.mark.parametrize(
    "key",
    [
        "a/.hidden",
        ".x",
        "a/b/..",
        "a//b",
        "/a",
        "a\\b",
        "a:b",
        "a\x00b",
        "a\nb",
        "a\x1fb",
        "a\x7fb",
        "a/lone\udcffsurrogate",
        "x" * (MAX_KEY_LENGTH + 1),
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


def test_a_key_of_exactly_the_maximum_length_is_accepted() -> None:
    assert validate_key("x" * MAX_KEY_LENGTH)


@pytest.mark.parametrize(
    ("key", "prefix", "inside"),
    [
        ("docs/a.txt", "docs", True),
        ("docs/a.txt", "docs/", True),
        ("docs2/a.txt", "docs", False),
        ("docs", "docs", False),
        ("anything", "", True),
    ],
)
def test_prefixes_match_whole_segments(key: str, prefix: str, inside: bool) -> None:
    assert is_within_prefix(key, prefix) is inside


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("docs", "docs", True),
        ("docs", "docs/2024", True),
        ("Docs", "docs/2024", True),
        ("docs", "docs2", False),
        ("avatars", "docs", False),
        ("caf\u00e9", "cafe\u0301", True),  # NFC and NFD spellings of one name
        ("CAF\u00c9/x", "cafe\u0301", True),
        ("stra\u00dfe", "STRASSE", True),
    ],
)
def test_prefixes_overlap_when_one_contains_the_other_in_any_letter_case(
    first: str, second: str, overlap: bool
) -> None:
    assert prefixes_overlap(first, second) is overlap
    assert prefixes_overlap(second, first) is overlap
