"""One text + a schema → one instruction per schema split, and the answers merged back.

The one place where batch extraction (`kgc.extract`) and Serve (`kgc.serving`) build their
prompts and merge their records, so that a text sent to `/v1/extract` gets exactly the
instructions a `kgc extract` chunk with the same text gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from kgc.schema import Schema
    from kgc.tasks.base import Element, Task

T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    """One instruction of a text: the schema elements it asks about, and its text."""

    schema: list[Element]
    instruction: str  # the IEPile instruction JSON {"instruction", "schema", "input"}


def instructions(
    task: Task, language: str, schema: Schema, text: str, *, split_num: int, index: int = 0
) -> list[Split]:
    """The instructions for `text`: the task's whole label universe of `schema`, `split_num`
    labels per instruction (-1: all in one). `index` is the text's position in its document
    (a chunk's index): with the text it seeds the schema order's RNG."""
    from kgc.sampling import SamplingOptions, record_rng

    opts = SamplingOptions(split_num=split_num)
    chunks = task.test_chunks(None, schema, record_rng(0, index, text), opts, text)
    return [Split(c, task.instruction(language, c, text)) for c in chunks]


def answer_schema(
    task: Task,
    split: list[Element],
    *,
    max_text_chars: int,
    max_list_items: int,
    grounded_in: str | None = None,
    grounded_max_words: int = 6,
    grounded_max_spans: int = 2048,
) -> dict:
    """The JSON Schema an answer to the instruction of `split` must follow (constrained
    decoding): strings and lists capped so an answer always closes; with `grounded_in`,
    every string must be a span of that text (up to `grounded_max_words` words, at most
    `grounded_max_spans` spans)."""
    from kgc.engine import bounded, grounded

    shape = bounded(task.output_schema(split), max_text_chars, max_list_items)
    if grounded_in is None:
        return shape
    return grounded(shape, grounded_in, grounded_max_words, grounded_max_spans)


def merge_records(found: Iterable[tuple[Task, dict, T]]) -> list[tuple[dict, list[T]]]:
    """Records found in the splits (and chunks) of one text, each as (task, record, where):
    every distinct record once, the first copy found, with the `where` of every copy. Two
    records are the same when the task's metric counts the same items (`Task.tuples`)."""
    merged: dict[str, tuple[dict, list[T]]] = {}
    for task, record, where in found:
        key = json.dumps(task.tuples([record]), ensure_ascii=False, sort_keys=True)
        merged.setdefault(key, (record, []))[1].append(where)
    return list(merged.values())
