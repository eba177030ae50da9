"""Download: one pinned object generation from Cloud Storage, as a checked stream.

    store     listing, opening a generation (or reading a range of it), Cloud Storage's
              errors mapped to ours
    stream    the checksumming stream (`ObjectStream`) and one response's body
    sliced    a large object as parallel ranged reads, and when to slice

Third-party exceptions stop in this package: they leave it as `TransientError` (worth a
retry) or `PermanentError` (the generation is gone, or we may not read it).
"""

from receiver.download.store import ObjectRange, ObjectStore
from receiver.download.stream import READ_SIZE, ObjectStream

__all__ = ["READ_SIZE", "ObjectRange", "ObjectStore", "ObjectStream"]
