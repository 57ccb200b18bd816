"""`kgc review`: the core (documents and facts from an extraction folder, the queue, the
decisions applied to the corrections file) and every endpoint of its API, bad input
included (4xx naming the field, never 500). The browser test: tests/test_review_browser.py."""

from __future__ import annotations

import json
import threading

import pytest

from kgc.errors import KgcError
from kgc.review.corpus import Signals, load_corpus
from kgc.review.corrections import Corrections, ReviewError, apply, seed
from kgc.review.queue import review_queue
from tests.support.review import DOCS, RELATIONS, extraction


@pytest.fixture
def folder(tmp_path):
    return extraction(tmp_path / "extract", DOCS)


# ----------------------------------------------------------------------------- core
def test_corpus_puts_chunks_back_and_counts_signals(folder):
    docs, relations = load_corpus(folder)
    assert relations == RELATIONS and list(docs) == ["d1", "d2", "d3", "d4"]
    assert docs["d2"].text == DOCS[1]["text"]  # two overlapping chunks stitched
    s = docs["d2"].signals
    assert (s.rows, s.facts, s.not_spans, s.empty_rows) == (2, 2, 1, 1)
    assert docs["d3"].signals.error_rows == 1


def test_queue_puts_unsure_documents_first_and_ties_by_id():
    sig = {
        "a-sure": Signals(rows=1, facts=2),
        "b-error": Signals(rows=2, error_rows=1, facts=1),
        "c-not-span": Signals(rows=1, facts=2, not_spans=1),
        "d-empty": Signals(rows=1),
        "e-unsure": Signals(rows=1, facts=1, min_logprob=-2.0),
        "f-sure": Signals(rows=1, facts=1, min_logprob=-0.01),
        "0-sure": Signals(rows=1, facts=2),
    }
    order = [d for d, _ in review_queue(sig)]
    assert order == ["b-error", "e-unsure", "c-not-span", "d-empty", "f-sure", "0-sure", "a-sure"]


def test_queue_reads_answer_logprobs(folder):
    from kgc.review.corpus import LOGPROBS
    from kgc.shards import read_rows

    rows = {r["doc_id"]: r["id"] for r in read_rows(folder)}
    (folder / LOGPROBS).write_text(json.dumps({"id": rows["d1"], "logprob": -3.0}) + "\n")
    docs, _ = load_corpus(folder)
    assert docs["d1"].signals.min_logprob == -3.0
    assert review_queue({d: x.signals for d, x in docs.items()})[1][0] == "d1"


def test_decisions_reject_edit_add_done(folder):
    docs, relations = load_corpus(folder)
    doc = docs["d1"]
    rec = apply(seed(doc), doc, {"op": "reject", "fact": 1}, relations)
    rec = apply(rec, doc, {"op": "relation", "fact": 0, "relation": "works_for"}, relations)
    start = doc.text.index("London")
    rec = apply(rec, doc, {"op": "tail", "fact": 0, "span": [start, start + 6]}, relations)
    rec = apply(rec, doc, {"op": "add", "head": [0, 12], "relation": "born_in",
                           "tail": [start, start + 6]}, relations)  # fmt: skip
    rec = apply(rec, doc, {"op": "done"}, relations)
    assert rec["relation"] == [
        {"head": "Ada Lovelace", "relation": "works_for", "tail": "London"},
        {"head": "Ada Lovelace", "relation": "born_in", "tail": "London"},
    ]
    assert [f["status"] for f in rec["review"]["facts"]] == ["edited", "rejected", "added"]
    assert rec["review"]["done"] is True and rec["id"] == "d1" and rec["text"] == doc.text


@pytest.mark.parametrize(
    "decision, field",
    [
        ({"op": "nope"}, "op"),
        ({"op": "reject", "fact": 9}, "fact"),
        ({"op": "reject", "fact": "0"}, "fact"),
        ({"op": "relation", "fact": 0, "relation": "married_to"}, "relation"),
        ({"op": "head", "fact": 0, "span": [5, 500]}, "span"),
        ({"op": "head", "fact": 0, "span": [5, 5]}, "span"),
        ({"op": "head", "fact": 0, "span": [12, 13]}, "span"),  # a blank
        ({"op": "add", "head": [0, 12], "relation": "born_in", "tail": [-1, 3]}, "tail"),
        ({"op": "accept", "fact": 0, "expect": {"head": "x", "relation": "y", "tail": "z"}},
         "expect"),
        ({"op": "done", "done": "yes"}, "done"),
    ],
)  # fmt: skip
def test_bad_decisions_name_the_field(folder, decision, field):
    docs, relations = load_corpus(folder)
    with pytest.raises(ReviewError) as exc:
        apply(seed(docs["d1"]), docs["d1"], decision, relations)
    assert exc.value.field == field and 400 <= exc.value.status < 500


def test_concurrent_decisions_all_land_in_the_file(folder, tmp_path):
    docs, relations = load_corpus(folder)
    store = Corrections(tmp_path / "c.jsonl")
    doc = docs["d4"]
    text = doc.text

    def add(i):
        w = text.split()[i % 5]
        s = text.index(w)
        store.decide(doc, {"op": "add", "head": [s, s + len(w)], "relation": RELATIONS[i // 5],
                           "tail": [0, 7]}, relations)  # fmt: skip

    threads = [threading.Thread(target=add, args=(i,)) for i in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(Corrections(tmp_path / "c.jsonl").read()["d4"]["relation"]) == 15
    assert not list(tmp_path.glob(".c.jsonl.*.tmp"))


def test_a_damaged_corrections_file_is_an_error_naming_the_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "d1", "relation": []}\n{"text": "no id"}\n')
    with pytest.raises(KgcError, match="c.jsonl:2"):
        Corrections(f)


def test_kgc_convert_reads_the_corrections_file_as_it_is(folder, tmp_path):
    """The file the app writes is DeepKE raw RE: `kgc convert --task RE` turns it into
    IEPile training records with the reviewed facts as targets."""
    from kgc.cli import main

    docs, relations = load_corpus(folder)
    store = Corrections(tmp_path / "c.jsonl")
    store.decide(docs["d1"], {"op": "reject", "fact": 1}, relations)
    store.decide(docs["d2"], {"op": "done"}, relations)
    schema = tmp_path / "schema.json"
    schema.write_text(f"[]\n{json.dumps(RELATIONS)}\n{{}}\n")
    out = tmp_path / "train.jsonl"
    rc = main(["convert", "--task", "RE", "--input", str(tmp_path / "c.jsonl"), "--schema",
               str(schema), "--output", str(out), "--language", "en", "--split-num", "-1"])  # fmt: skip
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    targets = [json.loads(r["output"]) for r in rows]
    assert {"born_in": [{"subject": "Ada Lovelace", "object": "London"}]} in [
        {k: v for k, v in t.items() if v} for t in targets
    ]
    assert not any("Analytical Society" in r["output"] for r in rows)  # the rejected fact


# ----------------------------------------------------------------------------- API
@pytest.fixture
def client(folder, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from kgc.review_app import create_app

    monkeypatch.delenv("KGC_API_KEYS", raising=False)
    return TestClient(create_app(folder, tmp_path / "c.jsonl"), raise_server_exceptions=False)


def _post(client, doc, body):
    return client.post(f"/api/documents/{doc}/decisions", json=body)


def test_api_queue_document_and_decisions(client, tmp_path):
    page = client.get("/")
    assert page.status_code == 200 and "review.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get("/static/review.js").status_code == 200
    q = client.get("/api/queue").json()
    assert [d["id"] for d in q["documents"]] == ["d3", "d2", "d4", "d1"]
    assert q["relations"] == RELATIONS
    d = client.get("/api/documents/d1").json()
    assert d["facts"][0]["head_span"] == [0, 12] and d["reviewed"] is False
    r = _post(client, "d1", {"op": "reject", "fact": 1})
    assert r.status_code == 200 and r.json()["facts"][1]["status"] == "rejected"
    s = DOCS[0]["text"].index("London")
    r = _post(client, "d1", {"op": "add", "head": [0, 12], "relation": "located_in",
                             "tail": [s, s + 6]})  # fmt: skip
    assert r.status_code == 200
    assert _post(client, "d1", {"op": "done"}).json()["done"] is True
    rec = json.loads((tmp_path / "c.jsonl").read_text())
    assert rec["id"] == "d1" and rec["text"] == DOCS[0]["text"]
    assert {"head": "Ada Lovelace", "relation": "located_in", "tail": "London"} in rec["relation"]
    assert len(rec["relation"]) == 2
    assert client.get("/api/queue").json()["documents"][-1] == {
        "id": "d1", "score": 0.0, "facts": 2, "reviewed": True, "done": True}  # fmt: skip


@pytest.mark.parametrize(
    "doc, body, status, field",
    [
        ("nope", {"op": "done"}, 404, "doc_id"),
        ("d1", {"op": "head", "fact": 0, "span": [0, 999]}, 422, "span"),
        ("d1", {"op": "relation", "fact": 0, "relation": "married_to"}, 422, "relation"),
        ("d1", {"op": "accept", "fact": 7}, 404, "fact"),
        ("d1", ["not", "an", "object"], 422, "body"),
        ("d1", {"op": "add", "head": "Ada", "relation": "born_in", "tail": [0, 3]}, 422, "head"),
    ],
)
def test_api_bad_input_is_4xx_naming_the_field(client, doc, body, status, field):
    r = _post(client, doc, body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]["field"] == field
    assert client.get("/api/documents/nope").json()["detail"]["field"] == "doc_id"
    assert client.get("/static/../x").status_code == 404


def test_api_bad_body_and_size(client):
    r = client.post("/api/documents/d1/decisions", content=b"{not json")
    assert r.status_code == 422 and r.json()["detail"]["field"] == "body"
    r = client.post("/api/documents/d1/decisions", content=b"[" * 70_000)
    assert r.status_code == 413 and r.json()["detail"]["field"] == "body"


def test_api_key_like_serve(folder, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from kgc.review_app import check_bind, create_app

    monkeypatch.setenv("KGC_API_KEYS", "k1,k2")
    c = TestClient(create_app(folder, tmp_path / "c.jsonl"))
    assert c.get("/").status_code == 200  # the page holds no data
    r = c.get("/api/queue")
    assert r.status_code == 401 and r.json()["detail"]["field"] == "authorization"
    assert c.get("/api/queue", headers={"Authorization": "Bearer k2"}).status_code == 200
    check_bind("0.0.0.0", "KGC_API_KEYS")  # keys set: allowed
    monkeypatch.delenv("KGC_API_KEYS")
    with pytest.raises(KgcError, match="needs API keys"):
        check_bind("0.0.0.0", "KGC_API_KEYS")
    check_bind("127.0.0.1", "KGC_API_KEYS")


def test_state_lives_in_the_file_a_second_app_sees_it(folder, tmp_path, monkeypatch):
    """A restart (a new app on the same files) shows every decision made before it."""
    from fastapi.testclient import TestClient

    from kgc.review_app import create_app

    monkeypatch.delenv("KGC_API_KEYS", raising=False)
    one = TestClient(create_app(folder, tmp_path / "c.jsonl"))
    two = TestClient(create_app(folder, tmp_path / "c.jsonl"))
    assert _post(one, "d2", {"op": "reject", "fact": 1}).status_code == 200
    assert two.get("/api/documents/d2").json()["facts"][1]["status"] == "rejected"
    stale = {"op": "reject", "fact": 0, "expect": {"head": "x", "relation": "born_in", "tail": "y"}}
    assert _post(two, "d2", stale).status_code == 409
