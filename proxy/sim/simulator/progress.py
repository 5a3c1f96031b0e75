"""Progress of a long ``autellix bench`` run, on stderr."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    """A progress bar on a terminal, a line per tenth of the work elsewhere."""

    def __init__(self, total: int, stream: TextIO, label: str = "points") -> None:
        self.total, self.stream, self.label = total, stream, label
        self.done = 0
        self.start = time.monotonic()
        self._tty = stream.isatty()
        self._last_tenth = -1

    def advance(self, note: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        if self._tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{self.label} {elapsed:5.0f}s eta {eta:4.0f}s {note[:40]:40s}"
            )
            if self.done == self.total:
                self.stream.write("\n")
        else:
            tenth = 10 * self.done // max(self.total, 1)
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(
                    f"{self.done}/{self.total} {self.label} {elapsed:.0f}s eta {eta:.0f}s\n"
                )
        self.stream.flush()
