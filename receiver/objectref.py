"""`ObjectRef`: one generation of one Cloud Storage object, as storage, sync and the journal
know it, whether it came from a push (inside an `ObjectEvent`) or from a bucket listing;
`split_gs_url` for the `gs://BUCKET/NAME` the command line takes; `BUCKET_NAME`, the one
rule for a bucket's name (RECEIVER_SOURCE, `receiver publish`, `receiver dev emulator`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from receiver.errors import ReceiverError

# Cloud Storage's rule, loosely: a dotted name may run to 222 characters, a plain one to 63.
BUCKET_NAME = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"


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


def bucket_name_problem(bucket: str) -> str | None:
    """Why `bucket` cannot be a bucket's name, or None if it can."""
    if re.fullmatch(BUCKET_NAME, bucket):
        return None
    return (
        f"{bucket!r} is not a bucket name (3 to 222 characters: lowercase letters, digits, "
        "'-', '_' and '.', beginning and ending with a letter or digit)"
    )
