"""The pluggy markers: one name for the project, the hook markers and the entry-point group."""

from __future__ import annotations

import pluggy

#: The pluggy project name and the entry-point group plugins register under.
PROJECT_NAME = "granite_storage"

#: Marks the hook specifications in :mod:`granite_storage.hookspecs` (private to the core).
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementations: decorate functions named after the hooks in
#: :mod:`granite_storage.hookspecs` with ``@hookimpl`` (options: ``tryfirst``, ``trylast``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
