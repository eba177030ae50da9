"""Helpers shared by the tests: fixture paths, publishing a model, building pushes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from google.cloud import storage

from receiver.dev.keys import DEV_SENDER
from receiver.dev.tools import archive_directory, notification_push

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
HALF_PLUS_TWO = FIXTURES / "half_plus_two" / "00000123"
AUDIENCE = "https://receiver.test/push"


def receiver_environ(bucket: str, tmp_path: Path, certs_url: str) -> dict[str, str]:
    """The environment a deployed receiver would get, pointing at local stand-ins."""
    return {
        "RECEIVER_SOURCE": f"gs://{bucket}/models",
        "RECEIVER_MODEL_DIR": str(tmp_path / "models"),
        "RECEIVER_STATE_DIR": str(tmp_path / "state"),
        "RECEIVER_AUDIENCE": AUDIENCE,
        "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
        "RECEIVER_CERTS_URL": certs_url,
    }


def upload_model(
    bucket: storage.Bucket,
    version: int = 123,
    archive_format: str = "tar.gz",
    model: str = "half_plus_two",
    source: Path = HALF_PLUS_TWO,
    data: bytes | None = None,
) -> storage.Blob:
    """Publish a model archive the way a training pipeline would."""
    blob = bucket.blob(f"models/{model}/{version}.{archive_format}")
    blob.upload_from_string(
        data if data is not None else archive_directory(source, archive_format, top="00000123")
    )
    return blob


def push_body(blob: storage.Blob, **kwargs: str) -> bytes:
    return json.dumps(notification_push(blob, **kwargs)).encode()


def same_files(installed: Path, source: Path = HALF_PLUS_TWO) -> bool:
    """Exactly the source model's files are installed, byte for byte (the receiver's own
    `.receiver.json` aside). Raises AssertionError saying what differs, so a failing
    `assert same_files(...)` names the file; an empty or mistyped source fails too."""
    expected = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    assert expected, f"{source} holds no files: nothing to compare with"
    found = {
        p.relative_to(installed)
        for p in installed.rglob("*")
        if p.is_file() and p.name != ".receiver.json"
    }
    missing, extra = sorted(map(str, expected - found)), sorted(map(str, found - expected))
    assert not missing and not extra, f"in {installed}: missing {missing}, unexpected {extra}"
    differ = sorted(
        str(f) for f in expected if (installed / f).read_bytes() != (source / f).read_bytes()
    )
    assert not differ, f"in {installed}: these differ from {source}: {differ}"
    return True


def peak_rss_mib(pid: int | str = "self") -> int:
    """A process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


# --- Hand-made tokens, for forgeries the dev signer would never produce ---


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, claims: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def good_claims() -> dict:
    now = int(time.time())
    return {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": DEV_SENDER,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
