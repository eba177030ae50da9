"""What the command line draws on a terminal: a progress bar that log lines never land on."""

from __future__ import annotations

import logging
import time
from typing import IO

from receiver.status import DownloadProgress


class ProgressBar:
    """A one-line bar on a terminal; nothing otherwise (the log has the progress).

    The time left is shown only once the transfer has run for a while (a rate measured
    over a tenth of a second means nothing), and log lines clear the bar before they are
    written, so they never land on its line; the next update draws it again below them.
    """

    _ESTIMATE_AFTER_SECONDS = 2.0

    def __init__(self, total: int | None, stream: IO[str], verb: str = "") -> None:
        self._total = total
        self._stream = stream
        self._verb = f"{verb} " if verb else ""
        self._enabled = stream.isatty()
        self._started = time.monotonic()
        self._last = 0.0
        self._done = -1  # the bytes done the bar last showed
        self._drawn = False
        if self._enabled:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._clear)

    def update(self, done: int) -> None:
        now = time.monotonic()
        # Redrawn at most 5 times a second, and once more at the end: a small file's bar,
        # drawn at 0% an instant before, would otherwise stay there.
        finishes = self._total is not None and done >= self._total and done != self._done
        if not self._enabled or (now - self._last < 0.2 and not finishes):
            return
        self._last, self._done = now, done
        elapsed = max(now - self._started, 1e-3)
        progress = DownloadProgress(done, self._total, done / elapsed)
        width = 30
        filled = int(width * (progress.percent or 0) / 100)
        text = progress.describe(estimate=elapsed >= self._ESTIMATE_AFTER_SECONDS)
        self._stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (width - filled)}] {self._verb}{text}")
        self._stream.flush()
        self._drawn = True

    def update_of(self, done: int, total: int) -> None:
        """For a transfer whose size is known only once it starts (`receiver publish`)."""
        self._total = total
        self.update(done)

    def _clear(self, record: logging.LogRecord) -> bool:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._drawn = False
        return True

    def close(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._clear)
        if self._drawn:
            self._stream.write("\n")
            self._drawn = False
