"""The ``granite-storage`` command: installed backend plugins, garbage collection, migration.

``granite-storage plugins`` lists the installed backend types; ``granite-storage gc`` collects a
slot's orphaned objects (a dry run unless ``--delete``); ``granite-storage migrate`` moves the objects
a slot's rows reference into its current location (a dry run unless ``--apply``). Run each with
``--help`` for its options. The command needs click, which the ``cli`` extra installs
(``pip install "granite-storage[cli]"``).

Exit status: 0 when the run succeeded, 1 when some objects could not be deleted or moved (or, for
``plugins``, a plugin failed to load), 2 for a usage or configuration error (nothing was deleted
or moved), 3 when the run stopped on a database or storage error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["EXIT_FAILURES", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "main"]

#: The run succeeded.
EXIT_OK = 0
#: The run finished, but some objects could not be deleted or moved (or some plugin failed to load).
EXIT_FAILURES = 1
#: A usage or configuration error (a bad option, an unreadable config, an unknown model or slot).
EXIT_USAGE = 2
#: The run stopped on a database or storage error.
EXIT_STOPPED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``granite-storage`` command with ``argv`` (default: ``sys.argv[1:]``); return its status.

    The console script calls it and exits with the status it returns.
    """
    try:
        from granite_storage.cli._commands import run
    except ImportError as exc:
        if getattr(exc, "name", None) != "click":
            raise
        print(
            'granite-storage: the command line needs click: pip install "granite-storage[cli]"',
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run(list(sys.argv[1:] if argv is None else argv))
