"""Schema-constrained decoding for the Hugging Face engine (xgrammar).

Each prompt may carry a JSON Schema (from `Task.output_schema(chunk)`: the task's answer
shape with exactly the keys of the instruction's schema chunk). The schema is compiled once
per (tokenizer, schema) into a grammar; during decoding a logits processor masks every token
the grammar does not allow at that point, so the answer is always a prefix of a valid JSON
document of that shape. It ends with the end-of-turn token as soon as the document is
complete. Near the end of `max_new_tokens` the continuous decoder closes the answer in the
tokens left (`Closer`), so a budget cuts no answer short (the static `generate` path, used
for beam search and prompt-learning adapters, can still cut one).

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


# The JSON text an answer grammar allows: compact, no free whitespace (xgrammar's ", " and
# ": " separators): fewer tokens, and the shape the IEPile targets have. The HF engine
# compiles schemas with it; the vLLM engine sends the same grammar (`answer_grammar`).
JSON_FORMAT = {"any_whitespace": False}


def _schema_error(exc: Exception) -> KgcError:
    import re

    why = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(exc).strip())  # C++ location
    return KgcError(f"the JSON Schema cannot be compiled into a grammar: {why}")


def answer_grammar(schema: dict) -> str:
    """The EBNF text of `schema`'s answer grammar, the one `GrammarCache` compiles: the vLLM
    engine sends it as a structured-outputs grammar, so both engines allow exactly the same
    answers (vLLM's own `json=` allows free whitespace, or other separators)."""
    xgr = _xgrammar()
    try:
        return str(
            xgr.Grammar.from_json_schema(json.dumps(schema, ensure_ascii=False), **JSON_FORMAT)
        )
    except Exception as exc:  # xgrammar: RuntimeError / ValueError with its reason
        raise _schema_error(exc) from None


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
            grammar = self.compiler.compile_json_schema(
                json.dumps(schema, ensure_ascii=False), **JSON_FORMAT
            )
        except Exception as exc:  # xgrammar: RuntimeError / ValueError with its reason
            raise _schema_error(exc) from None
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


# single-token texts the closer tries, in order: inside a string, what closes it (and more);
# outside, closing brackets first (the answer ends soonest), then the shortest complete
# values, then openers; characters last (a string's minimum length)
IN_STRING = ('"]}', '"}]', '"]', '"}', '"', "a", "x", "0", " ")
OUTSIDE = (
    "]}]", "]}", "}]", "}}", "]]", "]", "}", '""', "[]", "{}", "0", "null", "false", "true",
    '"', "[", "{", ",", ":", " ",
)  # fmt: skip


def string_state(text: str, inside: bool = False, escaped: bool = False) -> tuple[bool, bool]:
    """(inside a JSON string, after a backslash) at the end of `text`, from that state at
    its start."""
    for ch in text:
        if escaped:
            escaped = False
        elif inside and ch == "\\":
            escaped = True
        elif ch == '"':
            inside = not inside
    return inside, escaped


class Closer:
    """The shortest way this tokenizer's tokens can finish a constrained answer: from a
    grammar state, the text the grammar forces, else the first allowed token of `IN_STRING`
    or `OUTSIDE` (whichever the answer's text so far is in), until the grammar accepts an
    end-of-turn token.

    With it a budget always closes the answer (`kgc.modeling.continuous`: near the end of
    `max_new_tokens`, a model token after which the answer could no longer close in the
    tokens left is replaced by this closing path), and Serve refuses a budget smaller than
    the shortest answer of a request's schema (`min_tokens`) with a 422. A grammar whose
    strings need characters none of those lists gives (an enum of names, a pattern) may
    have no closing path: `path` is then None and nothing is forced."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: Sequence[int]):
        self.vocab_size = vocab_size
        self.stop_ids = [s for s in stop_ids if s is not None and s < vocab_size]
        self.tok = tokenizer
        self.encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]
        self.prefs = {True: self._single(IN_STRING), False: self._single(OUTSIDE)}
        self._xgr = _xgrammar()

    def _single(self, texts) -> list[int]:
        out: list[int] = []
        for text in texts:
            ids = self.encode(text)
            if len(ids) == 1 and ids[0] < self.vocab_size and ids[0] not in out:
                out.append(ids[0])
        return out

    def path(
        self, matcher, so_far: Sequence[int] = (), first: int | None = None, limit: int = 96
    ) -> list[int] | None:
        """Tokens (end-of-turn not included) that complete the answer from `matcher`'s state
        (`so_far`: the answer's tokens up to it), after `first` if given; None if `first` is
        not allowed or no path of at most `limit` tokens is found. The matcher itself is
        not changed (a fork is walked)."""
        import numpy as np

        xgr = self._xgr
        fork = matcher.fork()
        head = list(so_far) + ([first] if first is not None else [])
        state = string_state(self.tok.decode(head)) if head else (False, False)
        if first is not None and not fork.accept_token(first):
            return None
        out: list[int] = []
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        while len(out) <= limit:
            if fork.is_terminated():
                return out
            try:
                forced = fork.find_jump_forward_string()
            except UnicodeDecodeError:
                forced = ""
            took = []
            for tok in self.encode(forced) if forced else ():
                if not fork.accept_token(tok):
                    break
                took.append(tok)
            if not took:
                xgr.reset_token_bitmask(bitmask)
                fork.fill_next_token_bitmask(bitmask, 0)
                words = bitmask[0].numpy()

                def allowed(t: int, words=words) -> bool:
                    return bool((int(words[t >> 5]) >> (t & 31)) & 1)

                if any(allowed(s) for s in self.stop_ids):
                    return out
                nxt = next((t for t in self.prefs[state[0]] if allowed(t)), None)
                if nxt is None:  # e.g. the rest of a character split across tokens
                    ids = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
                    nxt = int(ids[0]) if len(ids) else None
                if nxt is None or not fork.accept_token(nxt):
                    return None
                took = [nxt]
            out += took
            state = string_state(self.tok.decode(took), *state)
        return None

    def min_tokens(self, grammar) -> int | None:
        """Tokens of the shortest answer (as the closer writes it) plus the end-of-turn
        token; None when no closing path is found."""
        p = self.path(self._xgr.GrammarMatcher(grammar))
        return None if p is None else len(p) + 1
