"""Every chat template renders one turn exactly as the fixture says (tests/data/
template_renderings.json): with its default system text, with none, and with a given one.
The layouts are DeepKE-LLM's (InstructKGC's template.py, LLaMA-Factory style: prefix with
the system text, separator, the user turn ending with the assistant marker), with two kept
on purpose where DeepKE differs from the models' own formats (docs/deepke.md): vicuna keeps
a space after the system text, zephyr a plain system text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgc.templates import TEMPLATES

FIXTURE = json.loads(
    (Path(__file__).parent / "data" / "template_renderings.json").read_text(encoding="utf-8")
)


def test_the_fixture_covers_every_template():
    assert set(FIXTURE) == set(TEMPLATES)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_renders_as_the_fixture(name):
    t, want = TEMPLATES[name], FIXTURE[name]
    assert t.prompt("Q") == want["default_system"]
    assert t.prompt("Q", "") == want["no_system"]
    assert t.prompt("Q", "S") == want["system"]


def test_the_layouts_deepke_users_rely_on():
    # ChatGLM3 always opens with [gMASK]sop, system turn or not (DeepKE's chatglm3 setting)
    assert TEMPLATES["chatglm3"].prompt("Q", "") == "[gMASK]sop<|user|>\nQ<|assistant|>"
    assert (
        TEMPLATES["chatglm3"].prompt("Q", "S") == "[gMASK]sop<|system|>\nS<|user|>\nQ<|assistant|>"
    )
    # OneKE: llama2_zh with its bilingual system text inside the first [INST]
    assert TEMPLATES["llama2_zh"].prompt("Q") == (
        "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\nQ [/INST]"
    )
    assert TEMPLATES["llama2"].prompt("Q", "") == "[INST] Q [/INST]"
    assert TEMPLATES["alpaca"].prompt("Q").endswith("\n\n### Instruction:\nQ\n\n### Response:\n")
    assert TEMPLATES["qwen"].prompt("Q", "S") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    )
    assert TEMPLATES["aquila"].prompt("Q", "S") == "S###Human: Q###Assistant:"
    assert TEMPLATES["mistral"].prompt("Q", "S") == "S [INST] Q [/INST]"
