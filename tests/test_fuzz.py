"""Property tests: hostile bytes never escape, crash or balloon; deliveries parse or reject.

The default run keeps to a few hundred examples (under a minute); `make fuzz` runs the
"long" profile (HYPOTHESIS_PROFILE=long), thousands of examples per property.
"""

from __future__ import annotations

import base64
import bz2
import copy
import io
import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.errors import ArchiveError, RejectedDeliveryError
from receiver.events import ObjectEvent, parse_delivery
from receiver.unpack import unpack_tar
from tests.helpers import FIXTURES, HALF_PLUS_TWO
from tests.unpack.archives import MemoryStore, fetch_zip

LIMITS = Limits(max_unpacked_bytes=256 * 1024 * 1024, max_files=1000, max_ratio=200)
MEMORY_LIMIT = 48 * 1024 * 1024  # Python allocations while unpacking one mutated archive
SEEDS = {
    "tar.gz": archive_directory(HALF_PLUS_TWO, "tar.gz", top="m"),
    "tar": archive_directory(HALF_PLUS_TWO, "tar", top="m"),
    "tar.bz2": bz2.compress(archive_directory(HALF_PLUS_TWO, "tar", top="m")),
    "zip": archive_directory(HALF_PLUS_TWO, "zip", top="m"),
}


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """A real archive with a few byte-level edits: flips, cuts, insertions, repeats."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "repeat", "truncate"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x2F, 0x2E, 0x30, 0x37, 0x80]))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 600))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=600))
        elif action == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 2048))]
        else:
            del data[at:]
    return bytes(data)


def unpack_mutant(archive_format: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        outer = Path(scratch)
        staging = outer / ".staging-1-job1-fuzz"
        staging.mkdir()
        tracemalloc.start()
        try:
            if archive_format == "zip":  # streamed, or spooled if its index looks corrupt
                fetch_zip(MemoryStore(data), staging, LIMITS)
            else:
                stream = io.BytesIO(data)
                unpack_tar(stream, staging, LIMITS, stream.tell)
        except ArchiveError:
            pass  # a clear refusal is a fine answer; any other exception fails the test
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"{peak} bytes allocated"
        assert [p.name for p in outer.iterdir()] == [staging.name]  # no spool left either
        for path in staging.rglob("*"):
            assert path.is_symlink() or path.is_dir() or path.is_file()
            assert path.resolve().is_relative_to(staging.resolve()), path


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda f: st.tuples(st.just(f), mutated(SEEDS[f]))))
def test_mutated_archives_never_escape_crash_or_balloon(case: tuple[str, bytes]) -> None:
    archive_format, data = case
    unpack_mutant(archive_format, data)


# --- Deliveries ---------------------------------------------------------------------------

ENVELOPE = json.loads(
    (FIXTURES / "pubsub" / "gcs-notification-OBJECT_FINALIZE-push-envelope.json").read_text()
)
RESOURCE = json.loads(base64.b64decode(ENVELOPE["message"]["data"]))
UNWRAPPED_HEADERS = {
    f"x-goog-pubsub-{name}": value for name, value in ENVELOPE["message"]["attributes"].items()
}
CLOUDEVENT_HEADERS = {
    "ce-specversion": "1.0",
    "ce-type": "google.cloud.storage.object.v1.finalized",
    "ce-source": "//storage.googleapis.com/projects/_/buckets/some-bucket",
    "ce-id": "1",
    "ce-subject": "objects/folder/model.tar.gz",
    "Content-Type": "application/json",
}
STRUCTURED = json.loads(
    (FIXTURES / "cloudevents" / "StorageObjectData-structured-finalized.json").read_text()
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def edited(draw: st.DrawFn, document: Any) -> Any:
    """The document with one value somewhere in it replaced, or one key removed."""
    document = copy.deepcopy(document)
    node = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return document
        key = draw(st.sampled_from(keys))
        if isinstance(node[key], (dict, list)) and draw(st.booleans()):
            node = node[key]
            continue
        if isinstance(node, dict) and draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(json_values)
        return document


def deliveries() -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    def wrapped(resource: Any, envelope: Any) -> tuple[bytes, dict[str, str]]:
        envelope = copy.deepcopy(envelope)
        if isinstance(envelope.get("message"), dict):
            envelope["message"]["data"] = base64.b64encode(json.dumps(resource).encode()).decode()
        return json.dumps(envelope).encode(), {"Content-Type": "application/json"}

    structured = {"Content-Type": "application/cloudevents+json"}
    return st.one_of(
        st.builds(wrapped, edited(RESOURCE), st.just(ENVELOPE)),
        st.builds(wrapped, st.just(RESOURCE), edited(ENVELOPE)),
        st.builds(lambda r: (json.dumps(r).encode(), UNWRAPPED_HEADERS), edited(RESOURCE)),
        st.builds(lambda r: (json.dumps(r).encode(), CLOUDEVENT_HEADERS), edited(RESOURCE)),
        st.builds(lambda d: (json.dumps(d).encode(), structured), edited(STRUCTURED)),
        st.tuples(st.binary(max_size=300), st.sampled_from([{}, UNWRAPPED_HEADERS, structured])),
    )


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(deliveries())
def test_every_delivery_parses_or_is_rejected_with_a_reason(delivery):
    body, headers = delivery
    try:
        event = parse_delivery(body, headers)
    except RejectedDeliveryError as exc:
        assert str(exc)
    else:
        assert isinstance(event, ObjectEvent)
        ref = event.ref
        assert isinstance(ref.bucket, str) and isinstance(ref.name, str) and ref.generation >= 0
        assert all(isinstance(v, str | None) for v in (ref.md5, ref.crc32c))
        assert isinstance(ref.size, int | None)
