"""How sure a model is of an answer it gave: the mean log-probability of the answer's tokens
after the prompt, by one teacher-forced forward pass (no generation). The review queue reads
it (`kgc.review.corpus.LOGPROBS`); jobs/review.py writes it for an extraction folder."""

from __future__ import annotations


def answer_logprobs(engine, prompts: list[str], answers: list[str], batch: int = 8) -> list[float]:
    """Per (prompt, answer): the mean log-probability of the answer's tokens, the prompt
    encoded as the engine encodes it (its chat format). An empty answer scores 0.0."""
    import torch

    tok = engine.tok
    out: list[float] = []
    pairs = list(zip(prompts, answers))
    for i in range(0, len(pairs), batch):
        ids, spans = [], []
        for prompt, answer in pairs[i : i + batch]:
            p = engine.encode(prompt)
            a = tok(answer, add_special_tokens=False)["input_ids"] if answer else []
            ids.append(p + a)
            spans.append((len(p), len(p) + len(a)))
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        x = torch.tensor([s + [pad] * (width - len(s)) for s in ids], device=engine.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], device=x.device)
        with torch.no_grad():
            logp = torch.log_softmax(
                engine.model(input_ids=x, attention_mask=mask).logits.float(), -1
            )
        for row, (a, b) in enumerate(spans):
            if b == a:
                out.append(0.0)
                continue
            # the token at position t is predicted by the logits at t - 1
            got = logp[row, a - 1 : b - 1].gather(-1, x[row, a:b].unsqueeze(-1))
            out.append(float(got.mean()))
    return out
