"""The exception hierarchy, and the tree that the errors module's docstring draws of it."""

from __future__ import annotations

import builtins
import re

import pytest

import granite_storage
from granite_storage import errors
from granite_storage.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ContentTooLargeError,
    ContentTypeNotAllowedError,
    IncompleteUploadError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidReferenceError,
    ObjectNotFoundError,
    PluginError,
    StorageError,
    StoragePermissionError,
)

ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize(
    ("error", "parents"),
    [
        (ConfigurationError, [StorageError]),
        (PluginError, [ConfigurationError, StorageError]),
        (ContentTooLargeError, [StorageError]),
        (InvalidKeyError, [StorageError, ValueError]),
        (InvalidReferenceError, [StorageError, ValueError]),
        (InvalidMetadataError, [StorageError, ValueError]),
        (ContentTypeNotAllowedError, [StorageError, ValueError]),
        (ObjectNotFoundError, [StorageError, FileNotFoundError, OSError]),
        (StoragePermissionError, [StorageError, PermissionError, OSError]),
        (BackendUnavailableError, [StorageError, ConnectionError, OSError]),
        (IncompleteUploadError, [StorageError]),
    ],
)
def test_hierarchy(error: type[Exception], parents: list[type[Exception]]) -> None:
    for parent in parents:
        assert issubclass(error, parent), f"{error.__name__} is not a {parent.__name__}"


def test_storage_error_is_the_root_and_an_exception() -> None:
    assert StorageError.__bases__ == (Exception,)
    for error in ERROR_CLASSES:
        assert issubclass(error, StorageError)


def test_content_too_large_is_not_a_configuration_or_value_error() -> None:
    assert not issubclass(ContentTooLargeError, ConfigurationError)
    assert not issubclass(ContentTooLargeError, ValueError)


def test_every_error_class_is_exported_at_top_level() -> None:
    for error in ERROR_CLASSES:
        assert getattr(granite_storage, error.__name__) is error
        assert error.__name__ in granite_storage.__all__


def test_content_too_large_error_carries_the_limit() -> None:
    error = ContentTooLargeError(2048)
    assert error.max_size == 2048
    assert "2048" in str(error)
    assert str(ContentTooLargeError(2048, "too big for an avatar")) == "too big for an avatar"


def test_content_type_not_allowed_error_carries_the_types_and_says_why() -> None:
    refused = ContentTypeNotAllowedError("text/html", allowed_types=("image/jpeg", "image/png"))
    assert (refused.content_type, refused.allowed_types, refused.declared) == (
        "text/html",
        ("image/jpeg", "image/png"),
        None,
    )
    assert str(refused) == "content of type text/html is not accepted here; accepted: image/jpeg, image/png"
    mismatch = ContentTypeNotAllowedError("image/png", allowed_types=("image/*",), declared="image/gif")
    assert mismatch.declared == "image/gif"
    assert str(mismatch) == "the content is image/png, not the image/gif it was declared as"


def test_object_not_found_error_carries_the_key() -> None:
    error = ObjectNotFoundError("docs/a/b/c/d.pdf")
    assert error.key == "docs/a/b/c/d.pdf"
    assert "docs/a/b/c/d.pdf" in str(error)


def test_object_not_found_is_caught_by_except_file_not_found_error() -> None:
    with pytest.raises(FileNotFoundError):
        raise ObjectNotFoundError("docs/a")


def test_invalid_key_error_carries_the_key_and_the_reason() -> None:
    error = InvalidKeyError("../x", "keys are relative")
    assert error.key == "../x"
    assert "'../x'" in str(error)
    assert "keys are relative" in str(error)


# -- the tree in the module docstring ---------------------------------------------------------------

_TREE_LINE = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)(?: \((?P<builtin>\w+)\))?")


def drawn_tree() -> dict[str, tuple[str, str | None]]:
    """Each class drawn in the errors docstring: its drawn parent and the builtin named beside it."""
    doc = errors.__doc__ or ""
    lines = doc.splitlines()
    root_line = next(line for line in lines if line.strip() == "StorageError")
    base = len(root_line) - len(root_line.lstrip())
    tree: dict[str, tuple[str, str | None]] = {}
    stack = ["StorageError"]
    for line in lines:
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = (len(match["indent"]) - base) // 4 + 1
        del stack[depth:]
        tree[match["name"]] = (stack[depth - 1], match["builtin"])
        stack.append(match["name"])
    return tree


def test_the_docstring_draws_every_error_class() -> None:
    assert set(drawn_tree()) | {"StorageError"} == set(errors.__all__)


DRAWN_CLASSES = [cls for cls in ERROR_CLASSES if cls is not StorageError]


@pytest.mark.parametrize("error", DRAWN_CLASSES, ids=lambda cls: cls.__name__)
def test_the_drawn_tree_matches_the_classes(error: type[Exception]) -> None:
    parent, builtin = drawn_tree()[error.__name__]
    assert error.__bases__[0] is getattr(errors, parent), f"{error.__name__} is drawn under {parent}"
    builtin_bases = [base.__name__ for base in error.__bases__[1:]]
    assert builtin_bases == ([builtin] if builtin else []), f"{error.__name__} is drawn with ({builtin})"
    if builtin is not None:
        assert getattr(builtins, builtin) in error.__bases__
