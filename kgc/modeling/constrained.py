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
    a second; a job reuses a handful of schema chunks many times).

    Bounded by count and by bytes (xgrammar reports each grammar's size), least recently used
    dropped first; xgrammar's own compiler cache is off, since it is unbounded. Thread-safe:
    Serve compiles a request's grammar in a worker thread while the model decodes."""

    MAX_ENTRIES = 256  # compiled grammars kept
    MAX_BYTES = 256 * 2**20  # their total size

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        import threading

        xgr = _xgrammar()
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self._compiled: dict[str, tuple[object, int]] = {}
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, schema: dict):
        key = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        with self._lock:
            hit = self._compiled.pop(key, None)
            if hit is not None:
                self._compiled[key] = hit  # most recently used last
                return hit[0]
        try:
            # compact output (no free whitespace): fewer tokens, and the shape the IEPile
            # targets have
            grammar = self.compiler.compile_json_schema(
                json.dumps(schema, ensure_ascii=False), any_whitespace=False
            )
        except Exception as exc:  # xgrammar: RuntimeError / ValueError with its reason
            import re

            why = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(exc).strip())  # C++ location
            raise KgcError(f"the JSON Schema cannot be compiled into a grammar: {why}") from None
        size = int(getattr(grammar, "memory_size_bytes", 0) or 0)
        with self._lock:
            old = self._compiled.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._compiled[key] = (grammar, size)
            self.bytes += size
            while len(self._compiled) > 1 and (
                len(self._compiled) > self.MAX_ENTRIES or self.bytes > self.MAX_BYTES
            ):
                self.bytes -= self._compiled.pop(next(iter(self._compiled)))[1]
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
