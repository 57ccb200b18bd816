"""Schema-constrained decoding for the Hugging Face engine (xgrammar).

Each prompt may carry a JSON Schema (from `Task.output_schema(chunk)`: the task's answer
shape with exactly the keys of the instruction's schema chunk). The schema is compiled once
per (tokenizer, schema) into a grammar; during decoding a logits processor masks every token
the grammar does not allow at that point, so the answer is always a prefix of a valid JSON
document of that shape. It ends with the end-of-turn token as soon as the document is
complete; only `max_new_tokens` can still cut it short.

xgrammar is an optional extra (`pip install 'kgc[constrained]'`); it is imported only when a
constraint is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kgc.errors import KgcError


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise KgcError(
            "generation.constrained needs xgrammar; install it with "
            "pip install 'kgc[constrained]' (or pip install xgrammar)"
        ) from None
    return xgrammar


class GrammarCache:
    """Compiled grammars per JSON Schema for one tokenizer (compiling costs milliseconds to
    a second; a job reuses a handful of schema chunks many times)."""

    MAX_ENTRIES = 256  # compiled grammars kept (least recently used dropped beyond)

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        xgr = _xgrammar()
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self.compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[str, object] = {}

    def get(self, schema: dict):
        key = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        grammar = self._compiled.pop(key, None)
        if grammar is None:
            # compact output (no free whitespace): fewer tokens, and the shape the
            # IEPile targets have
            grammar = self.compiler.compile_json_schema(
                json.dumps(schema, ensure_ascii=False), any_whitespace=False
            )
        self._compiled[key] = grammar  # most recently used last
        while len(self._compiled) > self.MAX_ENTRIES:
            self._compiled.pop(next(iter(self._compiled)))
        return grammar


class GrammarLogitsProcessor:
    """Masks disallowed tokens per batch row; rows without a grammar decode freely.

    Works as a `transformers` logits processor (called with all ids so far and the next-token
    scores) and in kgc's own prompt-learning decode loop. One instance per generate call.
    """

    def __init__(self, grammars: Sequence[object | None], vocab_size: int, prompt_len: int):
        xgr = _xgrammar()
        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.prompt_len = prompt_len
        self.seen = prompt_len

    def __call__(self, input_ids, scores):
        # accept the tokens chosen since the last call (one per row per step)
        for pos in range(self.seen, input_ids.shape[1]):
            for i, m in enumerate(self.matchers):
                if m is not None and not m.is_terminated():
                    m.accept_token(int(input_ids[i, pos]))
        self.seen = input_ids.shape[1]
        rows = [i for i, m in enumerate(self.matchers) if m is not None and not m.is_terminated()]
        if not rows:
            return scores
        self._xgr.reset_token_bitmask(self.bitmask)
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        masked = scores.to("cpu", copy=True) if scores.device.type != "cuda" else scores.clone()
        width = masked.shape[-1]
        self._xgr.apply_token_bitmask_inplace(
            masked, self.bitmask.to(masked.device), vocab_size=width, indices=rows
        )
        return masked.to(scores.device) if masked.device != scores.device else masked

    @staticmethod
    def as_hf(proc):
        """Wrap for `model.generate(logits_processor=...)`."""
        from transformers import LogitsProcessorList

        return LogitsProcessorList([proc]) if proc is not None else None
