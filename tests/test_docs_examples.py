# The documentation's examples are tests. Every Python code block in docs_source/**/*.md and in
# README.md is executed, unless it says, visibly, that it is not run and why:
#
# - A Python block is a fenced block whose language is `python` or `py` (also `python3`, `py3`), or a
#   `{code-block}`/`{code}`/`{sourcecode}` directive with such a language.
# - A block whose first line is a comment `# Not run: <reason>` is shown and not run. The reason is
#   required; readers see the comment.
# - Each file's blocks run in order in one fresh namespace, with the current directory switched to a
#   temporary directory (one test per file). A few files run inside an environment (ENVIRONMENTS
#   below), e.g. the S3 chapter against moto's in-process S3 with its example bucket created.
#
# The same convention is stated in docs_source/contributing.md.

from __future__ import annotations

import contextlib
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from .conftest import skip_without_libmagic

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs_source"
README = ROOT / "README.md"

PYTHON_LANGUAGES = frozenset({"python", "py", "python3", "py3"})
# The first line of a Python block that is shown but not run, with the reason.
_NOT_RUN = re.compile(r"^# Not run: (?P<reason>.*\S.*)$")
_NOT_RUN_START = re.compile(r"^#\s*not[ -]run\b", flags=re.IGNORECASE)

# An opening fence: three or more backticks or tildes, then the info string. Backtick fences may not
# have a backtick in their info string (CommonMark).
_OPENING_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# MyST directives whose body is not Markdown: a ```python fence inside them is text, not an example.
_LITERAL_DIRECTIVES = frozenset(
    {"code", "code-block", "code-cell", "sourcecode", "literalinclude", "eval-rst", "raw", "math"}
)
# Literal directives whose body is code in the language their argument names.
_CODE_DIRECTIVES = frozenset({"code", "code-block", "code-cell", "sourcecode"})


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced code block: its info string, the 1-based line of its first line, and its text.

    A code directive's block (```` ```{code-block} python ````) has the directive's language as its
    info string.
    """

    info: str
    line: int
    source: str

    @property
    def is_python(self) -> bool:
        """Whether the block is Python code, by its language."""
        words = self.info.split()
        return bool(words) and words[0] in PYTHON_LANGUAGES

    @property
    def not_run_reason(self) -> str | None:
        """The reason given by a first line ``# Not run: <reason>``, or ``None`` if the block runs."""
        first = self.source.partition("\n")[0]
        match = _NOT_RUN.match(first)
        return match["reason"].strip() if match else None

    @property
    def looks_marked(self) -> bool:
        """Whether the first line tries to say "not run", well-formed or not."""
        return _NOT_RUN_START.match(self.source.partition("\n")[0]) is not None


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
        directive = re.match(r"^\{([^}]+)\}\s*(.*)$", info)
        if directive is not None and directive[1] not in _LITERAL_DIRECTIVES:
            yield from fenced_blocks("\n".join(body), first_line=line)
        elif directive is not None and directive[1] in _CODE_DIRECTIVES:
            # Options (`:caption: ...`) come first; the code starts after them.
            options = 0
            while options < len(body) and re.match(r"^:[\w-]+:", body[options]):
                options += 1
            code = body[options:]
            if code and not code[0].strip() and options:
                code, options = code[1:], options + 1
            yield CodeBlock(directive[2], line + options, "".join(f"{text_line}\n" for text_line in code))
        else:
            yield CodeBlock(info, line, "".join(f"{text_line}\n" for text_line in body))


def _dedent(line: str, indent: int) -> str:
    """Remove up to ``indent`` leading whitespace characters, as CommonMark does for fence bodies."""
    stripped = line.lstrip(" \t")
    removable = len(line) - len(stripped)
    return line[min(indent, removable) :]


def python_blocks(path: Path) -> list[CodeBlock]:
    """Every Python block of a Markdown file, run or not."""
    return [block for block in fenced_blocks(path.read_text(encoding="utf-8")) if block.is_python]


def runnable_blocks(path: Path) -> list[CodeBlock]:
    """The Python blocks of a Markdown file that are run: all but those marked ``# Not run: ...``."""
    return [block for block in python_blocks(path) if block.not_run_reason is None]


def documents() -> list[Path]:
    """Every Markdown file whose examples are checked: the docs' pages and the README."""
    candidates = sorted(DOCS.glob("**/*.md"))
    if README.is_file():
        candidates.append(README)
    return candidates


def documents_with_examples() -> list[Path]:
    return [path for path in documents() if runnable_blocks(path)]


@contextlib.contextmanager
def _moto_bucket(bucket: str) -> Iterator[None]:
    """moto's in-process S3 (fake credentials, no network) with ``bucket`` created, as the page assumes."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        with moto.mock_aws():
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
            yield


@contextlib.contextmanager
def _libmagic() -> Iterator[None]:
    """Content rules read types with libmagic: the page is skipped where it is missing (not in CI)."""
    skip_without_libmagic()
    yield


# Files whose examples need a service: each runs inside the context manager given here.
ENVIRONMENTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "docs_source/guide/s3.md": lambda: _moto_bucket("my-app-uploads"),
    "docs_source/guide/policies.md": _libmagic,
    "docs_source/guide/configuration.md": _libmagic,
}

DOCUMENTS = documents_with_examples()


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.relative_to(ROOT).as_posix() for path in DOCUMENTS])
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # A real module, so that classes and dataclasses defined by an example can find their module.
    module = types.ModuleType("granite_storage_docs_example")
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    environment = ENVIRONMENTS.get(path.relative_to(ROOT).as_posix(), contextlib.nullcontext)
    try:
        with environment():
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


def test_every_python_block_runs_unless_marked_not_run_with_a_reason() -> None:
    text = "\n".join(
        [
            "```python",
            "ran = 1",
            "```",
            "```py",
            "short_fence = 1",
            "```",
            "```py",
            "# Not run: needs a bucket",
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
            "```{code-block} python",
            ":caption: a directive",
            "",
            "directive = 1",
            "```",
            "~~~python",
            "tilde = 1",
            "~~~",
            "```toml",
            "",
        ]
    )
    blocks = [block for block in fenced_blocks(text) if block.is_python]
    assert [(block.line, block.source, block.not_run_reason) for block in blocks] == [
        (2, "ran = 1\n", None),
        (5, "short_fence = 1\n", None),
        (8, "# Not run: needs a bucket\nshown_only = 1\n", "needs a bucket"),
        (13, "nested = 1\n", None),
        (24, "directive = 1\n", None),
        (27, "tilde = 1\n", None),
    ]


@pytest.mark.parametrize(
    "first_line", ["# Not run:", "# not run: lower case", "# Not run - no colon", "#not-run"]
)
def test_a_malformed_not_run_mark_is_seen(first_line: str) -> None:
    [block] = fenced_blocks(f"```python\n{first_line}\nx = 1\n```\n")
    assert block.looks_marked
    assert block.not_run_reason is None  # so it would run, and the check below fails the page


def test_every_block_that_says_not_run_gives_its_reason_in_the_one_form() -> None:
    malformed = [
        f"{path.relative_to(ROOT)}:{block.line}: {block.source.partition(chr(10))[0]!r}"
        for path in documents()
        for block in python_blocks(path)
        if block.looks_marked and block.not_run_reason is None
    ]
    assert malformed == [], "write the first line as '# Not run: <reason>'"


def test_the_examples_not_run_are_few_and_each_says_why() -> None:
    not_run = {
        f"{path.relative_to(ROOT)}:{block.line}": block.not_run_reason
        for path in documents()
        for block in python_blocks(path)
        if block.not_run_reason is not None
    }
    run = sum(len(runnable_blocks(path)) for path in documents())
    assert all(not_run.values())
    assert len(not_run) * 5 < run, f"{len(not_run)} blocks are not run, {run} are: {not_run}"
