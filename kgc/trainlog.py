"""A training run's metrics log: `metrics.jsonl` in the run folder, the console lines made
from it while the run goes, and the loss curve (PNG) and TensorBoard events written from it
at the end.

Rank 0 of the Ray Train job appends one JSON object per event to `<run>/metrics.jsonl`: a
`start` event (fresh, or resumed from a checkpoint at a step), then one per logged step
(`step`, `loss`, `lr`, `tokens_per_s`, and `eval_loss` / `eval_exact` when evaluated). A resumed or
restarted run appends to the same file; steps replayed after a restart appear again and the
last value of a step wins. The driver follows the file (`Follower`) and prints each event;
no Ray here.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
TENSORBOARD = "tensorboard"


def append_event(run_dir: str | os.PathLike, event: dict) -> None:
    """One event as a line of `<run_dir>/metrics.jsonl` (written whole, then flushed)."""
    path = Path(run_dir) / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**event, "time": round(time.time(), 3)}, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_events(run_dir: str | os.PathLike) -> list[dict]:
    """The events so far (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def curves(events: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per metric (loss, eval_loss, eval_exact, lr, tokens_per_s): (step, value) sorted by
    step, the last value of a replayed step kept."""
    series: dict[str, dict[int, float]] = {}
    for ev in events:
        step = ev.get("step")
        if not isinstance(step, int):
            continue
        for key in ("loss", "eval_loss", "eval_exact", "lr", "tokens_per_s"):
            v = ev.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(key, {})[step] = float(v)
    return {k: sorted(v.items()) for k, v in series.items()}


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Console lines from events: the start (fresh or resumed), then one line per logged
    step with step/total, loss, lr, tokens/s and ETA (from the pace since the start)."""

    def __init__(self, name: str, write: Callable[[str], None] | None = None):
        from kgc.progress import on_terminal

        self.name = name
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.total = 0
        self.first: tuple[int, float] | None = None  # (step, time) the pace is measured from
        # on a terminal (and no `write` given) the step lines become one bar redrawn in place
        self.bar_mode = write is None and on_terminal()
        self._bar = None

    def __call__(self, ev: dict) -> None:
        if ev.get("event") == "start":
            self.total = int(ev.get("total_steps") or 0)
            step = int(ev.get("step") or 0)
            self.first = (step, float(ev.get("time", time.time())))
            if step:
                self.write(
                    f"[kgc train] resuming {self.name} from checkpoint {ev.get('checkpoint')} "
                    f"at step {step}/{self.total}"
                )
            else:
                self.write(f"[kgc train] starting {self.name} fresh: {self.total} steps")
            if ev.get("precision"):  # which ran, and why (train.precision)
                self.write(f"[kgc train] precision {ev['precision']} ({ev.get('precision_why')})")
            if self.bar_mode:
                from kgc.progress import terminal_bar

                self._bar = terminal_bar("kgc train", self.total, "steps", initial=step)
            return
        step = ev.get("step")
        if not isinstance(step, int):
            return
        if self._bar:
            self._draw(step, ev)
            return
        parts = [f"[kgc train] step {step}/{self.total or '?'}"]
        if isinstance(ev.get("loss"), (int, float)):
            parts.append(f"loss {ev['loss']:.4f}")
        if isinstance(ev.get("eval_loss"), (int, float)):
            parts.append(f"eval_loss {ev['eval_loss']:.4f}")
        if isinstance(ev.get("eval_exact"), (int, float)):
            parts.append(f"eval_exact {ev['eval_exact']:.3f}")
        if isinstance(ev.get("lr"), (int, float)):
            parts.append(f"lr {ev['lr']:.2e}")
        if isinstance(ev.get("tokens_per_s"), (int, float)):
            parts.append(f"{ev['tokens_per_s']:,.0f} tok/s")
        if self.first and self.total and step > self.first[0]:
            pace = (float(ev.get("time", time.time())) - self.first[1]) / (step - self.first[0])
            parts.append(f"ETA {_clock(pace * (self.total - step))}")
        if ev.get("checkpoint"):
            parts.append("checkpoint saved")
        self.write("  ".join(parts))

    def _draw(self, step: int, ev: dict) -> None:
        """The bar at `step`, with loss, lr and tokens/s after it."""
        bar = self._bar
        bar.update(max(0, step - bar.n))
        post = []
        for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval {:.4f}"), ("eval_exact", "exact {:.3f}"),
                         ("lr", "lr {:.2e}"), ("tokens_per_s", "{:,.0f} tok/s")):  # fmt: skip
            if isinstance(ev.get(key), (int, float)):
                post.append(fmt.format(ev[key]))
        bar.set_postfix_str("  ".join(post), refresh=True)
        if ev.get("checkpoint"):
            bar.write(f"[kgc train] step {step}: checkpoint saved", file=sys.stderr)
        if self.total and step >= self.total:
            bar.close()


class Follower:
    """Follows `<run_dir>/metrics.jsonl` in a thread from its current end (what an earlier
    run wrote is not repeated) and hands each new event to `on_event`."""

    def __init__(self, run_dir: str | os.PathLike, on_event: Callable[[dict], None]):
        self.path = Path(run_dir) / METRICS
        self.on_event = on_event
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kgc-trainlog", daemon=True)

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the last lines

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict):
                self.on_event(ev)


def write_loss_png(run_dir: str | os.PathLike, events: list[dict]) -> Path | None:
    """`<run_dir>/loss.png`: train loss (and eval loss) by step; None if nothing was logged
    or matplotlib is missing."""
    c = curves(events)
    if not c.get("loss"):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps, values = zip(*c["loss"])
    ax.plot(steps, values, label="train loss", color="#1f77b4")
    if c.get("eval_loss"):
        s2, v2 = zip(*c["eval_loss"])
        ax.plot(s2, v2, "o-", label="eval loss", color="#d62728")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / LOSS_PNG
    tmp = out.with_suffix(".png.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out


def write_tensorboard(run_dir: str | os.PathLike, events: list[dict]) -> Path | None:
    """TensorBoard event files under `<run_dir>/tensorboard/` (train/loss, eval/loss,
    train/lr, train/tokens_per_s), rewritten from the log; None without tensorboardX."""
    c = curves(events)
    if not c:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    out = Path(run_dir) / TENSORBOARD
    if out.exists():
        import shutil

        shutil.rmtree(out)  # written whole from the log each time: no duplicate points
    names = {
        "loss": "train/loss",
        "eval_loss": "eval/loss",
        "eval_exact": "eval/exact",
        "lr": "train/lr",
        "tokens_per_s": "train/tokens_per_s",
    }
    with SummaryWriter(logdir=str(out)) as w:
        for key, points in c.items():
            for step, v in points:
                w.add_scalar(names[key], v, step)
    return out
