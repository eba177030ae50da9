"""The benchmark harness still runs (at a tiny size); the numbers themselves live in docs/."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_install_benchmark_runs_and_writes_its_table_and_chart(tmp_path):
    missing = [tool for tool in ("curl", "tar", "zstd", "unzip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make test installs them)")
    result = run_benchmark("install.py", "--sizes", "1", "--runs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "benchmarks-install.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| 1 MiB")]
    assert [row.split("|")[2].strip() for row in rows] == ["tar.gz", "tar.zst", "zip"]
    for row in rows:
        assert row.count(" s |") == 3  # a time for every method
    assert (tmp_path / "benchmarks-install.png").read_bytes().startswith(b"\x89PNG")


def test_the_history_benchmark_runs():
    result = run_benchmark("history.py", "--jobs", "5", "50", "--requests", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| GET", "| push"))]
    assert len(rows) == 4 and all(row.count(" ms |") == 2 for row in rows)


def test_the_push_benchmark_runs():
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make test installs it)")
    result = run_benchmark("push.py", "--seconds", "1", "--burst", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| receiver |" in result.stdout and "| baseline" in result.stdout
    assert "jobs in the journal afterwards: 0." in result.stdout
