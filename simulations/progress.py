"""A progress bar for long replays, on stderr, redrawn at most a few times a second."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, *, stream: TextIO | None = None, every_s: float = 0.25, width: int = 28) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.width = width
        self.started = time.perf_counter()
        self._last = -1.0
        self._drawn = False

    def __call__(self, virtual_now: float, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self._last < self.every_s and done < total:
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = round(frac * self.width)
        day = dt.datetime.fromtimestamp(virtual_now, dt.UTC).strftime("%Y-%m-%d %H:%M")
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}% "
            f"{done:,}/{total:,} jobs  at {day}  {now - self.started:6.1f}s"
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
