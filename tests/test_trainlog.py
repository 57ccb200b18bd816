"""The training run's metrics log (kgc.trainlog): console lines, the follower thread, the
curves with replayed steps, the loss PNG and TensorBoard events. No Ray, no model."""

from __future__ import annotations

import json
import time

import pytest

from kgc.trainlog import (
    METRICS,
    Follower,
    Progress,
    append_event,
    curves,
    read_events,
    write_loss_png,
    write_tensorboard,
)


def _events():
    t = 1000.0
    evs = [{"event": "start", "step": 0, "total_steps": 4, "checkpoint": None, "time": t}]
    for step, loss in [(1, 2.0), (2, 1.5), (3, 1.2)]:
        evs.append({"step": step, "loss": loss, "lr": 1e-4, "tokens_per_s": 1234.5,
                    "time": t + 10 * step})  # fmt: skip
    # a restart from the step-2 checkpoint replays step 3 with another loss
    evs.append({"event": "start", "step": 2, "total_steps": 4, "checkpoint": "/r/ckpt_2",
                "time": t + 40})  # fmt: skip
    evs.append({"step": 3, "loss": 1.1, "lr": 1e-4, "tokens_per_s": 1000.0, "time": t + 50})
    evs.append({"step": 4, "loss": 1.0, "eval_loss": 1.3, "lr": 0.0, "checkpoint": True,
                "tokens_per_s": 1000.0, "time": t + 60})  # fmt: skip
    return evs


def test_progress_lines():
    lines: list[str] = []
    show = Progress("ner", lines.append)
    for ev in _events():
        show(ev)
    assert lines[0] == "[kgc train] starting ner fresh: 4 steps"
    assert lines[1] == (
        "[kgc train] step 1/4  loss 2.0000  lr 1.00e-04  1,234 tok/s  ETA 0:30"
    )  # 10 s per step since the start, 3 steps to go
    assert lines[4] == "[kgc train] resuming ner from checkpoint /r/ckpt_2 at step 2/4"
    assert lines[-1].startswith("[kgc train] step 4/4  loss 1.0000  eval_loss 1.3000")
    assert lines[-1].endswith("ETA 0:00  checkpoint saved")


def test_curves_keep_the_last_value_of_a_replayed_step():
    c = curves(_events())
    assert c["loss"] == [(1, 2.0), (2, 1.5), (3, 1.1), (4, 1.0)]
    assert c["eval_loss"] == [(4, 1.3)]


def test_follower_reads_only_new_whole_lines(tmp_path):
    append_event(tmp_path, {"step": 1, "loss": 9.0})  # an earlier run's line: not repeated
    got: list[dict] = []
    with Follower(tmp_path, got.append):
        append_event(tmp_path, {"event": "start", "step": 0, "total_steps": 2})
        with open(tmp_path / METRICS, "a") as f:
            f.write('{"step": 2, "lo')  # a line being written
        deadline = time.time() + 5
        while len(got) < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert [e.get("event") for e in got] == ["start"]
        with open(tmp_path / METRICS, "a") as f:
            f.write('ss": 0.5}\n')
    assert got[-1]["step"] == 2 and got[-1]["loss"] == 0.5
    assert len(read_events(tmp_path)) == 3


def test_loss_png_and_tensorboard(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorboardX")
    evs = _events()
    png = write_loss_png(tmp_path, evs)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tb = write_tensorboard(tmp_path, evs)
    files = list(tb.glob("events.out.tfevents.*"))
    assert len(files) == 1
    write_tensorboard(tmp_path, evs)  # rewritten whole: still one file, no duplicate points
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    scalars = _read_scalars(files[0])
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [round(v, 3) for _, v in scalars["eval/loss"]] == [1.3]


def _read_scalars(path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file, read as TensorBoard does: TFRecord frames
    (length, crc, payload, crc) of `Event` protos."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, pos, out = path.read_bytes(), 0, {}
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        ev = Event.FromString(data[pos + 12 : pos + 12 + n])
        pos += 12 + n + 4
        for v in ev.summary.value:
            out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_nothing_logged_writes_nothing(tmp_path):
    assert write_loss_png(tmp_path, [{"event": "start", "step": 0}]) is None
    assert write_tensorboard(tmp_path, []) is None
    assert json.loads(json.dumps(read_events(tmp_path))) == []


def test_eval_exact_counts_rows_whose_every_answer_token_is_the_top_choice():
    """eval_exact = rows greedy decoding would reproduce: a row with one answer token not
    the model's top choice is not exact, however small its loss share; prompt tokens
    (label -100) and virtual-token logits in front (prompt learning) do not count."""
    import torch

    from kgc.modeling.training import eval_metrics

    vocab, virtual = 5, 2

    class Net(torch.nn.Module):
        def forward(self, input_ids, labels, attention_mask=None):
            # next-token logits that favour input_ids[t] + 1 (mod vocab), then virtual ones
            nxt = torch.nn.functional.one_hot((input_ids + 1) % vocab, vocab).float() * 5
            logits = torch.cat([torch.zeros(len(input_ids), virtual, vocab), nxt], dim=1)
            loss = torch.tensor(0.5)
            return type("Out", (), {"logits": logits, "loss": loss})()

    rows = [  # labels: -100 on the prompt; the answer follows the +1 rule → exact
        {"input_ids": [0, 1, 2, 3], "labels": [-100, -100, 2, 3]},
        {"input_ids": [0, 1, 2, 4], "labels": [-100, -100, 2, 4]},  # 4 ≠ 2 + 1: not exact
        {"input_ids": [1, 2], "labels": [-100, 2]},
    ]
    m = eval_metrics(Net(), rows, 0, "cpu", 0, 1, batch=2)
    assert m["eval_exact"] == 2 / 3
    assert m["eval_loss"] == 0.5
