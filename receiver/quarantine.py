"""A bounded store for deliveries that were authenticated but could not be used.

They are acknowledged (a 4xx would be redelivered for days and slow every other message
through Pub/Sub's subscription-wide push backoff), so their bodies are kept here for an
operator to read: one JSON file each under `<state dir>/quarantine/`, the newest
`MAX_ENTRIES` only, each body cut at `MAX_BODY_BYTES`. Credentials are never stored.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

MAX_ENTRIES = 100
MAX_BODY_BYTES = 1024 * 1024
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class Quarantine:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(self, body: bytes, headers: Mapping[str, str], reason: str) -> str:
        """Store a rejected delivery; returns its id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        kept = body[:MAX_BODY_BYTES]
        try:
            body_field: dict[str, object] = {"body": kept.decode("utf-8")}
        except UnicodeDecodeError:
            body_field = {"body_base64": base64.b64encode(kept).decode()}
        record = {
            "id": entry_id,
            "received_at": time.time(),
            "reason": reason,
            "bytes": len(body),
            "truncated": len(body) > MAX_BODY_BYTES,
            "headers": {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS},
            **body_field,
        }
        temporary = self.directory / f".{entry_id}.tmp"
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, self.directory / f"{entry_id}.json")
        self._trim()
        return entry_id

    def entries(self, limit: int = 20) -> list[dict[str, object]]:
        """The newest entries, without their bodies."""
        summaries = []
        for path in self._paths()[-limit:][::-1]:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # trimmed by another process meanwhile
            summaries.append({k: record.get(k) for k in ("id", "received_at", "reason", "bytes")})
        return summaries

    def count(self) -> int:
        return len(self._paths())

    def _paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    def _trim(self) -> None:
        for path in self._paths()[:-MAX_ENTRIES]:
            path.unlink(missing_ok=True)
