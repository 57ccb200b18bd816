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
