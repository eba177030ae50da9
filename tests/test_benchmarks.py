"""Every benchmark harness still runs at a tiny size and measures something: each row of
its table holds numbers. What the rows are called is the harness's business; the numbers
themselves live in docs/."""

import dataclasses
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.host_memory import free_memory_held, page_reporting
from benchmarks.install import Row
from benchmarks.install_report import COLUMNS, write_report
from benchmarks.models import FORMATS, KINDS, MIB
from benchmarks.profile_install import thread_times
from tests.helpers import PROJECT_ROOT

# A measured cell: a number, with or without its unit; "-" where a method does not apply.
NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?\s*(s|ms|µs|MiB|x|×|%)?$")


def run_benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(text: str) -> list[dict[str, str]]:
    """The body rows of every Markdown table in `text`, each as {column header: cell}."""
    rows: list[dict[str, str]] = []
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if all(set(cell) <= set("-:") for cell in cells):
            continue  # the line under the header
        if not header:
            header = cells
        else:
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def measured(row: dict[str, str], labels: int = 1) -> list[float]:
    """The row's numbers, after its first `labels` cells; fails on a cell that is neither."""
    values = []
    for column, cell in list(row.items())[labels:]:
        if cell == "-":
            continue
        assert NUMBER.match(cell), f"{column!r} holds {cell!r}, not a number, in {row}"
        values.append(float(re.sub(r"[^\d.\-]", "", cell)))
    return values


def test_the_install_benchmark_measures_every_model_and_format(tmp_path):
    missing = [tool for tool in ("curl", "tar", "zstd", "zip", "unzip") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make test installs them)")
    run_benchmark(
        "install.py", "--sizes", "1", "--runs", "1", "--small-runs", "1", "--out", str(tmp_path)
    )
    rows = table_rows((tmp_path / "benchmarks-install.md").read_text())
    # Every format for the weights; the half-zeros model of earlier rounds as tar.gz.
    assert len(rows) == len(FORMATS) + len(KINDS) - 1, rows
    for row in rows:
        times = measured(row, labels=2)  # the model and the format
        # The receiver, one by-hand method, the disk and the wire at least, none negative
        # (at 1 MiB the wire can round to 0.00 s); the receiver's time, CPU and peak RSS
        # among them, and its time taken.
        assert len(times) >= 7 and all(value >= 0 for value in times), row
        assert float(row["receiver"].removesuffix(" s")) > 0, row
    assert (tmp_path / "benchmarks-install.png").read_bytes().startswith(b"\x89PNG")


def test_the_install_table_says_how_many_runs_each_size_had(tmp_path):
    rows = [
        Row("weights", size, "tar", MIB, runs, dict.fromkeys(COLUMNS, 1.0), 1.0, 1.0)
        for size, runs in ((100, 9), (1024, 3), (5120, 3))
    ]
    table = tmp_path / "benchmarks-install.md"
    write_report(rows, dropped=True, out=tmp_path)
    assert table.read_text().startswith("Medians of 3 runs (9 at 100 MiB), the methods in turns")
    write_report(rows[1:], dropped=True, out=tmp_path)
    assert table.read_text().startswith("Medians of 3 runs, ")
    write_report([dataclasses.replace(rows[0], runs=1)], dropped=True, out=tmp_path)
    assert table.read_text().startswith("Medians of 1 run, ")


def test_the_sliced_download_benchmark_times_each_method_behind_its_throttling_proxy():
    output = run_benchmark(
        "sliced.py", "--size", "4", "--rate", "20", "--slices", "1", "4",
        "--slice-mib", "1", "--runs", "1",
    )  # fmt: skip
    rows = table_rows(output)
    # curl | tar and the receiver on one stream; the receiver and parallel curl at 4.
    assert len(rows) == 4, output
    assert all(measured(row)[0] > 0 for row in rows), output


def test_the_history_benchmark_times_each_request_on_both_journals():
    output = run_benchmark("history.py", "--jobs", "5", "50", "--requests", "2")
    rows = table_rows(output)
    assert len(rows) == 4, output
    assert all(len(measured(row)) == 3 and min(measured(row)) > 0 for row in rows), output


def test_the_push_benchmark_answers_every_push_and_queues_no_job():
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make test installs it)")
    output = run_benchmark("push.py", "--seconds", "1", "--burst", "100", "--rounds", "1")
    rows = table_rows(output)
    assert len(rows) == 4, output  # the receiver, two baselines, the empty route
    for row in rows:
        requests_per_second, *_, non_2xx = measured(row)
        assert requests_per_second > 0 and non_2xx == 0, row
    # The burst and the fixed-rate run: every push answered 2xx, none left a job behind.
    numbers = [int(n) for n in re.findall(r"(\d+) not answered 2xx", output)]
    assert numbers == [0, 0], output
    assert re.search(r"journal afterwards: 0\b", output), output


def test_the_replicas_benchmark_runs_a_fleet_and_one_down():
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (make test installs it)")
    output = run_benchmark(
        "replicas.py", "--size", "1", "--replicas", "2", "--down", "2", "--runs", "1"
    )
    rows = table_rows(output)
    # One alone, then two: the last replica's time each; then two with one down: the
    # running one's time and the one that was down's, from its start.
    assert [measured(row, labels=0)[0] for row in rows] == [1, 2, 2], output  # replicas
    (alone, alone_ratio), (two, two_ratio), one_down = (measured(row) for row in rows)
    assert min(alone, two) > 0 and alone_ratio == 1.0, output
    # "vs one alone" is two's time over one's, each cell rounded to 0.01.
    low, high = (two - 0.005) / (alone + 0.005), (two + 0.005) / max(alone - 0.005, 1e-9)
    assert low - 0.005 <= two_ratio <= high + 0.005, output
    assert len(one_down) == 2 and min(one_down) > 0, output


def test_the_install_profile_counts_each_threads_busy_samples_not_its_waits(tmp_path):
    """py-spy counts a thread blocked on a queue as running; the summary must not."""
    raw = tmp_path / "install.raw"
    raw.write_text(
        "thread (1): MainThread;Installer.install (receiver/installer.py:1);"
        "_read_tar (receiver/unpack/tar.py:2) 20\n"
        "thread (1): MainThread;<module> (benchmarks/profile_install.py:1);"
        "upload (google/cloud/storage/blob.py:3) 500\n"
        "thread (2): unpack-read;_produce (receiver/unpack/readahead.py:4);"
        "GzipFile.read (gzip.py:301) 200\n"
        "thread (2): unpack-read;_produce (receiver/unpack/readahead.py:4);"
        "Queue.get (queue.py:182) 300\n"
        "thread (3): unpack-write_0;_worker (thread.py:81) 400\n"
    )
    output = run_benchmark("profile_install.py", "summarize", str(raw))
    assert "unpack-read: busy 1.00 s" in output, output  # 200 samples at 200 Hz, waits out
    assert "100.0%  GzipFile.read (gzip.py:301)" in output, output
    assert "MainThread: busy 0.10 s" in output, output  # the upload before it left out
    assert "unpack-write" not in output, output  # only ever waiting


def test_the_fresh_memory_benchmark_times_writes_into_freed_and_idle_pages(tmp_path):
    output = run_benchmark("fresh_memory.py", "--mib", "4", "--idle", "0", "--dir", str(tmp_path))
    rows = table_rows(output)
    assert len(rows) == 2, output  # pages just freed, pages left idle
    for row in rows:
        written, took, *_ = measured(row)
        assert written == 4 and took > 0, row
    assert list(tmp_path.iterdir()) == [], "the file written is left behind"


def test_free_memory_held_back_for_a_run_is_handed_back_however_the_run_ends(tmp_path):
    """`install.py --hold-free-memory` changes the kernel's settings for one run only."""
    shipped = {"max_waiting_mib": "1024", "min_free_ms": "0"}
    for name, value in shipped.items():
        (tmp_path / name).write_text(f"{value}\n")
    with pytest.raises(RuntimeError), free_memory_held(tmp_path):
        assert (tmp_path / "max_waiting_mib").read_text() == "65536"
        raise RuntimeError("the run failed")
    assert {name: (tmp_path / name).read_text() for name in shipped} == shipped
    absent = tmp_path / "a kernel without them"
    with pytest.raises(SystemExit, match="cannot hold free memory back"), free_memory_held(absent):
        pass
    (tmp_path / "reported_kib").write_text(f"{3 * 2**20}\n")
    assert page_reporting(tmp_path).startswith("this machine: 3 GiB of free memory reported")
    with free_memory_held(tmp_path):
        assert page_reporting(tmp_path).startswith("this machine's free memory held back")
    assert "keeps no count" in page_reporting(absent)


def test_free_memory_held_back_by_a_kernel_with_one_setting_puts_that_one_back(tmp_path):
    (tmp_path / "max_waiting_mib").write_text("1024\n")  # no min_free_ms
    with (
        pytest.raises(SystemExit, match="cannot hold free memory back"),
        free_memory_held(tmp_path),
    ):
        pass
    assert (tmp_path / "max_waiting_mib").read_text() == "1024"


def test_the_install_profile_installs_a_model_again_and_again_reporting_memory():
    output = run_benchmark("profile_install.py", "install", "1", "weights", "tar.zst", "2")
    installs = re.findall(r"install (\d): 1 MiB in [\d.]+ s, resident after it (\d+) MiB", output)
    assert [version for version, _ in installs] == ["1", "2"], output
    assert all(int(resident) > 0 for _, resident in installs), output
    # Each install's threads, the inflate's and the download's among them, each line its own.
    threads = re.findall(r"\n    (.+)\n", output)
    assert len(threads) == 2, output
    for line in threads:
        spent = {
            name: (float(alive), float(waited))
            for name, alive, waited in re.findall(
                r"([\w-]+) [\d.]+ s CPU of ([\d.]+) s \(([\d.]+) s waiting for a core\)", line
            )
        }
        assert {"install", "unpack-download", "unpack-inflate"} <= spent.keys(), line
        assert spent["install"][0] > 0, line  # the rest can round to 0.00 s at 1 MiB
        assert all(waited <= alive for alive, waited in spent.values()), line


@pytest.mark.skipif(
    not Path("/proc/thread-self/schedstat").exists(), reason="the kernel keeps no schedstat"
)
def test_the_install_profile_counts_time_a_thread_waits_for_a_core():
    """Three busy loops on one core: this one waits for it about twice as long as it runs
    (its run time, schedstat's first field, would be about equal to its CPU)."""
    core = min(os.sched_getaffinity(0))
    spin = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"
    rivals = [subprocess.Popen([sys.executable, "-c", spin, str(core)]) for _ in range(2)]
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {core})  # this thread now shares the rivals' core
        with thread_times() as spent:
            started = time.thread_time()
            while time.thread_time() - started < 0.3:
                pass
    finally:
        os.sched_setaffinity(0, before)
        for rival in rivals:
            rival.kill()
            rival.wait()
    cpu, alive, waited = dict(spent)["install"]
    assert cpu >= 0.3 and 1.2 * cpu < waited <= alive, spent


def test_an_install_profile_stopped_by_sigterm_leaves_no_files_behind():
    """A benchmark killed (`pkill`, a timeout) left its emulator's files, GiBs of them at
    the real sizes, in /dev/shm and its versions in /tmp."""
    command = [sys.executable, "benchmarks/profile_install.py", "install", "1", "weights", "tar"]
    with subprocess.Popen(
        [*command, "500"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        lines: queue.Queue[str] = queue.Queue()  # read on a thread: a stalled child fails

        def forward() -> None:
            for line in process.stdout or ():
                lines.put(line)

        threading.Thread(target=forward, daemon=True).start()
        try:
            first = lines.get(timeout=120)
            where = re.fullmatch(
                r"the emulator's files in (.+), the versions installed in (.+)\n", first
            )
            assert where, first
            while not lines.get(timeout=120).startswith("install 1:"):
                pass
            process.terminate()
            assert process.wait(timeout=120) == 128 + signal.SIGTERM
        finally:
            process.kill()
    assert not Path(where[1]).exists() and not Path(where[2]).exists()
