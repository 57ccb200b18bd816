"""The CCKS2023 / kg2instruction text format for NER, EE, EET and EEA (RE: `kgc.legacy`).

Raw records `{text, entity | event}` become `{"id", "instruction", "input", "output"}` (train)
or `{..., "label"}` (test) with the answer written one item per line in one of DeepKE's four
output formats; a negative label (sampled like DeepKE's `--neg_ratio` / `--neg_schema`) is
answered by a `NAN` line, a negative argument role by `NAN` in the event's argument list, and
an answer with nothing in it is `NAN`. Scoring reads every format line by line (mixed formats
allowed, `NAN` = nothing) and reports F1 like DeepKE's metric: NER (entity, type), EET
(type, trigger), EE/EEA events keyed (type, trigger) plus their arguments, with ROUGE and
the CCKS2023 score.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kgc.convert import text_id
from kgc.errors import KgcError, Problem
from kgc.legacy import NAN, CcksOptions, candidates, score_records
from kgc.sampling import record_rng
from kgc.schema import Schema
from kgc.tasks.base import position

TASKS = ("NER", "EE", "EET", "EEA")
ANNOTATION = {"NER": "entity", "EE": "event", "EET": "event", "EEA": "event"}
# the score group the CCKS2023 score takes its F1 from
HEADLINE = {"NER": "entity", "EET": "trigger", "EE": "argument", "EEA": "argument"}

# DeepKE `configs/<task>_template.json` → "template", string for string (copies of the NER and
# EEA files in tests/data/deepke/). `{s_schema}` is Python's str() of the label list (NER, EET)
# or of the event type → roles dict (EE); EEA has `{s_schema1}` (that dict) and `{s_schema2}`
# (str() of the [{'event_type', 'event_trigger'}] list).
_NER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "你是专门进行实体抽取的专家。已知候选的实体类型列表：{s_schema}，请你根据实体类型列表，从以下输入中抽取出可能存在的实体，如果不存在某实体就输出NAN。请按照{s_format}的格式回答。",
        "你扮演的角色是实体抽取师。我将给你个输入，请根据实体类型列表：{s_schema}，从输入中抽取出可能包含的实体，如果不存在某实体就输出NAN，并以{s_format}的形式回答。",
        "你在这里作为一个实体识别员。我希望你根据实体类型列表从给定的输入中抽取可能的实体，如果不存在某实体就输出NAN，并以{s_format}的格式回答。实体类型列表={s_schema}。",
        "你是负责实体提取的专员。给定的实体类型列表是{s_schema}\n根据实体类型列表，在这个句子中可能包含哪些实体？你可以先别出实体, 再判断实体类型，如果不存在某实体就输出NAN。请以{s_format}的格式回答。",
        "请将您的专业知识应用于实体抽取。在审查以下文本后，依据{s_schema}提供的实体类型清单识别并列出实体。如遇到列表中未提及的类型，请标记为NAN，并确保使用{s_format}格式进行答复。",
        "以您对实体抽取的深入理解，研究接下来的文本。参照{s_schema}中定义的实体类型，挑选并标明文本中的实体。若某实体类型在文本中未出现，请使用NAN代替，并遵循{s_format}格式答复。",
        "考虑到您在实体识别方面的专长，请浏览下列内容，并根据{s_schema}所列出的实体类型来标注相应实体。不存在的实体类型应用NAN表示，并请严格按照{s_format}的要求格式化您的回答。",
        "利用您的专业技能，在以下文本中识别出各种实体类型。请根据{s_schema}中提供的分类进行，并对于不出现的类型使用NAN标识。您的回答应该遵循{s_format}格式指引。",
        "请运用您的实体分析技巧，对下文进行解读，并根据{s_schema}中列举的实体类型进行分类标注。如果发现某一类型不存在，请用NAN填充，并按{s_format}的结构提供您的答案。",
        "作为实体分析的专家，您需要从所给的文本中找出{s_schema}定义的实体类型。对于那些未在文本中找到的类型，请标记为NAN，并按照{s_format}提供格式化的回答。",
        "请展示您在实体抽取方面的专业技术。检查以下段落，并按照{s_schema}概述的实体类型进行识别。若无相应实体，请注明为NAN，并依照{s_format}格式回答。",
        "把您对实体分类的理解应用于以下文本。依据实体类型列表{s_schema}来定位并标记实体，如果文本中缺少某个类型的实体，请以NAN表示，并确保您的答案符合{s_format}格式。",
        "请精确地从下述文本中提取实体，并参考{s_schema}中的实体类型列表进行分类。如某类实体不出现，用NAN替代，并按照格式{s_format}答复。",
        "您的任务是从提供的文本中识别出所有相关的实体类别。依据提供的{s_schema}列表进行工作，遇到不存在的实体类别请标示为NAN，并使用{s_format}作为您回答的格式。",
        "请检查文本，并根据实体类型清单{s_schema}识别出现的实体。对于清单中未提及的实体类型，请标记为NAN，并遵循{s_format}格式回答。",
        '分析以下内容，提取对应于{s_schema}的实体类型。若所需实体类型缺失，请用"NAN"表示，并确保答案格式符合{s_format}。',
        '浏览下述文本，依据{s_schema}中的分类识别实体。对于未检测到的实体类型，请使用"NAN"填充，并按照{s_format}格式化您的回答。',
        "请在所给文本中找出并列举{s_schema}提及的实体类型，不存在的类型请注明为NAN。回答应按{s_format}格式进行。",
        "研究文本，根据{s_schema}抽取实体。对于列表中未出现的实体类型，回答时请标识为NAN，并且遵循{s_format}的回答格式。",
        "审视文本并根据{s_schema}指定的实体类型来提取信息。在回答中，未发现的类型应标注为NAN，并按照{s_format}的规范排列。",
    ),
    "en": (
        "You are an expert specialized in entity extraction. With the candidate entity types list: {s_schema}, please extract possible entities from the input below, outputting NAN if a certain entity does not exist. Respond in the format {s_format}.",
        "Your role is an entity extraction specialist. Given an input, according to the entity types list: {s_schema}, extract any potential entities from the input. If an entity does not exist, output NAN, and answer in the form {s_format}.",
        "You serve here as an entity identifier. I would like you to extract possible entities from the given input based on the entity types list, outputting NAN for any that do not exist, and answer in the format {s_format}. Entity types list = {s_schema}.",
        "You are an officer responsible for entity extraction. The given list of entity types is {s_schema}\nWhich entities might be contained in this sentence according to the list? Identify entities first, then determine their types, outputting NAN if a certain entity does not exist. Please respond in the format {s_format}.",
        "Apply your expertise to entity extraction. After reviewing the following text, identify and list entities according to the entity types list provided by {s_schema}. If you encounter types not mentioned in the list, mark them as NAN, and ensure to respond in the format {s_format}.",
        "With your profound understanding of entity extraction, study the upcoming text. Refer to the entity types defined in {s_schema}, pick and denote the entities in the text. If a type of entity is not present, use NAN in its place, and follow the format {s_format} in your response.",
        "Considering your expertise in entity identification, please go through the content below, and mark the corresponding entities according to the entity types listed in {s_schema}. Use NAN to denote any non-existent entity type, and format your answer strictly in accordance with {s_format}.",
        "Utilize your professional skills to identify various entity types in the following text. Classify according to the categories provided in {s_schema}, and use NAN to denote any non-appearing types. Your answer should adhere to the format guidelines {s_format}.",
        "Employ your entity analysis skills to interpret the following text, and classify the entities according to the types listed in {s_schema}. If a type does not exist, fill in with NAN, and provide your answer structured as {s_format}.",
        "As an expert in entity analysis, you need to find out the entity types defined in {s_schema} from the given text. For those not found in the text, mark them as NAN, and provide a formatted answer according to {s_format}.",
        "Demonstrate your professional technical skills in entity extraction. Examine the paragraphs below and identify entities as outlined in {s_schema}. If there is no corresponding entity, note as NAN, and answer in the format {s_format}.",
        "Apply your understanding of entity categorization to the text below. Locate and mark entities according to the entity types list {s_schema}, if an entity type is missing in the text, represent it with NAN, and ensure your answer conforms to the format {s_format}.",
        "Precisely extract entities from the text below, referring to the list of entity types in {s_schema}. Substitute with NAN where a class of entity does not appear, and respond in the format {s_format}.",
        "Your task is to identify all relevant entity categories from the provided text. Work according to the provided list {s_schema}, marking any non-existent entity category as NAN, and use {s_format} as your answer format.",
        "Inspect the text and identify the entities that appear according to the entity types list {s_schema}. For entity types not mentioned in the list, mark them as NAN, and follow the format {s_format} in your answer.",
        'Analyze the content below and extract the entity types corresponding to {s_schema}. If the required entity type is missing, denote with "NAN" and ensure the answer format complies with {s_format}.',
        'Browse the text below, identify entities according to the categories in {s_schema}. For undetected entity types, use "NAN" to fill in, and format your answer in {s_format}.',
        "Please find and list the entity types mentioned in {s_schema} within the given text, noting as NAN those types that do not exist. The response should be in the format {s_format}.",
        "Study the text and extract entities based on {s_schema}. For entity types not appearing in the list, mark them as NAN when answering, and follow the answer format {s_format}.",
        "Examine the text and extract information according to the entity types specified in {s_schema}. In your response, types not found should be noted as NAN, and arranged according to the standard of {s_format}.",
    ),
}
_EEA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "你是专门进行事件论元提取的专家。已知事件字典：{s_schema1}，事件类型及触发词：{s_schema2}，请你从以下输入中抽取出可能存在的论元，如果不存在某事件论元就输出NAN。请按照{s_format}的格式回答。",
        "你在这里扮演事件论元识别师的角色。我将给你个输入，请根据事件字典：{s_schema1}，事件类型及触发词：{s_schema2}，从输入中抽取出可能包含的论元，如果不存在某事件论元就输出NAN，并以{s_format}的形式回答。",
        "你是一个负责识别事件论元的分析师。我希望你根据事件字典、事件类型及触发词，从给定的输入中抽取可能的论元，并以{s_format}的格式回答，如果不存在某事件论元就输出NAN。事件字典={s_schema1}，事件类型及触发词：{s_schema2}。",
        "你是我们的事件论元检测员。给定的事件字典是{s_schema1}，事件类型及触发词：{s_schema2}\n根据事件字典、事件类型及触发词，在这个句子中可能包含哪些论元？如果不存在某事件论元就输出NAN。请以{s_format}的格式回答。",
        "请根据所提供的事件字典{s_schema1}以及相应的事件类型和触发词{s_schema2}，在所给文本中确定相关的事件论元。如某论元缺失，请标记为NAN，并确保使用{s_format}格式来组织你的回答。",
        "你的专业技能将用于识别输入文本中的事件论元。参照我们的事件字典{s_schema1}和指定的事件触发词{s_schema2}，提取相关信息。若某论元不存在，记得用NAN代替，并依照{s_format}格式回复。",
        "分析以下段落，利用事件字典{s_schema1}和事件类型触发词{s_schema2}作为参考，确定其中的事件论元。缺少的论元请以NAN表示，并保持您的答案遵循{s_format}格式。",
        "您作为事件论元的挖掘者，需借助事件字典{s_schema1}和确定的事件类型及其触发词{s_schema2}，从文本中提取相关论元。未发现的论元请以NAN标出，并且您的回答应符合{s_format}的规定格式。",
        "在这次任务中，您需要根据提供的事件字典{s_schema1}和事件类型及其触发词{s_schema2}，精准地从文本中挑选出各个事件论元。对于那些不在文中的论元，使用NAN来表示，并按照{s_format}格式提交结果。",
        "细致审查下列文本，并以事件字典{s_schema1}和事件类型与触发词{s_schema2}为依据来提取事件论元。对无法对应的论元，标记为NAN，并确保您的输出格式为{s_format}。",
        "请从以下描述中，利用事件字典{s_schema1}和事件触发词{s_schema2}的指导，识别出所有的事件论元。如有缺失，请使用NAN填充，并且按照{s_format}格式来编排你的答案。",
        "您被赋予了从文本中抽取事件论元的任务。请依照事件字典{s_schema1}和事件类型与触发词{s_schema2}，寻找并提取论元。不存在的论元用NAN表示，并采用{s_format}格式完成您的分析。",
        "仔细阅读下方的文本，以我们的事件字典{s_schema1}和特定事件类型及触发词{s_schema2}作为您的工具，挖掘论元。若某事件论元未在文本中出现，请以NAN做标记，并遵循{s_format}格式进行回答。",
        "请审查所给资料，根据事件字典{s_schema1}以及事件类型和触发词{s_schema2}指导，确定并提取文本中的事件论元。对于文中未提及的论元，请以NAN代替，并遵守{s_format}格式标准。",
        "对于下文，您的任务是依据提供的事件字典{s_schema1}和对应的事件类型与触发词{s_schema2}，提炼出相关的事件论元。若遇到不适用的情形，请用NAN表示，并严格按照{s_format}格式排列您的答案。",
        "本次挑战要求您使用事件字典{s_schema1}及事件类型和触发词{s_schema2}作为指南，从文本中发掘事件论元。缺少的论元请以NAN标记，并且保持输出的格式符合{s_format}要求。",
        "请在文本分析中运用事件字典{s_schema1}和事件类型触发词{s_schema2}，精确识别事件相关论元。如论元未被提及，请注明为NAN，并确保所有答案均按照{s_format}格式呈现。",
        "这项任务涉及使用事件字典{s_schema1}与事件类型及触发词{s_schema2}，从所给的段落中抽取论元信息。任何未出现的论元都应以NAN形式记录，并且回答需符合{s_format}格式指导。",
        "探索给定文本，并根据事件字典{s_schema1}与事件触发词{s_schema2}，标识出存在的事件论元。若某些论元缺席，请用NAN表示，并遵循{s_format}的答案格式。",
        "您将要检视的文本中含有多个事件论元，请以事件字典{s_schema1}和事件类型及触发词{s_schema2}为蓝图进行提取。未提到的论元用NAN填充，并且应用{s_format}格式来排列您的发现。",
    ),
    "en": (
        "You are an expert in event argument extraction. Given the event dictionary: {s_schema1}, and the event type and trigger words: {s_schema2}, please extract possible arguments from the following input. If an event argument does not exist, output NAN. Please respond in the {s_format} format.",
        "You are playing the role of an event argument identifier here. I will give you an input, please extract possible contained arguments according to the event dictionary: {s_schema1}, event type and trigger words: {s_schema2}, if an event argument does not exist, output NAN, and answer in the {s_format} format.",
        "You are an analyst responsible for identifying event arguments. I would like you to extract possible arguments from the given input according to the event dictionary, event types, and trigger words, and respond in the {s_format} format. If an event argument does not exist, output NAN. Event dictionary={s_schema1}, event types and trigger words: {s_schema2}.",
        "You are our event argument detector. The given event dictionary is {s_schema1}, and the event types and trigger words are: {s_schema2}. Based on the event dictionary, event types, and trigger words, what arguments might this sentence contain? If an event argument does not exist, output NAN. Please answer in the {s_format} format.",
        "Based on the provided event dictionary {s_schema1} and the corresponding event types and trigger words {s_schema2}, identify the relevant event arguments in the given text. If an argument is missing, please mark it as NAN and ensure to use the {s_format} format to organize your answer.",
        "Your expertise will be used to identify event arguments in the input text. Refer to our event dictionary {s_schema1} and the specified event trigger words {s_schema2}, and extract relevant information. If an argument does not exist, remember to substitute with NAN, and reply in the {s_format} format.",
        "Analyze the following paragraph using the event dictionary {s_schema1} and event type trigger words {s_schema2} as a reference to determine the event arguments within. Represent missing arguments with NAN and maintain your answer in the {s_format} format.",
        "As an extractor of event arguments, you need to utilize the event dictionary {s_schema1} and the determined event types and their trigger words {s_schema2} to extract relevant arguments from the text. Mark any undetected arguments with NAN, and your answer should conform to the prescribed {s_format} format.",
        "In this task, you need to accurately pick out each event argument from the text based on the provided event dictionary {s_schema1} and event types and their trigger words {s_schema2}. Use NAN to represent those arguments that are not in the text, and submit the results in the {s_format} format.",
        "Carefully review the following text and extract event arguments based on the event dictionary {s_schema1} and event types and trigger words {s_schema2}. Mark any non-corresponding arguments as NAN and ensure your output is in the {s_format} format.",
        "From the description below, identify all event arguments guided by the event dictionary {s_schema1} and event trigger words {s_schema2}. Fill in NAN for any missing, and arrange your answer in the {s_format} format.",
        "You have been tasked with extracting event arguments from the text. Follow the event dictionary {s_schema1} and the event types and trigger words {s_schema2} to find and extract arguments. Represent non-existent arguments with NAN and complete your analysis in the {s_format} format.",
        "Read the text below carefully, and use our event dictionary {s_schema1} and specific event types and trigger words {s_schema2} as your tools to mine for arguments. If an event argument is not present, mark it with NAN, and follow the {s_format} format in your answer.",
        "Examine the provided material, determine and extract event arguments in the text guided by the event dictionary {s_schema1} as well as event types and trigger words {s_schema2}. For arguments not mentioned in the text, replace with NAN and adhere to the {s_format} format standard.",
        "For the text below, your task is to refine relevant event arguments according to the provided event dictionary {s_schema1} and the corresponding event types and trigger words {s_schema2}. In cases where an argument is not applicable, represent with NAN and strictly arrange your answers in the {s_format} format.",
        "This challenge requires you to use the event dictionary {s_schema1} and event types and trigger words {s_schema2} as a guide to unearth event arguments from the text. Mark missing arguments with NAN and keep the output format compliant with {s_format} requirements.",
        "Apply the event dictionary {s_schema1} and event type trigger words {s_schema2} in your text analysis to precisely identify event-related arguments. If an argument is not mentioned, indicate as NAN, and ensure all answers are presented in the {s_format} format.",
        "This task involves using the event dictionary {s_schema1} and event types and trigger words {s_schema2} to extract argument information from the given paragraph. Record any arguments that do not appear as NAN, and ensure the answer complies with the {s_format} format guide.",
        "Explore the given text and identify the existing event arguments according to the event dictionary {s_schema1} and event trigger words {s_schema2}. If certain arguments are absent, represent them with NAN and follow the {s_format} answer format.",
        "In the text you will examine, there are multiple event arguments, extract them using the event dictionary {s_schema1} and event types and trigger words {s_schema2} as a blueprint. Fill in NAN for arguments not mentioned, and apply the {s_format} format to arrange your findings.",
    ),
}

# Only template 0 of DeepKE's EE and EET files is published outside those files (DeepKE's
# InstructKGC README, "指定候选标签列表的模版"); templates 1-19 come from the user's copy of the
# file (`--ccks-templates`), see `load_templates`.
_EE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "你是专门进行事件提取的专家。已知候选的事件字典：{s_schema}，请你根据事件字典，从以下输入中抽取出可能存在的事件，如果不存在某事件就输出NAN。请按照{s_format}的格式回答。",
    ),
    "en": (
        "You are a specialist in event extraction. Given the candidate event dictionary: {s_schema}, please extract any possible events from the input below. If an event does not exist, output NAN. Please answer in the format of {s_format}.",
    ),
}
_EET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "作为事件分析专员，你需要查看输入并根据事件类型名录：{s_schema}，来确定可能发生的事件。所有回答都应该基于{s_format}格式。如果事件类型不匹配，请用NAN标记。",
    ),
    "en": (
        "As an event analysis specialist, you need to review the input and determine possible events based on the event type directory: {s_schema}. All answers should be based on the {s_format} format. If the event type does not match, please mark with NAN.",
    ),
}
DEEPKE_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "NER": _NER_TEMPLATES,
    "EE": _EE_TEMPLATES,
    "EET": _EET_TEMPLATES,
    "EEA": _EEA_TEMPLATES,
}

# The `{s_format}` texts of output formats 0-3 (DeepKE's converters), newline included as
# DeepKE has it. EEA uses EE's: its converter writes events the same way.
_EVENT_FORMATS = {
    "zh": (
        "(事件触发词,事件类型,事件论元1#论元角色1;事件论元2#论元角色2)\n",
        "事件触发词是,事件类型是\n事件论元1是,论元角色1是;事件论元2是,论元角色2是\n\n",
        "事件类型：事件触发词\n论元角色1：事件论元1;论元角色2：事件论元2\n\n",
        "{'event_trigger':'', 'event_type':'', 'arguments':({'argument':'', 'role':''},)}\n",
    ),
    "en": (
        "(Event Trigger,Event Type,Argument1#Argument Role1;Argument2#Argument Role2)\n",
        "Event Trigger is,Event Type is\nArgument1 is,Argument Role1 is;Argument2 is,Argument Role2 is\n\n",
        "Event Type：Event Trigger\nArgument Role1：Argument1;Argument Role2：Argument2\n\n",
        "{'event_trigger':'', 'event_type':'', 'arguments':({'argument':'', 'role':''},)}\n",
    ),
}
DEEPKE_FORMATS: dict[str, dict[str, tuple[str, ...]]] = {
    "NER": {
        "zh": (
            "(实体,实体类型)\n",
            "实体是,实体类型是\n",
            "实体类型：实体\n",
            "{'entity':'', 'entity_type':''}\n",
        ),
        "en": (
            "(Entity,Entity Type)\n",
            "Entity is,Entity Type is\n",
            "Entity Type：Entity\n",
            "{'entity':'', 'entity_type':''}\n",
        ),
    },
    "EET": {
        "zh": (
            "(事件触发词,事件类型)\n",
            "事件触发词是,事件类型是\n",
            "事件类型：事件触发词\n",
            "{'event_trigger':'', 'event_type':''}\n",
        ),
        "en": (
            "(Event Trigger,Event Type)\n",
            "Event Trigger is,Event Type is\n",
            "Event Type：Event Trigger\n",
            "{'event_trigger':'', 'event_type':''}\n",
        ),
    },
    "EE": _EVENT_FORMATS,
    "EEA": _EVENT_FORMATS,
}

# Items. NER (entity, type) and EET (trigger, type) with None for a negative label's value;
# EE/EEA events (trigger, type, [(role, argument)]) with None for a negative event's trigger
# or a negative role's argument.
Pair = tuple[str | None, str]
Arg = tuple[str, str | None]
Event = tuple[str | None, str, list[Arg]]


# ------------------------------------------------------------------------------ templates


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise KgcError(f"--task must be one of {', '.join(TASKS)} here, got {task!r}")


def _check_language(language: str) -> None:
    if language not in ("zh", "en"):
        raise KgcError(f"--language must be zh or en, got {language!r}")


def load_templates(path, task: str) -> dict[str, tuple[str, ...]]:
    """A DeepKE `configs/<task>_template.json` (`--ccks-templates FILE`): its 20 "template"
    instructions per language replace the built-in ones. Every problem is reported."""
    _check_task(task)
    p = Path(path)
    where = str(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KgcError(
            Problem(f"cannot read the --ccks-templates file ({exc.strerror})", where)
        ) from None
    except json.JSONDecodeError as exc:
        raise KgcError(Problem(f"not valid JSON ({exc.msg}, line {exc.lineno})", where)) from None
    fix = (
        f"give DeepKE's configs/{task.lower()}_template.json: "
        '{"zh": {"template": {"0": text, …, "19": text}}, "en": {…}}'
    )
    needs = ("{s_schema1}", "{s_schema2}") if task == "EEA" else ()
    problems: list[Problem] = []
    out: dict[str, tuple[str, ...]] = {}
    if not isinstance(data, dict):
        raise KgcError(Problem(f"must be a JSON object; {fix}", where))
    for lang in ("zh", "en"):
        block = data.get(lang)
        table = block.get("template") if isinstance(block, dict) else None
        if not isinstance(table, dict):
            problems.append(Problem(f"field '{lang}.template' is missing; {fix}", where))
            continue
        texts = []
        for i in range(20):
            t = table.get(str(i))
            key = f"{lang}.template.{i}"
            if not isinstance(t, str):
                shown = "missing" if str(i) not in table else f"{type(t).__name__}"
                problems.append(Problem(f"field '{key}' must be a string ({shown}); {fix}", where))
                continue
            missing = [x for x in ("{s_format}", *needs) if x not in t]
            try:
                t.format(s_schema="", s_schema1="", s_schema2="", s_format="")
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(
                    Problem(
                        f"field '{key}' has a placeholder other than {{s_schema}}, "
                        f"{{s_schema1}}, {{s_schema2}}, {{s_format}} ({exc!r}); write literal "
                        "braces as {{ and }}",
                        where,
                    )
                )
            if missing:
                problems.append(
                    Problem(f"field '{key}' lacks {', '.join(missing)}: {t[:60]!r}", where)
                )
            texts.append(t)
        out[lang] = tuple(texts)
    if problems:
        raise KgcError(problems)
    return out


def check_sample(task: str, options: CcksOptions, templates=None) -> None:
    """EE and EET bundle only template 0: any other needs `--ccks-templates`."""
    _check_task(task)
    bundled = len(DEEPKE_TEMPLATES[task]["zh"])
    if templates is None and bundled < 20 and options.sample not in (None, 0):
        raise KgcError(
            f"--ccks-sample {options.sample} needs DeepKE's {task} instruction templates 1-19, "
            "which kgc does not bundle (only template 0, from DeepKE's README); pass your copy "
            f"of DeepKE's configs/{task.lower()}_template.json with --ccks-templates FILE, or "
            "use --ccks-sample 0"
        )


def deepke_instruction(
    task: str,
    schema: Any,
    language: str,
    template: int,
    fmt: int,
    schema2: Any = None,
    templates=None,
) -> str:
    """DeepKE's instruction `template` (0-19) for `task` asking for output format `fmt`."""
    _check_task(task)
    _check_language(language)
    table = (templates or DEEPKE_TEMPLATES[task])[language]
    return table[template].format(
        s_schema=str(schema),
        s_schema1=str(schema),
        s_schema2=str(schema2 if schema2 is not None else []),
        s_format=DEEPKE_FORMATS[task][language][fmt],
    )


# ------------------------------------------------------------------------------ rendering


def _arg_text(role: str, arg: str | None, fmt: int, language: str) -> str:
    if arg is None:
        return NAN
    if fmt == 0:
        return f"{role}#{arg}"  # DeepKE writes role#argument (its format text says the reverse)
    if fmt == 1:
        if language == "en":
            return f"Argument is {arg},Argument Role is {role}"
        return f"事件论元是{arg},论元角色是{role}"
    if fmt == 2:
        return f"{role}：{arg}"
    return "{'argument':'" + arg + "', 'role':'" + role + "'}"  # unescaped, as DeepKE


def format_item(task: str, item: Any, fmt: int = 0, language: str = "zh") -> str:
    """One answer item in DeepKE's output format `fmt` (0-3); a negative one is `NAN`."""
    if fmt not in (0, 1, 2, 3):
        raise ValueError(f"output format must be 0-3, got {fmt!r}")
    if task in ("NER", "EET"):
        value, label = item
        if value is None:
            return NAN
        if task == "NER":
            return (
                f"({value},{label})",
                f"Entity is {value},Entity Type is {label}"
                if language == "en"
                else f"实体是{value},实体类型是{label}",
                f"{label}：{value}",
                str({"entity": value, "entity_type": label}),
            )[fmt]
        return (
            f"({value},{label})",
            f"Event Trigger is {value},Event Type is {label}"
            if language == "en"
            else f"事件触发词是{value},事件类型是{label}",
            f"{label}：{value}",
            "{'event_trigger':'" + value + "', 'event_type':'" + label + "'}",
        )[fmt]
    trigger, etype, args = item
    if trigger is None:
        return NAN
    parts = [_arg_text(r, a, fmt, language) for r, a in args] or [NAN]
    if fmt == 0:
        return f"({trigger},{etype},{';'.join(parts)})"
    if fmt == 1:
        head = (
            f"Event Trigger is {trigger},Event Type is {etype}"
            if language == "en"
            else f"事件触发词是{trigger},事件类型是{etype}"
        )
        return head + "\n" + ";".join(parts)
    if fmt == 2:
        return f"{etype}：{trigger}\n" + ";".join(parts)
    args = "(" + ",".join(parts) + ")"
    return (
        "{'event_trigger':'"
        + trigger
        + "', 'event_type':'"
        + etype
        + "', 'arguments':"
        + args
        + "}"
    )


def render(task: str, items: Iterable[Any], fmt: int = 0, language: str = "zh") -> str:
    """The answer text: one item per line (EE/EEA formats 1 and 2: two lines per event and a
    blank line between events, as DeepKE writes them); nothing but negatives → `NAN`."""
    items = list(items)
    if all(it[0] is None for it in items):
        return NAN
    sep = "\n\n" if task in ("EE", "EEA") and fmt in (1, 2) else "\n"
    return sep.join(format_item(task, it, fmt, language) for it in items)


# ------------------------------------------------------------------------------ parsing

_COMMA = re.compile(r"[,，]")
_COLON = re.compile(r"[：:]")
_PAREN = re.compile(r"^[(（](.*)[)）]$")
_F1 = {
    "NER": re.compile(
        r"(?:实体是|entity is)\s*(.*?)\s*[,，]\s*(?:实体类型是|entity type is)\s*(.*?)\s*$",
        re.IGNORECASE,
    ),
    "EVENT": re.compile(
        r"(?:事件触发词是|event trigger is)\s*(.*?)\s*[,，]\s*(?:事件类型是|event type is)\s*(.*?)\s*$",
        re.IGNORECASE,
    ),
    "ARG": re.compile(
        r"(?:事件论元是|argument is)\s*(.*?)\s*[,，]\s*(?:论元角色是|argument role is)\s*(.*?)\s*$",
        re.IGNORECASE,
    ),
}
_Q = r"""["']"""
_F3 = {
    k: re.compile(rf"{_Q}{k}{_Q}\s*:\s*{_Q}(.*?){_Q}\s*(?=[,}}])")
    for k in ("entity", "entity_type", "event_trigger", "event_type", "argument", "role")
}
_F3_ARG = re.compile(r"\{[^{}]*\}")
_BARE_NAN = re.compile(r"(?<=[(\[,])\s*NAN\s*(?=[,)\]])")
_REJECT = ("no entity found.", "no event found.", "no argument found.")


def _is_nan(s: str) -> bool:
    return s.strip().strip("。.").upper() == NAN


def _nan_list(s: str) -> bool:
    """`NAN`, or an argument list of nothing but NAN (`NAN;NAN`)."""
    return all(_is_nan(p) for p in re.split(r"[;；]", s))


def _fields(s: str) -> tuple[list[str], list[str]]:
    tokens = _COMMA.split(s)
    seps = _COMMA.findall(s)
    return tokens, seps


def _join(tokens: list[str], seps: list[str], i: int, j: int) -> str:
    """Fields i..j-1 with the separators as written."""
    out = tokens[i] if i < j else ""
    for k in range(i + 1, j):
        out += seps[k - 1] + tokens[k]
    return out.strip()


def _split_label(inner: str, labels: Sequence[str]) -> tuple[str, str] | None:
    """`value,label` split where a known label ends it, else at the last comma; None without
    a comma."""
    for lab in sorted(labels, key=len, reverse=True):
        for sep in (",", "，"):
            if inner.endswith(sep + lab) and len(inner) > len(lab) + 1:
                return inner[: -len(lab) - 1].strip(), lab
    tokens, seps = _fields(inner)
    if len(tokens) < 2:
        return None
    return _join(tokens, seps, 0, len(tokens) - 1), tokens[-1].strip()


def _literal(line: str) -> Any:
    try:
        return ast.literal_eval(_BARE_NAN.sub("None", line))
    except Exception:  # model text: anything may be wrong with it
        return None


def _dicts(obj: Any) -> list[dict]:
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [d for d in obj if isinstance(d, dict)]
    return []


def _f3_pairs(line: str, value_key: str, label_key: str) -> list[tuple[str, str]]:
    found = [
        (d.get(value_key), d.get(label_key))
        for d in _dicts(_literal(line))
        if isinstance(d.get(value_key), str) and isinstance(d.get(label_key), str)
    ]
    if not found:  # DeepKE writes values unescaped: a quote inside breaks the literal
        v, lab = _F3[value_key].search(line), _F3[label_key].search(line)
        if v and lab:
            found = [(v.group(1), lab.group(1))]
    return [(v.strip(), lab.strip()) for v, lab in found]


def _pair_line(task: str, line: str, labels: Sequence[str]) -> tuple[list[Pair], str | None]:
    """One NER / EET answer line in any format → (value, label) pairs, error."""
    value_key, label_key = (
        ("entity", "entity_type") if task == "NER" else ("event_trigger", "event_type")
    )
    if line.startswith(("{", "[{")):
        pairs = _f3_pairs(line, value_key, label_key)
        if not pairs:
            return [], f"not a {{'{value_key}', '{label_key}'}} line: {line[:60]!r}"
        return pairs, None
    m = _F1["NER" if task == "NER" else "EVENT"].search(line)
    if m:
        return [(m.group(1), m.group(2))], None
    m = _PAREN.match(line)
    if m:
        split = _split_label(m.group(1).strip(), labels)
        if split is None:
            return [], f"not a ({value_key},{label_key}) line: {line[:60]!r}"
        return [split], None
    parts = _COLON.split(line, maxsplit=1)
    if len(parts) == 2:  # format 2: label：value
        return [(parts[1].strip(), parts[0].strip())], None
    return [], f"not an answer line in any of the four formats: {line[:60]!r}"


def _args(text: str, fmt: int) -> tuple[list[Arg], list[str]]:
    """An argument list (`;`-separated) → (role, argument) pairs, errors."""
    out: list[Arg] = []
    errors: list[str] = []
    for part in re.split(r"[;；]", text):
        part = part.strip()
        if not part or _is_nan(part):
            continue
        m = _F1["ARG"].search(part)
        if m:
            arg, role = m.group(1), m.group(2)
        elif fmt == 0 and "#" in part:
            role, _, arg = part.partition("#")
        elif _COLON.search(part):
            role, arg = _COLON.split(part, maxsplit=1)
        elif "#" in part:
            role, _, arg = part.partition("#")
        else:
            errors.append(f"not an argument: {part[:40]!r}")
            continue
        out.append((role.strip(), arg.strip()))
    return out, errors


def _event_f0(inner: str, types: Sequence[str]) -> tuple[Event | None, list[str]]:
    for t in sorted(types, key=len, reverse=True):
        for sep in (",", "，"):
            head, mid, rest = inner.partition(sep + t)
            if mid and head and (not rest or rest[0] in ",，"):
                args, errs = _args(rest[1:], 0)
                return (head.strip(), t, args), errs
    tokens, seps = _fields(inner)
    if len(tokens) < 2:
        return None, [f"not a (trigger,type,role#argument;…) line: ({inner[:60]})"]
    # without a known type: the arguments start at the first `role#argument` or NAN field
    j = next((k for k in range(2, len(tokens)) if "#" in tokens[k] or _is_nan(tokens[k])), 2)
    args, errs = _args(_join(tokens, seps, j, len(tokens)), 0) if j < len(tokens) else ([], [])
    return (_join(tokens, seps, 0, j - 1), tokens[j - 1].strip(), args), errs


def _f3_event(line: str) -> list[Event]:
    events: list[Event] = []
    for d in _dicts(_literal(line)):
        trig, etype = d.get("event_trigger"), d.get("event_type")
        if not isinstance(trig, str) or not isinstance(etype, str):
            continue
        args = [
            (a["role"].strip(), a["argument"].strip())
            for a in _dicts(d.get("arguments"))
            if isinstance(a.get("role"), str) and isinstance(a.get("argument"), str)
        ]
        events.append((trig.strip(), etype.strip(), args))
    if events:
        return events
    trig, etype = _F3["event_trigger"].search(line), _F3["event_type"].search(line)
    if not (trig and etype):
        return []
    args = []
    for block in _F3_ARG.findall(line[etype.end() :]):
        a, r = _F3["argument"].search(block), _F3["role"].search(block)
        if a and r:
            args.append((r.group(1).strip(), a.group(1).strip()))
    return [(trig.group(1).strip(), etype.group(1).strip(), args)]


def _parse_events(lines: list[str], schema: dict[str, list[str]]) -> tuple[list[Event], list[str]]:
    """EE/EEA answers: formats 0 and 3 are one line per event; formats 1 and 2 a header line
    and the event's argument line (a blank line ends an event)."""
    events: list[Event] = []
    errors: list[str] = []
    pending: int | None = None  # the event whose argument line may come next
    pending_fmt = 0
    for line in lines:
        if not line:
            pending = None
            continue
        if pending is not None:
            is_args = _nan_list(line) or bool(_F1["ARG"].search(line))
            if not is_args and pending_fmt == 2 and _COLON.search(line):
                left = _COLON.split(line, maxsplit=1)[0].strip()
                etype = events[pending][1]
                is_args = not (left in schema and left not in schema.get(etype, ()))
            if is_args:
                args, errs = _args(line, pending_fmt)
                events[pending][2].extend(args)
                errors += errs
                pending = None
                continue
        pending = None
        if _nan_list(line):
            continue
        if line.startswith(("{", "[{")):
            found = _f3_event(line)
            if not found:
                errors.append(f"not an event dict line: {line[:60]!r}")
            events += found
            continue
        m = _F1["EVENT"].search(line)
        if m:
            events.append((m.group(1), m.group(2), []))
            pending, pending_fmt = len(events) - 1, 1
            continue
        m = _PAREN.match(line)
        if m:
            ev, errs = _event_f0(m.group(1).strip(), list(schema))
            errors += errs
            if ev:
                events.append(ev)
            continue
        parts = _COLON.split(line, maxsplit=1)
        if len(parts) == 2 and not re.search(r"[;；]", line):  # format 2 header: type：trigger
            events.append((parts[1].strip(), parts[0].strip(), []))
            pending, pending_fmt = len(events) - 1, 2
            continue
        errors.append(f"not an answer line in any of the four formats: {line[:60]!r}")
    return events, errors


def _clean(s: Any) -> str | None:
    if not isinstance(s, str):
        return None
    s = s.strip()
    return None if not s or _is_nan(s) else s


def parse(task: str, output: Any, schema: Any = None) -> tuple[list[tuple], list[str]]:
    """Answer text in any of DeepKE's four formats → items, errors; never raises.

    Items as DeepKE's metric compares them: NER (entity, type), EET (type, trigger), EE/EEA
    (type, trigger, ((argument, role), …)). `schema` (the instruction's label list, or its
    event type → roles dict) resolves commas inside names; NAN lines and NAN values are
    nothing."""
    _check_task(task)
    if not isinstance(output, str):
        return [], [f"output is {type(output).__name__}, not text"]
    if output.strip().lower() in _REJECT:
        return [], []
    lines = [ln.strip() for ln in output.splitlines()]
    if task in ("NER", "EET"):
        labels = list(schema or [])
        items, errors = [], []
        for line in lines:
            if not line or _is_nan(line):
                continue
            found, err = _pair_line(task, line, labels)
            if err:
                errors.append(err)
            for value, label in found:
                value, label = _clean(value), _clean(label)
                if value and label:
                    items.append((value, label) if task == "NER" else (label, value))
        return items, errors
    types = schema if isinstance(schema, dict) else {t: [] for t in (schema or [])}
    events, errors = _parse_events(lines, types)
    out = []
    for trig, etype, args in events:
        trig, etype = _clean(trig), _clean(etype)
        if not trig or not etype:
            continue
        pairs = [(_clean(a), _clean(r)) for r, a in args]
        out.append((etype, trig, tuple((a, r) for a, r in pairs if a and r)))
    return out, errors


def instruction_schema(task: str, instruction: Any) -> Any:
    """The label list (NER, EET) or event type → roles dict (EE, EEA) an instruction names."""
    if task in ("NER", "EET"):
        return candidates(instruction)
    if not isinstance(instruction, str):
        return {}
    start = instruction.find("{")
    while start >= 0:
        end = instruction.find("}", start)
        while end >= 0:
            try:
                value = ast.literal_eval(instruction[start : end + 1])
            except Exception:  # not a literal: keep looking
                value = None
            if (
                isinstance(value, dict)
                and value
                and all(
                    isinstance(k, str)
                    and isinstance(v, (list, tuple, set))
                    and all(isinstance(x, str) for x in v)
                    for k, v in value.items()
                )
            ):
                return {k: list(v) for k, v in value.items()}
            end = instruction.find("}", end + 1)
        start = instruction.find("{", start + 1)
    return {}


# ------------------------------------------------------------------------------ conversion


def schema_labels(task: str, schema: Schema) -> Any:
    """What a task lists from the 3-line schema: NER and EET line 1 (EET: line 3's keys if
    line 1 is empty), EE and EEA line 3 (type → roles)."""
    if task == "NER":
        labels: Any = list(schema.types)
        what = "line 1 (entity types)"
    elif task == "EET":
        labels = list(schema.types) or list(schema.type_roles)
        what = "line 1 (event types)"
    else:
        labels = {t: list(r) for t, r in schema.type_roles.items()}
        what = "line 3 (event type → roles)"
    if not labels:
        raise KgcError(
            Problem(f"{what} of the schema is empty; --task {task} needs it", schema.path)
        )
    return labels


def _derived(task: str, rows) -> Any:
    """The schema DeepKE derives from the data when no schema file is given."""
    key = ANNOTATION[task]
    anns = [
        a
        for _, r in rows
        if isinstance(r, dict) and isinstance(r.get(key), list)
        for a in r[key]
        if isinstance(a, dict)
    ]
    if task == "NER":
        return sorted({a["entity_type"] for a in anns if isinstance(a.get("entity_type"), str)})
    if task == "EET":
        return sorted({a["event_type"] for a in anns if isinstance(a.get("event_type"), str)})
    out: dict[str, set[str]] = {}
    for a in anns:
        if isinstance(a.get("event_type"), str):
            roles = out.setdefault(a["event_type"], set())
            for arg in a.get("arguments") or []:
                if isinstance(arg, dict) and isinstance(arg.get("role"), str):
                    roles.add(arg["role"])
    return {t: sorted(r) for t, r in sorted(out.items())}


def gold_items(task: str, anns: list[dict]) -> list[Any]:
    """Validated annotations → items (see `Pair` / `Event`); an empty value is a NAN line."""
    if task in ("NER", "EET"):
        vk, lk = ("entity", "entity_type") if task == "NER" else ("event_trigger", "event_type")
        return [(a[vk] or None, a[lk]) for a in anns]
    return [
        (
            a.get("event_trigger") or None,
            a["event_type"],
            [(x["role"], x["argument"] or None) for x in a.get("arguments") or []],
        )
        for a in anns
    ]


def _k(share: float, n: int) -> int:
    return min(n, max(1, round(share * n)))


def _pairs_answer(items, labels, split, opts, rng, text):
    """NER / EET: the listed labels and the answer items (value None = a NAN line)."""
    positives = list(dict.fromkeys(lab for _v, lab in items))
    negatives: list[str] = []
    listed = list(labels)
    if opts.neg_ratio is not None and split == "train":
        # DeepKE's sampler: with probability neg_ratio, k labels drawn from the whole schema;
        # those not positive are negatives. The record lists exactly its positives and them.
        if opts.neg_ratio > 0 and rng.random() < opts.neg_ratio:
            drawn = rng.sample(list(labels), _k(opts.neg_schema, len(labels)))
            negatives = [lab for lab in drawn if lab not in positives]
        listed = sorted({*positives, *negatives})
    elif opts.neg_ratio is not None:
        listed = sorted(labels)
        if opts.neg_ratio > 0:
            negatives = [lab for lab in listed if lab not in positives]
    if not opts.random_sort:
        ordered = sorted(items, key=lambda it: position(text, it[0]))
        return listed, [*ordered, *((None, lab) for lab in negatives)]
    ids = {lab: rng.randint(0, 1000) for lab in listed}
    keyed = [(ids.get(lab, 1001), position(text, v), (v, lab)) for v, lab in items]
    keyed += [(ids[lab], -1, (None, lab)) for lab in negatives]
    keyed.sort(key=lambda x: x[:2])
    return sorted(listed, key=lambda lab: ids[lab]), [x[2] for x in keyed]


def _events_answer(task, events, type_roles, split, opts, rng, text):
    """EE / EEA: the type → roles dict to list and the events (None = NAN)."""
    events = [(t, y, list(args)) for t, y, args in events]
    pos_roles: dict[str, list[str]] = {}
    for _t, y, args in events:
        roles = pos_roles.setdefault(y, [])
        roles += [r for r, _a in args if r not in roles]
    neg_types: list[str] = []
    if opts.neg_ratio is None:  # kgc's default: the whole schema (EEA: the record's types)
        listed = {t: list(r) for t, r in type_roles.items() if task == "EE" or t in pos_roles}
    elif split == "train":
        n = len(type_roles) if task == "EE" else len({r for v in type_roles.values() for r in v})
        k = _k(opts.neg_schema, n)
        if opts.neg_ratio > 0 and rng.random() < opts.neg_ratio:
            # DeepKE's sampler: per event, 1..min(|roles|, k) roles of its type drawn, those
            # not yet positive for the type become NAN arguments; EE also draws k types,
            # those absent become NAN events listing all their roles.
            for _t, y, args in events:
                roles = list(type_roles.get(y, ()))
                if not roles or set(roles) <= set(pos_roles[y]):
                    continue
                for r in rng.sample(roles, rng.randint(1, min(len(roles), k))):
                    if r not in pos_roles[y]:
                        args.append((r, None))
                        pos_roles[y].append(r)
            if task == "EE":
                drawn = rng.sample(list(type_roles), k)
                neg_types = [t for t in drawn if t not in pos_roles]
        listed = {t: sorted(pos_roles[t]) for t in sorted(pos_roles)}
        listed.update({t: sorted(type_roles[t]) for t in neg_types})
        listed = dict(sorted(listed.items()))
    else:  # test: the whole schema; > 0 answers every absent role and type with NAN
        types = sorted(type_roles) if task == "EE" else sorted(pos_roles)
        listed = {t: sorted(type_roles.get(t, pos_roles.get(t, ()))) for t in types}
        if opts.neg_ratio > 0:
            for _t, y, args in events:
                args += [(r, None) for r in listed.get(y, ()) if r not in pos_roles[y]]
            neg_types = [t for t in types if t not in pos_roles] if task == "EE" else []
    items = events + [(None, t, [(r, None) for r in listed[t]]) for t in neg_types]
    if not opts.random_sort:
        out = []
        for trig, y, args in sorted(items, key=lambda e: position(text, e[0])):
            args = sorted(args, key=lambda a: (a[1] is None, position(text, a[1])))
            out.append((trig, y, args))
        neg = [e for e in out if e[0] is None]
        return listed, [e for e in out if e[0] is not None] + neg
    tid = {t: rng.randint(0, 1000) for t in listed}
    rid = {r: rng.randint(0, 1000) for t in listed for r in listed[t]}
    out = []
    for trig, y, args in items:
        args = sorted(args, key=lambda a: (rid.get(a[0], 1001), position(text, a[1])))
        out.append((trig, y, args))
    out.sort(key=lambda e: (tid.get(e[1], 1001), position(text, e[0]) if e[0] else -1))
    listed = {
        t: sorted(listed[t], key=lambda r: rid[r]) for t in sorted(listed, key=lambda t: tid[t])
    }
    return listed, out


def convert_rows(
    task: str,
    rows,
    *,
    split: str,
    language: str,
    schema: Schema | None,
    path: str,
    options: CcksOptions | None = None,
    templates: dict[str, tuple[str, ...]] | None = None,
):
    """Raw records → CCKS2023 records for NER, EE, EET or EEA; (records, problems)."""
    from kgc.tasks import get as get_task

    _check_task(task)
    _check_language(language)
    opts = options or CcksOptions()
    check_sample(task, opts, templates)
    rows = list(rows)
    labels = schema_labels(task, schema) if schema is not None else _derived(task, rows)
    if schema is None:  # labels from the data: only the shapes can be wrong
        tr = labels if isinstance(labels, dict) else {}
        schema = Schema.from_lists(labels if isinstance(labels, list) else (), (), tr)
    spec = get_task(task)
    key = ANNOTATION[task]
    problems: list[Problem] = []
    out = []
    for lineno, rec in rows:
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"]:
            problems.append(Problem("record needs a non-empty string field 'text'", path, lineno))
            continue
        anns = rec.get(key)
        if anns is None and (split == "train" or task == "EEA"):
            why = (
                "EEA records need it: the instruction gives their event types and triggers"
                if task == "EEA"
                else "train records need it (use --split test for unannotated text)"
            )
            problems.append(Problem(f"field {key!r} is missing; {why}", path, lineno))
            continue
        if anns is not None:
            bad = spec.validate(anns, schema)
            if bad:
                problems += [Problem(p, path, lineno) for p in bad]
                continue
            anns = spec.clean(anns)
        text = rec["text"]
        rng = record_rng(opts.seed, lineno, text)
        if opts.sample == -1:  # DeepKE --sample -1: template and format drawn independently
            template, fmt = rng.randint(0, 19), rng.randint(0, 3)
        else:
            template = fmt = opts.sample or 0
        items = gold_items(task, anns or [])
        schema2 = None
        if task in ("NER", "EET"):
            listed, answer = _pairs_answer(items, labels, split, opts, rng, text)
        else:
            listed, answer = _events_answer(task, items, labels, split, opts, rng, text)
            if task == "EEA":
                schema2 = [{"event_type": y, "event_trigger": t or ""} for t, y, _a in answer if t]
        item: dict[str, Any] = {"id": text_id(text)}
        if isinstance(rec.get("cate"), str):
            item["cate"] = rec["cate"]
        item["instruction"] = deepke_instruction(
            task, listed, language, template, fmt, schema2, templates
        )
        item["input"] = text
        if anns is not None:
            item["output" if split == "train" else "label"] = render(task, answer, fmt, language)
        out.append(item)
    return out, problems


# ------------------------------------------------------------------------------ scoring


def gold_from_record(task: str, rec: dict) -> list[tuple] | None:
    """Gold items (as `parse` returns them) from a record's `entity` / `event` list, or None
    when it has none. Items without a value (DeepKE writes them as NAN) are not gold."""
    anns = rec.get(ANNOTATION[task])
    if not isinstance(anns, list):
        return None
    out: list[tuple] = []
    for a in anns:
        if not isinstance(a, dict):
            continue
        if task == "NER":
            if _clean(a.get("entity")) and _clean(a.get("entity_type")):
                out.append((a["entity"].strip(), a["entity_type"].strip()))
            continue
        trig, etype = _clean(a.get("event_trigger")), _clean(a.get("event_type"))
        if not trig or not etype:
            continue
        if task == "EET":
            out.append((etype, trig))
            continue
        args = tuple(
            (_clean(x.get("argument")), _clean(x.get("role")))
            for x in a.get("arguments") or []
            if isinstance(x, dict)
        )
        out.append((etype, trig, tuple(p for p in args if p[0] and p[1])))
    return out


def score_groups(task: str, items: list[tuple]) -> dict[str, list[tuple]]:
    """The tuples each score group compares. EE/EEA: events are keyed (type, trigger) like
    DeepKE's EEMetric (a dict: one key per pair), and an argument (type, trigger, argument,
    role) can only match inside a matching event."""
    if task == "NER":
        return {"entity": list(items)}
    if task == "EET":
        return {"trigger": list(items)}
    events: dict[tuple[str, str], set] = {}
    for etype, trig, args in items:
        events.setdefault((etype, trig), set()).update(args)
    return {
        "event": list(events),
        "argument": [(*k, a, r) for k, args in events.items() for a, r in sorted(args)],
    }


def evaluate_rows(
    task: str,
    rows: Iterable[tuple[int, Any]],
    *,
    path: str = "<input>",
    language: str | None = None,
    segmenter: str = "char",
    match: str = "multiset",
    normalize: bool = True,
) -> dict:
    _check_task(task)

    def read(rec: dict):
        schema = instruction_schema(task, rec.get("instruction"))
        label = rec.get("label")
        if isinstance(label, str):
            gold, gold_text = parse(task, label, schema)[0], label
        else:
            gold = gold_from_record(task, rec)
            if gold is None:
                return f"no gold: give 'label' (gold text) or {ANNOTATION[task]!r}"
            gold_text = render(task, [_as_item(task, g) for g in gold])
        pred, errs = parse(task, rec["output"], schema)
        return gold, gold_text, pred, errs

    return score_records(
        task, rows, read, lambda items: score_groups(task, items), HEADLINE[task], path=path,
        language=language, segmenter=segmenter, match=match, normalize=normalize,
    )  # fmt: skip


def _as_item(task: str, g: tuple) -> Any:
    """A parsed / gold tuple back to a renderable item (format 0 gold text for ROUGE)."""
    if task == "NER":
        return g
    if task == "EET":
        return (g[1], g[0])
    etype, trig, args = g
    return (trig, etype, [(r, a) for a, r in args])


__all__ = [
    "DEEPKE_FORMATS",
    "DEEPKE_TEMPLATES",
    "TASKS",
    "check_sample",
    "convert_rows",
    "deepke_instruction",
    "evaluate_rows",
    "format_item",
    "gold_from_record",
    "load_templates",
    "parse",
    "render",
    "schema_labels",
]
