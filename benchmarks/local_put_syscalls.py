"""Count the system calls of the local backend's put path, per stored object.

Run under ``strace -f -c``, once with ``--count 0`` (the interpreter's start-up and the backend's
construction) and once with ``--count 1000``, each into a root that does not exist yet; the
difference divided by 1,000 is the cost of one put::

    strace -f -c -o /tmp/zero.txt python benchmarks/local_put_syscalls.py /tmp/root existing --count 0
    strace -f -c -o /tmp/many.txt python benchmarks/local_put_syscalls.py /tmp/root existing --count 1000

``existing`` stores every object into one directory that already exists (a flat layout);
``new`` stores each into two directories of its own below existing ones, as a per-row key layout
(``docs/model/<id>/field/<token>``) does. ``--walk`` resolves paths one directory at a time, as on
systems without ``openat2``. It prints the time and the CPU time per put (measure them without
strace). The figures are in the local backend's guide.
"""

from __future__ import annotations

import argparse
import io
import time

from granite_storage_local import LocalStorageBackend, _paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a directory that does not exist yet")
    parser.add_argument("layout", choices=["existing", "new"])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--walk", action="store_true", help="resolve paths without openat2")
    args = parser.parse_args()
    if args.walk:
        _paths.openat2 = None
    backend = LocalStorageBackend(args.root, fsync=args.fsync)
    backend.put("docs/model/first/field/first.bin", io.BytesIO(b"makes the directories"))
    content = b"x" * 4096
    started, cpu = time.perf_counter(), time.process_time()
    for number in range(args.count):
        token = f"{number:032x}"  # not random: the script's own calls stay out of the count
        if args.layout == "existing":
            key = f"docs/model/first/field/{token}.bin"
        else:
            key = f"docs/model/{number}/field/{token}.bin"
        backend.put(key, io.BytesIO(content))
    if args.count:
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        per_put = f"{elapsed / args.count * 1e6:.1f} µs per put"
        print(f"{per_put}, {cpu / args.count * 1e6:.1f} µs of CPU (user + system)")


if __name__ == "__main__":
    main()
