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

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig) -> list[str]:
        """One generated text per prompt, in the prompts' order."""
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
