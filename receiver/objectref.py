"""`ObjectRef`: one generation of one Cloud Storage object, as storage, sync and the journal
know it, whether it came from a push (inside an `ObjectEvent`) or from a bucket listing;
`split_gs_url` for the `gs://BUCKET/NAME` the command line takes."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.errors import ReceiverError


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


def split_gs_url(url: str) -> tuple[str, str]:
    """`gs://BUCKET/NAME` as (BUCKET, NAME), or a ReceiverError saying what was expected."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    if not url.startswith("gs://") or not bucket or not name:
        raise ReceiverError(f"{url!r} is not gs://BUCKET/OBJECT")
    return bucket, name
