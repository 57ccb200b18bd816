"""CodeKGC: knowledge-graph construction as code completion.

The schema is written as Python classes (one per entity type and relation), the
demonstrations as `extract = Extract([Triple(person('…'), Rel('…'), location('…')), …])`
under each text's docstring, and the model completes the line for the query text.

The model's code is DATA. It is read with `ast.parse` (which only builds a syntax tree) and
accepted only when every node has one of the whitelisted shapes:

    extract = Extract([Triple(<EntityClass>('name'), Rel('relation'), <EntityClass>('name')), ...])

(also `Extract(triples=[...])`, `Triple(head=…, relation=…, tail=…)`, `<RelationClass>()`,
a bare `Extract(...)` expression, and docstrings). Anything else — attribute access, names
other than the schema's classes, subscripts, operators, lambdas, imports, `__import__(…)`,
f-strings, non-string constants, over-long strings, too many nodes, deep nesting, oversize
output — is an error entry for that row. Nothing is ever evaluated, executed or compiled
to bytecode.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.icl.common import fmt_prf, norm_label, sample, seeded_rng
from kgc.icl.config import IclConfig
from kgc.icl.data import read_records, record_id, str_field, unique_ids
from kgc.icl.runner import Plan, Request, params_for
from kgc.metrics import PRF, count
from kgc.parsing import strip_fences

RESERVED = {"Entity", "Rel", "Triple", "Extract", "List", "extract", "self", "name"}
MAX_NESTING = 16  # brackets; the accepted shape needs 4


# ----------------------------------------------------------------------------- schema
def class_name(label: str, taken: set[str]) -> str:
    """A Python identifier for a label ('Work for' → 'Work_for'), unique among `taken`."""
    name = re.sub(r"\W+", "_", label.strip()).strip("_") or "X"
    if name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name) or name in RESERVED or not name.isidentifier():
        name += "_"
    base, i = name, 2
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


@dataclass
class CodeSchema:
    entity_types: list[str]
    relations: list[str]
    entity_class: dict[str, str] = field(default_factory=dict)  # type → class name
    relation_class: dict[str, str] = field(default_factory=dict)  # relation → class name

    def __post_init__(self):
        taken: set[str] = set()
        self.entity_class = {t: class_name(t, taken) for t in self.entity_types}
        self.relation_class = {r: class_name(r, taken) for r in self.relations}
        self.type_of_class = {c: t for t, c in self.entity_class.items()}
        self.rel_of_class = {c: r for r, c in self.relation_class.items()}
        self.rel_by_norm = {norm_label(r): r for r in self.relations}

    def code(self) -> str:
        """The schema prompt: classes for entities, relations, triples and the extraction."""
        parts = [
            "from typing import List",
            "",
            "",
            "class Entity:",
            '    """Something the text mentions by name."""',
            "",
            "    def __init__(self, name: str):",
            "        self.name = name",
            "",
        ]
        for t, c in self.entity_class.items():
            parts += ["", f"class {c}(Entity):", f'    """Entity type: {_doc(t)}."""', ""]
        parts += [
            "",
            "class Rel:",
            '    """How the head entity relates to the tail entity."""',
            "",
            "    def __init__(self, name: str):",
            "        self.name = name",
            "",
        ]
        for r, c in self.relation_class.items():
            parts += [
                "",
                f"class {c}(Rel):",
                f'    """Relation: {_doc(r)}. Written Rel({r!r})."""',
                "",
            ]
        parts += [
            "",
            "class Triple:",
            "    def __init__(self, head: Entity, relation: Rel, tail: Entity):",
            "        self.head, self.relation, self.tail = head, relation, tail",
            "",
            "",
            "class Extract:",
            '    """Every triple the text states, using only the classes above."""',
            "",
            "    def __init__(self, triples: List[Triple] = []):",
            "        self.triples = triples",
            "",
        ]
        return "\n".join(parts)

    def triple_code(self, t: dict) -> str:
        h = self.entity_class.get(t["head_type"], "Entity")
        tl = self.entity_class.get(t["tail_type"], "Entity")
        return f"Triple({h}({t['head']!r}), Rel({t['relation']!r}), {tl}({t['tail']!r}))"

    def extract_code(self, triples: list[dict]) -> str:
        if not triples:
            return "extract = Extract([])"
        inner = ",\n                   ".join(self.triple_code(t) for t in triples)
        return f"extract = Extract([{inner}])"


def _doc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"""', "'''")


def text_docstring(text: str) -> str:
    return '""" ' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + ' """'


# ----------------------------------------------------------------------------- parsing
@dataclass
class CodeParse:
    triples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Reject(Exception):
    pass


def _where(node: ast.AST) -> str:
    pos = vars(node)
    return f"line {pos.get('lineno', '?')} col {pos.get('col_offset', '?')}"


def _nesting(src: str) -> int:
    """Deepest bracket nesting outside string literals (cheap guard before ast.parse)."""
    depth = best = 0
    quote = None
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote or c == "\n":
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        elif c in "([{":
            depth += 1
            best = max(best, depth)
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return best


def _calls(src: str, name: str) -> list[str]:
    """Balanced `name(...)` segments of possibly broken code (string-literal aware)."""
    out, last_end = [], 0
    for m in re.finditer(rf"(?<![\w.]){name}\s*\(", src):
        if m.start() < last_end:
            continue
        i, depth, quote = m.end(), 1, None
        while i < len(src) and depth:
            c = src[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            i += 1
        if depth:
            break  # cut off: the rest is incomplete
        out.append(src[m.start() : i])
        last_end = i
    return out


class CodeReader:
    """Whitelist reader of the model's code (see the module docstring)."""

    def __init__(
        self, schema: CodeSchema, *, max_source_chars=20_000, max_nodes=5_000, max_string_chars=500
    ):
        self.schema = schema
        self.max_source_chars = max_source_chars
        self.max_nodes = max_nodes
        self.max_string_chars = max_string_chars

    def parse(self, text: Any) -> CodeParse:
        """Never raises, never executes anything."""
        try:
            return self._parse(text)
        except Exception as exc:  # noqa: BLE001 - a reader bug must not lose the row
            return CodeParse([], [f"internal reader error: {type(exc).__name__}"])

    # -- entry
    def _parse(self, text: Any) -> CodeParse:
        res = CodeParse()
        if not isinstance(text, str):
            res.errors.append(f"output is {type(text).__name__}, not text")
            return res
        if len(text) > self.max_source_chars:
            res.errors.append(
                f"output has {len(text)} characters, over the limit of {self.max_source_chars} "
                "(codekgc.max_source_chars); not read"
            )
            return res
        src = strip_fences(text).strip()
        if not src:
            res.errors.append("empty output")
            return res
        if _nesting(src) > MAX_NESTING:
            res.errors.append(f"brackets nest deeper than {MAX_NESTING} levels; not read")
            return res
        tree, why = self._ast(src, "exec")
        if tree is not None:
            self._module(tree, res)
            return res
        # Not a whole module (cut off, or prose around it): read each complete Triple(...)
        segments = _calls(src, "Triple")
        if not segments:
            res.errors.append(f"no Extract([...]) or Triple(...) found ({why})")
            return res
        res.errors.append(
            f"output is not valid Python ({why}); read {len(segments)} complete Triple(...) call(s)"
        )
        for seg in segments:
            node, why2 = self._ast(seg, "eval")
            if node is None:
                res.errors.append(f"unreadable Triple(...) segment: {why2}")
                continue
            try:
                res.triples.append(self._triple(node.body))
            except _Reject as exc:
                res.errors.append(str(exc))
        return res

    def _ast(self, src: str, mode: str) -> tuple[ast.AST | None, str]:
        try:
            tree = ast.parse(src, mode=mode)  # builds a syntax tree only; nothing runs
        except SyntaxError as exc:
            return None, f"SyntaxError: {exc.msg} at line {exc.lineno}"
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:80]}"
        for n, _ in enumerate(ast.walk(tree), 1):
            if n > self.max_nodes:
                return None, f"more than {self.max_nodes} syntax nodes (codekgc.max_nodes)"
        return tree, ""

    # -- shapes
    def _module(self, tree: ast.Module, res: CodeParse) -> None:
        found = False
        for stmt in tree.body:
            call = None
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == "extract"
            ):
                call = stmt.value
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                if isinstance(stmt.value.value, str):
                    continue  # a docstring (the model echoing the text)
            elif isinstance(stmt, ast.Expr) and _is_call_to(stmt.value, "Extract"):
                call = stmt.value
            if call is None:
                res.errors.append(
                    f"statement at {_where(stmt)} is not allowed ({type(stmt).__name__}: "
                    f"{_summary(stmt)}); ignored"
                )
                continue
            if found:
                continue  # the model went on to invent further texts: only the first answers
            found = True
            try:
                self._extract(call, res)
            except _Reject as exc:
                res.errors.append(str(exc))
        if not found:
            res.errors.append("no `extract = Extract([...])` in the output")

    def _extract(self, node: ast.AST, res: CodeParse) -> None:
        if not _is_call_to(node, "Extract"):
            raise _Reject(f"extract must be Extract([...]), got {_summary(node)} at {_where(node)}")
        args = list(node.args)
        for kw in node.keywords:
            if kw.arg != "triples":
                raise _Reject(
                    f"Extract() takes only `triples`, got {kw.arg or '**'} at {_where(kw)}"
                )
            args.append(kw.value)
        if len(args) != 1:
            raise _Reject(f"Extract() needs exactly one list of triples at {_where(node)}")
        lst = args[0]
        if not isinstance(lst, (ast.List, ast.Tuple)):
            raise _Reject(f"Extract() needs a list literal, got {_summary(lst)} at {_where(lst)}")
        for el in lst.elts:
            try:
                res.triples.append(self._triple(el))
            except _Reject as exc:
                res.errors.append(str(exc))

    def _triple(self, node: ast.AST) -> dict:
        if not _is_call_to(node, "Triple"):
            raise _Reject(f"list item at {_where(node)} is not Triple(...): {_summary(node)}")
        slots: dict[str, ast.AST] = dict(zip(("head", "relation", "tail"), node.args))
        if len(node.args) > 3:
            raise _Reject(f"Triple() takes 3 arguments at {_where(node)}")
        for kw in node.keywords:
            if kw.arg not in ("head", "relation", "tail") or kw.arg in slots:
                raise _Reject(f"Triple() got keyword {kw.arg or '**'!s} at {_where(kw)}")
            slots[kw.arg] = kw.value
        if set(slots) != {"head", "relation", "tail"}:
            raise _Reject(f"Triple() needs head, relation and tail at {_where(node)}")
        head, htype = self._entity(slots["head"])
        tail, ttype = self._entity(slots["tail"])
        rel = self._relation(slots["relation"])
        return {"head": head, "head_type": htype, "relation": rel, "tail": tail, "tail_type": ttype}

    def _name_call(self, node: ast.AST) -> tuple[str, list[ast.AST]]:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise _Reject(f"expected ClassName('...') at {_where(node)}, got {_summary(node)}")
        args = list(node.args)
        for kw in node.keywords:
            if kw.arg != "name":
                raise _Reject(f"unexpected keyword {kw.arg or '**'} at {_where(kw)}")
            args.append(kw.value)
        if len(args) > 1:
            raise _Reject(f"{node.func.id}() takes one name at {_where(node)}")
        return node.func.id, args

    def _string(self, node: ast.AST) -> str:
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            raise _Reject(f"expected a string literal at {_where(node)}, got {_summary(node)}")
        s = node.value
        if len(s) > self.max_string_chars:
            raise _Reject(
                f"string literal of {len(s)} characters at {_where(node)} is over the limit of "
                f"{self.max_string_chars} (codekgc.max_string_chars)"
            )
        if not s.strip():
            raise _Reject(f"empty name at {_where(node)}")
        return s.strip()

    def _entity(self, node: ast.AST) -> tuple[str, str]:
        cls, args = self._name_call(node)
        if cls != "Entity" and cls not in self.schema.type_of_class:
            raise _Reject(f"unknown entity class {cls!r} at {_where(node)} (not in the schema)")
        if len(args) != 1:
            raise _Reject(f"{cls}() needs the entity's name at {_where(node)}")
        return self._string(args[0]), self.schema.type_of_class.get(cls, "")

    def _relation(self, node: ast.AST) -> str:
        cls, args = self._name_call(node)
        if cls == "Rel":
            if len(args) != 1:
                raise _Reject(f"Rel() needs the relation's name at {_where(node)}")
            name = self._string(args[0])
            rel = self.schema.rel_by_norm.get(norm_label(name))
            if rel is None:
                raise _Reject(f"relation {name[:60]!r} at {_where(node)} is not in the schema")
            return rel
        if cls in self.schema.rel_of_class:
            if args:
                self._string(args[0])  # shape check only; the class names the relation
            return self.schema.rel_of_class[cls]
        raise _Reject(f"unknown relation class {cls!r} at {_where(node)} (not in the schema)")


def _is_call_to(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _summary(node: ast.AST) -> str:
    """A short description of a node for error messages (never its evaluation)."""
    kind = type(node).__name__
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f"call of {f.id}"
        if isinstance(f, ast.Attribute):
            return f"call of attribute .{f.attr}"
        return f"call of {type(f).__name__}"
    if isinstance(node, ast.Attribute):
        return f"attribute access .{node.attr}"
    if isinstance(node, ast.Name):
        return f"name {node.id}"
    if isinstance(node, ast.Constant):
        return f"{type(node.value).__name__} constant"
    return kind


# ----------------------------------------------------------------------------- data
def _read_triples(rec: dict, where, problems: list[Problem], key: str = "triples") -> list[dict]:
    items = rec.get(key)
    if not isinstance(items, list):
        problems.append(where.problem(f"field {key!r} must be a list of triples"))
        return []
    out = []
    for i, t in enumerate(items):
        fields = ("head", "head_type", "relation", "tail", "tail_type")
        if not isinstance(t, dict) or not all(isinstance(t.get(f), str) and t[f] for f in fields):
            problems.append(
                where.problem(
                    f"{key}[{i}] must be an object with string fields {', '.join(fields)}"
                )
            )
            continue
        out.append({f: t[f] for f in fields})
    return out


def gold_triples(rec: dict) -> list[tuple[str, str, str]] | None:
    tl = rec.get("triple_list")
    if isinstance(tl, list):
        return [tuple(map(str, t[:3])) for t in tl if isinstance(t, (list, tuple)) and len(t) >= 3]
    if isinstance(rec.get("triples"), list):
        return [
            (t["head"], t["relation"], t["tail"])
            for t in rec["triples"]
            if isinstance(t, dict)
            and all(isinstance(t.get(k), str) for k in ("head", "relation", "tail"))
        ]
    return None


def load_demos(cfg: IclConfig) -> list[dict]:
    """Demonstrations as {text, triples: [{head, head_type, relation, tail, tail_type}]}."""
    path = cfg.codekgc.demos
    if not path:
        return []
    problems: list[Problem] = []
    demos = []
    for where, rec in read_records(path, "demonstration file (codekgc.demos)"):
        text = str_field(rec, "text", where, problems)
        triples = _read_triples(rec, where, problems) if isinstance(rec, dict) else []
        if text:
            demos.append({"text": text, "triples": triples})
    if problems:
        raise KgcError(problems)
    return sample(demos, cfg.codekgc.num_demos, seeded_rng(cfg.codekgc.seed, "codekgc-demos"))


def build_schema(cfg: IclConfig, demos: list[dict], inputs: list[dict]) -> CodeSchema:
    cc = cfg.codekgc
    types = list(cc.entity_types) or sorted(
        {t[k] for d in demos for t in d["triples"] for k in ("head_type", "tail_type")}
    )
    rels = list(cc.relations) or sorted(
        {t["relation"] for d in demos for t in d["triples"]}
        | {g[1] for r in inputs for g in (gold_triples(r) or [])}
    )
    if not types or not rels:
        raise KgcError(
            "codekgc needs the schema: set codekgc.entity_types and codekgc.relations, or give "
            "typed demonstrations (codekgc.demos)"
        )
    problems = []
    for d in demos:
        for t in d["triples"]:
            if t["relation"] not in rels:
                problems.append(
                    Problem(
                        f"demonstration relation {t['relation']!r} is not in codekgc.relations",
                        cc.demos,
                    )
                )
            for k in ("head_type", "tail_type"):
                if t[k] not in types:
                    problems.append(
                        Problem(
                            f"demonstration {k} {t[k]!r} is not in codekgc.entity_types", cc.demos
                        )
                    )
    if problems:
        raise KgcError(problems)
    return CodeSchema(types, rels)


SYSTEM = (
    "You complete Python code that records the knowledge-graph triples a text states. Reply "
    "with the single statement `extract = Extract([...])` for the last text, using only the "
    "classes defined in the code, with every name copied from the text. Write nothing else."
)


def _prompt_file(path: str, key: str) -> tuple[str, ast.Module]:
    from kgc.io import check_readable

    p = check_readable(path, f"CodeKGC prompt file ({key})")
    text = p.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text)  # a syntax tree only: nothing in the file runs
    except SyntaxError as exc:
        raise KgcError(
            Problem(f"{key} is not Python code: {exc.msg} at line {exc.lineno}", str(p))
        ) from None
    return text, tree


def _bases(node: ast.ClassDef) -> set[str]:
    return {b.id for b in node.bases if isinstance(b, ast.Name)}


def schema_from_prompt(path: str) -> tuple[CodeSchema, str]:
    """DeepKE's schema prompt (Python classes) → the schema and the file's text: every class
    of `Entity` is an entity type (its name), every class of `Rel` a relation (its name with
    spaces for underscores, as DeepKE's demonstrations write it: Work_for → 'Work for')."""
    text, tree = _prompt_file(path, "codekgc.schema_prompt")
    types, rels = [], []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name in RESERVED:
            continue
        if "Entity" in _bases(node):
            types.append(node.name)
        elif "Rel" in _bases(node):
            label = node.name.replace("_", " ").strip()
            rels.append(label if class_name(label, set()) == node.name else node.name)
    if not types or not rels:
        raise KgcError(
            Problem(
                "codekgc.schema_prompt defines no entity classes (class X(Entity)) or no "
                "relation classes (class Y(Rel))",
                path,
            )
        )
    schema = CodeSchema(types, rels)
    renamed = {t: c for t, c in schema.entity_class.items() if c != t}
    if renamed:  # a type name the schema could not keep as its class name
        raise KgcError(Problem(f"codekgc.schema_prompt: class names {sorted(renamed)} "
                               "collide with each other or with kgc's own names", path))  # fmt: skip
    return schema, text


def demos_from_prompt(path: str, reader: CodeReader) -> tuple[list[dict], str]:
    """DeepKE's ICL prompt (docstring, then `extract = Extract([...])`, repeated) → the
    demonstrations, each statement read by the whitelist reader, and the file's text."""
    text, tree = _prompt_file(path, "codekgc.icl_prompt")
    demos, problems, doc = [], [], None
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            doc = value.value.strip()
            continue
        segment = ast.get_source_segment(text, stmt) or ""
        parsed = reader.parse(segment)
        if parsed.errors or doc is None:
            why = "; ".join(parsed.errors) or "no text (docstring) before it"
            problems.append(Problem(f"codekgc.icl_prompt statement: {why}", path, stmt.lineno))
            continue
        demos.append({"text": doc, "triples": parsed.triples})
        doc = None
    if problems:
        raise KgcError(problems)
    return demos, text


def prompt_code(schema: CodeSchema, demos: list[dict], text: str) -> str:
    parts = [schema.code(), ""]
    for d in demos:
        parts += [text_docstring(d["text"]), schema.extract_code(d["triples"]), ""]
    parts += [text_docstring(text), "extract ="]
    return "\n".join(parts)


def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    if single is not None:
        inputs = [("text:1", single)]
    else:
        if not cfg.input:
            raise KgcError(
                "input (CoNLL04-style {text, triple_list} records) or --text is required"
            )
        problems: list[Problem] = []
        inputs = []
        for where, rec in read_records(cfg.input):
            if str_field(rec, "text", where, problems):
                inputs.append((record_id(rec, where), rec))
        if problems:
            raise KgcError(problems)
        inputs = unique_ids(inputs)
    cc = cfg.codekgc
    limits = dict(max_source_chars=cc.max_source_chars, max_nodes=cc.max_nodes,
                  max_string_chars=cc.max_string_chars)  # fmt: skip
    head = None  # DeepKE's prompt files, verbatim
    demos: list[dict] = []
    if cc.schema_prompt:
        schema, head = schema_from_prompt(cc.schema_prompt)
        if cc.icl_prompt:
            demos, icl_text = demos_from_prompt(cc.icl_prompt, CodeReader(schema, **limits))
            head = head.rstrip() + "\n\n" + icl_text.rstrip()
    elif cc.icl_prompt:
        raise KgcError("codekgc.icl_prompt needs codekgc.schema_prompt (the classes it uses)")
    else:
        demos = load_demos(cfg)
        schema = build_schema(cfg, demos, [r for _, r in inputs])
    reader = CodeReader(schema, **limits)
    requests = []
    for rid, rec in inputs:
        if head is not None:
            code = head.rstrip() + "\n" + text_docstring(rec["text"]) + "\nextract ="
        else:
            code = prompt_code(schema, demos, rec["text"])
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": code}]
        requests.append(Request(rid, msgs, params_for(cfg, max_tokens=512, temperature=0.0)))

    def finish(comps):
        rows, total, scored = [], PRF(), 0
        for (rid, rec), comp in zip(inputs, comps):
            parsed = reader.parse(comp.text) if not comp.error else CodeParse()
            errors = ([f"request failed: {comp.error}"] if comp.error else []) + parsed.errors
            row = {
                "id": rid,
                "text": rec["text"],
                "output": comp.text,
                "triples": parsed.triples,
                "errors": errors,
                "cached": comp.cached,
            }
            gold = gold_triples(rec)
            if gold is not None:
                pred = [(t["head"], t["relation"], t["tail"]) for t in parsed.triples]
                total.add(count(pred, gold))
                row["gold"] = [list(g) for g in gold]
                scored += 1
            rows.append(row)
        summary: dict[str, Any] = {
            "rows": len(rows),
            "demonstrations": len(demos),
            "entity_types": schema.entity_types,
            "relations": schema.relations,
            "rows_with_errors": sum(bool(r["errors"]) for r in rows),
            "triples": sum(len(r["triples"]) for r in rows),
        }
        if scored:
            summary["scored_rows"] = scored
            summary["scores"] = {"triple": total.as_dict()}
            summary["report"] = f"triple: {fmt_prf(total.as_dict())}"
        return rows, summary

    return Plan(
        requests, finish, {"schema_code": lambda out: _write(out / "schema.py.txt", schema.code())}
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["CodeReader", "CodeSchema"]
