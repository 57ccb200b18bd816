"""The Engine protocol: prompts in, generated texts out.

Extraction, in-context learning and serving all talk to an Engine, so back ends can be
swapped: Hugging Face `generate` (`kgc.modeling.hf_engine.HFEngine`), vLLM (optional extra,
GPU), or any OpenAI-compatible HTTP endpoint. A prompt is either a string (the user message:
for IEPile, the instruction JSON string) or a list of chat messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
# a user message (the chat format is applied), a conversation, or {"raw": text}: text fed to
# the model as it is (OpenAI /v1/completions)
Prompt = str | list[Message] | dict


def raw_text(prompt: Prompt) -> str | None:
    """The text of a raw prompt ({"raw": text}), or None for a chat prompt."""
    if isinstance(prompt, dict):
        text = prompt.get("raw")
        if not isinstance(text, str):
            raise TypeError("a raw prompt is {'raw': text}")
        return text
    return None


class GenerationSettings(BaseModel):
    """How to generate: the one settings type, from a config's `generation:` section (batch
    extraction) to every engine's `generate` (HF, vLLM, OpenAI-compatible) and Serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(256, ge=1)
    do_sample: bool = False  # greedy unless sampling is asked for
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # sampling: only the k likeliest tokens (0: all)
    # > 1 discourages tokens already in the prompt or the answer (HF semantics: a seen
    # token's positive logit is divided by it, a negative one multiplied)
    repetition_penalty: float = Field(1.0, gt=0)
    num_beams: int = Field(1, ge=1)
    stop: tuple[str, ...] = ()  # cut the text at the first of these
    seed: int | None = None
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks)
    # Schema-constrained decoding: every answer follows the task's JSON shape with the keys
    # of its instruction's schema (HF engine: xgrammar; openai engine: response_format
    # json_schema, which vLLM's server honours). Strings and lists are capped; on the HF
    # engine's continuous path an answer near the end of max_new_tokens is closed in the
    # tokens left (kgc.modeling.constrained.Closer), so it always parses. (Batch extraction reads these to build each
    # row's answer schema; engines get the schemas themselves.)
    constrained: bool = False
    max_text_chars: int = Field(200, ge=1)
    max_list_items: int = Field(64, ge=1)
    # with constrained: every string value must be a span of the input text (up to
    # grounded_max_words words): the model can copy names, not invent them (NER, RE, SPO)
    grounded: bool = False
    grounded_max_words: int = Field(6, ge=1, le=16)
    # the most spans (enum values) one grounded answer schema lists: beyond it the words per
    # span are lowered (kgc.engine.grounded_spans), so a chunk's grammar stays small (an
    # 804-token chunk at 6 words made 12,189 spans: a 13 MB grammar, 1.8 s to compile)
    grounded_max_spans: int = Field(2048, ge=1, le=65536)
    # constrained, greedy (HF engine, continuous path): text the grammar forces (keys,
    # brackets, the rest of the only name that fits) is proposed at once and verified in
    # one multi-token step; answers stay the greedy answers (kgc.modeling.continuous)
    jump_forward: bool = True
    # greedy (HF engine, continuous path): up to this many tokens that followed the answer's
    # last tokens where they occurred before, in the prompt or the answer (names are copied
    # from the input), are proposed and verified like forced text (prompt lookup); 0: off
    lookup_drafts: int = Field(8, ge=0, le=64)


class Engine(Protocol):
    model_id: str

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationSettings,
        schemas: Sequence[dict | None] | None = None,
    ) -> list[str]:
        """One generated text per prompt, in the prompts' order. `schemas`: an optional JSON
        Schema per prompt that the answer must follow (constrained decoding), where the
        engine supports it."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to the first stop string (stop strings are not part of the answer)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


class StopCutter:
    """Cuts a stream of text pieces at the first stop string: `push` returns what can be
    sent now (a possible start of a stop string is held back), `finish` the rest. The
    pieces it returns, joined, equal `cut_at_stop` of the whole text."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text, self.sent, self.done = "", 0, False

    def push(self, piece: str) -> str:
        if self.done:
            return ""
        self.text += piece
        cut = cut_at_stop(self.text, self.stop)
        if len(cut) < len(self.text):
            self.done = True
            ready = cut
        else:
            ready = self.text[: max(len(self.text) - self.hold, self.sent)]
        out, self.sent = ready[self.sent :], max(self.sent, len(ready))
        return out

    def finish(self) -> str:
        out = cut_at_stop(self.text, self.stop)[self.sent :]
        self.sent += len(out)
        self.done = True
        return out


def as_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    if isinstance(prompt, dict):
        from kgc.errors import KgcError

        raise KgcError("a raw text prompt has no chat messages; this engine takes chat prompts")
    if isinstance(prompt, str):
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": prompt}]
    return list(prompt)


def prompt_chars(prompt: Prompt) -> int | None:
    """Characters of a prompt's text (a message's content, a raw prompt's text), None if it
    is not a prompt."""
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, dict):
        raw = prompt.get("raw")
        return len(raw) if isinstance(raw, str) else None
    if isinstance(prompt, list):
        parts = [m.get("content") if isinstance(m, dict) else None for m in prompt]
        return sum(len(c) for c in parts if isinstance(c, str))
    return None


@dataclass(frozen=True)
class PromptRoom:
    """The prompt tokens that fit one decode of an engine (`prompt_room`): the model's
    context less the answer's budget, or a configured cap, whichever is smaller (on a tie,
    the cap). Callers name the limits in their own settings' words."""

    tokens: int  # prompt tokens that fit (below 1: none)
    capped: bool  # the cap is the limit, not the context
    context: int | None  # the model's context (tokens), where the engine knows it
    source: str  # where the context comes from (the engine's `context_source`), or ""
    engine: Any

    def count(self, prompt: Prompt) -> int:
        """The prompt's tokens, as the engine encodes it (its chat template included)."""
        return self.engine.prompt_tokens(prompt)

    def at_least(self, prompt: Prompt) -> int | None:
        """Without tokenizing: a lower bound of the prompt's tokens when its characters alone
        prove it does not fit (more than twice the vocabulary's longest token × the room),
        else None. An 89k-token prompt is refused before it costs a tokenizer pass."""
        per = getattr(self.engine, "max_token_chars", None)
        chars = prompt_chars(prompt)
        if isinstance(per, int) and chars is not None and chars > 2 * per * self.tokens:
            return chars // (2 * per)
        return None


def prompt_room(
    engine: Any, max_new_tokens: int, max_prompt_tokens: int | None
) -> PromptRoom | None:
    """How many prompt tokens fit `engine` with an answer budget of `max_new_tokens` and a
    cap `max_prompt_tokens` (None: the context alone), checked before a prompt joins a
    decode (batch extraction's rows, Serve's requests): a prompt past the context fails or
    runs out of memory mid-batch. None when the engine cannot count a prompt's tokens
    (`prompt_tokens`) or neither limit is known (`context_tokens`, the cap)."""
    context = getattr(engine, "context_tokens", None)
    if getattr(engine, "prompt_tokens", None) is None or (
        context is None and max_prompt_tokens is None
    ):
        return None
    rooms = []  # (prompt tokens that fit, 0 for the cap: it wins a tie)
    if max_prompt_tokens is not None:
        rooms.append((max_prompt_tokens, 0))
    if context is not None:
        rooms.append((context - max_new_tokens, 1))
    tokens, which = min(rooms)
    source = getattr(engine, "context_source", "") or ""
    return PromptRoom(tokens, which == 0, context, source, engine)


def text_spans(text: str, max_words: int = 6) -> list[str]:
    """Every run of 1..max_words words of `text` as it is written there (words are runs of
    letters and digits, so "Kennedy's" holds "Kennedy" and "U.S." the words U and S), in
    order, unique; a run followed by "." also with it ("U.S.", "Inc.", "Fla."), since
    annotated names keep an abbreviation's point."""
    import re

    words = [m for m in re.finditer(r"[^\W_]+", text)]
    out: dict[str, None] = {}
    for i in range(len(words)):
        for j in range(i, min(i + max_words, len(words))):
            end = words[j].end()
            out.setdefault(text[words[i].start() : end], None)
            if text[end : end + 1] == ".":
                out.setdefault(text[words[i].start() : end + 1], None)
    return list(out)


# characters a grounded enum may hold per span allowed, on average (long "words": URLs, …)
SPAN_CHARS = 48


def grounded_spans(text: str, max_words: int = 6, max_spans: int = 2048) -> list[str]:
    """The spans a grounded answer may copy: `text_spans(text, w)` for the largest
    w <= `max_words` that gives at most `max_spans` spans of at most `max_spans` ×
    SPAN_CHARS characters in all. When single words are still too many, the first ones of
    the text (every value is still a span of it)."""
    budget = max_spans * SPAN_CHARS
    spans: list[str] = []
    for w in range(max_words, 0, -1):
        spans = text_spans(text, w)
        if len(spans) <= max_spans and sum(map(len, spans)) <= budget:
            return spans
    out, size = [], 0
    for span in spans:
        if len(out) == max_spans or size + len(span) > budget:
            break
        out.append(span)
        size += len(span)
    return out


def grounded(schema, text: str, max_words: int = 6, max_spans: int = 2048):
    """A copy of a JSON Schema where every string value must be a span of `text` (an enum
    of its word runs, `grounded_spans`: at most `max_spans`, so its grammar stays small):
    a constrained answer can copy names from the input, never invent them. Object keys
    stay as they are (they are the schema's labels)."""
    spans = grounded_spans(text, max_words, max_spans)

    def walk(node):
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items() if k != "properties"}
        if "properties" in node:
            out["properties"] = {k: walk(v) for k, v in node["properties"].items()}
        if out.get("type") == "string":
            out.pop("maxLength", None)
            out["enum"] = spans or [""]
        return out

    return walk(schema)


def bounded(schema: dict, max_text_chars: int | None, max_list_items: int | None) -> dict:
    """A copy of a JSON Schema with every string capped at `max_text_chars` and every array
    at `max_list_items`, so a constrained answer always closes within a bounded length."""
    if isinstance(schema, list):
        return [bounded(s, max_text_chars, max_list_items) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v, max_text_chars, max_list_items) for k, v in schema.items()}
    if out.get("type") == "string" and max_text_chars:
        out["maxLength"] = max_text_chars
    if out.get("type") == "array" and max_list_items:
        out["maxItems"] = max_list_items
    if out.get("type") == "object" and isinstance(out.get("additionalProperties"), dict):
        # free keys (KG entity names) are text too
        if max_text_chars:
            out["propertyNames"] = {"maxLength": max_text_chars}
        if max_list_items:
            out["maxProperties"] = max_list_items
    return out
