"""The 2023 CCKS2023 / InstructIE text format (DeepKE's `kg2instruction`), relation triples.

Records `{text, relation: [{head, relation, tail}]}` become
`{"id", "instruction", "input", "output"}` with the output written one item per line. Train
records may carry negative relations (DeepKE's `--neg_ratio` / `--neg_schema`): each is listed
in the instruction and answered by a `NAN` line after the triples; an answer with no triple is
`NAN`. Four output layouts (DeepKE's formats 0-3) and DeepKE's 20 instruction templates per
language are selectable like DeepKE's `--sample`; without one, kgc's own instruction and
format 0 are used. Scoring parses gold and predicted texts the same way (any format, NAN lines
are "no triple") and reports triple F1, ROUGE-1/2/L and the CCKS2023 score
0.5·F1 + 0.5·ROUGE-2.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kgc.convert import text_id
from kgc.errors import KgcError, Problem
from kgc.formats import EVAL_FORMATS
from kgc.io import dumps
from kgc.metrics import PRF, count
from kgc.sampling import record_rng
from kgc.tasks.base import position

FORMATS = EVAL_FORMATS  # kept for importers; the one list is kgc.formats
TASKS = ("RE",)
NAN = "NAN"
SAMPLES = (-1, 0, 1, 2, 3)

# DeepKE `configs/re_template.json` → "template" (the schema-constrained RE instructions of
# kg2instruction), copied string for string: models trained on CCKS2023/InstructIE data saw
# exactly these. Index = DeepKE's template number; `{s_schema}` is Python's str() of the
# relation list and `{s_format}` one of DEEPKE_FORMATS.
DEEPKE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "你是专门进行关系三元组提取的专家。已知候选的关系列表：{s_schema}，请你根据关系列表，从以下输入中抽取出可能存在的头实体与尾实体，并给出对应的关系三元组，如果不存在某关系就输出NAN。请按照{s_format}的格式回答。",
        "你在这里扮演关系三元组识别师的角色。我将给你个输入，请根据关系列表：{s_schema}，从输入中抽取出可能包含的关系三元组，，如果不存在某关系就输出NAN，并以{s_format}的形式回答。",
        "你是一个负责抽取关系三元组的分析师。我希望你根据关系列表从给定的输入中抽取可能的关系三元组，，如果不存在某关系就输出NAN，并以{s_format}的格式回答。关系列表={s_schema}。",
        "你是我们的关系三元组检测员。给定的关系列表是{s_schema}\n根据关系列表抽取关系三元组，在这个句子中可能包含哪些关系三元组？如果不存在某关系就输出NAN。请以{s_format}的格式回答。",
        "作为关系三元组抽取领域的专家，你的任务是从所给文本中提取关系三元组。请参考关系列表：{s_schema}，并确保按照{s_format}的方式整理你的答案。对于不在关系列表中的关系，请输出NAN。",
        "你现在的目标是找出文本中的关系三元组。使用这些已知的关系作为参考：{s_schema}。请在答案中遵循{s_format}的格式，如果文本中没有列出的关系，就输出NAN。",
        "请你专注于从文本中识别关系三元组，并根据关系列表：{s_schema}分类。确保你的输出与{s_format}格式相符，若没有某种关系，请用NAN表示。",
        "你的任务是从这段文本中找出头实体、尾实体和它们之间的关系。请参考以下的关系列表：{s_schema}，并将结果以{s_format}的形式呈现。若某关系不存在，就输出NAN。",
        "这段文本可能含有某些关系三元组。请参照关系列表：{s_schema}来提取它们，并以{s_format}的格式组织你的答案。没有的关系请标注为NAN。",
        "请你从以下内容中鉴别关系三元组，并根据这个关系列表：{s_schema}分类。记得按照{s_format}的格式整理，并为不存在的关系输出NAN。",
        "我们提供了一个关系列表：{s_schema}。你需要从所给文本中提取与这些关系相对应的三元组，并确保按照{s_format}的方式呈现。缺失的关系请用NAN标注。",
        "你的角色是从这段文字中鉴别出关系三元组。给定的关系参考是：{s_schema}。请在答复中采用{s_format}的格式，不在关系列表中的关系，请使用NAN表示。",
        "请仔细阅读以下段落，根据关系列表：{s_schema}，提取出可能的关系三元组。你的输出应该与{s_format}格式匹配，没有列出的关系请用NAN标明。",
        "请用关系列表：{s_schema}作为指南，从文本中找出所有可能的关系三元组，并确保答案采用{s_format}的格式。如果某种关系在文本中未出现，请注明为NAN。",
        "在你的关系提取任务中，请检查文本并根据给出的关系类型：{s_schema}，提取相应的三元组。使用{s_format}来构建你的回答，并且对未发现的关系类型回复NAN。",
        "请精读所给材料，并从中挑选出符合关系列表{s_schema}中定义的关系三元组。应用{s_format}格式安排你的输出，遇到不适用的关系请标记为NAN。",
        "考虑到你的关系抽取能力，请利用关系列表{s_schema}引导你从文本中找出相关的三元组，并以{s_format}格式排列你的发现。如果关系不适用，简单地回复NAN。",
        "请在提供的文本中查找可能的关系三元组，并参照关系列表{s_schema}进行分类。对于文本中未体现的关系，请使用NAN标识，并遵循{s_format}格式提交你的结果。",
        "请梳理这段文本，并根据我们的关系分类列表{s_schema}识别其中的三元组。每当关系不存在时，输出NAN，并确保你的答案格式与{s_format}保持一致。",
        "你的任务是将文本中的关系三元组分析出来，并与关系列表{s_schema}对应起来。不存在的关系请以NAN表示，并严格遵守{s_format}格式规范。",
    ),
    "en": (
        "You are an expert in extracting relation triples. With the candidate relation list: {s_schema}, please extract the possible head entities and tail entities from the input below and provide the corresponding relation triples. If a relation does not exist, output NAN. Please answer in the {s_format} format.",
        "You play the role of a relation triple identifier here. With the input given to you, please extract the possible relation triples from the input according to the relation list: {s_schema}. If a relation does not exist, output NAN and respond in the {s_format} format.",
        "You are an analyst responsible for extracting relation triples. I would like you to extract possible relation triples from the given input based on the relation list, if a relation does not exist, output NAN, and respond in the {s_format} format. The relation list is {s_schema}.",
        "You are our relation triple detector. The given relation list is {s_schema}. Based on this list, what relation triples can be extracted from this sentence? If a relation does not exist, output NAN. Please answer in the {s_format} format.",
        "As an expert in the field of relation triple extraction, your task is to extract relation triples from the given text. Please refer to the relation list: {s_schema}, and make sure to organize your answer in the {s_format} manner. For relationships not on the list, please output NAN.",
        "Your current goal is to identify relation triples in the text. Use these known relations for reference: {s_schema}. Please follow the {s_format} format in your answer, and output NAN if the relation listed is not in the text.",
        "Please focus on identifying relation triples in the text, and categorize according to the relation list: {s_schema}. Ensure your output matches the {s_format} format, and use NAN for non-existent relations.",
        "Your task is to find the head entities, tail entities, and their relationships from this text. Please refer to the following relation list: {s_schema}, and present the results in the {s_format} format. If a relation does not exist, output NAN.",
        "This text may contain certain relation triples. Refer to the relation list: {s_schema} to extract them, and organize your answer in the {s_format} format. Mark non-existent relations as NAN.",
        "Identify relation triples from the content below, categorized according to this relation list: {s_schema}. Remember to organize according to the {s_format} format, and output NAN for non-existent relations.",
        "We have provided a relation list: {s_schema}. You need to extract triples corresponding to these relations from the given text and ensure they are presented in the {s_format} manner. Mark missing relations with NAN.",
        "Your role is to identify relation triples from this piece of text. The given reference of relations is: {s_schema}. Please use the {s_format} format in your reply, and use NAN for relations not in the list.",
        "Please read the paragraph below carefully and extract possible relation triples according to the relation list: {s_schema}. Your output should match the {s_format} format, and use NAN to indicate unlisted relations.",
        "Use the relation list: {s_schema} as a guide to find all possible relation triples from the text, and ensure your answer is in the {s_format} format. If a certain relation is not present in the text, please indicate as NAN.",
        "In your task of relation extraction, please check the text and extract the corresponding triples according to the given relation types: {s_schema}. Use {s_format} to construct your answer, and reply NAN for any relation type not found.",
        "Please read the given material thoroughly and pick out the relation triples that fit the definitions in the relation list {s_schema}. Arrange your output in the {s_format} format, and mark non-applicable relations as NAN.",
        "Considering your relation extraction capability, please use the relation list {s_schema} to guide you in finding the relevant triples from the text, and arrange your findings in the {s_format} format. Simply reply NAN if a relation is not applicable.",
        "In the provided text, look for possible relation triples and categorize them according to the relation list {s_schema}. For relations not reflected in the text, use NAN to mark and submit your results following the {s_format} format.",
        "Go through this text and identify the triples according to our relation classification list {s_schema}. When a relation does not exist, output NAN and ensure your answer format is consistent with {s_format}.",
        "Your task is to analyze the relation triples in the text and match them with the relation list {s_schema}. Represent non-existent relations with NAN and strictly adhere to the {s_format} format specifications.",
    ),
}

# DeepKE's `s_format` texts of output formats 0-3 (REConverter), newline included as DeepKE
# has it: its instructions read "...in the (Subject,Relation,Object)\n format."
DEEPKE_FORMATS: dict[str, tuple[str, ...]] = {
    "zh": (
        "(头实体,关系,尾实体)\n",
        "头实体是,关系是,尾实体是\n",
        "关系：头实体,尾实体\n",
        "{'head':'', 'relation':'', 'tail':''}\n",
    ),
    "en": (
        "(Subject,Relation,Object)\n",
        "Subject is,Relation is,Object is\n",
        "Relation：Subject,Object\n",
        "{'head':'', 'relation':'', 'tail':''}\n",
    ),
}

_INSTRUCTION = {
    "zh": (
        "候选关系列表：{relations}。请从下面的输入文本中找出所有符合候选关系的三元组，"
        "每行写一个，格式为(头实体,关系,尾实体)；若不存在符合的关系，只输出NAN。"
    ),
    "en": (
        "Candidate relations: {relations}. Find every triple in the input text below whose "
        "relation is a candidate, one per line, written as (head entity,relation,tail entity); "
        "if there is none, output only NAN."
    ),
}
_LINE = re.compile(r"[(（](.*)[)）]")
_SEP = re.compile(r"[,，]")
_F1 = (
    re.compile(r"头实体是\s*(.*?)\s*[,，]\s*关系是\s*(.*?)\s*[,，]\s*尾实体是\s*(.*?)\s*$"),
    re.compile(
        r"subject is\s*(.*?)\s*[,，]\s*relation is\s*(.*?)\s*[,，]\s*object is\s*(.*?)\s*$",
        re.IGNORECASE,
    ),
)
_F2 = re.compile(r"^([^,，:：(){}（）]+?)\s*[：:]\s*([^(（\s].*)$")
_F3_KEY = {
    k: re.compile(rf"""["']{k}["']\s*:\s*["']([^"']*)["']""") for k in ("head", "relation", "tail")
}


@dataclass(frozen=True)
class CcksOptions:
    """How `--format ccks2023` writes records (validated by `ccks_options`).

    sample: DeepKE's `--sample` — None: kgc's own instruction, format 0; 0-3: DeepKE template
    and format N; -1: a random template 0-19 and format 0-3 per record.
    neg_ratio: None: the whole schema is listed and no NAN line is written (kgc's default);
    a share in [0, 1]: DeepKE's layout — a train record lists its own relations plus, with
    this probability, sampled negatives answered by NAN lines; a test label gets a NAN line
    for every absent schema relation when it is above 0.
    neg_schema: share of the schema drawn as candidate negatives, k = max(1, round(share·n)).
    """

    sample: int | None = None
    neg_ratio: float | None = None
    neg_schema: float = 1.0
    random_sort: bool = False
    seed: int = 42


def _number(value: Any, option: str, problems: list[str], fix: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x):
        problems.append(f"{option} must be a number, got {value!r}; {fix}")
        return None
    return x


def ccks_options(
    sample: Any = None,
    neg_ratio: Any = None,
    neg_schema: Any = None,
    *,
    random_sort: bool = False,
    seed: int = 42,
) -> CcksOptions:
    """Validate the `--ccks-sample`, `--neg-ratio` and `--neg-schema` values (strings from the
    command line or numbers); every bad one is reported, each on one line."""
    problems: list[str] = []
    s = None
    if sample is not None:
        fix = (
            "use -1 (random template 0-19 and format 0-3 per record) or 0-3 "
            "(DeepKE template and output format N)"
        )
        try:
            s = int(str(sample).strip())
        except ValueError:
            s = None
        if isinstance(sample, bool) or s not in SAMPLES:
            problems.append(f"--ccks-sample must be one of -1, 0, 1, 2, 3, got {sample!r}; {fix}")
            s = None
    ratio_fix = "use a share from 0 (no record gets negatives) to 1 (every train record does)"
    r = _number(neg_ratio, "--neg-ratio", problems, ratio_fix)
    if r is not None and not 0.0 <= r <= 1.0:
        problems.append(f"--neg-ratio must be between 0 and 1, got {neg_ratio!r}; {ratio_fix}")
    schema_fix = (
        "use a share above 0 and at most 1 of the schema relations to draw per record "
        "(1 = all; for no negatives use --neg-ratio 0)"
    )
    k = _number(neg_schema, "--neg-schema", problems, schema_fix)
    if k is not None and not 0.0 < k <= 1.0:
        problems.append(
            f"--neg-schema must be above 0 and at most 1, got {neg_schema!r}; {schema_fix}"
        )
    if problems:
        raise KgcError(problems)
    if r is None and k is not None:
        r = 1.0  # DeepKE's default --neg_ratio
    return CcksOptions(
        sample=s,
        neg_ratio=r,
        neg_schema=1.0 if k is None else k,
        random_sort=random_sort,
        seed=seed,
    )


def instruction(relations: list[str], language: str) -> str:
    """kgc's own CCKS2023 instruction (format 0)."""
    if language not in _INSTRUCTION:
        raise KgcError(f"--language must be zh or en, got {language!r}")
    return _INSTRUCTION[language].format(relations=dumps(relations))


def deepke_instruction(relations: Sequence[str], language: str, template: int, fmt: int) -> str:
    """DeepKE's instruction `template` (0-19) asking for output format `fmt` (0-3)."""
    if language not in DEEPKE_TEMPLATES:
        raise KgcError(f"--language must be zh or en, got {language!r}")
    return DEEPKE_TEMPLATES[language][template].format(
        s_schema=str(list(relations)), s_format=DEEPKE_FORMATS[language][fmt]
    )


def format_triple(head: str, relation: str, tail: str, fmt: int = 0, language: str = "zh") -> str:
    """One answer line in DeepKE's output format `fmt` (0-3)."""
    if fmt == 0:
        return f"({head},{relation},{tail})"
    if fmt == 1:
        if language == "en":
            return f"Subject is {head},Relation is {relation},Object is {tail}"
        return f"头实体是{head},关系是{relation},尾实体是{tail}"
    if fmt == 2:
        return f"{relation}：{head},{tail}"
    if fmt == 3:  # Python's str() of the dict, as DeepKE writes it
        return f"{{'head': {head!r}, 'relation': {relation!r}, 'tail': {tail!r}}}"
    raise ValueError(f"output format must be 0-3, got {fmt!r}")


def _join(items: Iterable[tuple[str, str, str] | None], fmt: int, language: str) -> str:
    """Answer lines; None is a negative relation's NAN line. No triple at all → `NAN`."""
    items = list(items)
    if not any(items):
        return NAN
    return "\n".join(NAN if t is None else format_triple(*t, fmt, language) for t in items)


def render(
    triples: Iterable[tuple[str, str, str]],
    text: str = "",
    *,
    fmt: int = 0,
    language: str = "zh",
    negatives: int = 0,
) -> str:
    """Triples in reading order, then one NAN line per negative relation (DeepKE's order)."""
    triples = sorted(triples, key=lambda t: (position(text, t[0]), position(text, t[2])))
    return _join([*triples, *([None] * negatives)], fmt, language)


def _norm(s: str) -> str:
    return re.sub(r"\s*[,，]\s*", ",", s)


class _Fields:
    """The comma-separated fields of an answer line, with the separators as written."""

    def __init__(self, s: str, text: str):
        tokens = re.split(r"([,，])", s)
        self.raw, self.seps = tokens[0::2], tokens[1::2]
        self.parts = [p.strip() for p in self.raw]
        self.text, self.ntext = text, _norm(text)

    def cut(self, cuts: Iterable[int], skip: int, default: int) -> int:
        """Where head ends: the first cut whose head and tail (`skip` fields apart) both occur
        in the input text — DeepKE's merge_spt idea — else `default`."""
        for i in cuts:
            head, tail = ",".join(self.parts[:i]), ",".join(self.parts[i + skip :])
            if self.ntext and head in self.ntext and tail in self.ntext:
                return i
        return default

    def span(self, i: int, j: int) -> str:
        """Fields i..j-1 as written when that occurs in the input text, else joined by ","."""
        raw = "".join(
            self.raw[k] + (self.seps[k] if k < j - 1 else "") for k in range(i, j)
        ).strip()
        if self.text and raw in self.text:
            return raw
        return ",".join(self.parts[i:j])


def _triple_line(
    line: str, rels: set[str], text: str
) -> tuple[list[tuple[str, str, str]], str | None]:
    """One answer line in any of the four formats → triples, error (None when fine)."""
    if line.startswith(("{", "[{")):  # format 3: Python / JSON dicts
        try:
            obj = ast.literal_eval(line)
        except Exception:  # model text: anything may be wrong with it
            obj = None
        dicts = [obj] if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
        found = [
            tuple(d.get(k) for k in ("head", "relation", "tail"))
            for d in dicts
            if isinstance(d, dict)
        ]
        if obj is None:
            m = [_F3_KEY[k].search(line) for k in ("head", "relation", "tail")]
            found = [tuple(x.group(1) for x in m)] if all(m) else []
        good = [t for t in found if all(isinstance(x, str) for x in t)]
        if not good:
            return [], f"not a {{'head', 'relation', 'tail'}} line: {line[:60]!r}"
        return [tuple(x.strip() for x in t) for t in good], None
    for pattern in _F1:  # format 1
        m = pattern.search(line)
        if m:
            return [m.groups()], None
    if line.startswith(("(", "（")) or not _F2.match(line):  # format 0 (and free text)
        m = _LINE.search(line)
        f = _Fields(m.group(1) if m else line, text)
        n = len(f.parts)
        if n < 3:
            return [], f"not a (head,relation,tail) line: {line[:60]!r}"
        inner = range(1, n - 1)
        idx = next((i for i in inner if f.parts[i] in rels), None)
        if idx is None:
            idx = f.cut(inner, 1, 1)
        return [(f.span(0, idx), f.parts[idx], f.span(idx + 1, n))], None
    rel, rest = _F2.match(line).groups()  # format 2: relation：head,tail
    if rest.strip("。.").upper() == NAN:
        return [], None
    f = _Fields(rest, text)
    n = len(f.parts)
    if n < 2:
        return [], f"not a relation：head,tail line: {line[:60]!r}"
    idx = f.cut(range(1, n), 0, 1)
    return [(f.span(0, idx), rel.strip(), f.span(idx, n))], None


def parse(
    output: Any, relations: Iterable[str] = (), text: str = ""
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Answer text in any of DeepKE's four RE formats → triples, errors; never raises.

    `NAN` lines (and NAN heads or tails) are "no triple". Commas inside a head or tail are
    resolved with the known relation names when given, then with the input text (the cut
    whose both sides occur in it), else the 2nd field is the relation (format 0) or the
    first comma separates head and tail (format 2). A head or tail keeps its spelling when
    that occurs in the text; otherwise its comma-separated fields are joined by ","."""
    if not isinstance(output, str):
        return [], [f"output is {type(output).__name__}, not text"]
    rels = set(relations)
    text = text if isinstance(text, str) else ""
    triples, errors = [], []
    for raw in output.splitlines():
        line = raw.strip()
        if not line or line.strip("。.").upper() == NAN:
            continue
        found, error = _triple_line(line, rels, text)
        if error:
            errors.append(error)
        for head, rel, tail in found:
            if not head or not rel or not tail or NAN in (head.upper(), rel.upper(), tail.upper()):
                continue
            triples.append((head, rel, tail))
    return triples, errors


def candidates(instruction_text: Any) -> list[str]:
    """The candidate relation list written in an instruction (kgc's JSON or DeepKE's str())."""
    if not isinstance(instruction_text, str):
        return []
    start = instruction_text.find("[")
    while start >= 0:
        end = instruction_text.find("]", start)
        while end >= 0:
            try:
                value = ast.literal_eval(instruction_text[start : end + 1])
            except Exception:  # not a literal list: keep looking
                value = None
            if isinstance(value, list) and all(isinstance(x, str) for x in value):
                return value
            end = instruction_text.find("]", end + 1)
        start = instruction_text.find("[", start + 1)
    return []


def gold_triples(rec: dict) -> list[tuple[str, str, str]] | None:
    """Gold from `relation` dicts, a CCKS `kg` list of [h, r, t], or None if absent."""
    if isinstance(rec.get("relation"), list):
        return [
            (r["head"], r["relation"], r["tail"])
            for r in rec["relation"]
            if isinstance(r, dict)
            and all(isinstance(r.get(k), str) for k in ("head", "relation", "tail"))
        ]
    if isinstance(rec.get("kg"), list):
        return [tuple(x) for x in rec["kg"] if isinstance(x, list) and len(x) == 3]
    return None


def _usable(item: Any, field: str) -> bool:
    if field == "relation":
        return isinstance(item, dict) and all(
            isinstance(item.get(k), str) and item[k].strip() for k in ("head", "relation", "tail")
        )
    return (
        isinstance(item, list)
        and len(item) == 3
        and all(isinstance(x, str) and x.strip() for x in item)
    )


_ITEM = {
    "relation": "an object with non-empty string 'head', 'relation' and 'tail'",
    "kg": "a list of 3 non-empty strings [head, relation, tail]",
}


def _bad_items(rec: dict, path: str, lineno: int) -> list[Problem]:
    """Gold items that `gold_triples` could not use: reported, never skipped silently."""
    field = next((f for f in _ITEM if isinstance(rec.get(f), list)), None)
    if field is None:
        return []
    return [
        Problem(
            f"field '{field}' item {i} must be {_ITEM[field]}, got "
            f"{json.dumps(item, ensure_ascii=False)[:80]}; fix or remove it",
            path,
            lineno,
        )
        for i, item in enumerate(rec[field])
        if not _usable(item, field)
    ]


def _answer(
    gold: list[tuple[str, str, str]],
    listed: list[str],
    negatives: list[str],
    text: str,
    rng,
    random_sort: bool,
) -> tuple[list[str], list[tuple[str, str, str] | None]]:
    """The instruction's relation list and the answer items (None = a negative's NAN line).

    Default: relations as given, triples in reading order, then the negatives' NAN lines.
    random_sort (DeepKE's --random_sort): each relation gets a random id; relations and
    answer lines follow the ids, triples of one relation in reading order."""
    if not random_sort:
        return listed, [
            *sorted(gold, key=lambda t: (position(text, t[0]), position(text, t[2]))),
            *([None] * len(negatives)),
        ]
    ids = {r: rng.randint(0, 1000) for r in listed}
    order = sorted(listed, key=lambda r: ids[r])
    items = [(ids.get(t[1], 1001), position(text, t[0]), position(text, t[2]), t) for t in gold]
    items += [(ids[r], -1, -1, None) for r in negatives]
    items.sort(key=lambda x: x[:3])
    return order, [x[3] for x in items]


def convert_rows(
    rows,
    *,
    split: str,
    language: str,
    relations: list[str] | None,
    path: str,
    options: CcksOptions | None = None,
):
    opts = options or CcksOptions()
    if language not in DEEPKE_TEMPLATES:
        raise KgcError(f"--language must be zh or en, got {language!r}")
    rows = list(rows)
    problems: list[Problem] = []
    if relations is None:
        relations = sorted(
            {t[1] for _, r in rows if isinstance(r, dict) for t in (gold_triples(r) or [])}
        )
    rel_set = set(relations)
    out = []
    for lineno, rec in rows:
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"]:
            problems.append(Problem("record needs a non-empty string field 'text'", path, lineno))
            continue
        gold = gold_triples(rec)
        if gold is None and split == "train":
            problems.append(
                Problem("field 'relation' is missing; train records need it", path, lineno)
            )
            continue
        bad = _bad_items(rec, path, lineno)
        problems += bad
        for _h, r, _t in gold or []:
            if r not in rel_set:
                problems.append(
                    Problem(
                        f"field 'relation' value {r!r} is not in the schema relations; add it to "
                        "line 2 of the schema file",
                        path,
                        lineno,
                    )
                )
        if bad:
            continue
        text = rec["text"]
        rng = record_rng(opts.seed, lineno, text)
        if opts.sample == -1:  # DeepKE --sample -1: template and format drawn independently
            template, fmt = rng.randint(0, 19), rng.randint(0, 3)
        else:
            template = fmt = opts.sample or 0
        positives = list(dict.fromkeys(r for _h, r, _t in gold or []))
        negatives: list[str] = []
        listed = list(relations)
        if opts.neg_ratio is not None and split == "train":
            # DeepKE's RE sampler: with probability neg_ratio, k relations drawn from the whole
            # schema; those not positive become negatives. The record lists exactly its
            # positives and negatives, so every listed relation has an answer line.
            if opts.neg_ratio > 0 and rng.random() < opts.neg_ratio:
                k = min(len(relations), max(1, round(opts.neg_schema * len(relations))))
                drawn = rng.sample(list(relations), k)
                negatives = [r for r in drawn if r not in positives]
            listed = sorted({*positives, *negatives})
        elif opts.neg_ratio is not None:  # test: the whole schema, a NAN line per absent one
            listed = sorted(relations)
            if opts.neg_ratio > 0:
                negatives = [r for r in listed if r not in positives]
        listed, items = _answer(gold or [], listed, negatives, text, rng, opts.random_sort)
        item: dict[str, Any] = {"id": text_id(text)}
        if isinstance(rec.get("cate"), str):
            item["cate"] = rec["cate"]
        if opts.sample is None:
            item["instruction"] = instruction(listed, language)
        else:
            item["instruction"] = deepke_instruction(listed, language, template, fmt)
        item["input"] = text
        if gold is not None:
            item["output" if split == "train" else "label"] = _join(items, fmt, language)
        out.append(item)
    return out, problems


def evaluate_rows(
    rows: Iterable[tuple[int, Any]],
    *,
    path: str = "<input>",
    language: str | None = None,
    segmenter: str = "char",
    match: str = "multiset",
    normalize: bool = True,
) -> dict:
    def read(rec: dict):
        text = rec.get("input") if isinstance(rec.get("input"), str) else ""
        rels = candidates(rec.get("instruction"))
        label = rec.get("label")
        if isinstance(label, str):
            gold, gold_text = parse(label, rels, text)[0], label
        else:
            gold = gold_triples(rec)
            if gold is None:
                return "no gold: give 'label' (gold text), 'relation' or 'kg'"
            gold_text = render(gold, text)
        pred, errs = parse(rec["output"], [*rels, *(g[1] for g in gold)], text)
        return gold, gold_text, pred, errs

    return score_records(
        "RE", rows, read, lambda items: {"triple": items}, "triple", path=path,
        language=language, segmenter=segmenter, match=match, normalize=normalize,
    )  # fmt: skip


def score_records(
    task: str,
    rows: Iterable[tuple[int, Any]],
    read: Callable[[dict], Any],
    groups: Callable[[list], dict[str, list]],
    headline: str,
    *,
    path: str,
    language: str | None,
    segmenter: str,
    match: str,
    normalize: bool,
) -> dict:
    """The CCKS2023 scoring of any task: `read(record)` gives (gold, gold text, predicted,
    parse errors) or a problem's message; `groups(items)` the tuples matched per score group;
    the CCKS score is 0.5 · F1 of the `headline` group + 0.5 · ROUGE-2."""
    from kgc.rouge import rouge

    problems: list[Problem] = []
    totals: dict[str, PRF] = {}
    sums: Counter = Counter()
    n = parse_errors = 0
    for lineno, rec in rows:
        if not isinstance(rec, dict) or "output" not in rec:
            problems.append(
                Problem("record needs the model's text in field 'output'", path, lineno)
            )
            continue
        got = read(rec)
        if isinstance(got, str):
            problems.append(Problem(got, path, lineno))
            continue
        gold, gold_text, pred, errs = got
        parse_errors += bool(errs)
        gold_groups, pred_groups = groups(gold), groups(pred)
        for g in gold_groups:
            totals.setdefault(g, PRF()).add(
                count(pred_groups[g], gold_groups[g], match=match, normalize=normalize)
            )
        out = rec["output"] if isinstance(rec["output"], str) else ""
        sums.update(rouge(out, gold_text, language, segmenter))
        n += 1
    if problems:
        raise KgcError(problems)
    if not totals:
        totals = {g: PRF() for g in groups([])}
    r = {k: (sums[k] / n if n else 0.0) for k in ("rouge-1", "rouge-2", "rouge-l")}
    return {
        "task": task,
        "format": "ccks2023",
        "records": n,
        "lines": n,
        "parse_errors": parse_errors,
        "unparseable": 0,
        "scores": {g: p.as_dict() for g, p in totals.items()},
        "by_source": {},
        "rouge": r,
        "ccks_score": 0.5 * totals[headline].f1 + 0.5 * r["rouge-2"],
    }


def relations_from_schema(path) -> list[str]:
    from kgc.schema import read_schema

    schema = read_schema(path)
    rels = list(schema.roles)
    if not rels:
        raise KgcError(Problem("line 2 (relations) of the schema is empty", str(path)))
    return rels


__all__ = [
    "DEEPKE_FORMATS",
    "DEEPKE_TEMPLATES",
    "FORMATS",
    "SAMPLES",
    "CcksOptions",
    "candidates",
    "ccks_options",
    "convert_rows",
    "deepke_instruction",
    "evaluate_rows",
    "format_triple",
    "parse",
    "render",
    "score_records",
]
