"""SpERT-format datasets (CoNLL04, ADE, SciERC, …) → DeepKE raw records → IEPile instructions.

SpERT's layout is one JSON list; each sentence is

    {"tokens": ["PERUGIA", ",", "Italy"],
     "entities": [{"type": "Loc", "start": 0, "end": 1}],   # token offsets, end exclusive
     "relations": [{"type": "Located_In", "head": 0, "tail": 1}],   # indices into entities
     "orig_id": 23}

or, instead of "entities", one tag per token, `"tags": ["B-Org", "L-Org", "U-Loc", "O"]`
(BILOU; BIO and BIOES are read too), the entities then numbered in reading order. Its types
file, `{"entities": {name: {"short", "verbose"}}, "relations": {name: {"short", "verbose",
"symmetric"}}}`, names the types. Entity strings are cut from the sentence's text (tokens
joined by spaces, or `detokenize`d), so every gold string is an exact substring of the text
the model reads. `kgc convert --format spert` is `read_spert` → `to_raw` →
`kgc.convert.convert_rows`; errors name the file and the sentence's number (1 = the first).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.convert import ConvertStats, check_options, convert_rows
from kgc.errors import KgcError, Problem
from kgc.io import check_readable, write_jsonl_atomic
from kgc.sampling import SamplingOptions
from kgc.schema import Schema, read_schema
from kgc.tasks import get as get_task

TASKS = ("NER", "RE", "SPO")  # the tasks a SpERT file's annotations answer
VERBOSE = "verbose"  # `names=` value: the types file's own verbose names

# A detokenized text joins tokens with a space except before closing punctuation and clitics
# and after opening brackets and quotes (PTB conventions; `` and '' as CoNLL04 writes them).
_NO_SPACE_BEFORE = frozenset(
    {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "''", "'"}
    | {"'s", "'t", "n't", "'re", "'ve", "'ll", "'d", "'m"}
)
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "$", "``", "`"})
_TAG = re.compile(r"^([BILUES])-(.+)$")
_TAG_HELP = "use O, or B-/I-/L-/U- (BILOU; BIO, and BIOES's E-/S-, also read) and the type"


@dataclass(frozen=True)
class Entity:
    type: str
    start: int  # first token
    end: int  # one past the last token


@dataclass(frozen=True)
class Relation:
    type: str
    head: int  # index into the sentence's entities
    tail: int


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]
    number: int  # position in its file, 1 = the first (errors say file:number)
    orig_id: Any = None


@dataclass(frozen=True)
class Types:
    """A SpERT types file: entity and relation type name → its entry (short, verbose, …)."""

    entities: dict[str, dict]
    relations: dict[str, dict]
    path: str = "<types>"


def _load_json(path: str | os.PathLike, what: str) -> tuple[Any, str]:
    p = check_readable(path, what)
    try:
        return json.loads(p.read_text(encoding="utf-8")), str(p)
    except json.JSONDecodeError as exc:
        raise KgcError(
            Problem(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno})", str(p))
        ) from None
    except UnicodeDecodeError as exc:
        raise KgcError(Problem(f"{what} is not UTF-8 text ({exc.reason})", str(p))) from None


def read_types(path: str | os.PathLike) -> Types:
    """Read and check a SpERT types file; every problem is reported at once."""
    data, where = _load_json(path, "types file")
    shape = '{"entities": {name: {"short", "verbose"}}, "relations": {name: {...}}}'
    if not isinstance(data, dict):
        raise KgcError(Problem(f"a SpERT types file is a JSON object {shape}", where))
    problems = [
        Problem(f"unknown key {k!r}; a types file has 'entities' and 'relations'", where)
        for k in data
        if k not in ("entities", "relations")
    ]
    parts: dict[str, dict[str, dict]] = {}
    for kind in ("entities", "relations"):
        value = data.get(kind)
        if not isinstance(value, dict) or not value:
            problems.append(
                Problem(f"{kind!r} must be a non-empty object {{name: {{...}}}} ({shape})", where)
            )
            continue
        parts[kind] = {}
        for name, entry in value.items():
            if not name.strip() or not isinstance(entry, dict):
                problems.append(
                    Problem(
                        f"{kind}.{name}: each type is a non-empty name mapped to an object "
                        f'{{"short": …, "verbose": …}}, got {json.dumps(entry)[:60]}',
                        where,
                    )
                )
                continue
            verbose = entry.get(VERBOSE)
            if verbose is not None and (not isinstance(verbose, str) or not verbose.strip()):
                problems.append(
                    Problem(
                        f"{kind}.{name}.verbose must be a non-empty text, got {verbose!r}", where
                    )
                )
            parts[kind][name] = entry
    if problems:
        raise KgcError(problems)
    return Types(parts["entities"], parts["relations"], where)


def read_names(spec: str | os.PathLike | Mapping[str, str] | None, types: Types) -> dict[str, str]:
    """Type name → display name for every entity and relation type of `types`.

    spec: None (names kept as they are), "verbose" (the types file's verbose names), a JSON
    file or a mapping {type name: display name} (types it leaves out keep their names).
    """
    known = [*types.entities, *types.relations]
    names = {t: t for t in known}
    if spec is None:
        return names
    if isinstance(spec, str) and spec == VERBOSE:
        missing = [
            f"{kind}.{t}"
            for kind, entries in (("entities", types.entities), ("relations", types.relations))
            for t, e in entries.items()
            if not isinstance(e.get(VERBOSE), str)
        ]
        if missing:
            raise KgcError(
                Problem(
                    f"--names verbose: {', '.join(missing)} have no 'verbose' name; add them "
                    "or give a names file",
                    types.path,
                )
            )
        given: Any = {t: e[VERBOSE] for t, e in (*types.entities.items(), *types.relations.items())}
        where = f"{types.path} (verbose names)"
    elif isinstance(spec, Mapping):
        given, where = spec, "<names>"
    else:
        given, where = _load_json(spec, "names file")
        if not isinstance(given, dict):
            raise KgcError(
                Problem('a names file is a JSON object {"Work_For": "work for", …}', where)
            )
    problems = []
    unknown = [k for k in given if k not in names]
    if unknown:
        problems.append(
            Problem(
                f"{', '.join(map(repr, unknown))}: not a type of {types.path}; the names file "
                f"maps these types: {', '.join(known)}",
                where,
            )
        )
    for k, v in given.items():
        if not isinstance(v, str) or not v.strip():
            problems.append(
                Problem(f"{k}: the display name must be a non-empty text, got {v!r}", where)
            )
        elif k in names:
            names[k] = v.strip()
    for kind, entries in (("entity", types.entities), ("relation", types.relations)):
        seen: dict[str, str] = {}
        for t in entries:
            other = seen.setdefault(names[t], t)
            if other != t:
                problems.append(
                    Problem(
                        f"{kind} types {other!r} and {t!r} both become {names[t]!r}, which "
                        "would merge them; give them different names",
                        where,
                    )
                )
    if problems:
        raise KgcError(problems)
    return names


def _is_index(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_tags(tags: Sequence[Any]) -> tuple[list[Entity], list[str]]:
    """One BILOU/BIO/BIOES tag per token → entities in reading order, and the problems."""
    entities: list[Entity] = []
    problems: list[str] = []
    open_: tuple[str, int] | None = None  # (type, start) of the entity being read

    def close(end: int) -> None:
        nonlocal open_
        if open_ is not None:
            entities.append(Entity(open_[0], open_[1], end))
            open_ = None

    for i, tag in enumerate(tags):
        m = _TAG.match(tag) if isinstance(tag, str) else None
        if tag == "O" or m is None:
            if tag != "O":
                problems.append(f"tags[{i}]: {tag!r} is not a tag; {_TAG_HELP}")
            close(i)
            continue
        prefix, typ = m.groups()
        if prefix in "US":
            close(i)
            entities.append(Entity(typ, i, i + 1))
        elif prefix == "B":
            close(i)
            open_ = (typ, i)
        elif open_ is None or open_[0] != typ:  # I-, L-, E- must continue a B- of their type
            before = (
                "no B- tag before it"
                if open_ is None
                else f"it follows a {open_[0]!r} entity begun at tags[{open_[1]}]"
            )
            problems.append(
                f"tags[{i}]: {tag!r} continues an entity but has {before}; an entity starts "
                f"with B-{typ} (or is one token, U-{typ})"
            )
            close(i)
        elif prefix in "LE":
            close(i + 1)
    close(len(tags))
    return entities, problems


def _entities(rec: dict, n: int, types: Types | None, problems: list[str]) -> list[Entity] | None:
    has_spans, has_tags = "entities" in rec, "tags" in rec
    if has_spans == has_tags:
        problems.append(
            "give the entities either as 'entities' ([{type, start, end}], token offsets) or as "
            "'tags' (one BILOU tag per token), " + ("not both" if has_spans else "found neither")
        )
        return None
    bad_type = False
    if has_tags:
        tags = rec["tags"]
        if not isinstance(tags, list):
            problems.append(f"'tags' must be a list of tags, one per token; {_TAG_HELP}")
            return None
        if len(tags) != n:
            problems.append(f"tags: {len(tags)} tags for {n} tokens; give one tag per token")
            return None
        ents, tag_problems = decode_tags(tags)
        problems.extend(tag_problems)
        if types is not None:
            for e in ents:
                if e.type not in types.entities:
                    problems.append(
                        f"tags[{e.start}]: entity type {e.type!r} is not in {types.path} "
                        f"(entity types: {', '.join(types.entities)}); fix the tag or add the "
                        "type to the types file"
                    )
                    bad_type = True
        return None if tag_problems or bad_type else ents
    raw = rec["entities"]
    if not isinstance(raw, list):
        problems.append("'entities' must be a list of {type, start, end} objects")
        return None
    ents, ok = [], True
    for j, e in enumerate(raw):
        where = f"entities[{j}]"
        if not isinstance(e, dict):
            problems.append(f"{where} must be an object {{type, start, end}}, got {e!r}")
            ok = False
            continue
        typ, start, end = e.get("type"), e.get("start"), e.get("end")
        if not isinstance(typ, str) or not typ:
            problems.append(f"{where}.type must be an entity type name, got {typ!r}")
            ok = False
        elif types is not None and typ not in types.entities:
            problems.append(
                f"{where}.type {typ!r} is not in {types.path} (entity types: "
                f"{', '.join(types.entities)}); fix the type or add it to the types file"
            )
            ok = False
        if not (_is_index(start) and _is_index(end)):
            problems.append(
                f"{where}: start and end must be token indices (integers), got start "
                f"{start!r}, end {end!r}"
            )
            ok = False
        elif not 0 <= start < end <= n:
            problems.append(
                f"{where}: start {start}, end {end} is out of range for {n} tokens; spans are "
                f"token offsets with 0 <= start < end <= {n} (end exclusive)"
            )
            ok = False
        else:
            for k, other in enumerate(ents):
                if isinstance(other, Entity) and start < other.end and other.start < end:
                    problems.append(
                        f"{where} (tokens {start}-{end}) overlaps entities[{k}] (tokens "
                        f"{other.start}-{other.end}); spans must not overlap: remove or fix one"
                    )
                    ok = False
        ents.append(Entity(typ, start, end) if _is_index(start) and _is_index(end) else None)
    return [e for e in ents if e is not None] if ok else None


def _relations(
    rec: dict, entities: list[Entity] | None, types: Types | None, problems: list[str]
) -> list[Relation] | None:
    raw = rec.get("relations", [])
    if not isinstance(raw, list):
        problems.append("'relations' must be a list of {type, head, tail} objects")
        return None
    rels: list[Relation] = []
    count = len(entities) if entities is not None else None
    before = len(problems)
    for k, r in enumerate(raw):
        where = f"relations[{k}]"
        if not isinstance(r, dict):
            problems.append(f"{where} must be an object {{type, head, tail}}, got {r!r}")
            continue
        start = len(problems)
        typ = r.get("type")
        if not isinstance(typ, str) or not typ:
            problems.append(f"{where}.type must be a relation type name, got {typ!r}")
        elif types is not None and typ not in types.relations:
            problems.append(
                f"{where}.type {typ!r} is not in {types.path} (relation types: "
                f"{', '.join(types.relations)}); fix the type or add it to the types file"
            )
        for end in ("head", "tail"):
            v = r.get(end)
            if not _is_index(v):
                problems.append(f"{where}.{end} must be an entity index (an integer), got {v!r}")
            elif count is not None and not 0 <= v < count:
                has = f"{count} entities (indices 0-{count - 1})" if count else "no entities"
                problems.append(
                    f"{where}.{end}: {v} is not an entity index; this sentence has {has}"
                )
        if len(problems) == start and r["head"] == r["tail"]:
            problems.append(f"{where}: head and tail are the same entity ({r['head']})")
        if len(problems) == start:
            rels.append(Relation(typ, r["head"], r["tail"]))
    return rels if len(problems) == before and entities is not None else None


def parse_sentence(rec: Any, number: int, types: Types | None) -> tuple[Sentence | None, list[str]]:
    """One sentence of a SpERT file → the Sentence (None if unusable) and its problems."""
    if not isinstance(rec, dict):
        return None, [
            "a sentence must be a JSON object {tokens, entities, relations}, got "
            + type(rec).__name__
        ]
    problems: list[str] = []
    tokens = rec.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        problems.append(f"'tokens' must be a non-empty list of strings, got {tokens!r:.60}")
        return None, problems
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            problems.append(f"tokens[{i}] must be a string, got {type(tok).__name__} {tok!r:.40}")
        elif not tok.strip():
            problems.append(
                f"tokens[{i}] is {tok!r}; a token holds text: remove it (and shift the spans)"
            )
    entities = _entities(rec, len(tokens), types, problems)
    relations = _relations(rec, entities, types, problems)
    if problems or entities is None or relations is None:
        return None, problems
    return Sentence(
        tuple(tokens), tuple(entities), tuple(relations), number, rec.get("orig_id")
    ), []


def parse_sentences(data: Any, path: str, types: Types | None = None) -> list[Sentence]:
    """A SpERT file's parsed JSON → its sentences; every problem raised at once (file:number)."""
    if not isinstance(data, list):
        raise KgcError(
            Problem(
                f"a SpERT file is one JSON list of sentences [{{tokens, entities, relations}}], "
                f"got a {type(data).__name__}",
                path,
            )
        )
    out, problems = [], []
    for number, rec in enumerate(data, 1):
        sentence, probs = parse_sentence(rec, number, types)
        problems.extend(Problem(p, path, number) for p in probs)
        if sentence is not None:
            out.append(sentence)
    if problems:
        raise KgcError(problems)
    return out


def read_spert(
    path: str | os.PathLike, types: Types | str | os.PathLike | None = None
) -> list[Sentence]:
    """Read and check a SpERT JSON file (against a types file when one is given)."""
    if types is not None and not isinstance(types, Types):
        types = read_types(types)
    data, where = _load_json(path, "SpERT file")
    return parse_sentences(data, where, types)


def _layout(tokens: Sequence[str], glued) -> tuple[str, list[tuple[int, int]]]:
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    for i, tok in enumerate(tokens):
        if i and not glued(tokens[i - 1], tok):
            parts.append(" ")
            pos += 1
        offsets.append((pos, pos + len(tok)))
        parts.append(tok)
        pos += len(tok)
    return "".join(parts), offsets


def join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens joined by single spaces → (text, offsets[i] = token i's (char start, end))."""
    return _layout(tokens, lambda prev, tok: False)


def detokenize(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens → natural text (no space before , . ) 's n't …, none after ( $ `` …) and
    offsets[i] = token i's (char start, char end) in it."""
    return _layout(
        tokens, lambda prev, tok: tok.lower() in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER
    )


_LAYOUTS = {False: join_tokens, True: detokenize}  # to_raw's `detokenize` flag shadows the name


def to_raw(
    sentences: Iterable[Sentence],
    *,
    names: Mapping[str, str] | None = None,
    detokenize: bool = False,
) -> list[dict]:
    """Sentences → DeepKE raw records `{text, entity, relation[, orig_id]}` (`kgc convert`'s
    input for NER, RE and SPO): entity strings cut from the text, types renamed by `names`."""
    layout = _LAYOUTS[bool(detokenize)]
    name = (lambda t: names.get(t, t)) if names else (lambda t: t)
    out = []
    for s in sentences:
        text, offsets = layout(s.tokens)
        spans = [text[offsets[e.start][0] : offsets[e.end - 1][1]] for e in s.entities]
        rec: dict[str, Any] = {
            "text": text,
            "entity": [
                {"entity": spans[i], "entity_type": name(e.type)} for i, e in enumerate(s.entities)
            ],
            "relation": [
                {
                    "head": spans[r.head],
                    "head_type": name(s.entities[r.head].type),
                    "relation": name(r.type),
                    "tail": spans[r.tail],
                    "tail_type": name(s.entities[r.tail].type),
                }
                for r in s.relations
            ],
        }
        if s.orig_id is not None:
            rec["orig_id"] = s.orig_id
        out.append(rec)
    return out


def check_task(task: str) -> None:
    if task not in TASKS:
        raise KgcError(
            f"--format spert converts --task {', '.join(TASKS)} (a SpERT file has entities and "
            f"relations), got {task}; choose one of them"
        )


def build_schema(
    task: str,
    types: Types,
    sentences: Iterable[Sentence] = (),
    names: Mapping[str, str] | None = None,
) -> Schema:
    """The schema of `task` from the types file: NER its entity types, RE its relations, SPO
    the (head type, relation, tail type) labels seen in `sentences` (the types file does not
    say which types a relation joins)."""
    check_task(task)
    name = (lambda t: names.get(t, t)) if names else (lambda t: t)
    if task == "NER":
        return Schema.from_lists(types=[name(t) for t in types.entities], path=types.path)
    if task == "RE":
        return Schema.from_lists(roles=[name(t) for t in types.relations], path=types.path)
    # SPO labels read subject_type_predicate_object_type: a type with "_" breaks the split
    bad = [t for t in types.entities if "_" in name(t)]
    if bad:
        raise KgcError(
            [
                Problem(
                    f"entity type {t!r} (named {name(t)!r}) contains '_', which splits SPO's "
                    "subject_type_predicate_object_type labels wrongly; map it to a name "
                    f'without "_" with --names (e.g. {{"{t}": "{name(t).replace("_", " ")}"}})',
                    types.path,
                )
                for t in bad
            ]
        )
    labels: dict[str, None] = {}
    for s in sentences:
        for r in s.relations:
            h, t = s.entities[r.head].type, s.entities[r.tail].type
            labels[f"{name(h)}_{name(r.type)}_{name(t)}"] = None
    if not labels:
        raise KgcError(
            "SPO's typed labels come from the relations in the data, and it has none; give "
            "--schema FILE with the labels (line 1: subject_type_predicate_object_type)"
        )
    return Schema.from_lists(types=sorted(labels), path=types.path)


def to_instructions(
    task: str,
    sentences: Sequence[Sentence],
    schema: Schema,
    *,
    split: str = "train",
    language: str = "en",
    opts: SamplingOptions | None = None,
    names: Mapping[str, str] | None = None,
    detokenize: bool = False,
    source: str | None = None,
    default_source: str = "",
    path: str = "<spert>",
) -> tuple[list[dict], ConvertStats]:
    """Sentences → IEPile instruction records (train: with `output`; test: `id` + `label`),
    as `kgc convert` writes them; every problem is raised, naming path:sentence number."""
    check_task(task)
    task_obj = get_task(task)
    opts = check_options(task_obj, split, language, opts)
    problems = [Problem(p, schema.path) for p in task_obj.check_schema(schema)]
    if problems:
        raise KgcError(problems)
    raw = to_raw(sentences, names=names, detokenize=detokenize)
    rows = [(s.number, rec) for s, rec in zip(sentences, raw, strict=True)]
    out, stats, problems = convert_rows(
        task_obj,
        rows,
        schema,
        split=split,
        language=language,
        opts=opts,
        source=source,
        default_source=default_source,
        path=path,
    )
    if problems:
        raise KgcError(problems)
    return out, stats


def convert_spert(
    task: str,
    input_path: str | os.PathLike,
    types_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    names: str | os.PathLike | Mapping[str, str] | None = None,
    detokenize: bool = False,
    schema_path: str | os.PathLike | None = None,
    split: str = "train",
    language: str = "en",
    opts: SamplingOptions | None = None,
    source: str | None = None,
) -> ConvertStats:
    """`kgc convert --format spert`: a SpERT file + its types file → an instruction file.
    The schema comes from the types file (SPO: the labels seen in the input), or from
    `schema_path` when given. On any problem nothing is written."""
    check_task(task)
    types = read_types(types_path)
    mapping = read_names(names, types)
    sentences = read_spert(input_path, types)
    if schema_path is not None:
        schema = read_schema(schema_path)
    else:
        schema = build_schema(task, types, sentences, mapping)
    try:
        out, stats = to_instructions(
            task,
            sentences,
            schema,
            split=split,
            language=language,
            opts=opts,
            names=mapping,
            detokenize=detokenize,
            source=source,
            default_source=Path(input_path).resolve().parent.name,
            path=str(input_path),
        )
    except KgcError as exc:
        raise KgcError([*exc.problems, Problem(f"nothing written to {output_path}")]) from None
    write_jsonl_atomic(output_path, out)
    return stats
