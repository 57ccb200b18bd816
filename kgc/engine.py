"""The Engine protocol: prompts in, generated texts out.

Extraction, in-context learning and serving all talk to an Engine, so back ends can be
swapped: Hugging Face `generate` (`kgc.modeling.hf_engine.HFEngine`), vLLM (optional extra,
GPU), or any OpenAI-compatible HTTP endpoint. A prompt is either a string (the user message:
for IEPile, the instruction JSON string) or a list of chat messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
Prompt = str | list[Message]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 512
    do_sample: bool = False  # greedy unless sampling is asked for
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    stop: tuple[str, ...] = field(default_factory=tuple)  # cut the text at the first of these
    seed: int | None = None
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks)


class Engine(Protocol):
    model_id: str

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
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


def as_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    if isinstance(prompt, str):
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": prompt}]
    return list(prompt)


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
