"""Few-shot RE on TACRED-style data: label words, answer mapping, the four prompt formats,
k demonstrations per relation (random / nearest by TF-IDF or embeddings), micro F1 without
the negative label — on the bundled sample files, against a replaying server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openai")

from kgc.errors import KgcError  # noqa: E402
from kgc.icl import fewshot_re as fs  # noqa: E402
from kgc.icl.config import load_icl_config  # noqa: E402
from kgc.icl.data import detokenize  # noqa: E402
from kgc.icl.runner import run_icl  # noqa: E402
from tests.support.replay import ReplayServer, load_rules  # noqa: E402

pytestmark = pytest.mark.timeout(60)
EX = Path(__file__).resolve().parent.parent / "examples" / "icl"
TRAIN, TEST = EX / "tacred_train.json", EX / "tacred_test.json"


def prompts(srv) -> list[str]:
    return [r["body"]["messages"][0]["content"] for r in srv.requests]


def prompt_for(srv, query: str) -> str:
    """The request whose query (the last context) contains `query` (requests run concurrently)."""
    [p] = [p for p in prompts(srv) if query in p.rsplit("Context: ", 1)[1]]
    return p


def cfg_for(srv, **fewshot):
    return load_icl_config(
        None,
        data={
            "mode": "fewshot_re",
            "input": str(TEST),
            "client": {
                "base_url": srv.base_url,
                "model": "m",
                "allow_no_key": True,
                "cache_dir": None,
                "embedding_model": fewshot.pop("embedding_model", None),
            },
            "fewshot_re": {"train": str(TRAIN), **fewshot},
        },
    )


@pytest.fixture
def replay():
    rules, default = load_rules(EX / "replay_fewshot_re.json")
    with ReplayServer(rules, default=default) as srv:
        yield srv


def test_label_words_and_answer_mapping():
    assert fs.label_word("per:cities_of_residence", "no_relation") == "person cities of residence"
    assert fs.label_word("org:stateorprovince_of_headquarters", "x") == (
        "organization state or province of headquarters"
    )
    assert fs.label_word("no_relation", "no_relation") == "no relation"
    rels = ["per:city_of_birth", "per:cities_of_residence", "org:founded_by", "no_relation"]
    m = fs.RelationMap(rels, "no_relation")
    assert m.map("Org:Founded_By.") == "org:founded_by"
    assert m.map("person city of birth") == "per:city_of_birth"
    assert m.map("person city of residence") == "per:cities_of_residence"  # plural folded
    assert m.map("No relation.") == "no_relation"
    assert m.map("The answer: organization founded by") == "org:founded_by"
    assert m.map("sibling") is None and m.map("") is None


def test_f1_on_the_bundled_file(replay):
    res = run_icl(cfg_for(replay, k=1))
    s = res.summary["scores"]
    # canned answers: 5 right of 7 non-negative predictions, 8 non-negative gold items
    assert (s["correct"], s["pred"], s["gold"]) == (5, 7, 8)
    assert s["f1"] == pytest.approx(2 / 3)
    assert res.summary["unmapped_answers"] == 1  # "person cities of residence": not a relation
    assert len(res.rows) == 10 and all("prediction" in r for r in res.rows)
    kenji = next(r for r in res.rows if r["head"] == "Kenji Mori")
    assert kenji["prediction"] == "no_relation" and "maps to no relation" in kenji["errors"][0]
    assert "F1 66.67" in res.summary["report"]


@pytest.mark.parametrize("fmt", ["text", "text_schema", "instruct", "instruct_schema"])
def test_prompt_formats(replay, fmt):
    run_icl(cfg_for(replay, k=2, prompt=fmt))
    prompt = prompt_for(replay, "Quillon")
    assert prompt.startswith(
        "Relation classification" if fmt.startswith("instruct") else "Candidate relations: "
    )
    assert prompt.count("Context: ") == 2 * 5 + 1  # k per relation (5 relations) + the query
    typed = "organization 'Quillon' and person 'Sara Lind'"
    assert (typed in prompt) == fmt.endswith("_schema")
    assert prompt.rstrip().endswith(":")


def test_random_demos_are_seeded_per_item(replay):
    runs = []
    for seed in (7, 7, 8):
        n = len(replay.requests)
        run_icl(cfg_for(replay, k=1, seed=seed))
        runs.append(sorted(prompts(replay)[n:], key=lambda p: p.rsplit("Context: ", 1)[1]))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    first = runs[0]
    assert len({p.split("Context: ", 2)[1] for p in first}) > 1  # re-drawn per test item


def test_nearest_demos_tfidf_and_embeddings(replay):
    res = run_icl(cfg_for(replay, k=1, selection="nearest"))
    assert res.summary["similarity"] == "tfidf"
    query = "Software maker Quillon was founded by Sara Lind in a garage in Malmo ."
    prompt = prompt_for(replay, "Quillon")
    shown = [c.split("\n")[0] for c in prompt.split("Context: ")[1:-1]]
    pool = [(detokenize(r["token"]), r["relation"]) for r in json.loads(TRAIN.read_text())]
    sims = dict(zip([p[0] for p in pool], fs.TfIdf([p[0] for p in pool]).similarities(query)))
    assert [sims[s] for s in shown] == sorted(sims[s] for s in shown)  # most similar last
    for sentence, rel in pool:  # each shown one is the nearest of its relation
        best = max(sims[s] for s, r in pool if r == rel)
        if sentence in shown:
            assert sims[sentence] == best
    res = run_icl(cfg_for(replay, k=1, selection="nearest", embedding_model="emb"))
    assert res.summary["similarity"] == "embeddings"
    assert replay.count("/v1/embeddings") == 1  # pool and queries in one batched call


def test_tfidf_similarity():
    t = fs.TfIdf(["the cat sat", "stock prices rose", "a cat and a dog"])
    sims = t.similarities("my cat")
    assert sims[1] == 0.0 and sims[0] > 0 and sims[2] > 0
    assert max(t.similarities("the cat sat")) == pytest.approx(1.0)


def test_long_prompts_drop_demonstrations(replay):
    res = run_icl(cfg_for(replay, k=3, max_prompt_chars=1200))
    assert res.summary["demonstrations_dropped_for_length"] > 0
    assert all(len(r["body"]["messages"][0]["content"]) <= 1200 for r in replay.requests)


def test_single_text(replay):
    item = fs.instance_from_text(
        "Software maker Quillon was founded by Sara Lind .", "Quillon", "Sara Lind", "ORG", "PERSON"
    )
    assert item["token"][item["obj_start"] : item["obj_end"] + 1] == ["Sara", "Lind"]
    res = run_icl(cfg_for(replay, k=1), single=item)
    assert res.rows[0]["prediction"] == "org:founded_by"
    with pytest.raises(KgcError, match="--tail 'Bob' does not occur"):
        fs.instance_from_text("Ann met Carl .", "Ann", "Bob", "", "")


def test_bad_tacred_records(tmp_path, replay):
    bad = tmp_path / "t.json"
    rec = json.loads(TEST.read_text())[0]
    bad.write_text(
        json.dumps(
            [
                rec,
                {**rec, "subj_end": 99},
                {**rec, "token": "a b"},
                {**rec, "obj_start": 9, "obj_end": 8},
            ]
        ),
        encoding="utf-8",
    )
    with pytest.raises(KgcError) as exc:
        run_icl(load_icl_config(None, data={**_data(replay), "input": str(bad)}))
    msg = str(exc.value)
    assert "item 2: field 'subj_end' = 99 must be a token index in 0..13" in msg
    assert "item 3: field 'token' must be a non-empty list of strings" in msg
    assert "item 4: field 'obj_start' (9) is after 'obj_end' (8)" in msg


def _data(srv):
    return {
        "mode": "fewshot_re",
        "client": {"base_url": srv.base_url, "model": "m", "allow_no_key": True, "cache_dir": None},
        "fewshot_re": {"train": str(TRAIN)},
    }


def test_micro_prf_ignores_the_negative_label():
    s = fs.micro_prf(
        [("a", "a"), ("no_relation", "b"), ("c", "no_relation"), ("no_relation", "no_relation")],
        "no_relation",
    )
    assert (s["correct"], s["pred"], s["gold"]) == (1, 2, 2)
    assert s["accuracy"] == 0.5
