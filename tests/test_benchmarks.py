"""``make bench`` keeps working: every scenario runs end to end at the smallest size.

The run measures nothing worth reading (``BENCH_SIZE=smoke``: a few MiB, a few files, one repetition);
it shows that each scenario's two sides run, do the same work, and land in the report. Scenario 4
needs the peer libraries of the ``bench`` dependency group, which the test environment does not
install: its rows must then be reported as skipped, with the reason. Rows that need the S3 server
follow the S3 tests' rule: skipped where SeaweedFS is missing, unless ``GRANITE_TEST_REQUIRE_S3`` is
set (CI), and then they must have run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench") / "report.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--output", str(output)],
        env={**os.environ, "BENCH_SIZE": "smoke"},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    result: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return result


def _required(need: str) -> bool:
    """Whether CI demands the server, read as the server's own tests read their variable."""
    if need == "s3":  # plugins/granite_storage_s3/tests/conftest.py: skip_or_fail
        return os.environ.get("GRANITE_TEST_REQUIRE_S3", "").strip().lower() in {"1", "true", "yes", "on"}
    return os.environ.get("GRANITE_TEST_REQUIRE_DATABASES") == "1"  # tests/orm/conftest.py: unreachable


def test_every_default_scenario_is_in_the_report(report: dict[str, Any]) -> None:
    assert {row["number"] for row in report["scenarios"]} == {1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_each_row_that_ran_has_a_ratio_per_repetition_and_its_targets(report: dict[str, Any]) -> None:
    ran = [row for row in report["scenarios"] if "skipped" not in row]
    assert ran
    for row in ran:
        assert len(row["ratio"]["pairs"]) == row["repetitions"]
        assert row["ratio"]["min"] <= row["ratio"]["median"] <= row["ratio"]["max"]
        assert all(sample["seconds"] > 0 for sample in row["samples"]["candidate"])
        assert all(target["check"] and isinstance(target["met"], bool) for target in row["targets"])


def test_rows_are_skipped_only_for_a_missing_server_or_peer_library(report: dict[str, Any]) -> None:
    for row in report["scenarios"]:
        reason = row.get("skipped")
        if reason is None:
            continue
        assert "not installed" in reason or "no S3 server" in reason or "not reachable" in reason, reason
        if "no S3 server" in reason:
            assert not _required("s3"), f"{row['title']}: {reason}"
        if "PostgreSQL" in reason:
            assert not _required("postgresql"), f"{row['title']}: {reason}"


def test_the_table_shows_every_row(report: dict[str, Any]) -> None:
    for row in report["scenarios"]:
        assert row["title"] in report["table"]
