"""Generation shared by training checks, extraction and serving.

Workaround (peft 0.21 + transformers 5.24): transformers' `generate` now hands the KV cache
to `prepare_inputs_for_generation` and to the model as `cache`, while peft's prompt-learning
hook reads and writes `past_key_values`. A prefix-tuned (P-Tuning v2) model then never sees
its prefix and generates exactly like the base model, and P-Tuning (prompt encoder) re-injects
its virtual tokens at every step. Renaming the key is not enough: generate also numbers the
positions from 0 while training (peft's forward) numbers them after the prefix.

So prompt-learning models decode with `prompt_learning_generate`: the first forward goes
through peft (prefix or virtual tokens injected exactly as in training, cache filled), every
later step feeds one token to the base model with that cache and explicit positions. Its
greedy output equals a no-cache step-by-step forward (`greedy_no_cache`), which tests check.
"""

from __future__ import annotations


def is_prompt_learning(model) -> bool:
    cfg = getattr(model, "active_peft_config", None)
    return bool(cfg is not None and getattr(cfg, "is_prompt_learning", False))


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def penalize(logits, seen, penalty: float):
    """HF's repetition penalty on one row's logits for the token ids in `seen`."""
    import torch

    if penalty == 1.0 or not len(seen):
        return logits
    ids = torch.as_tensor(sorted(set(seen)), device=logits.device)
    picked = logits.index_select(-1, ids)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.index_copy(-1, ids, picked)


def _pick(logits, do_sample: bool, temperature: float, top_p: float, generator=None, top_k=0):
    import torch

    if not do_sample:
        return logits.argmax(-1)
    logits = logits / max(temperature, 1e-5)
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator)[:, 0]


def prompt_learning_generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens: int,
    eos_token_id=None,
    pad_token_id: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator=None,
    logits_processor=None,
):
    """Decode a peft prompt-learning model (prefix tuning / P-Tuning); returns prompt + new ids."""
    import torch

    n_virtual = model.active_peft_config.num_virtual_tokens
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    base = model.get_base_model()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        cache = _output_cache(out)
        mask = torch.cat(
            [attention_mask.new_ones(input_ids.shape[0], n_virtual), attention_mask], dim=1
        )
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        seqs = input_ids
        logits = out.logits[:, -1]
        for _ in range(max_new_tokens):
            if logits_processor is not None:
                logits = logits_processor(seqs, logits)
            nxt = _pick(logits, do_sample, temperature, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            if eos:
                done |= torch.isin(nxt, torch.tensor(sorted(eos), device=nxt.device))
            if bool(done.all()):
                break
            mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
            positions = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)
            out = base(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache = _output_cache(out)
            logits = out.logits[:, -1]
    return seqs


def greedy_no_cache(model, input_ids, max_new_tokens: int):
    """Reference decoding: a full forward each step, no cache (slow; for tests and checks)."""
    import torch

    cur = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=cur, attention_mask=torch.ones_like(cur)).logits
            cur = torch.cat([cur, logits[:, -1:].argmax(-1)], dim=1)
    return cur
