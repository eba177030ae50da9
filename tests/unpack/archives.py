"""Archives built in memory and unpacked as the installer unpacks a download."""

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.unpack import content_decoded, unpack_tar, unpack_zip
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
    """As the installer unpacks a download: its stored encoding removed, then unpacked."""
    stored = io.BytesIO(data)
    stream = content_decoded(stored, content_encoding, limits, stored.tell)
    if archive_format == "zip":
        path = staging.parent.parent / "upload.zip"
        with path.open("wb") as out:
            shutil.copyfileobj(stream, out)
        unpack_zip(path, staging, limits)
    else:
        unpack_tar(stream, staging, limits, stored.tell)


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
