"""What people and programs read of the receiver (receiver/status.py), on local parts only:
a journal and a model dir in a temporary directory, no storage and no server."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver import capacity, modeldir, status
from receiver.config import Settings
from receiver.journal import Journal
from receiver.layout import ModelVersion
from receiver.objectref import ObjectRef
from receiver.quarantine import Quarantine
from receiver.readiness import LAST_SYNC_KEY, SYNC_ERROR_KEY
from receiver.versions import Versions
from receiver.vocabulary import LoadState


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"RECEIVER_SOURCE": "gs://my-models/prod", "RECEIVER_MODEL_DIR": str(tmp_path / "m")},
        verifies_pushes=False,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.initialize()
    return journal


def on_disk(settings: Settings, model: str, version: int) -> None:
    (settings.model_dir / model / str(version)).mkdir(parents=True)
    (settings.model_dir / model / str(version) / "saved_model.pb").write_bytes(b"graph")


def test_a_version_nobody_recorded_is_shown_as_unrecorded(settings, journal):
    on_disk(settings, "m", 3)  # placed by hand
    (view,) = status.versions_view(settings.model_dir, journal)["m"]
    assert (view.version, view.on_disk, view.load_state) == (3, True, LoadState.UNRECORDED)
    assert view.to_dict()["load_state"] == "unrecorded"


def test_a_withdrawn_failure_stays_listed_with_tf_servings_reason(settings, journal):
    on_disk(settings, "m", 1)
    versions = Versions(journal)
    for version in (1, 2):
        versions.installed(
            "m", version, job_id=version, source=f"gs://b/m/{version}", size=5,
            state=LoadState.AVAILABLE,
        )  # fmt: skip
    versions.set_state("m", 2, LoadState.FAILED, "Op type not registered 'Foo'")
    views = status.versions_view(settings.model_dir, journal)["m"]
    assert [(v.version, v.on_disk, v.load_state) for v in views] == [
        (2, False, LoadState.FAILED),
        (1, True, LoadState.AVAILABLE),
    ]
    assert views[0].error == "Op type not registered 'Foo'"
    assert "failed (withdrawn)  Op type not registered 'Foo'" in status.text_report(
        settings, journal, jobs=5
    )


def test_a_failed_sync_is_reported_with_its_time_until_one_succeeds(settings, journal):
    failed_at = 1_796_000_000.0
    journal.set_meta(SYNC_ERROR_KEY, json.dumps({"at": failed_at, "error": "bucket gone"}))
    document = status.document(settings, journal, Quarantine(settings.state_dir / "q"))
    assert (document["last_sync"], document["last_sync_error"]) == (
        None,
        {"at": failed_at, "error": "bucket gone"},
    )
    assert "last sync failed at 2026-11-30T00:53:20Z: bucket gone" in status.text_report(
        settings, journal, jobs=5
    )


def test_times_are_unix_seconds_in_the_document_and_iso_8601_on_the_page(settings, journal):
    before = time.time()
    journal.set_meta(LAST_SYNC_KEY, str(before))
    document = status.document(settings, journal, Quarantine(settings.state_dir / "q"))
    page = status.page(settings, journal, Quarantine(settings.state_dir / "q"))
    assert document["last_sync"] == before
    assert page["last_sync"] == status.iso_time(before)
    assert str(page["last_sync"]).endswith("Z")


@pytest.mark.parametrize(
    ("done", "size", "expected"),
    [
        (12 * 2**20, 96 * 2**20, "12.0 MiB of 96.0 MiB (12%), 6.0 MiB/s, about 14 s left"),
        (5 * 2**20, None, "5.0 MiB, 6.0 MiB/s"),
        (3 * 2**10, 6 * 2**10, "3.0 KiB of 6.0 KiB (50%), 6.0 MiB/s, about 0 s left"),
    ],
)
def test_download_progress_reads_as_people_say_it(done, size, expected):
    assert status.DownloadProgress(done, size, 6 * 2**20).describe() == expected


def test_a_job_whose_version_is_in_place_says_it_waits_for_tf_serving(settings, journal):
    ref = ObjectRef("my-models", "prod/m/4.tar.gz", 1, size=10)
    job, _ = journal.enqueue(ref, ModelVersion("m", 4, "tar.gz"))
    journal.claim("worker", lease_seconds=60)
    journal.heartbeat(job.id, "worker", bytes_done=10, lease_seconds=60)
    on_disk(settings, "m", 4)
    Versions(journal).installed(
        "m", 4, job_id=job.id, source=ref.url, size=10, state=LoadState.LOADING
    )
    report = status.text_report(settings, journal, jobs=5)
    assert re.search(
        r"^1 +running +m +4 .* in place; waiting for TF Serving to load it$", report, re.M
    ), report


def test_a_version_withdrawn_while_status_counts_it_does_not_fail_the_document(
    settings: Settings, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI saw /status answer 500 while a failed version was withdrawn: the memory estimate
    walked the version's files and one was gone before it was measured."""
    on_disk(settings, "m", 1)
    on_disk(settings, "m", 2)
    real_walk = os.walk

    def walk_then_withdraw(path: str) -> Iterator[tuple[str, list[str], list[str]]]:
        for directory, dirs, files in real_walk(path):
            if files and Path(directory).name == "2":
                modeldir.withdraw(Path(directory))  # after listing, before lstat
            yield directory, dirs, files

    monkeypatch.setattr(os, "walk", walk_then_withdraw)  # as capacity.tree_bytes calls it
    body = status.document(settings, journal, Quarantine(settings.state_dir / "q"))
    serving = body["serving"]
    # TF Serving falls back to version 1: the estimate is 1.2 x its bytes, not nothing.
    assert isinstance(serving, dict) and serving["memory_estimate"] == {"m": round(1.2 * 5)}
    assert not (settings.model_dir / "m" / "2").exists()


def test_a_model_removed_while_status_lists_it_does_not_fail_the_document(
    settings: Settings,
) -> None:
    """A model whose only install failed is removed (servable.remove_if_empty) while /status
    may be listing it: it shows with no versions, not a 500."""
    on_disk(settings, "m", 1)
    model_root = settings.model_dir / "m"
    modeldir.withdraw(model_root / "1")
    model_root.rmdir()
    assert modeldir.version_dirs(model_root) == []
    model_root.write_bytes(b"")  # a file where a model was: not a directory either
    assert modeldir.version_dirs(model_root) == []


def test_a_hand_placed_version_name_is_counted_in_the_memory_estimate(settings: Settings) -> None:
    """TF Serving reads `00000123` as version 123 and serves it: its bytes are what it holds."""
    version_dir = settings.model_dir / "m" / "00000123"
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"graph")
    on_disk(settings, "m", 5)
    assert capacity.memory_estimate(settings.model_dir) == {"m": round(1.2 * 5)}
