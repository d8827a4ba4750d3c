"""The core's own hook implementations, registered on every :class:`~granite_storage.PluginHost`.

They run last (``trylast``), so that any plugin answering a first-result hook wins.
"""

from __future__ import annotations

from granite_storage._markers import hookimpl
from granite_storage.keys import ObjectKeyRequest, entity_object_key, fanout_object_key

#: The name the built-in implementations are registered under.
BUILTIN_PLUGIN_NAME = "granite_storage.builtin"


@hookimpl(trylast=True)
def granite_storage_object_key(request: ObjectKeyRequest) -> str:
    """The key of the policy's ``key_layout``."""
    if request.policy.key_layout == "entity":
        return entity_object_key(request)
    return fanout_object_key(request)
