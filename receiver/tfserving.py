"""Ask TF Serving what became of a version: its REST model-status API.

`GET /v1/models/<model>/versions/<version>` answers a `GetModelStatusResponse`
(tensorflow_serving/apis/get_model_status.proto, g3doc/api_rest.md):

    {"model_version_status": [{"version": "7", "state": "AVAILABLE",
                               "status": {"error_code": "OK", "error_message": ""}}]}

`state` is UNKNOWN, START, LOADING, AVAILABLE, UNLOADING or END; a failed load is END
with an `error_code` other than OK and the loader's message. A model or version TF
Serving has not seen yet is a 404 with `{"error": "..."}`. TF Serving polls the model dir
every second and retries a failed load (5 times a minute apart by default), so the
verdict can take minutes: `wait_for_load` polls until AVAILABLE, a failed END, or its
deadline, which is "not confirmed", never "failed".
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # TF Serving's own file-system poll period
_REQUEST_TIMEOUT = (2.0, 5.0)  # connect, read: a status read is tiny


class ServingState(enum.StrEnum):
    """TF Serving's `ModelVersionStatus.State`, plus what a missing answer means here."""

    UNKNOWN = "UNKNOWN"
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"
    NOT_FOUND = "NOT_FOUND"  # 404: TF Serving has not seen this version (yet)
    UNREACHABLE = "UNREACHABLE"  # no answer: TF Serving is starting, restarting or down


@dataclass(frozen=True)
class VersionStatus:
    state: ServingState
    error_code: str = "OK"
    error_message: str = ""

    @property
    def failed(self) -> bool:
        """A load that ended in an error: TF Serving will not serve this version."""
        return self.state is ServingState.END and self.error_code not in ("OK", "0", "")

    def describe(self) -> str:
        if self.failed:
            return f"{self.state.value} ({self.error_code}): {self.error_message}"
        return self.state.value


class TFServing:
    """A client of one TF Serving's REST port."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def version_status(self, model: str, version: int) -> VersionStatus:
        url = f"{self.url}/v1/models/{model}/versions/{version}"
        try:
            # A connection per poll (once a second at most), closed before it returns:
            # nothing held open between polls.
            with requests.get(url, timeout=_REQUEST_TIMEOUT) as response:
                return _version_status(response, version)
        except requests.RequestException as exc:
            return VersionStatus(ServingState.UNREACHABLE, error_message=str(exc))

    def wait_for_load(
        self,
        model: str,
        version: int,
        timeout: float,
        tick: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> VersionStatus:
        """Poll until the version is AVAILABLE, failed, or `timeout` s pass; the last status.

        `tick` runs between polls (the job's heartbeat: it renews the lease, and raises to
        stop waiting when the process shuts down).
        """
        deadline = time.monotonic() + timeout
        last: VersionStatus | None = None
        while True:
            status = self.version_status(model, version)
            if status != last:
                log.info("TF Serving: %s version %s is %s", model, version, status.describe())
                last = status
            if status.state is ServingState.AVAILABLE or status.failed:
                return status
            if status.state is ServingState.END:
                return status  # unloaded without error: a newer version took its place
            if time.monotonic() >= deadline:
                return status
            tick()
            sleep(POLL_SECONDS)


def _version_status(response: requests.Response, version: int) -> VersionStatus:
    if response.status_code == 404:
        return VersionStatus(ServingState.NOT_FOUND, error_message=_error_text(response))
    if response.status_code != 200:
        return VersionStatus(
            ServingState.UNREACHABLE,
            error_message=f"HTTP {response.status_code}: {_error_text(response)}",
        )
    return _parse_version_status(response, version)


def _parse_version_status(response: requests.Response, version: int) -> VersionStatus:
    try:
        statuses = response.json()["model_version_status"]
        entry = next(item for item in statuses if str(item.get("version")) == str(version))
        state = ServingState(entry["state"])
        status = entry.get("status") or {}
    except (ValueError, KeyError, TypeError, StopIteration):
        return VersionStatus(
            ServingState.UNKNOWN,
            error_message=f"unexpected answer from TF Serving: {response.text[:200]!r}",
        )
    return VersionStatus(
        state, str(status.get("error_code", "OK")), str(status.get("error_message", ""))
    )


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        return response.text[:200]
