"""The pluggy markers: one name for the project, the hook markers and the entry-point group."""

from __future__ import annotations

import pluggy

#: The pluggy project name and the entry-point group plugins register under.
PROJECT_NAME = "granite_storage"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
