"""Progress for long jobs (extraction, in-context requests, graph builds, training): done/total,
rate and ETA, from the pace since the first call. On a terminal, one bar redrawn in place
(tqdm, which every kgc extra installs); elsewhere (a log file, `ray job logs`, a pipe) plain
lines on stderr. `KGC_PROGRESS=plain|bar` overrides the choice. A job ends with a short
summary block (`done_block`): outputs, counts, scores and where the details are."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def on_terminal(stream=None) -> bool:
    """Whether progress is drawn as a bar: `stream` (stderr) is a terminal, unless
    KGC_PROGRESS says plain (or bar)."""
    mode = os.environ.get("KGC_PROGRESS", "").lower()
    if mode in ("plain", "bar"):
        return mode == "bar"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def terminal_bar(what: str, total: int, unit: str, initial: int = 0, stream=None):
    """A tqdm bar on `stream` (stderr), or None where tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total or None,
        initial=initial,
        desc=f"[{what}]",
        unit=f" {unit}" if len(unit) > 2 else unit,
        file=stream if stream is not None else sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )


class Rate:
    """`line(done)`: "<what> done/total <unit>, x <unit>/s, ETA m:ss" for a job of `total`;
    `show(done)` draws it as a bar on a terminal, else prints the line."""

    def __init__(self, what: str, total: int, unit: str = "rows", stream=None):
        self.what, self.total, self.unit = what, total, unit
        self.t0 = time.monotonic()
        self.stream = stream
        self._bar = None

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
        stream = self.stream if self.stream is not None else sys.stderr
        if self._bar is None and on_terminal(stream):
            self._bar = terminal_bar(self.what, self.total, self.unit, stream=stream) or False
        if self._bar:
            self._bar.update(max(0, done - self._bar.n))
            if done >= self.total:
                self._bar.close()
            return
        print(self.line(done), file=stream, flush=True)


def done_block(title: str, items: Iterable[tuple[str, object]], stream=None) -> str:
    """A job's closing summary: a title line, then one indented `label: value` line per
    item whose value is not None or empty (printed to `stream`, default stderr)."""
    lines = [title]
    for label, value in items:
        if value is None or value == "" or value == {}:
            continue
        lines.append(f"  {label + ':':<12} {value}")
    text = "\n".join(lines)
    print(text, file=stream if stream is not None else sys.stderr, flush=True)
    return text
