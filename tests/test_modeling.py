"""Model layer on tiny models: loading, templates, encoding, tuning methods, reload, export."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import read_jsonl  # noqa: E402

from kgc.config import ModelConfig, load_config  # noqa: E402
from kgc.errors import KgcError  # noqa: E402
from kgc.modeling.data import IGNORE, Encoder, as_rows, collate, pack  # noqa: E402
from kgc.modeling.loading import (  # noqa: E402
    load_model,
    load_tokenizer,
    resolve_chat_format,
    resolve_family,
)
from kgc.modeling.tuning import apply_method, count_parameters, linear_module_names  # noqa: E402
from kgc.prompting import input_text, read_sft_records  # noqa: E402


def make_cfg(model_path, train_file, *overrides, **data):
    base = {
        "model": {"path": str(model_path)},
        "data": {
            "train_file": str(train_file),
            "max_source_length": 256,
            "cutoff_len": 384,
            **data,
        },
    }
    return load_config(None, list(overrides), data=base)


def test_tiny_model_loads_by_path_and_tokenizer_round_trips(tiny_llama, tiny_qwen2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in (tiny_llama, tiny_qwen2):
        tok = AutoTokenizer.from_pretrained(path)
        text = '相比之下，青岛海牛队 {"人物": []} English'
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.model_type in ("llama", "qwen2")


def test_chat_format_auto(tiny_llama, tiny_qwen2, ner_train_file):
    cfg = make_cfg(tiny_llama, ner_train_file)
    chat = resolve_chat_format(cfg.model, load_tokenizer(cfg.model))
    assert chat.template is not None and chat.template.name == "alpaca"  # family default
    assert resolve_family(cfg.model).name == "llama"
    cfg = make_cfg(tiny_qwen2, ner_train_file)
    assert resolve_chat_format(cfg.model, load_tokenizer(cfg.model)).template is None  # own
    cfg = make_cfg(tiny_llama, ner_train_file, "model.template=tokenizer")
    with pytest.raises(KgcError, match="no chat_template"):
        resolve_chat_format(cfg.model, load_tokenizer(cfg.model))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_encoding_masks_prompt_and_keeps_closing(arch, tiny_llama, tiny_qwen2, ner_train_file):
    path = tiny_llama if arch == "llama" else tiny_qwen2
    cfg = make_cfg(path, ner_train_file)
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    rec = read_sft_records(ner_train_file)[1]
    ex = enc.encode(rec)
    n_prompt = sum(1 for x in ex.labels if x == IGNORE)
    target = tok.decode(ex.input_ids[n_prompt:])
    assert target.startswith(rec["output"])
    if arch == "llama":
        assert ex.input_ids[-1] == tok.eos_token_id
        assert tok.decode(ex.input_ids[:n_prompt]).endswith("### Response:\n")
    else:
        assert target == rec["output"] + "<|im_end|>"
        assert tok.decode(ex.input_ids[:n_prompt]).endswith("<|im_start|>assistant\n")


def test_truncation_shortens_input_only(tiny_llama, ner_train_file):
    cfg = make_cfg(
        tiny_llama, ner_train_file, "data.max_source_length=150", "data.max_target_length=10"
    )
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    rec = read_sft_records(ner_train_file)[0]
    ex = enc.encode(rec)
    n_prompt = sum(1 for x in ex.labels if x == IGNORE)
    assert n_prompt <= 150
    prompt = tok.decode(ex.input_ids[:n_prompt], skip_special_tokens=True)
    assert prompt.endswith("### Response:\n")  # the assistant marker survives
    inst = json.loads(prompt.split("### Instruction:\n")[1].split("\n\n### Response:")[0])
    assert inst["schema"] == json.loads(rec["instruction"])["schema"]  # schema intact
    assert input_text(rec).startswith(inst["input"]) and len(inst["input"]) < len(input_text(rec))
    assert ex.input_ids[-1] == tok.eos_token_id and len(ex.input_ids) - n_prompt == 10


def test_packing_rows_and_collate(tiny_llama, ner_train_file):
    cfg = make_cfg(tiny_llama, ner_train_file)
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    exs = [enc.encode(r) for r in read_sft_records(ner_train_file)]
    rows = pack(exs, 600)
    assert len(rows) < len(exs)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(e.input_ids) for e in exs)
    batch = collate(rows, tok.pad_token_id)
    assert "attention_mask" not in batch and batch["position_ids"][0, 0] == 0
    padded = collate(as_rows(exs), tok.pad_token_id)
    assert padded["attention_mask"].sum() == sum(len(e.input_ids) for e in exs)


def test_packed_rows_do_not_attend_across_examples(tiny_llama, ner_train_file):
    cfg = make_cfg(tiny_llama, ner_train_file)
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    exs = [enc.encode(r) for r in read_sft_records(ner_train_file)[:2]]
    model = load_model(cfg.model).eval()
    packed = collate(pack(exs, 10_000), tok.pad_token_id)
    with torch.no_grad():
        lp = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits
        second = torch.tensor([exs[1].input_ids])
        alone = model(input_ids=second).logits
    n0 = len(exs[0].input_ids)
    assert torch.allclose(lp[0, n0:], alone[0], atol=1e-4)


def _expected_lora(model, r):
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    total = 0
    for name in linear_module_names(model):
        if name.split(".")[-1] in targets:
            mod = model.get_submodule(name)
            total += r * (mod.in_features + mod.out_features)
    return total


METHOD_LR = {
    "lora": 3e-3,
    "qlora": 3e-3,
    "ptuning_v2": 3e-1,
    "ptuning": 1e-2,
    "full": 1e-3,
    "freeze": 1e-3,
}


def _train(model, cfg, steps=25):
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    batch = collate(
        as_rows([enc.encode(r) for r in read_sft_records(cfg.data.train_file)]), tok.pad_token_id
    )
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=METHOD_LR[cfg.method.type]
    )
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("method", ["lora", "ptuning_v2", "ptuning", "full", "freeze"])
def test_methods_train_and_count_parameters(method, tiny_llama, ner_train_file):
    torch.manual_seed(0)
    cfg = make_cfg(
        tiny_llama,
        ner_train_file,
        f"method.type={method}",
        "method.ptuning.pre_seq_len=16",
        "method.trainable_layers=1",
    )
    base = load_model(cfg.model)
    n_total = sum(p.numel() for p in base.parameters())
    expected = {
        "lora": _expected_lora(base, 8),
        "ptuning_v2": 16 * 2 * 2 * 32,  # tokens × layers × (k, v) × kv width (2 heads × 16)
        "ptuning": 16 * 64 + (64 * 128 + 128) + (128 * 128 + 128) + (128 * 64 + 64),
        "full": n_total,
        "freeze": sum(p.numel() for p in base.model.layers[-1].parameters()),
    }[method]
    model = apply_method(base, cfg.method, resolve_family(cfg.model))
    assert count_parameters(model)[0] == expected
    losses = _train(model, cfg)
    # Stated margins on the 6-record NER set after 25 steps: ≥ 5 % for weight-updating
    # methods; a soft prompt has little leverage on a random 2-layer model, so P-Tuning's
    # loss plateaus ≈ 0.8 % lower (measured, any lr from 1e-3 to 1) — its bar is 0.5 %.
    margin = 0.005 if method == "ptuning" else 0.05
    assert losses[-1] < (1 - margin) * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize(
    "quant",
    [
        {"bits": 4, "quant_type": "nf4", "double_quant": True},
        {"bits": 4, "quant_type": "fp4", "double_quant": False},
        {"bits": 8},
    ],
)
def test_qlora_on_cpu(quant, tiny_llama, ner_train_file):
    torch.manual_seed(0)
    cfg = load_config(
        None,
        ["method.type=qlora"],
        data={
            "model": {"path": str(tiny_llama), "quantization": quant},
            "data": {
                "train_file": str(ner_train_file),
                "max_source_length": 256,
                "cutoff_len": 384,
            },
        },
    )
    model = load_model(cfg.model)
    import bitsandbytes as bnb

    kind = bnb.nn.Linear4bit if quant["bits"] == 4 else bnb.nn.Linear8bitLt
    assert any(isinstance(m, kind) for m in model.modules())
    model = apply_method(model, cfg.method, resolve_family(cfg.model), quantized=True)
    losses = _train(model, cfg, steps=15)
    assert losses[-1] < losses[0]


def test_lora_target_not_in_model(tiny_llama, ner_train_file):
    cfg = make_cfg(tiny_llama, ner_train_file, "method.lora.target_modules=[q_proj, W_pack]")
    with pytest.raises(KgcError, match=r"\['W_pack'\] not found"):
        apply_method(load_model(cfg.model), cfg.method, None)


def test_adapter_reloads_with_plain_peft_and_export_merges(tiny_llama, ner_train_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kgc.modeling.export import export_model

    torch.manual_seed(0)
    cfg = make_cfg(tiny_llama, ner_train_file)
    model = apply_method(load_model(cfg.model), cfg.method, resolve_family(cfg.model))
    _train(model, cfg, steps=5)
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 17, 300, 42, 9]])
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)
        plain = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        assert torch.equal(plain(input_ids=ids).logits, trained)
        with plain.disable_adapter():
            assert not torch.allclose(plain(input_ids=ids).logits, trained)
    out = export_model(str(tmp_path / "adapter"), str(tmp_path / "merged"), base=str(tiny_llama))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, trained, atol=1e-5)


@pytest.mark.parametrize("kind", ["ptuning_v2", "ptuning"])
def test_prompt_learning_generation_uses_the_prompt(kind, tiny_llama, ner_train_file):
    """peft 0.21 + transformers 5.24 trap: without kgc's fix, a prefix-tuned model generates
    exactly like its base model, and P-Tuning re-injects virtual tokens at every step."""
    from kgc.modeling.generation import greedy_no_cache, prompt_learning_generate

    torch.manual_seed(0)
    cfg = make_cfg(
        tiny_llama,
        ner_train_file,
        f"method.type={kind}",
        "method.ptuning.pre_seq_len=8",
        "method.ptuning.encoder_hidden_size=32",
    )
    model = apply_method(load_model(cfg.model, for_training=False), cfg.method, None)
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.normal_(0, 1.0)
    model.eval()
    ids = torch.tensor([[5, 17, 300, 42, 9, 77, 1200, 33, 8, 450, 61, 990]])
    with torch.no_grad():
        base_out = model.get_base_model().generate(ids, max_new_tokens=8, do_sample=False)
        peft_out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    reference = greedy_no_cache(model, ids, 8)
    out = prompt_learning_generate(model, ids, max_new_tokens=8)
    assert torch.equal(out, reference)
    assert not torch.equal(out[:, -8:], base_out[:, -8:])
    # the trap itself, so this test notices when peft/transformers fix it upstream
    assert not torch.equal(peft_out[:, -8:], reference[:, -8:])


def test_sft_records_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "{}", "label": "[]"}) + "\n", encoding="utf-8")
    with pytest.raises(KgcError, match=r"bad.jsonl:1: .*'output'.*--split train"):
        read_sft_records(bad)
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(
        json.dumps({"instruction": "抽取", "input": "文本", "output": "NAN"}) + "\n",
        encoding="utf-8",
    )
    assert read_jsonl(legacy)[0]["input"] == "文本"
    assert read_sft_records(legacy)[0]["output"] == "NAN"


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_gpu_bf16_training(method, tiny_llama, ner_train_file):
    """bitsandbytes CUDA kernels and bf16 on a GPU (skipped on CPU-only machines)."""
    quant = {"bits": 4, "quant_type": "nf4", "compute_dtype": "bf16"} if method == "qlora" else None
    cfg = load_config(
        None,
        [f"method.type={method}"],
        data={
            "model": {"path": str(tiny_llama), "dtype": "bf16", "quantization": quant},
            "data": {
                "train_file": str(ner_train_file),
                "max_source_length": 256,
                "cutoff_len": 384,
            },
        },
    )
    model = load_model(cfg.model, device_map={"": "cuda"})
    model = apply_method(model, cfg.method, resolve_family(cfg.model), quantized=quant is not None)
    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    batch = collate(
        as_rows([enc.encode(r) for r in read_sft_records(ner_train_file)]), tok.pad_token_id
    )
    batch = {k: v.cuda() for k, v in batch.items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_continue_from_adapter_and_gradient_checkpointing(tiny_llama, ner_train_file, tmp_path):
    torch.manual_seed(0)
    cfg = make_cfg(tiny_llama, ner_train_file, "model.gradient_checkpointing=true")
    model = apply_method(load_model(cfg.model), cfg.method, resolve_family(cfg.model))
    assert model.get_base_model().is_gradient_checkpointing
    _train(model, cfg, steps=3)
    model.save_pretrained(tmp_path / "a1")
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cont = make_cfg(tiny_llama, ner_train_file, f"method.adapter_path={tmp_path / 'a1'}")
    again = apply_method(load_model(cont.model), cont.method, resolve_family(cont.model))
    now = {n: p for n, p in again.named_parameters() if p.requires_grad}
    assert set(now) == set(saved)  # the adapter is trainable again, nothing else is
    assert all(torch.equal(now[n], saved[n]) for n in saved)
    losses = _train(again, cont, steps=3)
    assert losses[-1] < losses[0]


def test_remote_code_family_without_the_flag_names_it(tiny_llama, tmp_path):
    """A folder whose config needs its own Python code (ChatGLM-style auto_map, a model
    type transformers does not know) → one error naming model.trust_remote_code=true and
    the risk, before transformers is asked to load anything."""
    import shutil

    from kgc.modeling.loading import load_model

    glm = tmp_path / "chatglm3-6b"
    shutil.copytree(tiny_llama, glm)
    conf = json.loads((glm / "config.json").read_text())
    conf.update(
        model_type="chatglm",
        auto_map={"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                  "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
    )  # fmt: skip
    (glm / "config.json").write_text(json.dumps(conf))
    cfg = ModelConfig(path=str(glm))
    for load in (load_tokenizer, load_model):
        with pytest.raises(KgcError, match=r"model.trust_remote_code=true.*trust") as err:
            load(cfg)
        assert "ChatGLM" in str(err.value) and "AutoModel" in str(err.value)
