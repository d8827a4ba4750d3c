"""granite-storage measured against baselines in the same run: ``make bench``.

    BENCH_SIZE=quick|full python benchmarks/run.py [--scenarios 1,3,6] [--repetitions N] [--profile]

Each scenario pairs a granite-storage measurement with a baseline doing the same work. Every
measurement runs in a fresh interpreter (``benchmarks/measure.py``), the two sides alternate (ABBA...)
after one discarded warm-up each, and the file system is synced before each one, so neither side
inherits the other's dirty pages, imports or peak memory. Figures are ratios of granite-storage to
its baseline, paired per repetition: the median and the spread (min-max) of the pairs. Absolute MB/s
and milliseconds are printed beside them, never asserted.

Writes ``benchmarks/results/latest.json`` (git-ignored). Data files go to
``benchmarks/results/tmp/run-<pid>/`` (the repository's disk) and are deleted when the run ends.
When a ratio target is missed, the granite-storage side is profiled once with cProfile and the report
saved beside the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import marshal
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class Size:
    """A ``BENCH_SIZE``: how much data each transfer moves and how often each side is measured."""

    name: str
    data_bytes: int
    repetitions: int
    import_repetitions: int


SIZES = {
    "quick": Size("quick", 256 * MIB, repetitions=9, import_repetitions=9),
    "full": Size("full", GIB, repetitions=9, import_repetitions=9),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One comparison. Numbers follow issue 7's list of scenarios.

    ``metric`` is ``"throughput"`` (MB/s, higher is better; target: ratio >= ``ratio_target``) or
    ``"time"`` (milliseconds, lower is better; target: ratio <= ``ratio_target``).
    """

    number: int
    title: str
    description: str
    candidate: str
    baseline: str
    baseline_title: str
    baseline_description: str
    metric: str
    ratio_target: float | None
    ratio_target_note: str = ""
    memory_target_kib: int | None = None
    prepare: str | None = None
    default: bool = True

    @property
    def transfers_data(self) -> bool:
        return self.metric == "throughput"


SCENARIOS = (
    Scenario(
        0,
        "noise floor (A/A)",
        "the put baseline against itself: the spread this machine gives two identical sides",
        candidate="put-baseline",
        baseline="put-baseline",
        baseline_title="copyfileobj + sha256",
        baseline_description="the same measurement as scenario 1's baseline",
        metric="throughput",
        ratio_target=None,
        default=False,
    ),
    Scenario(
        1,
        "local streaming put",
        "StorageManager.put_stream of a non-seekable stream of unknown length into a local backend",
        candidate="put-granite",
        baseline="put-baseline",
        baseline_title="copyfileobj + sha256",
        baseline_description="shutil.copyfileobj (1 MiB chunks) + sha256 into a file in the same directory",
        metric="throughput",
        ratio_target=0.9,
        memory_target_kib=16 * 1024,
    ),
    Scenario(
        3,
        "local streaming get",
        "StorageManager.open(ref) of the object, read to the end in 1 MiB chunks",
        candidate="get-granite",
        baseline="get-baseline",
        baseline_title="raw file read",
        baseline_description="open(path, 'rb') of the same file, read to the end in 1 MiB chunks",
        metric="throughput",
        ratio_target=0.9,
        prepare="prepare-object",
    ),
    Scenario(
        6,
        "import + from_config",
        "import granite_storage + StorageManager.from_config with entry-point plugin discovery",
        candidate="import-granite",
        baseline="import-sqlalchemy",
        baseline_title="import sqlalchemy",
        baseline_description="import sqlalchemy, in a fresh interpreter as well",
        metric="time",
        ratio_target=1.0,
        ratio_target_note="issue 7 names no number; our bar: no dearer than importing SQLAlchemy",
    ),
    Scenario(
        9,
        "event-loop stall during an upload",
        "worst lag of a 1 ms ticker coroutine while the FastAPI integration's store_upload streams the "
        "data into a local backend",
        candidate="upload-stall-granite",
        baseline="idle-stall-baseline",
        baseline_title="idle event loop",
        baseline_description="worst lag of the same ticker on an idle event loop for 1 s",
        metric="time",
        ratio_target=None,
    ),
)


# -- measuring ------------------------------------------------------------------------------------------


def measure(name: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return what it printed.

    Bytecode is cached as in any installation (``PYTHONDONTWRITEBYTECODE`` would make every import
    compile its source again), in a private tree under ``workdir`` rather than beside the sources.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "measure.py"), name, marshal.dumps(params).hex()],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {name!r} failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def synced_measure(name: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    os.sync()  # earlier measurements' dirty pages are written back before the clock starts
    return measure(name, params, workdir)


def value(scenario: Scenario, sample: dict[str, Any]) -> float:
    """The sample's figure: MB/s (10^6 bytes per second) or milliseconds."""
    if scenario.transfers_data:
        return float(sample["bytes"]) / float(sample["seconds"]) / 1e6
    return float(sample["seconds"]) * 1000


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_scenario(scenario: Scenario, size: Size, workdir: Path, repetitions: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"root": str(workdir / f"scenario-{scenario.number}"), "size": size.data_bytes}
    if scenario.prepare:
        params.update(measure(scenario.prepare, params, workdir))
    count = repetitions or (size.repetitions if scenario.transfers_data else size.import_repetitions)
    sides = {"candidate": scenario.candidate, "baseline": scenario.baseline}
    outputs: list[str] = []  # what the previous put stored: the next measurement deletes it first

    def run(name: str) -> dict[str, Any]:
        sample = synced_measure(name, {**params, "remove_before": outputs[:]}, workdir)
        outputs[:] = [sample["output"]] if "output" in sample else []
        return sample

    for name in sides.values():
        run(name)  # warm-up, discarded: compiles bytecode; first-touch effects land on neither side
    samples: dict[str, list[dict[str, Any]]] = {"candidate": [], "baseline": []}
    for repetition in range(count):
        order = list(sides.items())
        if repetition % 2:
            order.reverse()
        for side, name in order:
            samples[side].append(run(name))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for path in outputs:
        os.unlink(path)
    check_same_work(scenario, size, samples)

    figures = {side: [value(scenario, sample) for sample in samples[side]] for side in sides}
    ratios = [c / b for c, b in zip(figures["candidate"], figures["baseline"], strict=True)]
    user = {side: [float(sample["cpu_seconds"]["user"]) for sample in samples[side]] for side in sides}
    # Only where the baseline did measurable user-space work (a read is almost all kernel time).
    user_ratios = [c / b for c, b in zip(user["candidate"], user["baseline"], strict=True) if b >= 0.05]
    memory = {
        side: max(sample["memory_growth_kib"]["resident"] for sample in samples[side]) for side in sides
    }
    maxrss = {side: max(sample["memory_growth_kib"]["maxrss"] for sample in samples[side]) for side in sides}
    ratio = spread(ratios)
    best = max if scenario.transfers_data else min
    best_ratio = best(figures["candidate"]) / best(figures["baseline"])
    targets = [] if scenario.ratio_target is None else [ratio_target(scenario, scenario.ratio_target, ratio)]
    if scenario.memory_target_kib is not None:
        targets.append(
            {
                "check": f"peak RSS growth <= {scenario.memory_target_kib / 1024:g} MiB",
                "value": f"{memory['candidate'] / 1024:.1f} MiB",
                "met": memory["candidate"] <= scenario.memory_target_kib,
                "note": "worst of all repetitions; VmHWM after minus VmRSS before",
            }
        )
    return {
        "number": scenario.number,
        "title": scenario.title,
        "description": scenario.description,
        "baseline_title": scenario.baseline_title,
        "baseline_description": scenario.baseline_description,
        "metric": scenario.metric,
        "unit": "MB/s" if scenario.transfers_data else "ms",
        "data_bytes": size.data_bytes if scenario.transfers_data else None,
        "repetitions": count,
        "candidate": {"measurement": scenario.candidate, **spread(figures["candidate"])},
        "baseline": {"measurement": scenario.baseline, **spread(figures["baseline"])},
        "ratio": {**ratio, "pairs": ratios},
        # Best repetition of each side against each other (highest MB/s, lowest ms): where noise
        # only ever slows a run down, the best runs are the cleanest comparison. A diagnosis.
        "best_ratio": best_ratio,
        # User-space CPU seconds of the timed operation, granite-storage / baseline (lower is
        # cheaper): the library's own cost (Python code, hashing), without the kernel's page-cache
        # work, which varies from run to run on a VM. A diagnosis, not a target.
        "user_cpu_ratio": {**spread(user_ratios), "pairs": user_ratios} if user_ratios else None,
        "peak_rss_growth_kib": {"resident": memory, "maxrss": maxrss},
        "targets": targets,
        "samples": samples,
    }


def ratio_target(scenario: Scenario, bound: float, ratio: dict[str, float]) -> dict[str, Any]:
    median = ratio["median"]
    if scenario.metric == "throughput":
        check, met = f"throughput >= {bound:.2f}x baseline", median >= bound
    else:
        check, met = f"time <= {bound:.2f}x baseline", median <= bound
    return {"check": check, "value": f"{median:.2f}x", "met": met, "note": scenario.ratio_target_note}


def check_same_work(scenario: Scenario, size: Size, samples: dict[str, list[dict[str, Any]]]) -> None:
    """Both sides moved the same bytes (and, for puts, stored the same content)."""
    everything = samples["candidate"] + samples["baseline"]
    if scenario.transfers_data and {s["bytes"] for s in everything} != {size.data_bytes}:
        raise RuntimeError(f"scenario {scenario.number}: the sides moved different amounts of data")
    checksums = {s.get("checksum") for s in everything}
    if len(checksums) != 1:
        raise RuntimeError(f"scenario {scenario.number}: the sides stored different content: {checksums}")


def profile(scenario: Scenario, size: Size, workdir: Path) -> Path:
    """Run the granite-storage side once under cProfile; return the report's path."""
    report = RESULTS_DIR / f"profile-{scenario.number}-{scenario.candidate}.txt"
    params: dict[str, Any] = {"root": str(workdir / f"profile-{scenario.number}"), "size": size.data_bytes}
    if scenario.prepare:
        params.update(measure(scenario.prepare, params, workdir))
    measure(scenario.candidate, {**params, "profile": str(report)}, workdir)
    return report


# -- reporting ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    name, _, rest = line.partition(":")
                    if name.strip() == key:
                        return rest.strip()
        except OSError:
            pass
        return None

    memory = first("/proc/meminfo", "MemTotal")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(memory.split()[0]) / 1024**2, 1) if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "file_system": file_system(RESULTS_DIR),
        "granite_storage": _version("granite-storage"),
        "granite_storage_local": _version("granite-storage-local"),
        "sqlalchemy": _version("sqlalchemy"),
    }


def file_system(path: Path) -> str | None:
    """``"ext4 on /dev/vda"``: the mount that holds ``path``, from /proc/mounts."""
    best: tuple[int, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount_point, kind, *_ = line.split()
                inside = path == Path(mount_point) or Path(mount_point) in path.parents
                if inside and (best is None or len(mount_point) > best[0]):
                    best = (len(mount_point), f"{kind} on {device}")
    except OSError:
        return None
    return best[1] if best else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def render(report: dict[str, Any]) -> str:
    size = report["size"]
    info = report["machine"]
    lines = [
        f"granite-storage {info['granite_storage']} benchmarks, BENCH_SIZE={size['name']} "
        f"({size['data_bytes'] / MIB:g} MiB per transfer), {report['started']}",
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB RAM, Python {info['python']}, "
        f"{info['file_system']}, {info['platform']}",
        "ratio: granite-storage / baseline throughput (time for 6, stall for 9) per repetition pair, "
        "median [min-max]; the targets use it.",
        "best/best: best repetition against best repetition. user CPU: granite-storage / baseline "
        "user-space CPU seconds, median (lower is cheaper). Peak RSS growth: worst repetition.",
        "",
    ]
    header = [
        "#",
        "scenario",
        "baseline",
        "ratio",
        "granite-storage",
        "baseline",
        "best/best",
        "user CPU",
        "peak RSS growth g / b",
    ]
    rows = [header]
    for s in report["scenarios"]:
        unit = s["unit"]
        memory = s["peak_rss_growth_kib"]["resident"]
        rows.append(
            [
                str(s["number"]),
                s["title"],
                s["baseline_title"],
                f"{s['ratio']['median']:.2f}x [{s['ratio']['min']:.2f}-{s['ratio']['max']:.2f}]",
                _figure(s["candidate"], unit),
                _figure(s["baseline"], unit),
                f"{s['best_ratio']:.2f}x",
                f"{s['user_cpu_ratio']['median']:.2f}x" if s["user_cpu_ratio"] else "-",
                f"{memory['candidate'] / 1024:.1f} / {memory['baseline'] / 1024:.1f} MiB",
            ]
        )
    lines += _markdown_table(rows)
    lines += ["", "Targets (issue 7):", ""]
    target_rows = [["#", "target", "measured", "met", "note"]]
    for s in report["scenarios"]:
        for target in s["targets"]:
            met = "yes" if target["met"] else "NO"
            target_rows.append([str(s["number"]), target["check"], target["value"], met, target["note"]])
    lines += _markdown_table(target_rows)
    if report["profiles"]:
        lines += ["", "Profiles of the granite-storage side (--profile, or a missed ratio target):"]
        lines += [f"  {path}" for path in report["profiles"]]
    return "\n".join(lines)


def _figure(side: dict[str, float], unit: str) -> str:
    decimals = 0 if unit == "MB/s" else 1
    return f"{side['median']:,.{decimals}f} {unit} [{side['min']:,.{decimals}f}-{side['max']:,.{decimals}f}]"


def _markdown_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines


# -- main -------------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(str(s.number) for s in SCENARIOS if s.default),
        help="comma-separated scenario numbers (default: 1,3,6; 0 is the A/A noise floor)",
    )
    parser.add_argument("--repetitions", type=int, help="repetitions per side (default: by BENCH_SIZE)")
    parser.add_argument(
        "--profile", action="store_true", help="profile the granite-storage side of every scenario run"
    )
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    size_name = os.environ.get("BENCH_SIZE", "quick")
    if size_name not in SIZES:
        print(f"BENCH_SIZE must be one of {sorted(SIZES)}, not {size_name!r}", file=sys.stderr)
        return 2
    if not Path("/proc/self/status").exists():
        print("the benchmarks read memory figures from /proc/self/status: Linux only", file=sys.stderr)
        return 2
    size = SIZES[size_name]
    wanted = {int(number) for number in arguments.scenarios.split(",")}
    scenarios = [scenario for scenario in SCENARIOS if scenario.number in wanted]

    started = datetime.datetime.now(datetime.UTC)
    workdir = RESULTS_DIR / "tmp" / f"run-{os.getpid()}"
    workdir.mkdir(parents=True)
    for stale in RESULTS_DIR.glob("profile-*.txt"):
        stale.unlink()
    results, profiles = [], []
    try:
        for scenario in scenarios:
            print(f"scenario {scenario.number}: {scenario.title}", file=sys.stderr)
            result = run_scenario(scenario, size, workdir, arguments.repetitions)
            results.append(result)
            missed = scenario.ratio_target is not None and not result["targets"][0]["met"]
            if arguments.profile or missed:
                profiles.append(str(profile(scenario, size, workdir).relative_to(BENCH_DIR.parent)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not any((RESULTS_DIR / "tmp").iterdir()):
            (RESULTS_DIR / "tmp").rmdir()

    report = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "size": {"name": size.name, "data_bytes": size.data_bytes},
        "machine": machine(),
        "scenarios": results,
        "profiles": profiles,
    }
    table = render(report)
    report["table"] = table
    output = RESULTS_DIR / "latest.json"
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"\nwrote {output.relative_to(BENCH_DIR.parent)} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
