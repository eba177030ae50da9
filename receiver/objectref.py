"""`ObjectRef`: one generation of one Cloud Storage object, as storage, sync and the journal
know it, whether it came from a push (inside an `ObjectEvent`) or from a bucket listing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    name: str
    generation: int
    size: int | None = None
    md5: str | None = None  # base64, as in the object resource
    crc32c: str | None = None  # base64 big-endian, as in the object resource

    @property
    def url(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"
