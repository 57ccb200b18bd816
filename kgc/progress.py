"""Progress lines for long jobs (extraction, in-context requests, graph builds): done/total,
rate and ETA, from the pace since the first call. Plain lines on stderr (they read the
same in a terminal, a log file and `ray job logs`)."""

from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Rate:
    """`line(done)`: "<what> done/total <unit>, x <unit>/s, ETA m:ss" for a job of `total`."""

    def __init__(self, what: str, total: int, unit: str = "rows"):
        self.what, self.total, self.unit = what, total, unit
        self.t0 = time.monotonic()

    def line(self, done: int) -> str:
        spent = max(1e-9, time.monotonic() - self.t0)
        rate = done / spent
        text = f"[{self.what}] {done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s"
        if 0 < done < self.total and rate > 0:
            text += f", ETA {clock((self.total - done) / rate)}"
        elif done >= self.total:
            text += f", done in {clock(spent)}"
        return text

    def show(self, done: int) -> None:
        print(self.line(done), file=sys.stderr, flush=True)
