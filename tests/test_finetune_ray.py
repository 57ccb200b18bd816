"""Ray Train with 2 CPU workers on gloo: DDP, DeepSpeed ZeRO-2/3, a killed worker, resume."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("deepspeed")

from conftest import IEPILE  # noqa: E402

from kgc.config import load_config  # noqa: E402
from kgc.errors import KgcError  # noqa: E402
from kgc.modeling.training import validate  # noqa: E402
from kgc.runtime.train import allocator_env, run  # noqa: E402
from tests.support import faults  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def cfg_for(model, train_file, storage, name, *overrides):
    data = {
        "model": {"path": str(model)},
        "data": {"train_file": str(train_file), "max_source_length": 256, "cutoff_len": 384},
        "train": {"max_steps": 4, "batch_size": 2, "save_every": 2, "lr": 3e-3, "log_every": 1},
        "distributed": {"num_workers": 2, "cpus_per_worker": 0.5},
        "run": {"name": name, "storage_path": str(storage), "max_failures": 2},
    }
    return load_config(None, list(overrides), data=data)


def read_steps(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize(
    "strategy",
    [
        ["distributed.strategy=ddp"],
        ["distributed.strategy=deepspeed", "distributed.zero_stage=2"],
        ["distributed.strategy=deepspeed", "distributed.zero_stage=3"],
    ],
    ids=["ddp", "zero2", "zero3"],
)
def test_two_workers_complete(strategy, local_ray, tiny_llama, ner_train_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = cfg_for(tiny_llama, ner_train_file, tmp_path, "r", *strategy)
    result = run(cfg)
    assert result.error is None
    assert result.metrics["step"] == 4
    full = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters())
    held = result.metrics["local_params"]  # rank 0, after the engine is built
    if "distributed.zero_stage=3" in strategy:
        assert held < 0.75 * full  # partitioned across the 2 workers, never whole
    else:
        assert held >= full
    ckpt = Path(result.checkpoint.path)
    assert {"kgc_config.yaml", "chat_format.json", "model"} <= {p.name for p in ckpt.iterdir()}
    # the adapter is complete (ZeRO-3 gathers the partitions before saving) and loads in peft
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), ckpt / "model"
    )
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.numel() > 0 for p in lora_b)
    assert any(p.abs().sum() > 0 for p in lora_b)  # trained: B starts at zero


def test_killed_worker_resumes_from_last_checkpoint(
    local_ray, tiny_llama, ner_train_file, tmp_path, capsys
):
    from kgc.trainlog import read_events

    steps_log = tmp_path / "steps.log"
    marker = tmp_path / "killed"
    cfg = cfg_for(
        tiny_llama, ner_train_file, tmp_path, "crash", "train.max_steps=8", "train.save_every=3"
    )
    with faults.plan(kill_step=5, kill_rank=1, marker=marker, step_log=steps_log):
        result = run(cfg)
    assert marker.exists(), "the worker was not killed"
    assert result.error is None and result.metrics["step"] == 8
    # first attempt ran 1..5 (killed after step 5); the group restarted from the step-3
    # checkpoint: steps 4..8 re-ran, none before the checkpoint
    assert read_steps(steps_log) == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
    # the console: a start line, a line per logged step, the restart's resume line
    err = capsys.readouterr().err
    assert "[kgc train] starting crash fresh: 8 steps" in err
    assert re.search(r"resuming crash from checkpoint \S+ at step 3/8", err), err
    for step in range(1, 9):
        assert re.search(rf"step {step}/8  loss \d+\.\d{{4}}  lr \S+  [\d,]+ tok/s", err)
    assert re.search(r"step 8/8 .*ETA 0:00", err)
    run_dir = tmp_path / "crash"
    events = read_events(run_dir)
    starts = [e for e in events if e.get("event") == "start"]
    assert [e["step"] for e in starts] == [0, 3]
    # glibc's allocator settings reached both attempts' workers (read at process start)
    want = {k: os.environ.get(k, v) for k, v in allocator_env({}).items()}
    assert all(e["malloc"] == want for e in starts), starts
    png = run_dir / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert f"loss curve: {png}" in err

    # resubmitting the same run name resumes: a longer schedule runs only the new steps
    steps_log.unlink()
    longer = cfg_for(
        tiny_llama, ner_train_file, tmp_path, "crash", "train.max_steps=10", "train.save_every=3"
    )
    with faults.plan(step_log=steps_log):
        result = run(longer)
    assert result.error is None and result.metrics["step"] == 10
    assert read_steps(steps_log) == [9, 10]
    assert re.search(r"resuming crash from checkpoint \S+ at step 8/10", capsys.readouterr().err)


def test_qlora_in_ray_train(local_ray, tiny_llama, ner_train_file, tmp_path):
    cfg = cfg_for(
        tiny_llama,
        ner_train_file,
        tmp_path,
        "q",
        "method.type=qlora",
        "train.max_steps=2",
        "model.quantization.bits=4",
        "model.quantization.quant_type=nf4",
    )
    result = run(cfg)
    assert result.error is None and result.metrics["step"] == 2


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["method.lora.target_modules=[q_proj, W_pack]"], "['W_pack'] not found"),
        (
            ["distributed.strategy=deepspeed", "distributed.zero_stage=3", "method.type=freeze"],
            "freeze with distributed.zero_stage=3",
        ),
        (["model.path=/nonexistent/model"], "not a Hugging Face model directory"),
        (["method.type=qlora"], "needs model.quantization"),
        (["data.max_source_length=50"], "even with their input text removed"),
    ],
)
def test_bad_config_fails_before_workers(overrides, needle, tiny_llama, ner_train_file, tmp_path):
    cfg = cfg_for(tiny_llama, ner_train_file, tmp_path, "bad", *overrides)
    problems = validate(cfg)
    assert any(needle in str(p) for p in problems), problems
    with pytest.raises(KgcError, match=re.escape(needle)):
        run(cfg)  # raises before Ray is touched


def test_bad_data_and_unknown_key(tiny_llama, tmp_path):
    test_file = tmp_path / "test.jsonl"
    from kgc.convert import convert_file

    convert_file(
        "NER",
        IEPILE / "NER" / "sample.json",
        IEPILE / "NER" / "schema.json",
        test_file,
        split="test",
    )
    cfg = cfg_for(tiny_llama, test_file, tmp_path, "bad")
    msgs = [str(p) for p in validate(cfg)]
    assert any("test.jsonl:1:" in m and "'output'" in m for m in msgs), msgs
    with pytest.raises(KgcError, match=r"unknown key 'train.learning_rate'"):
        cfg_for(tiny_llama, test_file, tmp_path, "bad", "train.learning_rate=1e-4")


def test_check_reports_truncation(tiny_llama, ner_train_file, tmp_path, capsys):
    """`kgc train --check` measures every record against the length budgets before any
    worker starts: how many prompts and targets are cut, the longest, the value that fits."""
    import yaml

    from kgc.cli import main

    cfg = cfg_for(tiny_llama, ner_train_file, tmp_path, "c", "data.max_target_length=8")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", "--config", str(path), "--check"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\d+ records: longest prompt \d+ tokens, longest target \d+", err)
    m = re.search(r"(\d+) of (\d+) targets are cut \(longest (\d+) tokens\): "
                  r"data.max_target_length=(\d+)", err)  # fmt: skip
    assert m and int(m[1]) > 0 and m[3] == m[4] and int(m[4]) > 8, err
    assert main(["train", "--config", str(path), "--check", "data.max_source_length=50"]) == 2
    assert "even with their input text removed" in capsys.readouterr().err
