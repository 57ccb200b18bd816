"""Hostile inputs around training: broken checkpoints, a checkpoint that asks for remote
code, run names that are paths, YAML that is not data, and a test head that must not stop
someone else's Ray."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kgc.checkpoint import (
    MANIFEST,
    STATE_FILE,
    checkpoint_problem,
    manifest_step,
    resume_problem,
    select_checkpoint,
    write_manifest,
)
from kgc.config import FinetuneConfig, RunSpec, apply_overrides, load_config, read_yaml_file
from kgc.errors import KgcError
from kgc.modeling.training import restore

pytestmark = pytest.mark.timeout(300)


# ----------------------------------------------------------------------------- checkpoints
def _tiny_training_state():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def make_checkpoint(d: Path, step: int, *, ranks=(0,), manifest: bool = True) -> Path:
    """A checkpoint folder laid out as write_checkpoint writes it (full fine-tune: weights
    in model/trainable.pt), manifest last."""
    import torch

    model, opt, sched = _tiny_training_state()
    (d / "model").mkdir(parents=True)
    torch.save(model.state_dict(), d / "model" / "trainable.pt")
    (d / "model" / "tokenizer.json").write_text(json.dumps({"v": step}))
    torch.save(
        {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
        d / STATE_FILE,
    )
    (d / "kgc_config.yaml").write_text("model:\n  path: /models/x\n")
    if manifest:
        write_manifest(d, step=step, rank=0, ranks=list(ranks))
    return d


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_manifest_lists_every_file_and_verifies(tmp_path):
    d = make_checkpoint(tmp_path / "checkpoint_a", 4)
    body = json.loads((d / MANIFEST).read_text())
    assert body["step"] == 4 and body["ranks"] == [0]
    assert set(body["files"]) == {
        "model/trainable.pt",
        "model/tokenizer.json",
        STATE_FILE,
        "kgc_config.yaml",
    }
    assert body["files"][STATE_FILE]["size"] == (d / STATE_FILE).stat().st_size
    assert len(body["files"][STATE_FILE]["sha256"]) == 64
    assert checkpoint_problem(d) is None
    assert manifest_step(d) == 4


def _stale_same_size(d: Path) -> None:
    f = d / "model" / "tokenizer.json"
    f.write_text(f.read_text().replace("4", "9"))  # same length, other content


@pytest.mark.parametrize(
    "tamper, needle",
    [
        (lambda d: truncate(d / STATE_FILE), f"{STATE_FILE} has "),
        (lambda d: (d / STATE_FILE).unlink(), f"{STATE_FILE} is missing"),
        (_stale_same_size, "model/tokenizer.json does not match its sha256"),
        (lambda d: (d / "model" / "adapter_model.safetensors").write_bytes(b"x"),
         "model/adapter_model.safetensors is not in the manifest"),
        (lambda d: (d / MANIFEST).unlink(), f"no {MANIFEST}"),
        (lambda d: (d / MANIFEST).write_text("{not json"), "manifest is unreadable"),
    ],
    ids=["truncated-state", "missing-state", "stale-file", "file-copied-in", "no-manifest",
         "bad-manifest"],
)  # fmt: skip
def test_tampered_checkpoint_is_rejected_with_the_file_named(tmp_path, tamper, needle):
    d = make_checkpoint(tmp_path / "checkpoint_a", 4)
    tamper(d)
    why = checkpoint_problem(d)
    assert why is not None and needle in why, why


def test_every_rank_manifest_must_be_there_and_of_the_same_step(tmp_path):
    d = make_checkpoint(tmp_path / "checkpoint_a", 4, ranks=[0, 1])
    assert "kgc_manifest.rank1.json is missing" in checkpoint_problem(d)
    shard = d / "deepspeed" / "state" / "zero_pp_rank_1_optim_states.pt"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"rank one's shard")
    # rank 1 wrote its files in its own folder; Ray merged both into this one
    r1 = tmp_path / "rank1"
    (r1 / shard.parent.relative_to(d)).mkdir(parents=True)
    (r1 / shard.relative_to(d)).write_bytes(shard.read_bytes())
    (d / "kgc_manifest.rank1.json").write_text(
        write_manifest(r1, step=4, rank=1).read_text(encoding="utf-8")
    )
    assert checkpoint_problem(d) is None
    (d / "kgc_manifest.rank1.json").write_text(
        write_manifest(r1, step=2, rank=1).read_text(encoding="utf-8")
    )
    assert "from step 2" in checkpoint_problem(d)


def test_a_broken_latest_falls_back_to_the_newest_intact(tmp_path):
    run = tmp_path / "runs" / "ner"
    a = make_checkpoint(run / "checkpoint_2026-01-01_00-00-01.000000", 2)
    b = make_checkpoint(run / "checkpoint_2026-01-01_00-00-02.000000", 4)
    c = make_checkpoint(run / "checkpoint_2026-01-01_00-00-03.000000", 6)
    truncate(c / STATE_FILE)
    said: list[str] = []
    assert select_checkpoint(c, say=said.append) == b
    assert any(str(c) in m and STATE_FILE in m for m in said), said
    assert any(f"resuming from {b} (step 4)" in m for m in said), said

    _stale_same_size(b)  # now only the oldest is intact
    said.clear()
    assert select_checkpoint(c, say=said.append) == a
    assert any(str(b) in m and "sha256" in m for m in said), said
    assert select_checkpoint(a, say=said.append) == a  # an intact latest is used as is


def test_no_intact_checkpoint_is_an_error_naming_each_file(tmp_path):
    run = tmp_path / "runs" / "ner"
    a = make_checkpoint(run / "checkpoint_a", 2)
    b = make_checkpoint(run / "checkpoint_b", 4)
    truncate(a / STATE_FILE)
    (b / MANIFEST).unlink()
    with pytest.raises(KgcError) as exc:
        select_checkpoint(b, say=lambda m: None)
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"checkpoint_a: {STATE_FILE} has" in msg and f"checkpoint_b: no {MANIFEST}" in msg
    assert f"delete {run}" in msg and "run.name" in msg
    # the driver says the same before any worker starts (`kgc train --check`, run())
    problem = resume_problem(run)
    assert problem is not None and "checkpoint_a" in str(problem) and "delete" in str(problem)


def test_resume_check_passes_for_fresh_or_partly_intact_run_folders(tmp_path):
    run = tmp_path / "runs" / "ner"
    assert resume_problem(run) is None  # never ran
    assert select_checkpoint(None) is None  # Ray has no checkpoint: step 0
    a = make_checkpoint(run / "checkpoint_a", 2)
    b = make_checkpoint(run / "checkpoint_b", 4)
    truncate(b / STATE_FILE)
    assert resume_problem(run) is None  # checkpoint_a will do
    # Ray's latest was deleted by hand and nothing else is left: start over, saying so
    gone = run / "checkpoint_c"
    for p in (a, b):
        shutil.rmtree(p)
    said: list[str] = []
    assert select_checkpoint(gone, say=said.append) is None
    assert any("starting at step 0" in m for m in said), said


def test_restore_reads_an_intact_checkpoint(tmp_path):
    import torch

    d = make_checkpoint(tmp_path / "checkpoint_a", 3)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    assert restore(d, model, opt, sched, None) == 3
    saved = torch.load(d / "model" / "trainable.pt", weights_only=True)
    assert torch.equal(model.weight, saved["weight"])
    assert opt.state_dict()["state"]  # AdamW moments came back


@pytest.mark.parametrize("keep", [0.5, 0.01, 0.0])
def test_truncated_trainer_state_is_named_not_a_bare_oserror(tmp_path, keep):
    import torch

    d = make_checkpoint(tmp_path / "checkpoint_a", 3)
    truncate(d / STATE_FILE, keep)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(KgcError) as exc:
        restore(d, model, opt, sched, None)
    msg = str(exc.value)
    assert msg.startswith(f"{d / STATE_FILE}: cannot read this checkpoint file"), msg
    assert "delete its checkpoint folder" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- remote code
@pytest.fixture
def recorded_loads(monkeypatch):
    """trust_remote_code of every from_pretrained call (the real loaders still run)."""
    import transformers

    calls: list[tuple[str, object]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        orig = cls.from_pretrained

        def wrapper(*args, _orig=orig, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", "unset")))
            return _orig(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", wrapper)
    return calls


def test_a_checkpoint_cannot_turn_on_remote_code(tiny_llama, tmp_path, recorded_loads, caplog):
    from kgc.config import ModelConfig
    from kgc.modeling.hf_engine import HFEngine, resolve_engine_model

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    saved = {"model": {"path": str(tiny_llama), "trust_remote_code": True}}
    (ckpt / "kgc_config.yaml").write_text(yaml.safe_dump(saved))

    with caplog.at_level(logging.WARNING, logger="kgc"):
        engine = HFEngine(checkpoint=str(ckpt), batch_size=2)
    assert engine.model is not None
    names = {n for n, _ in recorded_loads}
    assert names == {"AutoModelForCausalLM", "AutoTokenizer"}, recorded_loads
    assert all(trust is False for _, trust in recorded_loads), recorded_loads
    assert "trust_remote_code=true; ignored" in caplog.text

    # the operator's own flag, or own model config, is what turns it on
    recorded_loads.clear()
    HFEngine(checkpoint=str(ckpt), batch_size=2, trust_remote_code=True)
    assert recorded_loads and all(trust is True for _, trust in recorded_loads), recorded_loads
    asked = ModelConfig(path=str(tiny_llama), trust_remote_code=True)
    assert resolve_engine_model(asked, None, str(ckpt))[0].trust_remote_code is True
    assert resolve_engine_model(None, None, str(ckpt))[0].trust_remote_code is False
    assert resolve_engine_model(str(tiny_llama), None, None)[0].trust_remote_code is False


def test_a_checkpoint_config_that_is_not_yaml_names_its_file(tmp_path):
    from kgc.checkpoint import resolve_checkpoint

    (tmp_path / "kgc_config.yaml").write_text("model:\n  path: [unclosed\n")
    with pytest.raises(KgcError, match=r"kgc_config\.yaml:\d+: not valid YAML"):
        resolve_checkpoint(str(tmp_path))


# ----------------------------------------------------------------------------- run.name
BASE = {"model": {"path": "/models/x"}, "data": {"train_file": "train.jsonl"}}


@pytest.mark.parametrize(
    "name", ["../../../x", "a/b", "/abs", "..", ".hidden", "", "a..b", "x y", "名字", "x" * 129]
)
def test_run_name_must_be_a_plain_name(name):
    with pytest.raises(KgcError) as exc:
        load_config(None, [], data={**BASE, "run": {"name": name}})
    msg = str(exc.value)
    assert "\n" not in msg
    assert "key 'run.name'" in msg and repr(name) in msg and "plain folder name" in msg


@pytest.mark.parametrize("name", ["ner-lora-qwen2.5-7b", "r", "RUN_1", "x" * 128])
def test_plain_run_names_pass(name):
    assert RunSpec(name=name).name == name


def _write_train_config(tmp_path: Path, text: str | None = None) -> Path:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(text if text is not None else yaml.safe_dump(BASE), encoding="utf-8")
    return cfg


def test_train_check_rejects_a_path_as_run_name(tmp_path, capsys):
    from kgc.cli import main

    cfg = _write_train_config(tmp_path)
    assert main(["train", "--config", str(cfg), "--check", "run.name=../../../x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "kgc train: error:" and len(err) == 2, err
    assert err[1].startswith(f"{cfg}: key 'run.name' = '../../../x'"), err
    assert "run.name=ner-lora-r16" in err[1]  # the fix


# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize(
    "value, reason",
    [
        ('!!python/object/apply:os.system ["touch {marker}"]', "could not determine a constructor"),
        ("*anchor", "found undefined alias"),
        ("[1, 2", "expected ',' or ']'"),
        ("{a: b", "expected ',' or '}'"),
    ],
)
def test_bad_override_is_one_line_naming_key_and_value(tmp_path, value, reason):
    marker = tmp_path / "ran"
    value = value.replace("{marker}", str(marker))
    with pytest.raises(KgcError) as exc:
        apply_overrides({}, [f"train.lr={value}"])
    msg = str(exc.value)
    assert msg.startswith(f"override train.lr={value}: not a valid YAML value ("), msg
    assert reason in msg and "quote a string" in msg and "\n" not in msg
    assert not marker.exists()  # nothing ran


@pytest.mark.parametrize("item", ["=1", "train..lr=1", ".lr=1", "train.=1"])
def test_override_with_an_empty_key_part(item):
    with pytest.raises(KgcError, match="has an empty part"):
        apply_overrides({}, [item])


def test_override_values_still_parse_as_yaml():
    tree = apply_overrides({}, ["train.lr=0.5", "method.lora.target_modules=[q, v]", "x.y='*a'"])
    assert tree == {"train": {"lr": 0.5}, "method": {"lora": {"target_modules": ["q", "v"]}},
                    "x": {"y": "*a"}}  # fmt: skip


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("model:\n  path: x\ndata:\n  train_file: [a, b\ntrain:\n  lr: 1\n", 5, "expected ','"),
        ("model:\n  path: *x\n", 2, "found undefined alias 'x'"),
        ("model:\n  path: x\n   bad: 1\n", 3, "mapping values are not allowed here"),
        ("model: !!python/name:os.system\n", 1, "could not determine a constructor"),
    ],
)
def test_malformed_config_file_names_file_and_line(tmp_path, text, line, reason):
    cfg = _write_train_config(tmp_path, text)
    with pytest.raises(KgcError) as exc:
        load_config(cfg)
    msg = str(exc.value)
    assert msg.startswith(f"{cfg}:{line}: not valid YAML at column "), msg
    assert reason in msg and "\n" not in msg


def test_config_file_that_is_not_utf8(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(b"model:\n  path: \xff\n")
    with pytest.raises(KgcError, match=r"train\.yaml: not UTF-8 text \(byte 0xff at offset 15\)"):
        read_yaml_file(cfg)


def test_train_check_reports_a_broken_yaml_file_in_one_line(tmp_path, capsys):
    from kgc.cli import main

    cfg = _write_train_config(tmp_path, "model: {path: x\n")
    assert main(["train", "--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].startswith(f"{cfg}:2: not valid YAML"), err


def test_finetune_config_round_trips_through_its_checkpoint_yaml():
    cfg = FinetuneConfig.model_validate(BASE)
    from kgc.config import dump_config

    assert FinetuneConfig.model_validate(yaml.safe_load(dump_config(cfg))) == cfg


# ----------------------------------------------------------------------------- test Ray head
def _sleeper(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kw,
    )


def _started(p: subprocess.Popen, needle: str, timeout: float = 30) -> str:
    """The command line of p once it shows needle. /proc can read a fresh process's cmdline
    empty for a moment after exec (seen once in CI): wait for it rather than read it once."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        assert p.poll() is None, f"{p.args} exited with {p.returncode}"
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            line = subprocess.list2cmdline(psutil.Process(p.pid).cmdline())
            if needle in line:
                return line
        assert time.monotonic() < deadline, f"{p.args}: cmdline never showed {needle!r}"
        time.sleep(0.05)


def test_stop_head_stops_its_own_processes_and_no_other_ray(tmp_path):
    """The fixture's teardown stops the head's process tree and whatever names its temp dir;
    another Ray instance (another temp dir, even one sharing a prefix, and processes with
    Ray's names) is left running."""
    import psutil
    from test_cluster import stop_head

    ours = tmp_path / "ray-head"
    # the "head": a process with a child and grandchild (workers rename themselves, so only
    # parentage ties them to the head) ...
    tree = (
        "import subprocess, sys, time\n"
        'code = \'import subprocess, sys, time; subprocess.Popen([sys.executable, "-c", '
        '"import time; time.sleep(120)"]); time.sleep(120)\'\n'
        "subprocess.Popen([sys.executable, '-c', code, 'ray::IDLE'])\n"
        "time.sleep(120)\n"
    )
    head = subprocess.Popen([sys.executable, "-c", tree], start_new_session=True)
    # ... plus a process of its session that is not its descendant
    stray = _sleeper(f"--session-dir={ours}/session_1")
    _started(stray, f"{ours}/session_1")
    # another Ray on the host: its own temp dir (sharing a prefix with ours), Ray-like names
    other = [
        _sleeper(f"--temp-dir={ours}2", "default_worker.py", start_new_session=True),
        _sleeper("--temp-dir=/tmp/ray", "log_monitor.py", start_new_session=True),
    ]
    # ... which `ray stop` would take for its own (it matches these command lines)
    from ray.autoscaler._private.constants import RAY_PROCESSES

    by_args = [kw for kw, by_name in RAY_PROCESSES if not by_name]
    for p in other:
        line = _started(p, "--temp-dir=")
        assert any(kw in line for kw in by_args), line
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(head.pid).children(recursive=True)) < 2:
            assert time.monotonic() < deadline, "the fake head did not start its children"
            time.sleep(0.1)
        members = [head.pid] + [c.pid for c in psutil.Process(head.pid).children(True)]
        stopped = stop_head(head, ours, grace_s=10)
        assert set(members) | {stray.pid} <= set(stopped)
        assert not set(stopped) & {p.pid for p in other}
        stray.wait(timeout=10)
        for pid in members:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert all(p.poll() is None for p in other), "another Ray's process was stopped"
    finally:
        for p in [head, stray, *other]:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_skips_a_truncated_checkpoint_in_ray_train(
    local_ray, tiny_llama, ner_train_file, tmp_path
):
    """Real Ray Train: checkpoints carry the manifest as persisted; resubmitting after the
    latest trainer_state.pt was cut falls back to the checkpoint before it."""
    from kgc.runtime.train import run
    from tests.support import faults

    steps_log = tmp_path / "steps.log"

    def cfg(max_steps: int):
        data = {
            "model": {"path": str(tiny_llama)},
            "data": {"train_file": str(ner_train_file), "max_source_length": 256,
                     "cutoff_len": 384},
            "train": {"max_steps": max_steps, "batch_size": 2, "save_every": 2, "log_every": 1},
            "distributed": {"num_workers": 1, "cpus_per_worker": 1},
            "run": {"name": "hostile", "storage_path": str(tmp_path / "runs"),
                    "max_failures": 0, "keep_checkpoints": 3},
        }  # fmt: skip
        return load_config(None, [], data=data)

    with faults.plan(step_log=steps_log):
        result = run(cfg(4))
    assert result.error is None and result.metrics["step"] == 4
    latest = Path(result.checkpoint.path)
    assert checkpoint_problem(latest) is None, sorted(os.listdir(latest))
    assert manifest_step(latest) == 4
    truncate(latest / STATE_FILE)

    steps_log.unlink()
    with faults.plan(step_log=steps_log):
        result = run(cfg(6))
    assert result.error is None and result.metrics["step"] == 6
    # resumed from the step-2 checkpoint (the step-4 one is cut): steps 3..6 ran again
    assert [int(x) for x in steps_log.read_text().split()] == [3, 4, 5, 6]
