# Pages whose statements follow the code: each test reads a page and compares what it says with the
# code it describes, so that a hook, a backend method, an exported name or a conformance test added
# later cannot leave the page silently out of date.

from __future__ import annotations

import inspect
import re
from pathlib import Path

import granite_storage
from granite_storage import StorageBackend, StorageError, hookspecs

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
