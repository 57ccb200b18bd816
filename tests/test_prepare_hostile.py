"""`kgc model prepare` against what other runs and hostile files do: concurrent preparations
of the same model in two dtypes keep each other's work (only stale partial folders of the
exact same target are swept), and a GGUF's chat template is rendered once under limits before
the model is accepted. The conversions here are small fakes: the real one is in
tests/test_real_model.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kgc.errors import KgcError
from kgc.modeling import prepare as prep

pytestmark = pytest.mark.timeout(60)


def _fake_convert(gate: dict | None = None):
    """A conversion that writes a small complete folder; with `gate`, the run whose dtype is
    gate["dtype"] stops halfway (one file written) until gate["go"] is set."""

    def convert(src: Path, dest: Path, dtype: str, name: str, license_file) -> None:
        dest.mkdir()
        (dest / "config.json").write_text("{}")
        if gate and dtype == gate["dtype"]:
            gate["halfway"].set()
            assert gate["go"].wait(20)
        (dest / "model.safetensors").write_bytes(b"w" * 64)
        files = {p.name: p.stat().st_size for p in dest.iterdir()}
        meta = {
            "name": name,
            "source_sha256": prep.sha256_file(src),
            "dtype": dtype,
            "files": files,
        }
        (dest / prep.META_FILE).write_text(json.dumps(meta))

    return convert


@pytest.fixture
def gguf(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"not read: the conversion is a fake")
    return src


def test_concurrent_prepare_in_another_dtype_keeps_the_first_runs_work(gguf, monkeypatch):
    gate = {"dtype": "bf16", "halfway": threading.Event(), "go": threading.Event()}
    monkeypatch.setattr(prep, "_convert", _fake_convert(gate))
    out: dict = {}

    def bf16() -> None:
        try:
            out["bf16"] = prep.prepare(str(gguf), dtype="bf16")
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            out["error"] = e

    t = threading.Thread(target=bf16)
    t.start()
    try:
        assert gate["halfway"].wait(20)  # the bf16 run is writing its partial folder
        fp32 = prep.prepare(str(gguf), dtype="fp32")  # sweeps while bf16 is still writing
    finally:
        gate["go"].set()
        t.join(30)
    assert "error" not in out, f"the bf16 preparation broke: {out.get('error')!r}"
    assert prep.read_meta(out["bf16"])["dtype"] == "bf16"
    assert prep.read_meta(fp32)["dtype"] == "fp32"
    assert out["bf16"] != fp32
    assert not list(fp32.parent.glob(f"{prep.PARTIAL}*"))


def test_sweep_removes_only_dead_partials_of_the_same_target(gguf, monkeypatch):
    monkeypatch.setattr(prep, "_convert", _fake_convert())
    sha = prep.sha256_file(gguf)
    target = f"gguf-m-{sha[:12]}"
    home = prep.models_home()
    home.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen(["sleep", "60"])
    host = prep._host()

    def partial(name: str, pid: int, host: str = host, age_s: float = 0) -> Path:
        p = home / f"{prep.PARTIAL}{name}-{host}-{pid}-{os.urandom(4).hex()}"
        p.mkdir()
        (p / "config.json").write_text("{}")
        if age_s:
            t = time.time() - age_s
            for f in (p / "config.json", p):
                os.utime(f, (t, t))
        return p

    try:
        dead_same = partial(target, gone.pid)
        live_same = partial(target, live.pid)
        old_same = partial(target, live.pid, age_s=prep.STALE_PARTIAL_S + 60)
        elsewhere = partial(target, gone.pid, host="otherhost")
        dead_bf16 = partial(f"{target}-bf16", gone.pid)  # its own preparation sweeps it
        live_bf16 = partial(f"{target}-bf16", live.pid)
        stranger = home / f"{prep.PARTIAL}{target}-by-hand"
        stranger.mkdir()
        done = prep.prepare(str(gguf), dtype="fp32")
    finally:
        live.kill()
        live.wait()
    assert done == home / target and prep.read_meta(done) is not None
    assert not dead_same.exists() and not old_same.exists()
    for kept in (live_same, elsewhere, dead_bf16, live_bf16, stranger):
        assert kept.is_dir(), kept.name


# ---------------------------------------------------------------------- chat templates

NESTED_RANGES = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HOSTILE = {
    "nested-range": (NESTED_RANGES, r"range\(\) of 100,000 numbers \(limit 10,000\)"),
    "nested-loops": (
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ '' }}{% endfor %}{% endfor %}",
        r"more than 1,000,000 loop iterations",
    ),
    "repeat": ("{{ 'x' * 3000000000 }}", r"repeated a 1-item value 3,000,000,000 times"),
    "doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        r"built a string with '~' of 1,048,576 items",
    ),
    "width": ("{{ 'x'|center(3000000000) }}", r"passed 3,000,000,000 to the center filter"),
    "output": ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", r"more than 4,000,000"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_template_stops_fast_with_a_named_limit(case):
    import tracemalloc

    from kgc.modeling.chat_render import SAMPLE, TemplateLimitError, environment, render

    source, limit = HOSTILE[case]
    environment()  # built once per process (imports transformers' template module): not timed
    traced = case not in ("nested-range", "nested-loops")  # tracing makes the loops slow
    if traced:
        tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(TemplateLimitError, match=limit) as err:
            render(source, SAMPLE)
        _, peak = tracemalloc.get_traced_memory() if traced else (0, 0)
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 5
    assert peak < 64 << 20, f"{peak >> 20} MB"  # the hostile value is never built
    assert "the model's chat template (sha256 " in str(err.value)
    assert "set model.template to a kgc template" in str(err.value)


def test_chatml_renders_as_before_and_apply_chat_template_is_bounded():
    from transformers.utils import chat_template_utils as ctu

    from kgc.modeling import chat_render
    from kgc.modeling.tiny import CHATML_TEMPLATE, build_tokenizer

    msgs = chat_render.SAMPLE
    plain = ctu._cached_compile_jinja_template(CHATML_TEMPLATE)  # transformers' own sandbox
    before = plain.render(messages=msgs, add_generation_prompt=True)
    tok = build_tokenizer(chat_template=CHATML_TEMPLATE)
    chat_render.install()  # as load_tokenizer does
    after = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert after == before and after.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" in after
    # at run time too, through transformers' own apply_chat_template
    tok.chat_template = NESTED_RANGES
    t0 = time.monotonic()
    with pytest.raises(chat_render.TemplateLimitError, match=r"range\(\) of 100,000"):
        tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert time.monotonic() - t0 < 5


def test_prepare_refuses_a_gguf_whose_template_does_not_render_in_limits(gguf, monkeypatch):
    import types

    import transformers

    hostile = types.SimpleNamespace(
        chat_template=NESTED_RANGES, special_tokens_map={"bos_token": "<s>"}
    )
    monkeypatch.setattr(prep, "_check_gguf", lambda src: "llama")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: hostile)

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before its template was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    t0 = time.monotonic()
    with pytest.raises(KgcError) as err:
        prep.prepare(str(gguf))
    msg = str(err.value)
    assert f"the chat template of {gguf} (tokenizer.chat_template)" in msg
    assert "range() of 100,000 numbers (limit 10,000)" in msg and "the model is refused" in msg
    assert time.monotonic() - t0 < 40
    assert prep.list_models() == [] and not list(prep.models_home().glob(f"{prep.PARTIAL}*"))
