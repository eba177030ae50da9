"""Archives built in memory and unpacked as the installer unpacks a download."""

import base64
import io
import tarfile
import zipfile
from pathlib import Path
from typing import cast

import google_crc32c

from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.download import ObjectRange, ObjectStore, ObjectStream
from receiver.fetch import ByteCounter, fetch_archive
from receiver.objectref import ObjectRef
from receiver.unpack import content_decoded, unpack_tar
from tests.helpers import HALF_PLUS_TWO

LIMITS = Limits(max_unpacked_bytes=1024**3, max_files=1000, max_ratio=200)


def outside(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.parent.iterdir() if p != staging)


def unpack(
    data: bytes,
    staging: Path,
    archive_format: str,
    limits: Limits = LIMITS,
    content_encoding: str | None = None,
) -> None:
    """As the installer unpacks a download: its stored encoding removed, then unpacked; a
    zip read by `fetch_archive` itself, as from Cloud Storage (`MemoryStore`)."""
    if archive_format == "zip":
        fetch_zip(MemoryStore(data, content_encoding), staging, limits)
        return
    stored = io.BytesIO(data)
    stream = content_decoded(stored, content_encoding, limits, stored.tell)
    unpack_tar(stream, staging, limits, stored.tell)


def fetch_zip(store: "MemoryStore", staging: Path, limits: Limits = LIMITS) -> None:
    ref = ObjectRef("bucket", "models/m/1.zip", 1, size=len(store.data))
    fetch_archive(
        cast(ObjectStore, store), ref, "zip", staging, limits, ByteCounter(lambda done: None)
    )


class MemoryStore:
    """An object in memory, read as `ObjectStore` reads one: ranges, and whole streams.

    `ranged` and `streamed` (the object's bytes unless given) are what ranges and streams
    serve, to play bytes damaged or cut short on the way; `ranges` and `streams` record
    what was asked for."""

    def __init__(
        self,
        data: bytes,
        content_encoding: str | None = None,
        ranged: bytes | None = None,
        streamed: bytes | None = None,
    ) -> None:
        self.data = data
        self.content_encoding = content_encoding
        self.ranged = data if ranged is None else ranged
        self.streamed = data if streamed is None else streamed
        self.ranges: list[tuple[int, int]] = []
        self.streams = 0

    def read_range(self, obj: ObjectRef, start: int, end: int | None = None) -> ObjectRange | None:
        size = len(self.data)
        if not size:
            return None  # Cloud Storage answers 416 to a range of an empty object
        first = max(size + start, 0) if start < 0 else start
        last = size if start < 0 or end is None else min(end, size)
        self.ranges.append((first, last))
        return ObjectRange(first, self.ranged[first:last], size, self.content_encoding)

    def open(self, obj: ObjectRef) -> ObjectStream:
        self.streams += 1
        crc32c = base64.b64encode(google_crc32c.value(self.data).to_bytes(4, "big")).decode()
        return _MemoryStream(self.streamed, len(self.data), crc32c, self.content_encoding)


class _MemoryStream(ObjectStream):
    """The stream `streamed`, checked against the crc32c of the object as stored."""

    def __init__(self, data: bytes, size: int, crc32c: str, content_encoding: str | None) -> None:
        super().__init__("memory", size, crc32c, None)
        self._bytes = io.BytesIO(data)
        self.content_encoding = content_encoding

    def _next(self, amount: int) -> bytes:
        return self._bytes.read(amount)


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def zip_of(*entries: tuple[str, bytes, int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def model_tar() -> bytes:
    return archive_directory(HALF_PLUS_TWO, "tar", top="m")
