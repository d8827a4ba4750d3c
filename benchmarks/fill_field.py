"""Scenario 8: one slot field filled with small files, the last stores against the first (no slowdown).

``objects`` files of 4 KiB go through :meth:`StorageManager.put_bytes` into one slot field (one model,
one field) of a local backend, with the default key layout. The rate of the last ``window`` stores,
with ``objects - window`` already in the field, is compared with the rate of the first ``window``,
into an empty field: a layout whose directories grew without bound would make the last ones slower.

* ``fill-prepare`` (untimed, once per row) stores ``objects - window`` files into ``<root>/full``.
* ``fill-last`` (the candidate) stores ``window`` more there, timed; it reports the entry count of
  the largest directory under the root with the field full, then deletes the files it stored, so that
  every repetition starts from the same ``objects - window``.
* ``fill-first`` (the baseline) stores ``window`` files into ``<root>/empty``, a fresh root each time.

Both sides store the same contents, so they report the same count, bytes and checksum.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import Clock

if TYPE_CHECKING:
    from measure import Result

    from granite_storage import StorageManager

FILE_SIZE = 4096
SEED = 20_261_203


def manager(root: Path) -> StorageManager:
    from granite_storage import StorageManager

    return StorageManager.from_config(
        {
            "backends": {"disk": {"type": "local", "root": str(root)}},
            "policies": {"documents": {"backend": "disk", "key_prefix": "documents"}},
        }
    )


def contents(count: int, seed: int = SEED) -> list[bytes]:
    data = random.Random(seed).randbytes(count * FILE_SIZE)
    return [data[i * FILE_SIZE : (i + 1) * FILE_SIZE] for i in range(count)]


def store(target: StorageManager, files: list[bytes]) -> list[Any]:
    put = target.put_bytes
    return [
        put(
            storage_key="documents",
            model_name="document",
            field_name="file",
            content=data,
            original_filename="f.bin",
        )
        for data in files
    ]


def largest_directory(root: Path) -> int:
    """The entry count of the largest directory under ``root``."""
    return max(len(subdirectories) + len(names) for _, subdirectories, names in os.walk(root))


def prepare(params: dict[str, Any]) -> Result:
    """Store ``objects - window`` files into the field the candidate fills up (not a measurement)."""
    root = Path(params["root"], "full")
    root.mkdir(parents=True)
    target = manager(root)
    remaining = params["objects"] - params["window"]
    batch = 10_000
    for start in range(0, remaining, batch):
        store(target, contents(min(batch, remaining - start), seed=start))
    return {}


def measure_window(params: dict[str, Any], *, full: bool) -> Result:
    window = params["window"]
    files = contents(window)
    root = Path(params["root"], "full" if full else "empty")
    if not full:
        shutil.rmtree(root, ignore_errors=True)
    target = manager(root)
    os.sync()
    with Clock(params) as clock:
        refs = store(target, files)
    digest = hashlib.sha256(b"".join(files)).hexdigest()
    extra: dict[str, Any] = {"count": window, "checksum": digest}
    if full:
        extra["largest_directory_entries"] = largest_directory(root)
        extra["objects_in_field"] = params["objects"]
        for ref in refs:  # back to objects - window for the next repetition
            target.delete(ref)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return clock.result(window * FILE_SIZE, **extra)


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "fill-prepare": prepare,
    "fill-last": lambda params: measure_window(params, full=True),
    "fill-first": lambda params: measure_window(params, full=False),
}
