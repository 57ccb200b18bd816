"""IEPile / OneKE instruction texts and the instruction JSON layout.

These strings are an interface: public IE models (OneKE, the *-iepile-lora adapters) were
trained on exactly these bytes. Do not edit them.
"""

from __future__ import annotations

import json
from typing import Any

from kgc.errors import KgcError

LANGUAGES = ("zh", "en")

_RE_ZH = (
    "你是专门进行关系抽取的专家。请从input中抽取出符合schema定义的关系三元组，不存在的关系返回空列表。"
    "请按照JSON字符串的格式回答。"
)
_RE_EN = (
    "You are an expert in relationship extraction. Please extract relationship triples that "
    "match the schema definition from the input. Return an empty list for relationships that "
    "do not exist. Please respond in the format of a JSON string."
)

INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("NER", "zh"): (
        "你是专门进行实体抽取的专家。请从input中抽取出符合schema定义的实体，不存在的实体类型返回空列表。"
        "请按照JSON字符串的格式回答。"
    ),
    ("RE", "zh"): _RE_ZH,
    ("SPO", "zh"): _RE_ZH,
    ("EE", "zh"): (
        "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件，不存在的事件返回空列表，"
        "不存在的论元返回NAN，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。"
    ),
    ("EET", "zh"): (
        "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件类型及事件触发词，"
        "不存在的事件返回空列表。请按照JSON字符串的格式回答。"
    ),
    ("EEA", "zh"): (
        "你是专门进行事件论元提取的专家。请从input中抽取出符合schema定义的事件论元及论元角色，"
        "不存在的论元返回NAN或空字典，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。"
    ),
    ("KG", "zh"): (
        "你是一个图谱实体知识结构化专家。根据输入实体类型(entity type)的schema描述，"
        "从文本中抽取出相应的实体实例和其属性信息，不存在的属性不输出, 属性存在多值就返回列表，"
        "并输出为可解析的json格式。"
    ),
    ("NER", "en"): (
        "You are an expert in named entity recognition. Please extract entities that match the "
        "schema definition from the input. Return an empty list if the entity type does not "
        "exist. Please respond in the format of a JSON string."
    ),
    ("RE", "en"): _RE_EN,
    ("SPO", "en"): _RE_EN,
    ("EE", "en"): (
        "You are an expert in event extraction. Please extract events from the input that "
        "conform to the schema definition. Return an empty list for events that do not exist, "
        "and return NAN for arguments that do not exist. If an argument has multiple values, "
        "please return a list. Respond in the format of a JSON string."
    ),
    ("EET", "en"): (
        "You are an expert in event extraction. Please extract event types and event trigger "
        "words from the input that conform to the schema definition. Return an empty list for "
        "non-existent events. Please respond in the format of a JSON string."
    ),
    ("EEA", "en"): (
        "You are an expert in event argument extraction. Please extract event arguments and "
        "their roles from the input that conform to the schema definition, which already "
        "includes event trigger words. If an argument does not exist, return NAN or an empty "
        "dictionary. Please respond in the format of a JSON string."
    ),
    ("KG", "en"): (
        "You are an expert in structured knowledge systems for graph entities. Based on the "
        "schema description of the input entity type, you extract the corresponding entity "
        "instances and their attribute information from the text. Attributes that do not exist "
        "should not be output. If an attribute has multiple values, a list should be returned. "
        "The results should be output in a parsable JSON format."
    ),
}


def instruction_text(task: str, language: str) -> str:
    try:
        return INSTRUCTIONS[(task, language)]
    except KeyError:
        raise KgcError(
            f"no instruction text for task {task!r} in language {language!r}; "
            f"use --language one of {', '.join(LANGUAGES)}"
        ) from None


def task_of(inst: dict) -> str | None:
    """The task an IEPile instruction (the parsed `instruction` JSON) was written for, from
    its instruction text (RE and SPO share theirs: SPO's schema items are objects), or None
    when the text is not one of IEPile's."""
    tasks = {t for (t, _lang), text in INSTRUCTIONS.items() if text == inst.get("instruction")}
    if tasks == {"RE", "SPO"}:
        schema = inst.get("schema") or []
        return "SPO" if schema and all(isinstance(x, dict) for x in schema) else "RE"
    return tasks.pop() if len(tasks) == 1 else None


# OneKE's example instructions end their instruction text with this (OneKE.md documents the
# Chinese sentence; the English one is kgc's translation)
EXAMPLE_SUFFIX = {
    "zh": "你可以参考example进行抽取。",
    "en": " You can refer to the example for extraction.",
}
# OneKE documents described schemas ({label: description}) for these tasks
DESCRIBED_TASKS = ("NER", "RE", "EET", "EE", "KG")


def build_instruction(
    task: str,
    language: str,
    schema: list[Any] | dict[str, Any],
    text: str,
    examples: list[dict] | None = None,
) -> str:
    """The `instruction` field of an IEPile record: a JSON string with keys in IEPile's order
    (OneKE's example form: `example` before `input`, and the suffix after the instruction)."""
    head = instruction_text(task, language)
    if not examples:
        return json.dumps(
            {"instruction": head, "schema": schema, "input": text}, ensure_ascii=False
        )
    return json.dumps(
        {
            "instruction": head + EXAMPLE_SUFFIX[language],
            "schema": schema,
            "example": examples,
            "input": text,
        },
        ensure_ascii=False,
    )


def described_schema(task: str, chunk: list[Any], descriptions: dict[str, Any]) -> Any:
    """A schema chunk in OneKE's described form (OneKE.md "定制化schema解释指令"): NER, RE,
    EET {label: description}; EE {type: {type: description, "trigger": true, "arguments":
    {role: description}}}; KG [{"entity_type": type, "attributes": {attribute:
    description}}]. A label without a description is described by its own name."""

    def text_of(label: str) -> str:
        d = descriptions.get(label, label)
        return d.get("description", label) if isinstance(d, dict) else d

    def roles_of(label: str, roles: list[str]) -> dict[str, str]:
        d = descriptions.get(label)
        given = d.get("roles", {}) if isinstance(d, dict) else {}
        return {r: given.get(r, r) for r in roles}

    if task in ("NER", "RE", "EET"):
        return {label: text_of(label) for label in chunk}
    if task == "EE":
        return {
            el["event_type"]: {
                el["event_type"]: text_of(el["event_type"]),
                "trigger": True,
                "arguments": roles_of(el["event_type"], el["arguments"]),
            }
            for el in chunk
        }
    if task == "KG":
        return [
            {
                "entity_type": el["entity_type"],
                "attributes": roles_of(el["entity_type"], el["attributes"]),
            }
            for el in chunk
        ]
    raise KgcError(
        f"--schema-info descriptions: OneKE documents described schemas for "
        f"{', '.join(DESCRIBED_TASKS)}, not {task}; remove 'descriptions' (examples still work)"
    )
