# Pages whose statements follow the code: each test reads a page and compares what it says with the
# code it describes, so that a hook, a backend method, an exported name or a conformance test added
# later cannot leave the page silently out of date.

from __future__ import annotations

import inspect
import re
from pathlib import Path

import granite_storage
from granite_storage import StorageBackend, StorageError, hookspecs
from granite_storage.testing import BackendConformanceSuite

DOCS = Path(__file__).resolve().parents[1] / "docs_source"

_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}


def _section(path: Path, heading: str) -> str:
    """The text under the heading line ``heading``, up to the next heading of its level or above."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, flags=re.MULTILINE)
    assert match is not None, f"{path.name} has no heading {heading!r}"
    level = len(match[1])
    end = re.search(rf"^#{{1,{level}}} ", text[match.end() :], flags=re.MULTILINE)
    return text[match.end() : match.end() + end.start()] if end else text[match.end() :]


def _number(word: str) -> int:
    return _NUMBER_WORDS[word.lower()]


def test_the_plugin_guide_lists_every_hook_and_counts_them() -> None:
    hooks = {name for name in hookspecs.__all__ if name.startswith("granite_storage_")}
    section = _section(DOCS / "plugins" / "index.md", "The hooks")
    shown = set(re.findall(r"autofunction:: granite_storage\.hookspecs\.(\w+)", section))
    assert shown == hooks
    count = re.search(r"There are (\w+) hooks\.", section)
    assert count is not None
    assert _number(count[1]) == len(hooks)


def test_the_backend_guide_describes_every_method_and_counts_them() -> None:
    section = _section(DOCS / "plugins" / "backends.md", "What a backend does")
    # Definition-list terms: lines starting with a method call in backticks (`put(key, ...)`).
    described = {
        name
        for line in section.splitlines()
        if line.startswith("`")
        for name in re.findall(r"`(\w+)\(", line)
    }
    methods = {
        name
        for name, member in vars(StorageBackend).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }
    assert described == methods
    abstract = StorageBackend.__abstractmethods__
    count = re.search(r"(\w+) methods are abstract, and (\w+) have default implementations", section)
    assert count is not None
    assert (_number(count[1]), _number(count[2])) == (len(abstract), len(methods - abstract))


def test_the_package_page_table_names_every_exported_name_and_its_module() -> None:
    text = (DOCS / "api" / "package.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| \{py:\w+\}`~granite_storage\.(\w+)`(.*?)\| .*? \| (?:\{py:mod\}`([\w.]+)`|below) \|$",
        text,
        flags=re.MULTILINE,
    )
    tabled = {name: module for name, _, module in rows}
    # The errors share one row ("StorageError and its subclasses"); names documented below the
    # table (`.. py:data::`) have no module of their own.
    below = set(re.findall(r"^\.\. py:data:: (\w+)$", text, flags=re.MULTILINE))
    errors = {
        name
        for name in granite_storage.__all__
        if isinstance(getattr(granite_storage, name), type)
        and issubclass(getattr(granite_storage, name), StorageError)
    }
    descriptions = {name: rest for name, rest, _ in rows}
    assert "subclasses" in descriptions["StorageError"]
    assert set(tabled) | below | errors == set(granite_storage.__all__)
    assert below <= set(granite_storage.__all__)
    for name, module in tabled.items():
        if module:  # "below": documented on this page
            assert getattr(granite_storage, name).__module__ == module, name


# Each test of the conformance suite, and words of the conformance page's "What it checks" that
# describe it (compared with the page's whitespace collapsed). A test added to the suite fails this
# check until the page says what it checks.
_CONFORMANCE_PAGE_WORDS = {
    "test_put_bytes_round_trip_records_size_and_checksum": "record the right size, sha256",
    "test_put_stream_round_trip_of_a_multi_chunk_object": "A multi-chunk object streams back",
    "test_open_streams_in_chunks": "`open` can be read in chunks",
    "test_open_reads_a_byte_range_like_a_slice": "returns exactly the bytes a slice would",
    "test_a_byte_range_streams_in_chunks": "streams a long range",
    "test_a_byte_range_of_an_empty_object_is_empty": "ranges of an empty object",
    "test_an_invalid_byte_range_is_refused": "An invalid range",
    "test_a_byte_range_of_a_missing_object_raises_not_found": "a range of a missing object raises",
    "test_url_is_given_or_refused_with_unsupported_operation": "`url` returns an `http(s)` URL, or refuses",
    "test_verify_accepts_the_stored_object_and_detects_a_changed_one": "`verify` accepts",
    "test_empty_object_round_trip": "Empty objects",
    "test_each_put_gets_a_new_key": "Every upload gets a new key",
    "test_put_replaces_an_existing_object_at_the_same_key": "`put` at an existing key replaces",
    "test_missing_object_raises_not_found": "`get`, `open` and `stat` of a missing object",
    "test_stat_of_a_missing_key_raises_not_found": "`get`, `open` and `stat` of a missing object",
    "test_delete_is_idempotent": "`delete` is idempotent",
    "test_delete_leaves_other_objects_alone": "leaves other objects alone",
    "test_delete_many_deletes_every_key_and_leaves_the_others": "`delete_many` deletes every key",
    "test_delete_many_reports_an_unsafe_key_and_still_deletes_the_rest": "reports an unsafe key",
    "test_list_yields_size_and_modification_time": "timezone-aware modification time",
    "test_list_matches_prefixes_as_whole_segments": "prefixes as whole segments",
    "test_a_key_equal_to_the_prefix_is_not_under_it": "a key equal to the prefix is not under it",
    "test_listing_survives_objects_deleted_while_it_runs": "A listing goes on while",
    "test_listing_refuses_unsafe_prefixes": "Unsafe list prefixes",
    "test_concurrent_puts_and_deletes_in_one_directory_all_succeed": "Six threads at once",
    "test_exactly_max_size_is_accepted": "Exactly `max_size` bytes is accepted",
    "test_one_byte_over_max_size_is_refused_and_leaves_nothing": "One byte more",
    "test_oversized_stream_of_unknown_length_is_refused_mid_stream": "An oversized stream of unknown length",
    "test_the_backend_itself_leaves_nothing_when_its_stream_passes_a_limit": "passes its limit",
    "test_the_backend_itself_leaves_nothing_when_its_stream_fails": "keeps the previous object",
    "test_removing_incomplete_uploads_never_touches_objects": "`remove_incomplete_uploads`",
    "test_failed_upload_leaves_nothing": "fails after 2 MiB leaves nothing behind",
    "test_unsafe_keys_are_refused_by_every_operation": "`open_range`, and `url`",
    "test_tampered_reference_is_refused_by_the_manager": "The manager refuses references",
    "test_hostile_caller_values_yield_keys_inside_the_prefix": "Hostile caller values",
}


def test_the_conformance_page_describes_every_test_of_the_suite() -> None:
    suite_tests = {name for name in dir(BackendConformanceSuite) if name.startswith("test_")}
    assert set(_CONFORMANCE_PAGE_WORDS) == suite_tests
    section = " ".join(_section(DOCS / "plugins" / "conformance.md", "What it checks").split())
    missing = {name: words for name, words in _CONFORMANCE_PAGE_WORDS.items() if words not in section}
    assert missing == {}
