"""Token-aware chunking of long documents, with overlap and character offsets.

`chunk_text` slides a window of `max_tokens` tokens (stride `max_tokens - overlap`) over a
document and returns each window as a character span of the original text, so every chunk
maps back to its exact substring and records found in it can be located in the document.
Token boundaries come from the model's tokenizer (`tokenizer_offsets`) or, without one,
from a regex (one token per CJK character, word or punctuation mark).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Offsets = list[tuple[int, int]]
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # character offsets into the document, end exclusive
    end: int
    text: str


def regex_offsets(text: str) -> Offsets:
    return [m.span() for m in _TOKEN.finditer(text)]


def tokenizer_offsets(tokenizer) -> Callable[[str], Offsets]:
    """Offsets from a Hugging Face fast tokenizer (special tokens excluded)."""

    def offsets(text: str) -> Offsets:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(s, e) for s, e in enc["offset_mapping"] if e > s]

    return offsets


def chunk_text(
    text: str, max_tokens: int, overlap: int = 0, offsets: Callable[[str], Offsets] = regex_offsets
) -> list[Chunk]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens), got {overlap}")
    spans = offsets(text)
    if len(spans) <= max_tokens:
        return [Chunk(0, 0, len(text), text)] if text else []
    stride = max_tokens - overlap
    chunks: list[Chunk] = []
    i = 0
    while True:
        window = spans[i : i + max_tokens]
        start = 0 if i == 0 else window[0][0]
        last = i + max_tokens >= len(spans)
        end = len(text) if last else window[-1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if last:
            return chunks
        i += stride


def locate(haystack: str, needle: str, base: int = 0) -> list[int] | None:
    """[start, end) of the first occurrence of `needle` in `haystack`, shifted by `base`."""
    if not needle:
        return None
    i = haystack.find(needle)
    return [base + i, base + i + len(needle)] if i >= 0 else None
