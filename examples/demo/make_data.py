"""Generate the demo's synthetic SPO data (deterministic; the committed files are its output).

    python examples/demo/make_data.py

Short English documents state facts of three kinds — person born_in city, person works_for
organization, organization located_in city — in varied wordings, about a closed cast of
people, cities and organizations.

- train.json: the documents the demo fine-tunes on (with labels); corpus.jsonl: the same
  documents as plain text, the corpus the demo extracts and builds the graph from. They
  repeat entities and facts across documents, so the graph merges mentions.
- heldout.json: documents whose person facts never occur in train.json: a score on them
  needs a model that reads the input, not one that recalls its training documents.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = (
    "Alice Anna Bruno Clara David Elena Felix Greta Hugo Irene Jonas Karin Leon Maria Nora "
    "Oscar Paula Quentin Rosa Stefan Tina Ulrich Vera Walter Yara Zoe Amir Bianca Carlos Dana"
).split()
LAST = (
    "Martin Keller Novak Rossi Berg Lind Costa Weber Dubois Fischer Moreau Silva Horvat Janssen "
    "Kowalski Larsen Meyer Nilsson Okafor Petrov Quinn Romero Sato Tanaka Ueda Varga Wagner"
).split()
CITIES = (
    "Lyon Porto Graz Turin Leeds Aarhus Ghent Bilbao Krakow Malmo Utrecht Dresden Bergen Split "
    "Tartu Brno Cork Basel Nantes Lille"
).split()
ORGS = [
    "Northwind Labs", "Bluepeak Energy", "Orchid Systems", "Silverline Bank", "Redwood Press",
    "Harbor Robotics", "Kestrel Foods", "Lumen Optics", "Granite Insurance", "Cobalt Motors",
    "Meadow Pharma", "Atlas Freight",
]  # fmt: skip
TEMPLATES = {
    "born_in": ["{s} was born in {o}.", "{s} is a native of {o}.", "Born in {o}, {s} grew up there."],
    "works_for": ["{s} works for {o}.", "{s} joined {o} last year.", "{s} is an engineer at {o}."],
    "located_in": ["{s} is based in {o}.", "{s} has its headquarters in {o}.", "The offices of {s} are in {o}."],
}  # fmt: skip
TYPES = {
    "born_in": ("person", "city"),
    "works_for": ("person", "organization"),
    "located_in": ("organization", "city"),
}
# each organization sits in one city, so the corpus repeats the same located_in facts
ORG_CITY = {org: CITIES[i % 12] for i, org in enumerate(ORGS)}


def document(rng: random.Random, person: str, city: str, org: str) -> dict:
    facts = [("born_in", person, city), ("works_for", person, org)]
    if rng.random() < 0.6:
        facts.append(("located_in", org, ORG_CITY[org]))
    keep = rng.sample(facts, k=rng.randint(1, len(facts)))
    sentences, rels = [], []
    for rel, s, o in keep:
        sentences.append(rng.choice(TEMPLATES[rel]).format(s=s, o=o))
        st, ot = TYPES[rel]
        rels.append({"head": s, "head_type": st, "relation": rel, "tail": o, "tail_type": ot})
    return {"text": " ".join(sentences), "relation": rels}


def main() -> None:
    rng = random.Random(7)
    cast = sorted({f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(40)})[:24]
    cities = CITIES[:12]
    pairs = [(p, c, o) for p in cast for c in cities for o in ORGS]
    rng.shuffle(pairs)
    train, seen = [], set()
    for p, c, o in pairs[:40]:
        train.append(document(rng, p, c, o))
        seen |= {(p, c), (p, o)}
    heldout = []
    for p, c, o in pairs[40:]:
        if len(heldout) == 40:
            break
        if (p, c) not in seen and (p, o) not in seen:
            heldout.append(document(rng, p, c, o))
    for prefix, docs in (("doc", train), ("new", heldout)):
        for i, d in enumerate(docs):
            d["id"] = f"{prefix}{i:03d}"
    schema = [
        [f"{st}_{rel}_{ot}" for rel, (st, ot) in TYPES.items()],
        list(TYPES),
        {},
    ]
    (HERE / "schema.json").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in schema) + "\n", encoding="utf-8"
    )
    for name, rows in (("train.json", train), ("heldout.json", heldout)):
        (HERE / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    # the corpus: the training documents as plain documents (no labels), for extraction → graph
    (HERE / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in train),
        encoding="utf-8",
    )
    print(f"train/corpus {len(train)}  held-out {len(heldout)}  (documents)")


if __name__ == "__main__":
    main()
