"""Generate the demo's synthetic SPO data (seeded; the committed files are its output).

    python examples/demo/make_data.py

Short English news-style documents state facts of three kinds — person born_in city, person
works_for organization, organization located_in city — mixed with distractor sentences that
mention people, cities and organizations taking part in no fact (visits, moves, meetings,
rivals, customers), and pronoun references ("She was born in …").

The split is by document, and nothing a model could memorise crosses it:

- train.json: documents built from the TRAIN name pools and the TRAIN sentence patterns,
  each with people, cities and organizations drawn anew (no name carries a fact from one
  document to the next, so tuning teaches reading, not recall);
- heldout.json (and corpus.jsonl, its plain text, the corpus the demo extracts and builds its
  graph from): documents whose people, cities and organizations come from disjoint HELD-OUT
  pools, written only with sentence patterns that never occur in training, including the
  distractor sentences. A score on them needs a model that reads relations, not one that
  recalls names or wordings.

Each relation is labelled with the surface strings the text uses (full names; the pronoun
sentences label the person's name from the earlier sentence).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = {
    "born_in": ("person", "city"),
    "works_for": ("person", "organization"),
    "located_in": ("organization", "city"),
}

# ------------------------------------------------------------------------------ name pools
POOLS = {
    "train": {
        "first": (
            "Alice Bruno Clara David Elena Felix Greta Hugo Irene Jonas Karin Leon Maria Nora "
            "Oscar Paula Rosa Stefan Tina Vera Walter Yara Zoe Amir Bianca Carlos Dana Emil "
            "Farah Gustav Hana Ivan Julia Kenji Lena Mateo Nadia Omar Petra Rahul Sofia Tomas "
            "Ursula Viktor Wen Ximena Yusuf Zara Aiko Bram Chloe Diego Esther Fatima Georg"
        ).split(),
        "last": (
            "Martin Keller Novak Rossi Berg Lind Costa Weber Dubois Fischer Moreau Silva "
            "Horvat Janssen Kowalski Larsen Meyer Nilsson Okafor Petrov Quinn Romero Sato "
            "Tanaka Varga Wagner Almeida Bakker Castillo Dahl Eriksen Ferreira Gallo Hoffmann "
            "Ito Jovanovic Kaur Lambert Mendes Nakamura Olsen Pereira Reyes Schmidt Torres"
        ).split(),
        "city": (
            "Lyon Porto Graz Turin Leeds Aarhus Ghent Bilbao Krakow Malmo Utrecht Dresden "
            "Bergen Split Tartu Brno Cork Basel Nantes Lille Seville Geneva Hamburg Naples "
            "Toronto Denver Osaka Pune Austin Perth Quito Lagos Seattle Munich Valencia Dublin"
        ).split(),
        "org_head": (
            "Northwind Bluepeak Orchid Silverline Redwood Harbor Kestrel Lumen Granite Cobalt "
            "Meadow Atlas Falcon Juniper Summit Beacon Cedar Horizon Maple Onyx Pioneer "
            "Quartz Riverbend Sterling"
        ).split(),
        "org_tail": (
            "Labs|Energy|Systems|Bank|Press|Robotics|Foods|Optics|Insurance|Motors|Pharma|"
            "Freight|Software|Capital|Airlines|Textiles"
        ).split("|"),
    },
    "heldout": {
        "first": (
            "Adriana Benedikt Camille Dmitri Eleonora Florian Giulia Henrik Ingrid Joaquin "
            "Katarina Lorenzo Magnus Noemi Orlando Penelope Rasmus Sabine Thiago Valentina "
            "Wilhelm Yasmin Anouk Cyrus Delphine Ezra Ilse Marek Sigrid Teodor"
        ).split(),
        "last": (
            "Abernathy Brennan Chakraborty Dimitriou Echeverria Fontaine Grunewald Halvorsen "
            "Ionescu Jablonski Kuznetsova Lindqvist Marchetti Nkemelu Oyelaran Pacheco "
            "Rautenberg Szabo Thorvaldsen Vasquez Whitfield Zielinski Oduya Castellanos"
        ).split(),
        "city": (
            "Antwerp Salzburg Coimbra Tampere Bologna Gdansk Rotterdam Ljubljana Zaragoza "
            "Stavanger Heidelberg Montpellier Winnipeg Adelaide Nagoya Cusco Accra "
            "Halifax Tucson Plovdiv"
        ).split(),
        "org_head": "Zephyr Wildrose Ironclad Tidewater Bramble Skylark Emberly Vantage".split(),
        "org_tail": "Biotech|Shipping|Analytics|Brewing|Aerospace|Cosmetics".split("|"),
    },
}

# ------------------------------------------------------------------------------ wordings
# {p} person, {c} city, {o} organization, {x} another person (distractor), {y} another city,
# {z} another organization. SHE/HER are filled with the person's pronouns.
FACTS = {
    "train": {
        "born_in": [
            "{p} was born in {c}.",
            "{p} is a native of {c}.",
            "Born in {c}, {p} grew up there.",
            "{p}, who was born in {c}, studied history.",
            "{p} comes from {c}, where SHE was born.",
            "{c} is the birthplace of {p}.",
            "{p} was born and raised in {c}.",
            "A native of {c}, {p} spoke at the event.",
            "{p} was born in {c} in 1979.",
            "{p}'s hometown is {c}, where SHE was born.",
            "According to HER biography, {p} was born in {c}.",
            "{p}, a {c} native, won the award.",
            "{p} entered the world in {c}.",
            "The city of {c} is where {p} was born.",
            "{p} came into the world in {c}.",
            "{p}'s birthplace is {c}.",
            "{p} was born in the city of {c} and later studied law.",
            "Although {p} was born in {c}, SHE rarely goes back.",
            "{p}, born in {c} in 1990, is a keen cyclist.",
            "Like many people born in {c}, {p} loves the sea.",
            "{p} is originally from {c}, where SHE was born.",
            "{p} was born at a small hospital in {c}.",
            "Born and bred in {c}, {p} knows every street there.",
            "{p} has lived in many places but was born in {c}.",
            "{p} (born in {c}) chairs the committee.",
            "{p}'s parents lived in {c} when SHE was born.",
            "In {c}, where {p} was born, the winters are long.",
        ],
        "works_for": [
            "{p} works for {o}.",
            "{p} joined {o} last year.",
            "{p} is an engineer at {o}.",
            "{o} employs {p} as a designer.",
            "{p} has worked at {o} since 2019.",
            "{p} is a senior analyst with {o}.",
            "{o} hired {p} in March.",
            "{p}, an accountant at {o}, gave a talk.",
            "{p} is the chief financial officer of {o}.",
            "{p} took a job at {o} after college.",
            "At {o}, {p} manages the sales team.",
            "{p} is on the payroll of {o}.",
            "{o} recently promoted {p} to director.",
            "{p} earns HER living as a programmer for {o}.",
            "{p} is a nurse at {o}.",
            "{p} has been with {o} for five years.",
            "{p} works as a lawyer at {o}.",
            "{p} is part of the research team at {o}.",
            "{p} started working at {o} in 2012.",
            "The new marketing head of {o}, {p}, presented the plan.",
            "{p} is a manager at {o}.",
            "{p} serves as head of research at {o}.",
            "{p}'s employer is {o}.",
            "The newest engineer at {o}, {p}, fixed the bug.",
            "Working for {o}, {p} travels a lot.",
            "{p} writes software for {o}.",
            "{p} has a job with {o}.",
            "{p} recently became a partner at {o}.",
        ],
        "located_in": [
            "{o} is based in {c}.",
            "{o} has its headquarters in {c}.",
            "The offices of {o} are in {c}.",
            "{o} is headquartered in {c}.",
            "{c} is home to {o}.",
            "{o}, a company based in {c}, grew fast.",
            "{o} operates out of {c}.",
            "The main office of {o} is located in {c}.",
            "{o} keeps its head office in {c}.",
            "{o} is a {c}-based company.",
            "{o} moved its headquarters to {c} years ago and stayed.",
            "{o} has its registered office in {c}.",
            "The headquarters of {o} are in {c}.",
            "From its base in {c}, {o} serves clients worldwide.",
            "{o}, headquartered in {c}, reported record profits.",
            "{o} is located in {c}.",
            "{o} set up its headquarters in {c}.",
            "Most of the staff of {o} work at its head office in {c}.",
            "{o} calls {c} its home.",
            "{o}'s headquarters stand in {c}.",
        ],
    },
    "heldout": {
        "born_in": [
            "{p} first saw the light of day in {c}.",
            "Records show that {p} was born in {c} in 1984.",
            "{p} spent HER childhood in {c}, the city where SHE was born.",
            "{c}-born {p} opened the ceremony.",
        ],
        "works_for": [
            "{p} is employed by {o}.",
            "These days {p} leads a team at {o}.",
            "{p} signed a contract with {o} and started work there in May.",
            "As a chemist at {o}, {p} runs the lab.",
        ],
        "located_in": [
            "{o} runs its business from headquarters in {c}.",
            "The head office of {o} sits in {c}.",
            "{o} was founded in {c} and is still based there.",
        ],
    },
}
# a person and an organization in one sentence
COMBINED = {
    "train": [
        ("{p}, born in {c}, works for {o}.", ("born_in", "works_for")),
        ("{p} works at {o}, a firm based in {c}.", ("works_for", "located_in")),
    ],
    "heldout": [
        ("Born in {c}, {p} now works as a consultant for {o}.", ("born_in", "works_for")),
        ("{p} is on the staff of {o}, which is headquartered in {c}.", ("works_for", "located_in")),
    ],
}
# sentences that mention names in no fact of the schema
DISTRACTORS = {
    "train": [
        "{p} visited {y} last spring.",
        "{p} moved to {y} in 2015.",
        "{p} met {x} at a conference in {y}.",
        "{p} often travels to {y} for work.",
        "{o} competes with {z}.",
        "{o} ships its products to {y}.",
        "{x} is a customer of {o}.",
        "HER brother lives in {y}.",
        "{p} admires the novels of {x}.",
        "{o} signed a deal with {z}.",
        "{p} lives in {y} now.",
        "{p} studied in {y} for two years.",
        "{p} gave a lecture in {y}.",
        "{x} and {p} are old friends.",
        "{o} sells its products in {y}.",
        "{o} acquired {z} in 2020.",
        "{x} reviewed a product made by {o}.",
        "{p} flew to {y} to meet investors.",
        "The mayor of {y} praised {o}.",
            "{o} opened a store in {y}.",
            "{o} held its annual meeting in {y}.",
            "{o} sponsors a football club in {y}.",
            "{p} once applied for a job at {z} but was turned down.",
            "{p} bought shares of {z}.",
            "{p} met the chief executive of {z} in {y}.",
            "{o} plans to open an office in {y}.",
            "{p} celebrated HER birthday in {y}.",
            "{p} toured the factory of {z}.",
            "{x} left {o} in 2018.",
            "{p} wrote an article about {z}.",
    ],
    "heldout": [
        "{p} spent a holiday in {y} with {x}.",
        "Last year {p} relocated to {y}.",
        "{o} bought a small stake in {z}.",
        "{x} wrote a book about {y}.",
        "{o} announced a partnership with {z} at a fair in {y}.",
        "{p} and {x} were classmates.",
        "{o} is a rival of {z}.",
    ],
}


def pick_unique(rng: random.Random, pool: dict, used: set, first: str, second: str) -> str:
    """A "<first> <second>" name from the pool's two word lists not drawn before."""
    while True:
        name = f"{rng.choice(pool[first])} {rng.choice(pool[second])}"
        if name not in used:
            used.add(name)
            return name


# first names read as female (the rest as male), for "she"/"he" in the pronoun sentences
FEMALE = set(
    "Alice Clara Elena Greta Irene Karin Maria Nora Paula Rosa Tina Vera Yara Zoe Bianca Dana "
    "Farah Hana Julia Lena Nadia Petra Sofia Ursula Wen Ximena Zara Aiko Chloe Esther Fatima "
    "Adriana Camille Eleonora Giulia Ingrid Katarina Noemi Penelope Sabine Valentina Yasmin "
    "Anouk Delphine Ilse Sigrid".split()
)


def pronouns(s: str, female: bool) -> str:
    she, her = ("she", "her") if female else ("he", "his")
    s = s.replace("SHE", she).replace("HER", her)
    return s[0].upper() + s[1:]


def document(rng: random.Random, split: str, cast: dict) -> dict:
    """One document: 1–2 people, some of their facts (and their employers' cities) in random
    wordings, 0–2 distractor sentences; a few documents hold distractors only."""
    pool = POOLS[split]
    sentences: list[str] = []
    rels: list[tuple[str, str, str]] = []
    people = rng.sample(cast["people"], 2 if rng.random() < 0.3 else 1)
    for p in people:
        c, o, female = cast["person"][p]
        oc = cast["org_city"][o]
        fill = {
            "p": p,
            "c": c,
            "o": o,
            "x": rng.choice([q for q in cast["people"] if q not in people]),
            "y": rng.choice([y for y in pool["city"] if y not in (c, oc)]),
            "z": rng.choice([z for z in cast["orgs"] if z != o]),
        }
        if rng.random() < 0.12:
            facts = []  # nothing to extract: only distractors
        else:
            most = 3 if len(people) == 1 else 2  # at most 4 facts a document
            facts = rng.sample(["born_in", "works_for", "located_in"], k=rng.randint(1, most))
            if "located_in" in facts and "works_for" not in facts and len(facts) < most:
                facts.append("works_for")
        parts: list[str] = []
        if {"born_in", "works_for"} <= set(facts) and rng.random() < 0.3:
            text, covers = COMBINED[split][0]
            parts.append(text.format(**fill))
            facts = [f for f in facts if f not in covers]
            rels += [("born_in", p, c), ("works_for", p, o)]
        elif {"works_for", "located_in"} <= set(facts) and rng.random() < 0.3:
            text, covers = COMBINED[split][1]
            parts.append(text.format(**{**fill, "c": oc}))
            facts = [f for f in facts if f not in covers]
            rels += [("works_for", p, o), ("located_in", o, oc)]
        for f in facts:
            city = oc if f == "located_in" else c
            parts.append(rng.choice(FACTS[split][f]).format(**{**fill, "c": city}))
            rels.append((f, o if f == "located_in" else p, o if f == "works_for" else city))
        n_distract = rng.choice((0, 1, 1)) if facts or parts else rng.choice((1, 2))
        for _ in range(n_distract):
            parts.insert(rng.randint(0, len(parts)), rng.choice(DISTRACTORS[split]).format(**fill))
        # a pronoun needs its person named first: pronoun sentences before the name move last
        named = next((i for i, t in enumerate(parts) if p in t), len(parts))
        early = [t for t in parts[:named] if t.startswith("HER ") or "SHE" in t]
        parts = [t for t in parts if t not in early] + early
        sentences += [pronouns(t, female) for t in parts]
    seen, out = set(), []
    for rel, s, o in rels:
        if (rel, s, o) not in seen:
            seen.add((rel, s, o))
            st, ot = TYPES[rel]
            out.append({"head": s, "head_type": st, "relation": rel, "tail": o, "tail_type": ot})
    return {"text": " ".join(sentences), "relation": out}


def make_cast(rng: random.Random, split: str, n_people: int, n_orgs: int) -> dict:
    """A consistent world: each person's birthplace and employer, each organization's city."""
    pool, used = POOLS[split], set()
    people = [pick_unique(rng, pool, used, "first", "last") for _ in range(n_people)]
    orgs = [pick_unique(rng, pool, used, "org_head", "org_tail") for _ in range(n_orgs)]
    return {
        "people": people,
        "orgs": orgs,
        "person": {
            p: (rng.choice(pool["city"]), rng.choice(orgs), p.split()[0] in FEMALE) for p in people
        },
        "org_city": {o: rng.choice(pool["city"]) for o in orgs},
    }


def make_split(rng: random.Random, split: str, n_docs: int, fresh: bool) -> list[dict]:
    """`fresh`: every document gets its own small world (names drawn anew), so a model cannot
    answer from names it has seen — only by reading. Otherwise one world for all documents,
    which repeat its facts (the held-out corpus: its graph merges mentions)."""
    cast = None if fresh else make_cast(rng, split, 30, 12)
    return [document(rng, split, cast or make_cast(rng, split, 4, 3)) for _ in range(n_docs)]


def check_disjoint(train: list[dict], heldout: list[dict]) -> None:
    """No held-out name occurs in any training document, and no held-out sentence pattern
    matches a training sentence."""
    import re

    train_text = " ".join(d["text"] for d in train)
    patterns = FACTS["heldout"]["born_in"] + FACTS["heldout"]["works_for"]
    patterns += FACTS["heldout"]["located_in"] + DISTRACTORS["heldout"]
    patterns += [t for t, _ in COMBINED["heldout"]]
    sentences = [x for d in train for x in re.split(r"(?<=\.) ", d["text"])]
    for pat in patterns:
        rx = re.escape(pat).replace("SHE", "(?:she|he)").replace("HER", "(?:her|his)")
        rx = re.compile("^" + re.sub(r"\\\{[a-z]\\\}", "[^.]+", rx) + "$", re.I)
        hit = next((x for x in sentences if rx.match(x)), None)
        assert hit is None, f"held-out pattern {pat!r} occurs in training: {hit!r}"
    for d in heldout:
        for r in d["relation"]:
            for name in (r["head"], r["tail"]):
                assert name not in train_text, f"held-out name {name!r} occurs in training"
    for a in POOLS["train"]:
        assert not set(POOLS["train"][a]) & set(POOLS["heldout"][a]), a


def main() -> None:
    # one generator per split: changing the training data leaves the held-out documents as they are
    train = make_split(random.Random(20261201), "train", 600, fresh=True)
    heldout = make_split(random.Random(20261202), "heldout", 40, fresh=False)
    check_disjoint(train, heldout)
    for prefix, docs in (("doc", train), ("new", heldout)):
        for i, d in enumerate(docs):
            d["id"] = f"{prefix}{i:03d}"
    schema = [[f"{st}_{rel}_{ot}" for rel, (st, ot) in TYPES.items()], list(TYPES), {}]
    (HERE / "schema.json").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in schema) + "\n", encoding="utf-8"
    )
    for name, rows in (("train.json", train), ("heldout.json", heldout)):
        (HERE / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    # the corpus the demo extracts and builds its graph from: the held-out documents as plain
    # text (no labels); the graph is scored against heldout.json's facts
    (HERE / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in heldout),
        encoding="utf-8",
    )
    facts = sum(len(d["relation"]) for d in heldout)
    print(f"train {len(train)} documents; held-out {len(heldout)} documents, {facts} facts")


if __name__ == "__main__":
    main()
