"""Measure the local backend's put rate as one slot field fills, for a choice of key layouts.

Stores ``--count`` objects of 4 KiB through :meth:`LocalStorageBackend.put` into a fresh root, with keys
``docs/model/field/<first D hex digits of the token>/<token>`` (``--digits D``; 0 is one flat
directory) or, with ``--digits entity``, ``docs/model/<n>/field/<token>`` (a directory per row, as the
``"entity"`` layout makes). Prints files/s for each window of ``--window`` objects, the ratio of the
last window's rate to the first's, the directories created and the entry count of the largest
directory, as JSON. The figures chose the default layout's fan-out (the local backend's guide)::

    python benchmarks/local_fanout.py /tmp/fanout-root --digits 2 --count 100000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import time
from pathlib import Path

from granite_storage_local import LocalStorageBackend


def largest_directory(root: Path) -> tuple[int, int]:
    """(directories under ``root``, entries in the largest one)."""
    directories, largest = 0, 0
    for _, subdirectories, names in os.walk(root):
        directories += len(subdirectories)
        largest = max(largest, len(subdirectories) + len(names))
    return directories, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a directory that does not exist yet (removed after)")
    parser.add_argument("--digits", default="2", help="fan-out hex digits (0-4), or 'entity'")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the root afterwards")
    args = parser.parse_args()
    backend = LocalStorageBackend(args.root)
    content = b"x" * 4096
    rates: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    window_started = started
    for number in range(args.count):
        token = secrets.token_hex(16)
        if args.digits == "entity":
            key = f"docs/model/{number}/field/{token}"
        elif args.digits == "0":
            key = f"docs/model/field/{token}"
        else:
            key = f"docs/model/field/{token[: int(args.digits)]}/{token}"
        backend.put(key, io.BytesIO(content))
        if (number + 1) % args.window == 0:
            now = time.perf_counter()
            rates.append(args.window / (now - window_started))
            window_started = now
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    directories, largest = largest_directory(args.root)
    print(
        json.dumps(
            {
                "digits": args.digits,
                "count": args.count,
                "files_per_s": round(args.count / elapsed),
                "cpu_us_per_put": round(cpu / args.count * 1e6, 1),
                "window_files_per_s": [round(rate) for rate in rates],
                "last_over_first": round(rates[-1] / rates[0], 3) if rates else None,
                "directories": directories,
                "largest_directory_entries": largest,
                "load": os.getloadavg()[0],
            }
        )
    )
    if not args.keep:
        shutil.rmtree(args.root)


if __name__ == "__main__":
    main()
