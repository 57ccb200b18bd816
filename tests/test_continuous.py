"""kgc's continuous-batching decode loop (kgc.modeling.continuous) gives the answers of
transformers' `generate` on static batches: free and constrained, with and without the shared
prefix and jump-forward, with a LoRA adapter; streaming pieces join to the answer and start
before the generation ends."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import read_jsonl  # noqa: E402

from kgc.engine import GenerationSettings, bounded  # noqa: E402
from kgc.modeling.continuous import _compact, shared_prefix_len  # noqa: E402
from kgc.modeling.hf_engine import HFEngine  # noqa: E402
from kgc.tasks import get  # noqa: E402


@pytest.fixture(scope="module")
def prompts_and_schemas(ner_train_file):
    prompts = [r["instruction"] for r in read_jsonl(ner_train_file)] * 2
    task = get("NER")
    # small bounds: constrained answers close early, at different lengths (rows leave the
    # batch at different steps, and their slots are refilled)
    schemas = [bounded(task.output_schema(json.loads(p)["schema"]), 6, 1) for p in prompts]
    return prompts, schemas


@pytest.fixture(scope="module")
def static(tiny_llama):
    return HFEngine(str(tiny_llama), batch_size=5, prefix_cache=False, continuous=False)


@pytest.mark.parametrize("prefix", [False, True])
def test_continuous_gives_the_static_batches_answers(
    tiny_llama, static, prompts_and_schemas, prefix
):
    prompts, schemas = prompts_and_schemas
    eng = HFEngine(str(tiny_llama), batch_size=5, prefix_cache=prefix, continuous=True)
    assert shared_prefix_len([eng.encode(p) for p in prompts]) >= 16
    free = GenerationSettings(max_new_tokens=20)
    assert eng.generate(prompts, free) == static.generate(prompts, free)
    assert eng.last_stats["prefills"] >= 3  # 12 prompts through 5 slots: refilled
    assert (eng.last_stats["prefix_tokens"] > 0) == prefix
    for jump in (False, True):
        cfg = GenerationSettings(max_new_tokens=120, jump_forward=jump)
        got, want = eng.generate(prompts, cfg, schemas), static.generate(prompts, cfg, schemas)
        assert got == want, jump
        assert all(a.startswith("{") for a in got)
        assert (eng.last_stats["forced_tokens"] > 0) == jump
    # constrained answers end at different lengths: rows left early, so the loop fed fewer
    # tokens than 12 rows × the longest answer
    lengths = [len(eng.tok(a)["input_ids"]) for a in want]
    assert min(lengths) < max(lengths)


def test_lookup_drafts_and_learned_spellings_keep_the_greedy_answers(
    tiny_llama, static, prompts_and_schemas
):
    """Lookup drafts (tokens that followed the last tokens earlier in the prompt or answer)
    and forced text spelled as the model spelled it before are verified drafts: with either
    on or off, free or constrained, the answers are static `generate`'s."""
    prompts, schemas = prompts_and_schemas
    eng = HFEngine(str(tiny_llama), batch_size=5, continuous=True)
    looked = {}
    for lookup in (0, 8):
        for sch in (None, schemas):
            cfg = GenerationSettings(max_new_tokens=40, lookup_drafts=lookup)
            want = static.generate(prompts, cfg, sch)
            assert eng.generate(prompts, cfg, sch) == want, (lookup, sch is not None)
            looked[lookup, sch is not None] = eng.last_stats["lookup_tokens"]
    assert looked[0, False] == looked[0, True] == 0
    # the random model repeats itself: its own earlier tokens were proposed, and checked
    assert looked[8, False] > 0
    # forced keys and brackets, as this model spelled them, are remembered by the engine
    assert len(eng._spellings) > 0
    # lookup drafts alone (no forced text), constrained: still the greedy answers
    cfg = GenerationSettings(max_new_tokens=40, jump_forward=False, lookup_drafts=8)
    assert eng.generate(prompts, cfg, schemas) == static.generate(prompts, cfg, schemas)
    assert eng.last_stats["forced_tokens"] == 0


def test_spellings_are_bounded():
    from kgc.modeling.continuous import Spellings

    sp = Spellings(limit=2)
    sp.put('{"a', [1, 2], whole=True)
    sp.put('"]', [3], whole=False)
    sp.put("late", [4], whole=True)  # full: not learned
    sp.put('{"a', [5], whole=True)  # known: updated
    assert len(sp) == 2 and sp.get("late") is None
    assert sp.get('{"a') == ((5,), True) and sp.get('"]') == ((3,), False)


def test_continuous_with_a_lora_adapter(tiny_llama, tmp_path, prompts_and_schemas):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    lora = LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"]
    )
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    prompts, schemas = prompts_and_schemas
    kw = dict(adapter=str(tmp_path / "adapter"), batch_size=4)
    cont = HFEngine(str(tiny_llama), continuous=True, **kw)
    plain = HFEngine(str(tiny_llama), continuous=False, prefix_cache=False, **kw)
    cfg = GenerationSettings(max_new_tokens=60)
    assert cont.generate(prompts, cfg, schemas) == plain.generate(prompts, cfg, schemas)
    base = HFEngine(str(tiny_llama), batch_size=4).generate(prompts, cfg, schemas)
    assert cont.generate(prompts, cfg, schemas) != base  # the adapter is in use


def test_streaming_pieces_join_to_the_answer_and_come_early(tiny_llama, prompts_and_schemas):
    prompts, schemas = prompts_and_schemas
    eng = HFEngine(str(tiny_llama), batch_size=3)
    seen: dict[int, list[str]] = {}
    first_at: list[int] = []
    decoder_forwards = []

    def on_text(i, piece):
        assert piece  # no empty pieces
        seen.setdefault(i, []).append(piece)
        decoder_forwards.append(1)
        if len(decoder_forwards) == 1:
            first_at.append(len(seen))

    cfg = GenerationSettings(max_new_tokens=40, stop=("],",))
    texts = eng.generate(prompts[:4], cfg, schemas[:4], on_text=on_text)
    for i, text in enumerate(texts):
        assert "".join(seen.get(i, [])) == text
    # token by token: many pieces per answer, not one at the end
    assert max(len(v) for v in seen.values()) > 3
    plain = HFEngine(str(tiny_llama), batch_size=3, continuous=False)
    assert plain.generate(prompts[:4], cfg, schemas[:4]) == texts


def test_compact_keeps_each_rows_columns_in_order():
    mask = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1]])
    keys = torch.arange(12, dtype=torch.float).reshape(2, 1, 6, 1)
    kv, new_mask = _compact([(keys, keys + 100)], mask)
    assert new_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert kv[0][0][:, 0, :, 0].tolist()[0][1:] == [1.0, 3.0, 4.0]
    assert kv[0][0][:, 0, :, 0].tolist()[1] == [6.0, 7.0, 8.0, 11.0]
    assert kv[0][1][1, 0, :, 0].tolist() == [106.0, 107.0, 108.0, 111.0]
    same, m = _compact([(keys, keys)], torch.ones(2, 6, dtype=torch.long))
    assert m.shape == (2, 6) and same[0][0] is keys  # nothing masked: left as it is


def test_repetition_penalty_and_top_k_match_generate(tiny_llama, static, prompts_and_schemas):
    """`repetition_penalty` (over prompt + answer, HF semantics) gives `generate`'s greedy
    answers on the continuous path too, and changes them; `top_k=1` sampling is greedy."""
    prompts, _ = prompts_and_schemas
    eng = HFEngine(str(tiny_llama), batch_size=5)
    plain = GenerationSettings(max_new_tokens=16)
    rep = GenerationSettings(max_new_tokens=16, repetition_penalty=1.5)
    got = eng.generate(prompts, rep)
    assert got == static.generate(prompts, rep)
    assert got != eng.generate(prompts, plain)
    one = GenerationSettings(max_new_tokens=16, do_sample=True, top_k=1, seed=3)
    assert eng.generate(prompts, one) == eng.generate(prompts, plain)


@pytest.mark.parametrize("task_name", ["NER", "RE", "EE", "KG"])
def test_constrained_answers_close_within_any_budget(tiny_llama, ner_train_file, task_name):
    """A random model fills strings up to their cap (200 characters): without help, its
    constrained answers are cut off by max_new_tokens. Near the end of the budget the decoder
    switches to the closing path, so at every budget from the schema's shortest answer up,
    every answer parses and stays within the budget; with room to spare nothing changes."""
    from kgc.schema import Schema
    from kgc.schema_splits import answer_schema, instructions

    task = get(task_name)
    schema = {
        "NER": Schema.from_lists(types=["人物", "地点", "组织"]),
        "RE": Schema.from_lists(roles=["出生地", "工作于"]),
        "EE": Schema.from_lists(type_roles={"裁员": ["裁员方", "时间"]}),
        "KG": Schema.from_lists(type_roles={"人物": ["出生地", "配偶"]}),
    }[task_name]
    texts = ["张三在北京工作，李四出生于上海。" * 3, "Alice met Bob in Paris.", "王五"]
    splits = [instructions(task, "zh", schema, t, split_num=-1)[0] for t in texts]
    prompts = [s.instruction for s in splits]
    schemas = [answer_schema(task, s.schema, max_text_chars=200, max_list_items=64) for s in splits]
    engine = HFEngine(str(tiny_llama), batch_size=3)
    need = max(engine.min_answer_tokens(s) for s in schemas)
    closed = 0
    for budget in (need, need + 3, 40):
        out = engine.generate(prompts, GenerationSettings(max_new_tokens=budget), schemas)
        assert all(task.parse(o).errors == [] or "skipped" in str(task.parse(o).errors)
                   for o in out), (budget, out)  # fmt: skip
        assert all(isinstance(json.loads(o, strict=False), dict) for o in out), (budget, out)
        lengths = [len(engine.tok(o, add_special_tokens=False)["input_ids"]) for o in out]
        assert max(lengths) <= budget
        closed += engine.last_stats["closed_early"]
    if task_name != "EE":  # (its random answers close at once: `{"裁员": []}`)
        assert closed > 0  # the random model's long answers needed it


def test_serve_takes_requests_as_they_arrive(tiny_llama, prompts_and_schemas):
    """`HFEngine.serve` (Serve's continuous path): requests handed over while others decode
    join the running batch; each answer equals the engine's own answer at that request's
    budget, and ends as soon as it is done, not when the batch ends."""
    from kgc.modeling.hf_engine import ServeRequest

    prompts, schemas = prompts_and_schemas
    engine = HFEngine(str(tiny_llama), batch_size=4)
    budgets = [4, 24, 8, 16, 6, 12, 20, 10]
    asks = list(zip(prompts[:8], budgets, [schemas[i] if i % 2 else None for i in range(8)]))
    results: dict[int, str] = {}
    order: list[int] = []
    calls = [0]

    def make(i, prompt, budget, schema):
        def done(text, error, tokens):
            assert error is None and 0 < tokens <= budget  # the token ids generated
            results[i] = text
            order.append(i)

        return ServeRequest(prompt, budget, schema, done)

    def take(free):
        calls[0] += 1  # two at first, then one more per call while any are left
        given = take.given
        n = 2 if given == 0 else 1
        out = [make(i, *asks[i]) for i in range(given, min(len(asks), given + min(n, free)))]
        take.given += len(out)
        return out

    take.given = 0
    engine.serve(take)
    assert sorted(results) == list(range(8))
    for i, (prompt, budget, schema) in enumerate(asks):
        alone = engine.generate(
            [prompt], GenerationSettings(max_new_tokens=budget), [schema] if schema else None
        )
        assert results[i] == alone[0], i
    assert calls[0] > 3  # asked again while decoding
    assert order.index(0) < order.index(1)  # the 4-token answer left before the 24-token one


def test_room_cache_and_grouped_attention_give_transformers_logits(tiny_llama):
    """The loop's cache layers (written in place, reused across steps) and its CPU attention
    on grouped key/value heads give the logits of transformers' own cache and SDPA."""
    from transformers import AutoModelForCausalLM, DynamicCache

    from kgc.modeling.continuous import kv_of, make_cache, use_cpu_attention

    plain = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    assert ours.config.num_key_value_heads < ours.config.num_attention_heads  # grouped
    assert use_cpu_attention(ours) and ours.config._attn_implementation == "kgc_sdpa"
    torch.manual_seed(0)
    rows, width = 3, 9
    ids = torch.randint(5, 500, (rows, width))
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[0, :4] = 0  # a left-padded row
    with torch.no_grad():
        a = plain(input_ids=ids, attention_mask=mask, use_cache=True)
        b = ours(input_ids=ids, attention_mask=mask, use_cache=True)
        assert torch.allclose(a.logits[mask.bool()], b.logits[mask.bool()], atol=1e-5)
        kv_a, kv_b, layers = kv_of(a.past_key_values), kv_of(b.past_key_values), None
        for step in range(4):  # multi-token steps (jump-forward) and one-token steps
            k = 3 if step % 2 == 0 else 1
            new = torch.randint(5, 500, (rows, k))
            mask = torch.cat([mask, torch.ones(rows, k, dtype=torch.long)], dim=1)
            pos = mask.sum(1, keepdim=True) - k + torch.arange(k) - 1
            a = plain(input_ids=new, attention_mask=mask, position_ids=pos, use_cache=True,
                      past_key_values=DynamicCache(ddp_cache_data=kv_a))  # fmt: skip
            cache = make_cache(kv_b, layers)
            if layers is not None:  # the previous step's layers, reused in place
                assert all(x is y for x, y in zip(cache.layers, layers))
            b = ours(input_ids=new, attention_mask=mask, position_ids=pos, use_cache=True,
                     past_key_values=cache)  # fmt: skip
            layers = list(b.past_key_values.layers)
            kv_a, kv_b = kv_of(a.past_key_values), kv_of(b.past_key_values)
            assert torch.allclose(a.logits, b.logits, atol=1e-5), step
            assert all(torch.equal(x[0], y[0]) for x, y in zip(kv_a, kv_b))
