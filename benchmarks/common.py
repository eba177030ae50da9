"""What the benchmark scripts share: a push the receiver ignores, and waiting for a server."""

from __future__ import annotations

import time

import requests

# A signed-looking notification for an object outside every benchmark's prefix: the
# receiver checks the token and answers `ignored`, so only the request path is measured.
IGNORED_PUSH = {
    "message": {
        "attributes": {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "bench",
            "objectId": "elsewhere/notes.txt",
            "objectGeneration": "1",
        },
        "messageId": "1",
    },
    "subscription": "projects/p/subscriptions/s",
}


def wait_until_up(url: str, timeout: float = 60) -> None:
    """Return once `url` answers at all; SystemExit if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered {url} within {timeout:g}s")
