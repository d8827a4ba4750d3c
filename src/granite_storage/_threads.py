"""Blocking storage work awaited from async code: run in a worker thread, never lost to a cancellation.

Shared by the models' ``set_content_from_uploadfile`` and the FastAPI integration's upload helpers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from granite_storage.manager import StorageManager
from granite_storage.refs import StoredObjectRef

__all__ = ["put_in_thread", "run_in_thread"]

if TYPE_CHECKING:
    from anyio import CapacityLimiter

_T = TypeVar("_T")


async def run_in_thread(func: Callable[[], _T], *, limiter: CapacityLimiter | None = None) -> _T:
    """Run blocking ``func`` in a worker thread: AnyIO's (asyncio or trio), else asyncio's.

    ``limiter`` (AnyIO's only) bounds the threads it shares with other work; by default AnyIO's own.
    """
    try:
        from anyio import to_thread  # optional; present wherever FastAPI is
    except ImportError:
        return await asyncio.to_thread(func)
    # Not abandoned on cancellation: the caller learns of a stored object and can delete it.
    return await to_thread.run_sync(func, limiter=limiter)


async def put_in_thread(
    manager: StorageManager,
    put: Callable[[], StoredObjectRef],
    *,
    limiter: CapacityLimiter | None = None,
) -> StoredObjectRef:
    """Await ``put`` (a blocking store through ``manager``) run in a worker thread; return its reference.

    ``limiter`` is as for :func:`run_in_thread`.

    If the awaiting task is cancelled, the worker thread still runs to its end (a thread cannot be
    stopped), and the object it stores is deleted, whichever side learns last of the other: a cancelled
    upload leaves nothing behind. The cancellation is re-raised once the thread has ended.
    """
    lock = threading.Lock()
    stored: list[StoredObjectRef] = []
    abandoned = False

    def work() -> StoredObjectRef:
        ref = put()
        with lock:
            if not abandoned:
                stored.append(ref)
                return ref
        manager.delete(ref)
        return ref

    try:
        ref = await run_in_thread(work, limiter=limiter)
        # AnyIO holds a cancellation back until the thread has returned, then delivers it at the next
        # checkpoint: that must be here, where the object is still ours to delete, not in the caller.
        await _checkpoint_if_cancelled()
    except BaseException:
        with lock:
            abandoned = True
            leftovers = list(stored)
        if leftovers:
            await _delete_shielded(manager, leftovers)
        raise
    return ref


async def _delete_shielded(manager: StorageManager, refs: list[StoredObjectRef]) -> None:
    """Delete ``refs`` in a worker thread, shielded from the cancellation of the awaiting task.

    A backend call must not block the event loop, cancelled or not.
    """

    def delete() -> None:
        for ref in refs:
            manager.delete(ref)

    try:
        from anyio import CancelScope, to_thread
    except ImportError:
        await asyncio.shield(asyncio.to_thread(delete))  # if cancelled again, the thread goes on
        return
    with CancelScope(shield=True):
        await to_thread.run_sync(delete)


async def _checkpoint_if_cancelled() -> None:
    """Raise the cancellation pending on the current task, if any."""
    try:
        from anyio import lowlevel
    except ImportError:
        await asyncio.sleep(0)
        return
    await lowlevel.checkpoint_if_cancelled()
