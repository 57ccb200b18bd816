"""Few-shot relation classification on TACRED-style data (after Xu et al. 2023, "How to
Unleash the Power of Large Language Models for Few-shot Relation Extraction").

Input and demonstration records: {id, token: [...], subj_start, subj_end, obj_start, obj_end
(inclusive token indices), subj_type, obj_type, relation}. Four prompt formats: `text`,
`text_schema` (entity types in every line), `instruct`, `instruct_schema` (a task description
first). k demonstrations per relation: random (seeded per test item) or nearest to the query
(OpenAI embeddings when `client.embedding_model` is set, else TF-IDF cosine). The answer is
mapped to the relation set (case, `_`, `-`, spaces and plurals ignored); an answer that maps
to nothing counts as the negative label and is reported. Micro P/R/F1 exclude the negative
label and cover every test item (a failed or unmapped answer is a wrong answer, not a
skipped one).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.icl.common import NONE_WORDS, first_answer_line, norm_label, seeded_rng
from kgc.icl.config import IclConfig
from kgc.icl.data import Where, detokenize, read_records, record_id, tokenize, unique_ids
from kgc.icl.runner import Plan, Request, params_for

NEGATIVE_NAMES = ("no_relation", "NA", "na", "Other", "Others", "false", "unanswerable")
_PREFIX = {"per": "person", "org": "organization", "loc": "location", "gpe": "country"}
_TYPE_WORD = {"misc": "miscellaneous", "org": "organization", "per": "person", "loc": "location"}


@dataclass
class Instance:
    id: str
    tokens: list[str]
    head: str
    tail: str
    head_type: str
    tail_type: str
    relation: str | None

    @property
    def sentence(self) -> str:
        return detokenize(self.tokens)


# ----------------------------------------------------------------------------- reading
def to_instance(
    rec: Any, where: Where, problems: list[Problem], need_label: bool
) -> Instance | None:
    if not isinstance(rec, dict):
        problems.append(where.problem(f"record must be a JSON object, got {type(rec).__name__}"))
        return None
    before = len(problems)
    tokens = rec.get("token")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        problems.append(where.problem("field 'token' must be a non-empty list of strings"))
        return None
    idx = {}
    for f in ("subj_start", "subj_end", "obj_start", "obj_end"):
        v = rec.get(f)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < len(tokens):
            problems.append(
                where.problem(
                    f"field {f!r} = {v!r} must be a token index in 0..{len(tokens) - 1} "
                    "(TACRED offsets are inclusive)"
                )
            )
        else:
            idx[f] = v
    if len(problems) > before:
        return None
    for a, b in (("subj_start", "subj_end"), ("obj_start", "obj_end")):
        if idx[a] > idx[b]:
            problems.append(where.problem(f"field {a!r} ({idx[a]}) is after {b!r} ({idx[b]})"))
            return None
    rel = rec.get("relation")
    if rel is not None and not isinstance(rel, str):
        problems.append(where.problem(f"field 'relation' must be a string, got {rel!r}"))
        return None
    if need_label and not rel:
        problems.append(where.problem("field 'relation' is required in demonstration records"))
        return None
    types = {}
    for f in ("subj_type", "obj_type"):
        v = rec.get(f, "")
        types[f] = v if isinstance(v, str) else ""
    return Instance(
        id=record_id(rec, where),
        tokens=tokens,
        head=detokenize(tokens[idx["subj_start"] : idx["subj_end"] + 1]),
        tail=detokenize(tokens[idx["obj_start"] : idx["obj_end"] + 1]),
        head_type=types["subj_type"],
        tail_type=types["obj_type"],
        relation=rel,
    )


def read_instances(path: str, what: str, need_label: bool) -> list[Instance]:
    problems: list[Problem] = []
    out = []
    for where, rec in read_records(path, what):
        inst = to_instance(rec, where, problems, need_label)
        if inst is not None:
            out.append(inst)
    if problems:
        raise KgcError(problems)
    for inst, (rid, _) in zip(out, unique_ids([(i.id, None) for i in out])):
        inst.id = rid
    return out


def instance_from_text(text: str, head: str, tail: str, head_type: str, tail_type: str) -> dict:
    """A TACRED record for one sentence and its entity pair (for `--text`)."""
    toks = tokenize(text)
    words = [t for t, _, _ in toks]

    def span(s: str, name: str) -> tuple[int, int]:
        target = [t for t, _, _ in tokenize(s)]
        for i in range(len(words) - len(target) + 1):
            if words[i : i + len(target)] == target:
                return i, i + len(target) - 1
        raise KgcError(f"--{name} {s!r} does not occur (as whole words) in --text")

    hs, he = span(head, "head")
    ts, te = span(tail, "tail")
    return {
        "id": "text:1",
        "token": words,
        "subj_start": hs,
        "subj_end": he,
        "obj_start": ts,
        "obj_end": te,
        "subj_type": head_type,
        "obj_type": tail_type,
    }


# ----------------------------------------------------------------------------- labels
def label_word(rel: str, negative: str) -> str:
    """'per:cities_of_residence' → 'person cities of residence'; the negative → 'no relation'."""
    if rel == negative:
        return "no relation"
    prefix, sep, rest = rel.partition(":")
    if not sep:
        prefix, rest = "", rel
    rest = rest.replace("stateorprovince", "state or province")
    words = re.sub(r"[_\-]+", " ", rest).strip().lower()
    head = _PREFIX.get(prefix.lower(), prefix.lower())
    return f"{head} {words}".strip()


def type_word(t: str) -> str:
    w = t.strip().lower()
    return _TYPE_WORD.get(w, w.replace("_", " "))


def _stem_key(s: str) -> str:
    out = []
    for w in re.findall(r"[^\W_]+", s.casefold()):
        if w.endswith("ies") and len(w) > 4:
            w = w[:-3] + "y"
        elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
            w = w[:-1]
        out.append(w)
    return "".join(out)


class RelationMap:
    """Answer text → a relation of the set, or None."""

    def __init__(self, relations: list[str], negative: str):
        self.negative = negative
        self.exact: dict[str, str] = {}
        self.stem: dict[str, str] = {}
        self.words: list[tuple[str, str]] = []
        for r in relations:
            w = label_word(r, negative)
            for key in (r, w):
                self.exact.setdefault(norm_label(key), r)
                self.stem.setdefault(_stem_key(key), r)
            self.words.append((w.casefold(), r))
        for w in NONE_WORDS:
            self.exact.setdefault(norm_label(w), negative)
        self.words.sort(key=lambda x: -len(x[0]))

    def map(self, answer: str) -> str | None:
        ans = first_answer_line(answer)
        if not ans:
            return None
        hit = self.exact.get(norm_label(ans)) or self.stem.get(_stem_key(ans))
        if hit:
            return hit
        low = ans.casefold()
        for w, r in self.words:  # a sentence that names one relation ("... is founded by.")
            if w and re.search(r"\b" + re.escape(w) + r"\b", low):
                return r
        return None


# ----------------------------------------------------------------------------- similarity
_WORD = re.compile(r"\w+", re.UNICODE)


class TfIdf:
    """TF-IDF cosine similarity over lower-cased words, standard library only."""

    def __init__(self, docs: list[str]):
        self.docs = [Counter(_WORD.findall(d.lower())) for d in docs]
        df: Counter = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(docs)
        self.idf = {w: math.log((n + 1) / (c + 1)) + 1.0 for w, c in df.items()}
        self.vecs = [self._vec(d) for d in self.docs]

    def _vec(self, tf: Counter) -> dict[str, float]:
        v = {w: c * self.idf.get(w, math.log(len(self.docs) + 1) + 1.0) for w, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    def similarities(self, query: str) -> list[float]:
        q = self._vec(Counter(_WORD.findall(query.lower())))
        return [sum(x * d.get(w, 0.0) for w, x in q.items()) for d in self.vecs]


def cosine(a: list[float], b: list[float]) -> float:
    num = sum(x * y for x, y in zip(a, b))
    den = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return num / den if den else 0.0


# ----------------------------------------------------------------------------- prompts
def _line(inst: Instance, schema: bool, answer: str | None) -> str:
    if schema:
        pair = (
            f"{type_word(inst.head_type) or 'entity'} '{inst.head}' and "
            f"{type_word(inst.tail_type) or 'entity'} '{inst.tail}'"
        )
    else:
        pair = f"'{inst.head}' and '{inst.tail}'"
    q = f"Context: {inst.sentence}\nRelation between {pair}:"
    return q + (f" {answer}\n" if answer is not None else "")


def build_prompt(
    fmt: str, words: list[str], demos: list[tuple[Instance, str]], query: Instance
) -> str:
    schema = fmt.endswith("_schema")
    cands = "; ".join(words)
    if fmt.startswith("instruct"):
        head = (
            "Relation classification. For each context, decide how the head entity (named "
            "first) relates to the tail entity (named second), choosing one of these candidate "
            f"relations: {cands}. Reply with the candidate relation only.\n\n"
        )
    else:
        head = f"Candidate relations: {cands}.\n\n"
    body = "".join(_line(d, schema, w) + "\n" for d, w in demos)
    return head + body + _line(query, schema, None)


# ----------------------------------------------------------------------------- the mode
def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    fc = cfg.fewshot_re
    neg = fc.negative_label
    if not fc.train and fc.k > 0:
        raise KgcError(
            "fewshot_re.train (the TACRED demonstration pool) is required; set fewshot_re.k=0 "
            "for zero-shot"
        )
    pool = read_instances(fc.train, "fewshot_re.train file", True) if fc.train else []
    if single is not None:
        problems: list[Problem] = []
        inst = to_instance(single, Where("--text", 1), problems, False)
        if inst is None:
            raise KgcError(problems)
        tests = [inst]
    else:
        if not cfg.input:
            raise KgcError("input (a TACRED JSON/JSONL file) or --text is required")
        tests = read_instances(cfg.input, "input file", False)
    relations = (
        list(fc.relations)
        if fc.relations
        else sorted({i.relation for i in pool + tests if i.relation})
    )
    if not relations:
        raise KgcError(
            "no relation set: set fewshot_re.relations or give labelled train/input records"
        )
    if neg not in relations and any(i.relation == neg for i in pool + tests):
        relations.append(neg)
    unknown = sorted({i.relation for i in pool if i.relation not in relations})
    if unknown:
        raise KgcError(
            f"fewshot_re.train has relations outside fewshot_re.relations: {unknown[:5]}; add "
            "them to the list or remove those records"
        )
    words = [label_word(r, neg) for r in relations]
    by_rel: dict[str, list[int]] = {}
    for i, d in enumerate(pool):
        by_rel.setdefault(d.relation or "", []).append(i)
    sims = _similarity(cfg, client, pool, tests) if fc.selection == "nearest" and pool else None
    requests = []
    dropped = 0
    for qi, q in enumerate(tests):
        rng = seeded_rng(fc.seed, "fewshot", q.id)
        picked: list[tuple[float, int]] = []
        order = list(relations)
        rng.shuffle(order)
        for r in order:
            cand = by_rel.get(r, [])
            if sims is not None:
                best = sorted(cand, key=lambda i: -sims[qi][i])[: fc.k]
                picked += [(sims[qi][i], i) for i in best]
            else:
                chosen = rng.sample(cand, min(fc.k, len(cand)))
                picked += [(rng.random(), i) for i in chosen]
        picked.sort()  # random: shuffled; nearest: most similar last, next to the query
        demos = [(pool[i], label_word(pool[i].relation or "", neg)) for _, i in picked]
        prompt = build_prompt(fc.prompt, words, demos, q)
        while len(prompt) > fc.max_prompt_chars and demos:
            demos = demos[1:]  # the least similar (or a random) one goes first
            dropped += 1
            prompt = build_prompt(fc.prompt, words, demos, q)
        msgs = [{"role": "user", "content": prompt}]
        requests.append(Request(q.id, msgs, params_for(cfg, max_tokens=24, temperature=0.0)))

    def finish(comps):
        return _finish(cfg, tests, relations, comps, dropped)

    return Plan(requests, finish)


def _similarity(cfg: IclConfig, client, pool: list[Instance], tests: list[Instance]):
    if cfg.client.embedding_model:
        vecs = client.embed([i.sentence for i in pool] + [t.sentence for t in tests])
        pv, tv = vecs[: len(pool)], vecs[len(pool) :]
        return [[cosine(t, p) for p in pv] for t in tv]
    tfidf = TfIdf([i.sentence for i in pool])
    return [tfidf.similarities(t.sentence) for t in tests]


def micro_prf(pairs: list[tuple[str, str]], negative: str) -> dict:
    """TACRED scoring: precision over non-negative predictions, recall over non-negative gold."""
    correct = sum(p == g and g != negative for p, g in pairs)
    pred = sum(p != negative for p, _ in pairs)
    gold = sum(g != negative for _, g in pairs)
    p = correct / pred if pred else 0.0
    r = correct / gold if gold else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "accuracy": sum(p == g for p, g in pairs) / len(pairs) if pairs else 0.0,
        "correct": correct,
        "pred": pred,
        "gold": gold,
    }


def _finish(cfg: IclConfig, tests: list[Instance], relations: list[str], comps, dropped: int):
    neg = cfg.fewshot_re.negative_label
    rmap = RelationMap(relations, neg)
    rows, pairs = [], []
    unmapped = 0
    for q, comp in zip(tests, comps):
        errors = []
        if comp.error:
            errors.append(f"request failed: {comp.error}")
            pred = neg
        else:
            got = rmap.map(comp.text)
            if got is None:
                unmapped += 1
                errors.append(
                    f"answer {first_answer_line(comp.text)[:60]!r} maps to no relation; counted "
                    f"as {neg}"
                )
                pred = neg
            else:
                pred = got
        row = {
            "id": q.id,
            "head": q.head,
            "tail": q.tail,
            "prediction": pred,
            "output": comp.text,
            "errors": errors,
            "cached": comp.cached,
        }
        if q.relation is not None:
            row["relation"] = q.relation
            pairs.append((pred, q.relation))
        rows.append(row)
    summary: dict[str, Any] = {
        "prompt": cfg.fewshot_re.prompt,
        "k": cfg.fewshot_re.k,
        "selection": cfg.fewshot_re.selection,
        "similarity": (
            ("embeddings" if cfg.client.embedding_model else "tfidf")
            if cfg.fewshot_re.selection == "nearest"
            else None
        ),
        "relations": len(relations),
        "rows": len(rows),
        "unmapped_answers": unmapped,
        "demonstrations_dropped_for_length": dropped,
    }
    if pairs:
        s = micro_prf(pairs, neg)
        summary["scored_rows"] = len(pairs)
        summary["scores"] = s
        summary["report"] = (
            f"micro P {s['precision'] * 100:.2f}  R {s['recall'] * 100:.2f}  F1 "
            f"{s['f1'] * 100:.2f} (excluding {neg}; {len(pairs)} items; {unmapped} unmapped "
            f"answer(s) counted as {neg})"
        )
    return rows, summary
