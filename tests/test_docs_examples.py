# The documentation's examples are tests. Every fenced code block whose info string is exactly
# `python`, in docs_source/**/*.md and in README.md, is executed: each file's blocks run in order in one
# fresh namespace, with the current directory switched to a temporary directory (one test per file).
# Blocks fenced as ```py (or ```toml, ```console, ...) are shown but not run: use ```py for fragments
# that cannot run on their own. The same convention is stated in docs_source/contributing.md.

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs_source"
README = ROOT / "README.md"

RUNNABLE = "python"

# An opening fence: three or more backticks or tildes, then the info string. Backtick fences may not
# have a backtick in their info string (CommonMark).
_OPENING_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# MyST directives whose body is not Markdown: a ```python fence inside them is text, not an example.
_LITERAL_DIRECTIVES = frozenset(
    {"code", "code-block", "code-cell", "sourcecode", "literalinclude", "eval-rst", "raw", "math"}
)


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced code block: its info string, the 1-based line of its first line, and its text."""

    info: str
    line: int
    source: str


def fenced_blocks(text: str, *, first_line: int = 1) -> Iterator[CodeBlock]:
    """Yield the fenced code blocks of a Markdown text, including those nested in MyST directives."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _OPENING_FENCE.match(lines[index])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            index += 1
            continue
        fence, indent, info = opening["fence"], len(opening["indent"]), opening["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body_start = index + 1
        index = body_start
        while index < len(lines) and closing.match(lines[index]) is None:
            index += 1
        body = [_dedent(line, indent) for line in lines[body_start:index]]
        index += 1  # past the closing fence
        line = first_line + body_start
        directive = re.match(r"^\{([^}]+)\}", info)
        if directive is not None and directive[1] not in _LITERAL_DIRECTIVES:
            yield from fenced_blocks("\n".join(body), first_line=line)
        else:
            yield CodeBlock(info, line, "".join(f"{text_line}\n" for text_line in body))


def _dedent(line: str, indent: int) -> str:
    """Remove up to ``indent`` leading whitespace characters, as CommonMark does for fence bodies."""
    stripped = line.lstrip(" \t")
    removable = len(line) - len(stripped)
    return line[min(indent, removable) :]


def runnable_blocks(path: Path) -> list[CodeBlock]:
    return [block for block in fenced_blocks(path.read_text(encoding="utf-8")) if block.info == RUNNABLE]


def documents_with_examples() -> list[Path]:
    candidates = sorted(DOCS.glob("**/*.md"))
    if README.is_file():
        candidates.append(README)
    return [path for path in candidates if runnable_blocks(path)]


DOCUMENTS = documents_with_examples()


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.relative_to(ROOT).as_posix() for path in DOCUMENTS])
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # A real module, so that classes and dataclasses defined by an example can find their module.
    module = types.ModuleType("granite_storage_docs_example")
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for block in runnable_blocks(path):
            # Leading newlines make tracebacks point at the block's lines in the Markdown file.
            code = compile("\n" * (block.line - 1) + block.source, str(path), "exec")
            exec(code, module.__dict__)
    finally:
        # What the end of a program would do: close the database connections the examples opened
        # (Python 3.13 warns about SQLite connections that are garbage-collected open).
        for value in list(vars(module).values()):
            if isinstance(value, Engine):
                value.dispose()


def test_the_documentation_has_runnable_examples() -> None:
    assert any(path.is_relative_to(DOCS) for path in DOCUMENTS), "no ```python block in docs_source/"


def test_only_blocks_fenced_as_python_are_run() -> None:
    text = "\n".join(
        [
            "```python",
            "ran = 1",
            "```",
            "```py",
            "shown_only = 1",
            "```",
            "````{note}",
            "  ```python",
            "  nested = 1",
            "  ```",
            "````",
            "````{code-block} markdown",
            "```python",
            "literal_text = 1",
            "```",
            "````",
            "~~~python",
            "tilde = 1",
            "~~~",
            "```toml",
            "",
        ]
    )
    blocks = [block for block in fenced_blocks(text) if block.info == RUNNABLE]
    assert [(block.line, block.source) for block in blocks] == [
        (2, "ran = 1\n"),
        (9, "nested = 1\n"),
        (18, "tilde = 1\n"),
    ]
