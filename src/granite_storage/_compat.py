"""Names granite-storage 0.1.0 had and 0.2.0 does not: an import of one fails saying what replaces it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NoReturn

#: What replaces 0.1.0's backend protocol (``granite_storage.contracts.StorageBackend``).
BACKEND_PROTOCOL_REPLACEMENT = (
    "subclass granite_storage.StorageBackend and implement put, open, stat, delete and list, which "
    "take keys, not references (the manager keeps size limits, checksums and references for every "
    "backend); see 'Backends' in the plugin author's guide"
)


def removed_names(module: str, replacements: Mapping[str, str]) -> Callable[[str], NoReturn]:
    """A module ``__getattr__`` for ``module`` that refuses each 0.1.0 name in ``replacements``.

    ``from module import name`` (and ``module.name``) raises :class:`ImportError` whose message says
    what replaces ``name`` (an :class:`AttributeError` would lose the message: ``from ... import``
    replaces it with its own). Any other missing name raises the usual :class:`AttributeError`.
    Define the hook only when not type checking, so that type checkers report such imports too.
    """

    def __getattr__(name: str) -> NoReturn:  # noqa: N807 - the module hook's name
        replacement = replacements.get(name)
        if replacement is not None:
            raise ImportError(
                f"{module}.{name} (granite-storage 0.1.0) was removed in 0.2.0: {replacement}", name=module
            )
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
