"""Work the prompt prefix shares, done once: training (`train.shared_prefix`, logits only on
answer positions) gives the same loss and gradients as the plain forward, and the HF engine's
prefix cache gives the same greedy answers as plain batched generation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import read_jsonl  # noqa: E402

from kgc.config import DataConfig, ModelConfig, load_config  # noqa: E402
from kgc.modeling.data import IGNORE, Encoder, as_rows, collate  # noqa: E402
from kgc.modeling.training import (  # noqa: E402
    accepts_logits_to_keep,
    answer_logits_only,
    model_loss,
    shared_prefix_len,
    validate,
)


@pytest.fixture(scope="module")
def lora_batch(tiny_llama, ner_train_file):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kgc.modeling.loading import load_tokenizer, resolve_chat_format

    cfg = ModelConfig(path=str(tiny_llama))
    tok = load_tokenizer(cfg)
    enc = Encoder(tok, resolve_chat_format(cfg, tok), DataConfig(train_file="x"))
    rows = as_rows([enc.encode(r) for r in read_jsonl(ner_train_file)])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.config.use_cache = False
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                      target_modules=["q_proj", "v_proj", "down_proj"])  # fmt: skip
    model = get_peft_model(model, lora)
    return model, collate(rows[:4], tok.pad_token_id)


def _loss_and_grads(model, fn):
    model.zero_grad()
    loss = fn()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_shared_prefix_and_answer_logits_give_the_same_loss_and_gradients(lora_batch):
    model, batch = lora_batch
    n = shared_prefix_len(batch)
    first_label = int((batch["labels"] != IGNORE).any(0).nonzero()[0])
    assert 16 <= n < first_label  # the IEPile instruction header is shared, no label in it
    assert accepts_logits_to_keep(model)
    ref_loss, ref = _loss_and_grads(model, lambda: model(**batch).loss)
    for trim, share in ((True, False), (False, True), (True, True)):
        loss, grads = _loss_and_grads(model, lambda: model_loss(model, model, batch, trim, share))  # noqa: B023
        assert loss == pytest.approx(ref_loss, rel=1e-5), (trim, share)
        for name, g in ref.items():
            assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), (name, trim, share)
    cut = answer_logits_only(batch)
    assert cut["logits_to_keep"] == batch["labels"].shape[1] - first_label + 1


def test_shared_prefix_len_edge_cases():
    ids = torch.tensor([[1] * 20 + [5, 6], [1] * 20 + [7, 8]])
    labels = torch.full_like(ids, IGNORE)
    labels[:, 21] = ids[:, 21]
    assert shared_prefix_len({"input_ids": ids, "labels": labels}) == 20
    labels[:, 12] = 3  # a label inside the common part: the prefix stops before it
    assert shared_prefix_len({"input_ids": ids, "labels": labels}) == 0  # 11 < the minimum
    one = {"input_ids": ids[:1], "labels": labels[:1]}
    assert shared_prefix_len(one) == 0  # a single row has nothing to share
    packed = {"input_ids": ids, "labels": labels, "position_ids": ids}
    assert shared_prefix_len(packed) == 0 and answer_logits_only(packed) is packed


@pytest.mark.parametrize(
    "override, what",
    [
        ("method.type=ptuning_v2", "prompt learning"),
        ("distributed.strategy=deepspeed", "deepspeed"),
        ("data.packing=true", "packing"),
        ("model.gradient_checkpointing=true", "gradient_checkpointing"),
    ],
)
def test_shared_prefix_refuses_what_it_cannot_do(override, what, tiny_llama, ner_train_file):
    cfg = load_config(
        None,
        ["train.shared_prefix=true", override],
        data={"model": {"path": str(tiny_llama)}, "data": {"train_file": str(ner_train_file)}},
    )
    msgs = [str(p) for p in validate(cfg)]
    assert any("train.shared_prefix=true" in m and what in m for m in msgs), msgs


def test_engine_prefix_cache_gives_the_same_greedy_answers(tiny_llama, ner_train_file):
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine, pad_after_prefix, shared_prefix_len

    prompts = [r["instruction"] for r in read_jsonl(ner_train_file)]
    cfg = GenerationSettings(max_new_tokens=24)
    plain = HFEngine(str(tiny_llama), batch_size=8, prefix_cache=False, continuous=False)
    cached = HFEngine(str(tiny_llama), batch_size=8, prefix_cache=True, continuous=False)
    encoded = [cached.encode(p) for p in prompts]
    assert shared_prefix_len(encoded) >= 16
    assert plain.generate(prompts, cfg) == cached.generate(prompts, cfg)
    # and constrained answers (the grammar sees the same prompt width)
    from kgc.tasks import get

    task = get("NER")
    import json

    schemas = [task.output_schema(json.loads(p)["schema"]) for p in prompts]
    assert plain.generate(prompts, cfg, schemas) == cached.generate(prompts, cfg, schemas)
    ids, mask = pad_after_prefix([[1, 2, 3, 4], [1, 2, 9]], 2, 0)
    assert ids.tolist() == [[1, 2, 3, 4], [1, 2, 0, 9]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]


def test_lora_top_layers_adapts_only_the_last_layers(tiny_llama):
    from transformers import AutoModelForCausalLM

    from kgc.config import MethodConfig
    from kgc.families import get_family
    from kgc.modeling.tuning import apply_method, decoder_layers

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    n = len(decoder_layers(model))
    method = MethodConfig.model_validate({"type": "lora", "lora": {"top_layers": 1}})
    peft_model = apply_method(model, method, get_family("llama"))
    adapted = {
        int(name.split("layers.")[1].split(".")[0])
        for name, p in peft_model.named_parameters()
        if p.requires_grad
    }
    assert adapted == {n - 1}


def test_label_positions_only_gives_the_same_loss_padded_and_packed(lora_batch):
    """The LM head on labelled positions only: the same loss and gradients as transformers'
    full-logits loss, for padded rows and for packed rows (labels scattered)."""
    from kgc.modeling.training import causal_lm_loss, label_logits_loss

    model, batch = lora_batch
    ref_loss, ref = _loss_and_grads(model, lambda: model(**batch).loss)
    loss, grads = _loss_and_grads(model, lambda: label_logits_loss(model, model, batch))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, g in ref.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name
    # packed: two rows' tokens in one row, positions restarting; labels in both halves
    ids, labels = batch["input_ids"][:2], batch["labels"][:2]
    lens = [int(m.sum()) for m in batch["attention_mask"][:2]]
    packed = {
        "input_ids": torch.cat([ids[0, : lens[0]], ids[1, : lens[1]]]).unsqueeze(0),
        "labels": torch.cat([labels[0, : lens[0]], labels[1, : lens[1]]]).unsqueeze(0),
        "position_ids": torch.cat([torch.arange(lens[0]), torch.arange(lens[1])]).unsqueeze(0),
    }
    ref_loss, ref = _loss_and_grads(model, lambda: model(**packed).loss)
    loss, grads = _loss_and_grads(model, lambda: causal_lm_loss(model, model, packed, True))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, g in ref.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name


def test_bf16_frozen_weights_keep_the_loss_and_train_fp32_lora(tiny_llama, lora_batch):
    """train.precision bf16: every frozen weight in bf16 (as a model loaded in bf16), LoRA
    weights and their gradients fp32, peft's fp32 cast of the adapter's input off; the loss
    stays within bf16's rounding of the fp32 loss."""
    import copy

    from kgc.modeling.training import autocast, frozen_to_bf16

    model, batch = lora_batch
    ref_loss, _ = _loss_and_grads(model, lambda: model_loss(model, model, batch, True, True))
    half = copy.deepcopy(model)
    assert frozen_to_bf16(half) > 0
    params = dict(half.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values() if p.requires_grad)
    frozen = {n: p.dtype for n, p in params.items() if not p.requires_grad}
    assert any("proj" in n for n in frozen) and any("norm" in n for n in frozen)
    assert set(frozen.values()) == {torch.bfloat16}  # linears, embeddings, norms
    lora = [m for m in half.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert lora and not any(m.cast_input_dtype_enabled for m in lora)

    def bf16_loss():
        with autocast("bf16"):
            return model_loss(half, half, batch, True, True)

    loss, grads = _loss_and_grads(half, bf16_loss)
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    assert grads and all(g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads.values())


def test_precision_auto_is_bf16_only_where_the_cpu_and_the_method_fit(tiny_llama, ner_train_file):
    from kgc.finetune import config_problems
    from kgc.modeling.training import resolve_precision

    def cfg(*overrides):
        data = {"model": {"path": str(tiny_llama)}, "data": {"train_file": str(ner_train_file)}}
        return load_config(None, list(overrides), data=data)

    bf16_cpu = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    avx2_cpu = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
    auto = "train.precision=auto"
    assert resolve_precision(cfg(), bf16_cpu)[0] == "fp32"  # the default: fp32
    assert resolve_precision(cfg(auto), bf16_cpu) == (
        "bf16",
        "train.precision: auto; the CPU has AVX512_BF16",
    )
    assert resolve_precision(cfg(auto), avx2_cpu)[0] == "fp32"
    assert resolve_precision(cfg(auto, "method.type=full"), bf16_cpu)[0] == "fp32"
    assert resolve_precision(cfg(auto, "distributed.use_gpu=true"), bf16_cpu)[0] == "fp32"
    assert resolve_precision(cfg("train.precision=bf16"), avx2_cpu)[0] == "bf16"
    msgs = [str(p) for p in config_problems(cfg("train.precision=bf16", "method.type=freeze"))]
    assert any("train.precision=bf16" in m and "method.type=freeze" in m for m in msgs), msgs
