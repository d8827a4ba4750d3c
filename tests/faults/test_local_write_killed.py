"""SIGKILL of a process in the middle of a local write: 100 trials.

Each trial starts a fresh Python process that stores 4 MiB objects through a
:class:`~granite_storage.StorageManager` on the local backend, one after another, printing each
reference once ``put_stream`` has returned; the test kills it with ``SIGKILL`` at a random moment
(nothing of the library runs after that: no ``except``, no ``finally``). Then the invariant:

* no object is visible at a final key unless it is complete: every object the backend lists has the
  bytes the process was storing, and every reference it printed reads back and verifies;
* no incomplete upload survives its cleanup: the temporary files of killed writes are invisible to
  ``list``, and ``remove_incomplete_uploads`` removes every one of them, and nothing else.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from granite_storage import PluginHost, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_local import LocalStorageBackend

from ..conftest import files_under
from .invariant import assert_only_complete_objects, digest, local_temp_files

TRIALS = 100
SIZE = 4 * 1024 * 1024
#: The writer stores objects back to back; it is killed this long (uniformly drawn) after it is ready.
KILL_WITHIN_SECONDS = 0.3

WRITER = textwrap.dedent(
    """
    import io, json, random, sys
    from granite_storage import PluginHost, StorageManager, StoragePolicy
    from granite_storage_local import LocalStorageBackend

    root, size = sys.argv[1], int(sys.argv[2])
    content = random.Random(16).randbytes(size)
    manager = StorageManager(
        backends={"local": LocalStorageBackend(root, chunk_size=64 * 1024)},
        policies={"files": StoragePolicy("files", backend_key="local")},
        plugins=PluginHost(strict=False, disabled=()),
    )
    print("ready", flush=True)
    for number in range(1_000_000):
        ref = manager.put_stream(
            storage_key="files", model_name="doc", entity_id=str(number), field_name="file",
            stream=io.BytesIO(content), original_filename="big.bin",
        )
        print(json.dumps(ref.to_dict()), flush=True)
    """
)


def manager_over(root: Path) -> StorageManager:
    return StorageManager(
        backends={"local": LocalStorageBackend(root)},
        policies={"files": StoragePolicy("files", backend_key="local")},
        plugins=PluginHost(strict=False, disabled=()),
    )


@pytest.mark.faults
def test_a_write_killed_at_any_moment_leaves_no_partial_object_and_its_temp_file_is_collected(
    tmp_path: Path,
) -> None:
    content_digest = digest(random.Random(16).randbytes(SIZE))
    chance = random.Random(1600)
    caught_mid_write = 0
    for trial in range(TRIALS):
        root = tmp_path / f"trial-{trial}"
        root.mkdir()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(SIZE)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        with writer.stdout:
            assert writer.stdout.readline() == "ready\n"
            time.sleep(chance.uniform(0, KILL_WITHIN_SECONDS))
            writer.send_signal(signal.SIGKILL)
            printed = writer.stdout.read().splitlines()
        assert writer.wait() == -signal.SIGKILL

        manager = manager_over(root)
        backend = manager.backend("local")
        listed = assert_only_complete_objects(backend, {content_digest})
        refs = [StoredObjectRef.from_dict(json.loads(line)) for line in printed if line.endswith("}")]
        assert all(manager.verify(ref) for ref in refs), "a reference the writer returned does not verify"
        assert listed >= len(refs)

        temp_files = local_temp_files(root)
        caught_mid_write += bool(temp_files)
        assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == len(temp_files)
        assert local_temp_files(root) == []
        assert len(files_under(root)) == listed, "the cleanup removed an object, or missed a file"
    print(f"local write killed: {TRIALS} trials, {caught_mid_write} killed mid-write, 0 partial objects")
    # The trials are only worth their number if most kills land in the middle of a write.
    assert caught_mid_write >= TRIALS // 2, f"only {caught_mid_write} of {TRIALS} kills hit a write"
