"""Extraction rows → graph items → merged nodes and edges.

One extraction row (one chunk × one schema split, see `kgc.rows`) holds a task's parsed
records. `RowMapper` turns each record into *items*, one per node mention and one per edge
mention, each carrying its merge key and its provenance (`mention`):

- NER `{entity, entity_type}` → an entity node;
- RE / SPO `{head, relation, tail}` → two entity nodes and a `relation` edge (SPO types come
  from the row's schema element with that predicate);
- KG `{head, relation, tail, head_type}` → the typed head, the value as a node, and an
  `attribute` edge;
- EE / EEA `{event_type, event_trigger, arguments}` → an event node (one per document, type,
  trigger and trigger position), a node per argument and a `role` edge event → argument;
- EET `{event_type, event_trigger}` → an event node.

Entity keys are canonical names (`kgc.graph.canonical`), so "Barack Obama", "barack  obama"
and an alias "Obama" share one node. A `Merger` folds the items of one key into one node or
edge: every mention is kept (doc id, document character offsets, the
sentence, chunk, row id, model), `support` counts the distinct places that state it (the
same span seen again in an overlapping chunk counts once) and `confidence` combines them as
a noisy-OR: 1 - (1 - prior) ** support.

Strict mode drops a record (or one event argument) whose label is outside the schema the
row asked for (and outside `schema`, when given); each drop is counted by reason.
Model output is data: the rows' JSON is parsed, never evaluated. Every string a row gives
the graph (names, labels, the chunk text its sentences come from, doc/row/model ids) is
cleaned once as the row is read (`kgc.graph.clean`: control characters and lone surrogates
become U+FFFD, one for one, so offsets hold) and each changed string is counted by field
(`sanitized` in the summary); the exports then only escape by their own format's rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from kgc.graph.canonical import Canonicaliser, load_alias_file
from kgc.graph.clean import clean, clean_value, json_line_safe
from kgc.graph.config import GraphConfig

SEP = "\x1f"
ENTITY, EVENT = "entity", "event"
_SENTENCE_END = re.compile(r"[。！？!?；;\n]|\.(?=\s|$)")


def node_id(key: str) -> str:
    return "n" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def edge_id(key: str) -> str:
    return "e" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def canonicaliser(cfg: GraphConfig) -> Canonicaliser:
    c = cfg.canonical
    aliases = dict(load_alias_file(c.alias_file)) if c.alias_file else {}
    aliases.update(c.aliases)
    # both sides meet cleaned names, and display names become node names: same rules as rows
    aliases = {clean(a)[0]: clean(n)[0] for a, n in aliases.items()}
    return Canonicaliser(nfkc=c.nfkc, whitespace=c.whitespace, casefold=c.casefold, aliases=aliases)


# ----------------------------------------------------------------------------- text helpers
def _occurrences(text: str, s: str) -> list[int]:
    out, i = [], text.find(s)
    while i >= 0:
        out.append(i)
        i = text.find(s, i + 1)
    if not out and s:
        low, sl = text.lower(), s.lower()
        if len(low) == len(text) and len(sl) == len(s) and (low != text or sl != s):
            out = _occurrences(low, sl)  # same offsets after lower(): case-insensitive match
    return out


class Locator:
    """Finds surface forms in a chunk. An occurrence inside a longer surface form of the same
    row ("Obama" inside "Barack Obama") is used only when there is no other one."""

    def __init__(self, text: str, surfaces: Iterable[str] = ()):
        self.text = text
        self.surfaces = sorted({s for s in surfaces if s}, key=len, reverse=True)
        self._cache: dict[str, list[int]] = {}

    def occ(self, s: str) -> list[int]:
        if s in self._cache:
            return self._cache[s]
        found = _occurrences(self.text, s) if s else []
        longer = [t for t in self.surfaces if len(t) > len(s) and s in t]
        if longer and found:
            covered = [(p, p + len(t)) for t in longer for p in _occurrences(self.text, t)]
            free = [p for p in found if not any(a <= p and p + len(s) <= b for a, b in covered)]
            found = free or found
        self._cache[s] = found
        return found

    def near(self, s: str, anchor: int | None = None) -> tuple[int, int] | None:
        """[start, end) of `s`: the occurrence nearest `anchor` (else the first)."""
        occ = self.occ(s)
        if not occ:
            return None
        i = occ[0] if anchor is None else min(occ, key=lambda p: (abs(p - anchor), p))
        return i, i + len(s)

    def pair(self, a: str, b: str) -> tuple:
        """Spans of `a` and `b`: the two occurrences closest to each other."""
        oa, ob = self.occ(a), self.occ(b)
        if not oa or not ob:
            return self.near(a), self.near(b)
        i, j = min(((x, y) for x in oa[:50] for y in ob[:50]), key=lambda p: (abs(p[0] - p[1]), p))
        return (i, i + len(a)), (j, j + len(b))


def locate_near(text: str, s: str, anchor: int | None = None) -> tuple[int, int] | None:
    return Locator(text).near(s, anchor)


def sentence_around(text: str, start: int, end: int, max_chars: int) -> tuple[str, int]:
    """The sentence(s) of `text` holding [start, end): (sentence, its local start)."""
    s = 0
    for m in _SENTENCE_END.finditer(text, 0, start):
        s = m.end()
    m = _SENTENCE_END.search(text, max(end, start))
    e = m.end() if m else len(text)
    while s < start and text[s].isspace():
        s += 1
    if e - s > max_chars:  # a very long "sentence": a window around the mention
        half = max(0, (max_chars - (end - start)) // 2)
        s = max(s, start - half)
        e = min(e, max(end, s + max_chars))
    return text[s:e].rstrip(), s


# ----------------------------------------------------------------------------- schema rules
def _row_allowed(task: str, chunk: Any) -> Any:
    """What the row's schema split asked for (strict mode's first filter)."""
    if not isinstance(chunk, list):
        return None
    if task in ("NER", "RE", "EET"):
        return {x for x in chunk if isinstance(x, str)}
    if task == "SPO":
        return {
            (x.get("subject_type"), x.get("predicate"), x.get("object_type"))
            for x in chunk
            if isinstance(x, dict)
        }
    key, roles = ("entity_type", "attributes") if task == "KG" else ("event_type", "arguments")
    out: dict[str, set] = {}
    for x in chunk:
        if isinstance(x, dict) and isinstance(x.get(key), str):
            r = x.get(roles)
            out.setdefault(x[key], set()).update(r if isinstance(r, list) else [])
    return out


def _file_allowed(task: str, schema) -> Any:
    """What the schema file allows for a task (None: its line is empty → no constraint)."""
    if schema is None:
        return None
    if task == "NER":
        return set(schema.types) or None
    if task == "RE":
        return set(schema.roles) or None
    if task == "EET":
        return set(schema.types or schema.type_roles) or None
    if task == "SPO":
        from kgc.tasks.spo import split_typed

        return {split_typed(t) for t in schema.types if split_typed(t)} or None
    return {k: set(v) for k, v in schema.type_roles.items()} or None


# ----------------------------------------------------------------------------- rows → items
class RowMapper:
    """Turns rows into node and edge items; counts everything it reads, uses and drops."""

    def __init__(self, cfg: GraphConfig, canon: Canonicaliser | None = None):
        self.cfg = cfg
        self.canon = canon or canonicaliser(cfg)
        self.schema = None
        if cfg.strict and cfg.schema_path:
            from kgc.schema import read_schema

            self.schema = read_schema(cfg.schema_path)
        self.stats: Counter = Counter()
        self.dropped: Counter = Counter()
        self.by_task: Counter = Counter()
        self.sanitized: Counter = Counter()  # strings with unsafe characters replaced, by field
        self._file_allowed: dict[str, Any] = {}

    def file_allowed(self, task: str) -> Any:
        if task not in self._file_allowed:
            self._file_allowed[task] = clean_value(_file_allowed(task, self.schema))
        return self._file_allowed[task]

    def _clean_row(self, row: dict) -> dict:
        """The row with its identifying strings made safe (see `kgc.graph.clean`)."""
        out = None
        for k, field in _ROW_FIELDS:
            v = row.get(k)
            if v is None or isinstance(v, (bool, int, float)):
                continue
            changed: Counter = Counter()
            c = clean_value(v, changed)
            if changed:
                self.sanitized[field] += sum(changed.values())
                if out is None:
                    out = dict(row)
                out[k] = c
        return row if out is None else out

    # --- public ------------------------------------------------------------------------------
    def items(self, row: dict) -> Iterator[dict]:
        st = self.stats
        st["rows"] += 1
        row = self._clean_row(row)
        task = str(row.get("task") or "").upper()
        self.by_task[task] += 1
        records = _json_list(row.get("records"))
        if records is None:
            st["rows_unreadable_records"] += 1
            records = []
        if _json_list(row.get("errors")):
            st["rows_with_parse_errors"] += 1
        if not records:
            st["rows_without_records"] += 1
        # every string the graph can take from the row is cleaned here, once: names, labels,
        # the chunk text (sentences) and the schema labels strict mode compares them with
        records = clean_value(records, self.sanitized)
        instr = _json_obj(row.get("instruction"))
        text = instr.get("input") if isinstance(instr.get("input"), str) else ""
        text, n = clean(text)
        if n:
            self.sanitized["text"] += 1
        schema_chunk = instr.get("schema")
        if schema_chunk is None:
            schema_chunk = _json_list(row.get("schema"))
        schema_chunk = clean_value(schema_chunk)
        ctx = RowContext(self, row, task, text, schema_chunk, records)
        handler = _HANDLERS.get(task)
        for i, rec in enumerate(records):
            st["records"] += 1
            if handler is None:
                self.dropped["unknown_task"] += 1
                continue
            if not isinstance(rec, dict):
                self.dropped["bad_record"] += 1
                continue
            out = list(handler(ctx, i, rec))
            if out:
                st["records_used"] += 1
                yield from out

    def summary(self) -> dict:
        return {
            **{k: self.stats[k] for k in sorted(self.stats)},
            "rows_by_task": dict(sorted(self.by_task.items())),
            "dropped": dict(sorted(self.dropped.items())),
            "sanitized": dict(sorted(self.sanitized.items())),
        }

    # --- node / edge items ------------------------------------------------------------------
    def entity_key(self, name: str, etype: str | None) -> str | None:
        canon = self.canon.key(name)
        if not canon:
            return None
        if self.cfg.merge_across_types:
            return SEP.join((ENTITY, canon))
        return SEP.join((ENTITY, etype or self.cfg.default_type, canon))


# row fields cleaned as the row is read, and the field each is counted under
_ROW_FIELDS = (
    ("id", "row_id"),
    ("doc_id", "doc_id"),
    ("task", "task"),
    ("schema", "schema"),
    ("model_id", "model"),
    ("source", "source"),
)


def _json_list(v: Any) -> list | None:
    if v is None:
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, str):
        try:
            out = json.loads(v) if v.strip() else []
        except json.JSONDecodeError:
            return None
        return out if isinstance(out, list) else None
    return None


def _json_obj(v: Any) -> dict:
    if isinstance(v, dict):
        return v
    if isinstance(v, str):
        try:
            out = json.loads(v)
        except json.JSONDecodeError:
            return {}
        return out if isinstance(out, dict) else {}
    return {}


def _row_key(row: dict) -> str:
    """A stable id for a row that has none (mentions are de-duplicated by row id)."""
    from kgc.rows import row_id

    parts = [str(row.get("task")), str(row.get("schema")), str(row.get("chunk_index"))]
    return row_id(
        clean(str(row.get("doc_id")))[0],
        _int(row.get("chunk_start")),
        _int(row.get("chunk_end")),
        [clean(p)[0] for p in parts],
    )


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


class RowContext:
    """One row being mapped: locates surfaces in its chunk and builds mentions."""

    def __init__(
        self, mapper: RowMapper, row: dict, task: str, text: str, schema_chunk, row_records
    ):
        self.m, self.cfg, self.task, self.text = mapper, mapper.cfg, task, text
        self.doc_id = str(row.get("doc_id"))
        self.row_id = str(row.get("id") or "") or _row_key(row)
        self.base = _int(row.get("chunk_start"))
        self.chunk = _int(row.get("chunk_index"))
        self.span = [self.base, _int(row.get("chunk_end"), self.base + len(text))]
        self.model = str(row.get("model_id") or "")
        self.source = row.get("source") or ""
        self.row_allowed = _row_allowed(task, schema_chunk) if self.cfg.strict else None
        self.file_allowed = mapper.file_allowed(task) if self.cfg.strict else None
        self.schema_chunk = schema_chunk
        self.loc = Locator(text, _surfaces(row_records))

    def drop(self, reason: str) -> None:
        self.m.dropped[reason] += 1

    def allowed(self, label: str) -> bool:
        """Flat label check (NER types, RE relations, EET event types)."""
        if not self.cfg.strict:
            return True
        return (self.row_allowed is None or label in self.row_allowed) and (
            self.file_allowed is None or label in self.file_allowed
        )

    def allowed_role(self, type_: str, role: str | None) -> bool:
        """Typed roles check (EE/EEA event types and roles, KG entity types and attributes):
        role None checks only the type."""
        if not self.cfg.strict:
            return True
        for table in (self.row_allowed, self.file_allowed):
            if table is None:
                continue
            if type_ not in table or (role is not None and role not in table[type_]):
                return False
        return True

    def find(self, s: str, anchor: int | None = None) -> tuple[int, int] | None:
        return self.loc.near(s, anchor)

    def ungrounded(self, span: tuple[int, int] | None) -> bool:
        """grounded mode: a surface the chunk's text does not contain is dropped (a model's
        invention, not an extraction); needs the chunk text, so rows without it pass."""
        return self.cfg.grounded and bool(self.text) and span is None

    def mention(self, rec_i: int, role: str, spans: list, **extra) -> dict:
        located = [sp for sp in spans if sp is not None]
        m: dict[str, Any] = {"doc_id": self.doc_id, "start": None, "end": None}
        if located:
            s, e = min(x[0] for x in located), max(x[1] for x in located)
            sent, s0 = sentence_around(self.text, s, e, self.cfg.sentence_max_chars)
            m.update(start=self.base + s, end=self.base + e)
            m.update(sentence=sent, sentence_start=self.base + s0)
        else:
            m.update(sentence=None, sentence_start=None)
        m.update(
            chunk=self.chunk,
            chunk_span=self.span,
            row_id=self.row_id,
            record=rec_i,
            role=role,
            model=self.model,
            task=self.task,
        )
        if self.source:
            m["source"] = self.source
        m.update(extra)
        # evidence: the place that states it (same span from two overlapping chunks = one)
        if len(located) == len(spans) and located:
            m["evidence"] = [self.doc_id, *[self.base + x for sp in located for x in sp]]
        else:
            m["evidence"] = [self.doc_id, "chunk", *self.span]
        m["uid"] = f"{self.row_id}:{rec_i}:{role}"
        return m

    def entity(self, rec_i: int, role: str, name: str, etype: str | None, span) -> dict | None:
        key = self.m.entity_key(name, etype)
        if key is None:
            return None
        return {
            "k": "n",
            "key": key,
            "id": node_id(key),
            "kind": ENTITY,
            "type": etype,
            "surface": name,
            "m": self.mention(rec_i, role, [span], surface=name),
        }

    def edge(self, rec_i: int, kind: str, rel: str, src: dict, dst: dict, spans) -> dict:
        key = SEP.join((kind, src["key"], rel, dst["key"]))
        return {
            "k": "e",
            "key": key,
            "id": edge_id(key),
            "kind": kind,
            "type": rel,
            "source": src["id"],
            "target": dst["id"],
            "m": self.mention(
                rec_i,
                f"{kind}:{src['m']['role']}>{dst['m']['role']}",
                spans,
                head=src["surface"],
                tail=dst["surface"],
            ),
        }


def _surfaces(records: list) -> Iterator[str]:
    for r in records:
        if not isinstance(r, dict):
            continue
        for k in ("entity", "head", "tail", "event_trigger"):
            if isinstance(r.get(k), str):
                yield r[k]
        for a in r.get("arguments") or []:
            if isinstance(a, dict) and isinstance(a.get("argument"), str):
                yield a["argument"]


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def _ner(ctx: RowContext, i: int, rec: dict) -> Iterable[dict]:
    name, etype = _str(rec.get("entity")), _str(rec.get("entity_type"))
    if name is None or etype is None:
        ctx.drop("bad_record")
        return
    if not ctx.allowed(etype):
        ctx.drop("entity_type_outside_schema")
        return
    span = ctx.find(name)
    if ctx.ungrounded(span):
        ctx.drop("entity_not_in_text")
        return
    node = ctx.entity(i, "entity", name, etype, span)
    if node is None:
        ctx.drop("empty_name")
        return
    yield node


def _spo_types(ctx: RowContext, rel: str) -> tuple[str | None, str | None]:
    chunk = ctx.schema_chunk if isinstance(ctx.schema_chunk, list) else []
    cands = {
        (x.get("subject_type"), x.get("object_type"))
        for x in chunk
        if isinstance(x, dict) and x.get("predicate") == rel
    }
    subj = {s for s, _ in cands}
    obj = {o for _, o in cands}
    return (
        next(iter(subj)) if len(subj) == 1 else None,
        next(iter(obj)) if len(obj) == 1 else None,
    )


def _triple(ctx: RowContext, i: int, rec: dict) -> Iterable[dict]:
    head, rel, tail = _str(rec.get("head")), _str(rec.get("relation")), _str(rec.get("tail"))
    if head is None or rel is None or tail is None:
        ctx.drop("bad_record")
        return
    ht, tt = _str(rec.get("head_type")), _str(rec.get("tail_type"))
    kind = "relation"
    if ctx.task == "SPO":
        st, ot = _spo_types(ctx, rel)
        ht, tt = ht or st, tt or ot
        if ctx.cfg.strict:
            ok_row = ctx.row_allowed is None or any(
                p == rel and (ht is None or s == ht) and (tt is None or o == tt)
                for s, p, o in ctx.row_allowed
            )
            ok_file = ctx.file_allowed is None or any(
                p == rel and (ht is None or s == ht) and (tt is None or o == tt)
                for s, p, o in ctx.file_allowed
            )
            if not (ok_row and ok_file):
                ctx.drop("relation_outside_schema")
                return
    elif ctx.task == "KG":
        kind = "attribute"
        if ht is None and isinstance(ctx.row_allowed, dict):
            types = [t for t, attrs in ctx.row_allowed.items() if rel in attrs]
            ht = types[0] if len(types) == 1 else None
        if not ctx.allowed_role(ht or "", rel):
            ctx.drop("attribute_outside_schema")
            return
    elif not ctx.allowed(rel):
        ctx.drop("relation_outside_schema")
        return
    hs, ts = ctx.loc.pair(head, tail)
    # grounded: both ends must occur in the text (a KG attribute value may be normalised)
    if ctx.ungrounded(hs) or (kind != "attribute" and ctx.ungrounded(ts)):
        ctx.drop(f"{kind}_not_in_text")
        return
    h = ctx.entity(i, "head", head, ht, hs)
    t = ctx.entity(i, "tail", tail, tt, ts)
    if h is None or t is None:
        ctx.drop("empty_name")
        return
    yield h
    yield t
    yield ctx.edge(i, kind, rel, h, t, [hs, ts])


def _event(ctx: RowContext, i: int, rec: dict) -> Iterable[dict]:
    etype = _str(rec.get("event_type"))
    trigger = rec.get("event_trigger") if isinstance(rec.get("event_trigger"), str) else ""
    if etype is None:
        ctx.drop("bad_record")
        return
    if ctx.task == "EET":
        if not ctx.allowed(etype):
            ctx.drop("event_type_outside_schema")
            return
    elif not ctx.allowed_role(etype, None):
        ctx.drop("event_type_outside_schema")
        return
    canon = ctx.m.canon
    tspan = ctx.find(trigger) if trigger.strip() else None
    if trigger.strip() and ctx.ungrounded(tspan):
        ctx.drop("trigger_not_in_text")
        return
    args = []
    for a in rec.get("arguments") or []:
        if isinstance(a, dict) and _str(a.get("argument")) and _str(a.get("role")):
            args.append((a["role"], a["argument"]))
        else:
            ctx.drop("bad_argument")
    if tspan is not None:
        anchor = str(ctx.base + tspan[0])
    else:  # no position: the event is what its arguments say
        anchor = "args:" + json.dumps(
            sorted((r, canon.key(v)) for r, v in args), ensure_ascii=False
        )
    key = SEP.join((EVENT, ctx.doc_id, etype, canon.key(trigger), anchor))
    name = trigger.strip() or etype
    ev = {
        "k": "n",
        "key": key,
        "id": node_id(key),
        "kind": EVENT,
        "type": etype,
        "surface": name,
        "m": ctx.mention(i, "trigger", [tspan], surface=trigger),
    }
    out = [ev]
    for j, (role, value) in enumerate(args):
        if not ctx.allowed_role(etype, role):
            ctx.drop("role_outside_schema")
            continue
        aspan = ctx.find(value, tspan[0] if tspan else None)
        if ctx.ungrounded(aspan):
            ctx.drop("argument_not_in_text")
            continue
        arg = ctx.entity(i, f"argument{j}", value, None, aspan)
        if arg is None:
            ctx.drop("bad_argument")  # a name that normalises to nothing
            continue
        out.append(arg)
        out.append(ctx.edge(i, "role", role, ev, arg, [tspan, aspan] if tspan else [aspan]))
    yield from out


_HANDLERS = {
    "NER": _ner,
    "RE": _triple,
    "SPO": _triple,
    "KG": _triple,
    "EE": _event,
    "EEA": _event,
    "EET": _event,
}


# ----------------------------------------------------------------------------- merging
def _mention_order(m: dict) -> tuple:
    start = m.get("start")
    return (
        str(m.get("doc_id")),
        start if start is not None else float("inf"),
        str(m.get("row_id")),
        m.get("record", 0),
        str(m.get("role")),
    )


def _confidence(support: int, prior: float) -> float:
    return round(1.0 - (1.0 - prior) ** support, 6)


def _pick(counter: Counter) -> str:
    return min(counter, key=lambda x: (-counter[x], x))


class Merger:
    """The items of one key folded into one node or edge, one item at a time.

    Only what the output needs is kept per item: the mention as its JSON text (so a node
    with a million mentions costs its output size, not a million dicts), its sort key, and
    the counters for names, types, evidence and documents. A mention seen twice (the same
    row read twice) is counted in `duplicates` and kept once.
    """

    __slots__ = ("head", "surfaces", "types", "evidence", "docs", "mentions", "uids", "duplicates")

    def __init__(self, first: dict):
        self.head = {k: first[k] for k in first if k not in ("m", "surface", "type", "k")}
        self.head["k"], self.head["type"] = first["k"], first["type"]
        self.surfaces: Counter = Counter()
        self.types: Counter = Counter()
        self.evidence: set = set()
        self.docs: set = set()
        self.mentions: list[tuple] = []
        self.uids: set = set()
        self.duplicates = 0

    def add(self, it: dict) -> None:
        m = it["m"]
        if m["uid"] in self.uids:
            self.duplicates += 1
            return
        self.uids.add(m["uid"])
        if it["k"] == "n":
            self.surfaces[" ".join(str(it["surface"]).split())] += 1
            if it["type"]:
                self.types[it["type"]] += 1
        self.evidence.add(tuple(m["evidence"]))
        self.docs.add(m["doc_id"])
        body = {k: v for k, v in m.items() if k not in ("uid", "evidence")}
        self.mentions.append((_mention_order(m), json.dumps(body, ensure_ascii=False)))

    def finish(self, cfg: GraphConfig, canon: Canonicaliser) -> tuple[str, dict]:
        """(the output JSON line without newline, its summary: kind, type, mention_count)."""
        h = self.head
        if h["k"] == "n":
            if h["kind"] == ENTITY:
                name = canon.preferred(h["key"].split(SEP)[-1]) or _pick(self.surfaces)
            else:
                name = _pick(self.surfaces)
            obj = {
                "id": h["id"],
                "key": h["key"],
                "name": name,
                "type": _pick(self.types) if self.types else cfg.default_type,
                "kind": h["kind"],
                "types": dict(sorted(self.types.items())),
                "aliases": sorted(s for s in self.surfaces if s != name),
            }
            if h["kind"] == EVENT:
                obj["doc_id"] = h["key"].split(SEP)[1]
        else:
            obj = {k: h[k] for k in ("id", "key", "source", "target", "type", "kind")}
        obj["support"] = len(self.evidence)
        obj["confidence"] = _confidence(obj["support"], cfg.confidence_prior)
        obj["mention_count"] = len(self.mentions)
        obj["doc_count"] = len(self.docs)
        self.mentions.sort(key=lambda x: x[0])
        kept = self.mentions[: cfg.max_mentions] if cfg.max_mentions else self.mentions
        text = json.dumps(obj, ensure_ascii=False)
        line = text[:-1] + ', "mentions": [' + ", ".join(ms for _, ms in kept) + "]}"
        line = json_line_safe(line)  # U+2028/U+2029 escaped: one node, one line
        return line, {"kind": obj["kind"], "type": obj["type"], "mentions": len(self.mentions)}


def merge_items(items: Iterable[dict], cfg: GraphConfig, canon: Canonicaliser, stats: Counter):
    """The items of one key → (output line, summary)."""
    acc = None
    for it in items:
        if acc is None:
            acc = Merger(it)
        acc.add(it)
    if acc is None:
        raise ValueError("no items to merge")
    stats["duplicate_mentions"] += acc.duplicates
    return acc.finish(cfg, canon)


def build_in_memory(rows: Iterable[dict], cfg: GraphConfig) -> tuple[list, list, dict]:
    """Rows → (nodes, edges, stats) in one process (small inputs, tests, the baseline)."""
    mapper = RowMapper(cfg)
    groups: dict[tuple, list] = {}
    for row in rows:
        for it in mapper.items(row):
            groups.setdefault((it["k"], it["id"]), []).append(it)
    stats: Counter = Counter()
    nodes, edges = [], []
    for k, i in sorted(groups):
        line, _ = merge_items(groups[(k, i)], cfg, mapper.canon, stats)
        (nodes if k == "n" else edges).append(json.loads(line))
    summary = mapper.summary()
    summary["sanitized_total"] = sum(summary["sanitized"].values())
    summary["duplicate_mentions"] = stats["duplicate_mentions"]
    summary.update(graph_counts(nodes, edges))
    return nodes, edges, summary


def graph_counts(nodes: list[dict], edges: list[dict]) -> dict:
    return {
        "nodes": len(nodes),
        "edges": len(edges),
        "node_mentions": sum(n["mention_count"] for n in nodes),
        "edge_mentions": sum(e["mention_count"] for e in edges),
        "nodes_by_kind": dict(sorted(Counter(n["kind"] for n in nodes).items())),
        "edges_by_kind": dict(sorted(Counter(e["kind"] for e in edges).items())),
    }
