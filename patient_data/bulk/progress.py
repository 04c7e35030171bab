"""A progress bar on a terminal, nothing in CI logs or pipes."""

from __future__ import annotations

import os
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, stream: TextIO, total: int | None, *, interval: float = 0.2) -> None:
        isatty = getattr(stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) and not os.environ.get("CI")
        self.stream = stream
        self.total = total
        self.done = 0
        self.interval = interval
        self._shown = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._shown >= self.interval:
            self._shown = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        if not self.total:
            return f"{self.done:,} sessions scanned"
        share = min(1.0, self.done / self.total)
        bar = "#" * int(share * WIDTH)
        return f"[{bar:<{WIDTH}}] {self.done:,}/{self.total:,} sessions ({share:.0%})"

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
