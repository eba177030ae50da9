"""The hostile corpus through real gunicorn: every job fails cleanly, memory stays flat.

Writes test-artifacts/hostile-rss.md: each gunicorn worker's peak RSS (VmHWM, reset
through /proc/<pid>/clear_refs before each case) during each case, the table that
docs/hostile-corpus.md quotes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests import hostile
from tests.e2e.conftest import Gunicorn, curl_push
from tests.helpers import PROJECT_ROOT, peak_rss_mib, push_body, upload_model

MEMORY_LIMIT_MIB = 150


def workers(server: Gunicorn) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(child) for child in children)


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry under a directory, hidden ones included, with a hash of each file."""
    return {
        str(path.relative_to(directory)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
        for path in sorted(directory.rglob("*"))
    }


def test_every_hostile_archive_fails_cleanly_in_flat_memory(
    gunicorn, bucket, token, settings, tmp_path
):
    gunicorn.env.update(RECEIVER_ACK="installed")
    gunicorn.start()
    bodies = tmp_path / "pushes"  # outside what the test watches
    bodies.mkdir()
    status, answer = curl_push(gunicorn.url, token(), push_body(upload_model(bucket, 1)), bodies)
    assert (status, answer["outcome"]) == (200, "installed"), answer
    model_dir = settings.model_dir
    before = snapshot(model_dir)
    around = sorted(p.name for p in model_dir.parent.iterdir())

    rows = []
    peak = max(peak_rss_mib(pid) for pid in workers(gunicorn))
    for version, case in enumerate(hostile.CORPUS, start=2):
        for pid in workers(gunicorn):  # each case's own peak, not the highest so far
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        blob = bucket.blob(f"models/half_plus_two/{version}.{case.suffix}")
        blob.content_encoding = case.content_encoding  # as `gcloud storage cp -Z` stores it
        blob.upload_from_string(case.build())
        try:
            status, answer = curl_push(gunicorn.url, token(), push_body(blob), bodies)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{case.name}: no answer in time\n{gunicorn.log()[-3000:]}")
        assert (status, answer["outcome"]) == (200, "failed"), (case.name, answer)
        assert re.search(case.reason, answer["reason"]), (case.name, answer["reason"])
        peaks = [peak_rss_mib(pid) for pid in workers(gunicorn)]
        peak = max(peak, *peaks)
        rows.append(f"| {case.name} | {blob.size:,} | {' / '.join(map(str, peaks))} |")

    assert snapshot(model_dir) == before  # no staging debris, version 1 untouched
    assert sorted(p.name for p in model_dir.parent.iterdir()) == around
    report = PROJECT_ROOT / "test-artifacts" / "hostile-rss.md"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        "| case | object bytes | peak RSS of each worker during it (MiB) |\n|---|---:|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    assert peak < MEMORY_LIMIT_MIB, report.read_text()
