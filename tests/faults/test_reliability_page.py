"""The Reliability page states the numbers of trials the scenarios actually run."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import (
    test_commit_outcome,
    test_connection_resets,
    test_gc_during_uploads,
    test_local_write_killed,
    test_s3_server_killed,
)

PAGE = Path(__file__).resolve().parents[2] / "docs_source" / "guide" / "reliability.md"


def trials_column(row_start: str) -> str:
    """The second cell of the table row of the page that begins with ``row_start``."""
    rows = [
        line for line in PAGE.read_text(encoding="utf-8").splitlines() if line.startswith(f"| {row_start}")
    ]
    assert len(rows) == 1, f"no single row for {row_start!r}"
    return rows[0].split("|")[2].strip()


@pytest.mark.parametrize(
    ("row_start", "trials"),
    [
        ("SeaweedFS killed", f"{test_s3_server_killed.TRIALS}"),
        ("Connection reset in the middle of an S3 upload", f"{test_connection_resets.TRIALS}"),
        ("Connection reset in the middle of an S3 download", f"{test_connection_resets.TRIALS}"),
        ("Connection reset in the middle of an HTTP upload", f"{test_connection_resets.TRIALS}"),
        ("Connection reset in the middle of an HTTP download", f"{test_connection_resets.TRIALS}"),
        ("COMMIT forwarded", f"{test_commit_outcome.TRIALS} on each"),
        ("A process storing", f"{test_local_write_killed.TRIALS}"),
        ("Garbage collection", f"1 run of {test_gc_during_uploads.IN_FLIGHT} uploads"),
    ],
)
def test_the_reliability_page_states_each_scenarios_number_of_trials(row_start: str, trials: str) -> None:
    assert trials_column(row_start) == trials
