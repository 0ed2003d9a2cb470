"""One progress line on stderr, for downloads (bytes) and embedding runs (images).

    checkpoint.pth  42% 37.1/88.3 MB 11.2 MB/s
    embed 120/1000 images  12% 35.2 images/s  ETA 25 s

On a terminal the line is redrawn in place (at most 5 times a second); elsewhere (logs, CI)
a line is printed every 10%, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Literal

__all__ = ["ProgressBar"]


class ProgressBar:
    """A progress line on stderr: rewritten in place on a terminal, one line per tenth otherwise.

    unit="bytes" shows MB and MB/s (downloads), unit="images" shows images/s and the ETA (embed);
    update(n) adds n units, close() prints the final line.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = ProgressBar("embed", 4, unit="images", stream=out)
        >>> bar.update(4); bar.close()
        >>> out.getvalue().split(" images")[0]
        'embed 4/4'
    """

    def __init__(self, label: str, total: int | None, *, unit: Literal["bytes", "images"] = "bytes",
                 stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and (unit == "bytes" or bool(total))
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self._last = time.monotonic()
        self._decile = 0

    def rate(self) -> float:
        """Units per second so far."""
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def line(self) -> str:
        r = self.rate()
        if self.unit == "bytes":
            mb, pct = self.done / 1e6, f" {100 * self.done / self.total:4.0f}%" if self.total else ""
            size = f"{mb:.1f}/{self.total / 1e6:.1f} MB" if self.total else f"{mb:.1f} MB"
            return f"{self.label}{pct} {size} {r / 1e6:.1f} MB/s"
        eta = f"  ETA {(self.total - self.done) / r:.0f} s" if r > 0 and self.total and self.done < self.total else ""
        pct = 100 * self.done / self.total if self.total else 100.0
        return f"{self.label} {self.done}/{self.total} images {pct:3.0f}% {r:.1f} images/s{eta}"

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.2:
                self._last = now
                self.stream.write("\r" + self.line())
                self.stream.flush()
        elif self.total:
            decile = 10 * self.done // self.total
            if decile > self._decile and self.done < self.total:
                self._decile = decile
                print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(("\r" if self.tty else "") + self.line() + " done", file=self.stream, flush=True)
