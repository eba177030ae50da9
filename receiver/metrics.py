"""Prometheus metrics, correct under several gunicorn worker processes.

Counters and histograms live here and are updated where things happen. Under gunicorn,
gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client,
so each process writes its samples to files there and `render` adds them up
(prometheus-client's multiprocess mode). Figures that are state rather than events (jobs
by state, installed versions, last sync) are read from the journal and the model dir at
scrape time, so every process reports the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from receiver import modeldir
from receiver.journal import Journal
from receiver.readiness import last_success
from receiver.status import versions_view
from receiver.vocabulary import JobState, LoadState

PUSHES = Counter(
    "receiver_pushes_total",
    "Push requests answered, by delivery format and outcome.",
    ["format", "outcome"],
    registry=None,
)
AUTH_FAILURES = Counter(
    "receiver_auth_failures_total",
    "Push requests refused by authentication, by reason.",
    ["reason"],
    registry=None,
)
JOBS_FINISHED = Counter(
    "receiver_jobs_finished_total",
    "Jobs that reached a final state (installed, failed, skipped).",
    ["state"],
    registry=None,
)
INSTALL_SECONDS = Histogram(
    "receiver_install_duration_seconds",
    "Time from claiming a job to the version being in place.",
    buckets=(0.5, 1, 5, 15, 60, 300, 900, 1800, 3600),
    registry=None,
)
INSTALL_BYTES = Histogram(
    "receiver_install_bytes",
    "Bytes downloaded per installed version.",
    buckets=(1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11),
    registry=None,
)
DOWNLOAD_THROUGHPUT = Histogram(
    "receiver_download_bytes_per_second",
    "Download speed of each installed version, bytes per second.",
    buckets=(1e5, 1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9),
    registry=None,
)
LOADS = Counter(
    "receiver_loads_total",
    "TF Serving's verdicts on installed versions (available, failed, timed_out, retired).",
    ["outcome"],
    registry=None,
)
LOAD_SECONDS = Histogram(
    "receiver_load_seconds",
    "Time from a version's rename into place to TF Serving reporting it AVAILABLE.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=None,
)
RELAYS = Counter(
    "receiver_relays_total",
    "Pushes forwarded to a peer (RECEIVER_PEERS), one per push and peer, by outcome "
    "(delivered, refused, failed, dropped).",
    ["outcome"],
    registry=None,
)
_EVENT_METRICS = (
    RELAYS,
    LOADS,
    LOAD_SECONDS,
    PUSHES,
    AUTH_FAILURES,
    JOBS_FINISHED,
    INSTALL_SECONDS,
    INSTALL_BYTES,
    DOWNLOAD_THROUGHPUT,
)


class _StateCollector:
    """Gauges read at scrape time from the journal and the model dir."""

    def __init__(self, journal: Journal, model_dir: Path) -> None:
        self._journal = journal
        self._model_dir = model_dir

    def collect(self) -> Iterator[Metric]:
        counts = self._journal.counts()
        jobs = GaugeMetricFamily(
            "receiver_jobs", "Jobs in the journal, by state.", labels=["state"]
        )
        for state, count in sorted(counts.items()):
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "receiver_journal_depth",
            "Jobs waiting or running (queued + running).",
            value=counts[JobState.QUEUED] + counts[JobState.RUNNING],
        )
        installed = GaugeMetricFamily(
            "receiver_installed_version",
            "Highest installed version of each model.",
            labels=["model"],
        )
        # The object generation it came from: replicas on the same generation have the
        # same bytes (a version number can be republished; a generation cannot).
        generation = GaugeMetricFamily(
            "receiver_installed_generation",
            "Cloud Storage generation of each model's highest installed version.",
            labels=["model"],
        )
        for model, versions in modeldir.installed_models(self._model_dir).items():
            if versions:
                installed.add_metric([model], versions[-1])
                source = modeldir.read_provenance(self._model_dir / model / str(versions[-1]))
                number = source.get("generation")
                if isinstance(number, int):  # exact as a float below 2**53 (GCS's are ~2**50)
                    generation.add_metric([model], float(number))
        yield installed
        yield generation
        serving = GaugeMetricFamily(
            "receiver_serving_state",
            "1 for each installed version's load state as TF Serving reported it "
            "(unconfirmed without RECEIVER_TFSERVING_URL).",
            labels=["model", "version", "state"],
        )
        available = GaugeMetricFamily(
            "receiver_available_version",
            "Highest version of each model TF Serving reported AVAILABLE "
            "(only with RECEIVER_TFSERVING_URL).",
            labels=["model"],
        )
        highest: dict[str, int] = {}
        # As /status lists them: a version placed by hand counts too, as `unrecorded`.
        for model, views in versions_view(self._model_dir, self._journal).items():
            for view in views:
                serving.add_metric([model, str(view.version), view.load_state.value], 1)
                if view.load_state is LoadState.AVAILABLE:
                    highest[model] = max(highest.get(model, 0), view.version)
        for model, version in sorted(highest.items()):
            available.add_metric([model], version)
        yield serving
        yield available
        last_sync = last_success(self._journal)
        if last_sync is not None:
            yield GaugeMetricFamily(
                "receiver_last_sync_timestamp_seconds",
                "When the last successful sync with the bucket finished (Unix time).",
                value=last_sync,
            )


def render(journal: Journal, model_dir: Path) -> bytes:
    """The /metrics page: every process's counters plus the shared state."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for metric in _EVENT_METRICS:
            registry.register(metric)
    registry.register(_StateCollector(journal, model_dir))
    return generate_latest(registry)
