"""Progress of a pull: events to a callback, and a one-line terminal bar for ``msb image pull``."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a pull, for a ``ProgressCallback``: its phase, the blob or image concerned, and how far it got."""

    phase: str  # "download", "unpack", "build", "done"
    digest: str  # the blob (download/unpack) or image (build/done) concerned
    done: int  # bytes so far (download), layers so far (unpack)
    total: int  # bytes or layers expected; 0 when unknown


# Called from the pulling thread and from the download threads (a few layers are fetched at once).
ProgressCallback = Callable[[ProgressEvent], None]


class TerminalProgress:
    """Draws ``phase digest [#####.....] done/total`` on one line of a terminal, at most 10 times a second."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self._draw(event)

    def _draw(self, event: ProgressEvent) -> None:
        final = event.phase == "done" or (event.total and event.done >= event.total)
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        short = event.digest.split(":")[-1][:12]
        if event.total:
            width = 30
            filled = int(width * min(event.done, event.total) / event.total)
            amounts = f"{_size(event.done, event.phase)}/{_size(event.total, event.phase)}"
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {amounts}"
        else:
            bar = _size(event.done, event.phase)
        line = f"{event.phase:<8} {short} {bar}"
        if self._tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if event.phase == "done" else ""))
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()


def _size(value: int, phase: str) -> str:
    if phase != "download":
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)
