"""Progress: a bar redrawn in place on a terminal, plain lines elsewhere; the closing summary
blocks of extract, icl and graph build."""

from __future__ import annotations

import io

from kgc.progress import Rate, done_block, on_terminal


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal(monkeypatch):
    monkeypatch.delenv("KGC_PROGRESS", raising=False)
    out = io.StringIO()
    assert not on_terminal(out)
    rate = Rate("kgc extract", 4, stream=out)
    for done in (2, 4):
        rate.show(done)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("[kgc extract] 2/4 rows") and "ETA" in lines[0]
    assert lines[1].startswith("[kgc extract] 4/4 rows") and "done in" in lines[1]


def test_one_bar_redrawn_on_a_terminal(monkeypatch):
    monkeypatch.delenv("KGC_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    assert on_terminal(out)
    rate = Rate("kgc extract", 10, stream=out)
    for done in (3, 7, 10):
        rate.show(done)
    text = out.getvalue()
    assert "\r" in text and "[kgc extract]" in text
    assert "10/10" in text and text.count("\n") <= 1  # redrawn in place, one line kept
    assert "[kgc extract] 3/10 rows," not in text  # no plain lines


def test_environment_overrides_the_choice(monkeypatch):
    monkeypatch.setenv("KGC_PROGRESS", "plain")
    assert not on_terminal(Tty())
    monkeypatch.setenv("KGC_PROGRESS", "bar")
    assert on_terminal(io.StringIO())


def test_done_block_skips_empty_items():
    out = io.StringIO()
    text = done_block("kgc x: done in 0:03", [("rows", 3), ("failed", None), ("files", {})], out)
    assert text == out.getvalue().rstrip("\n")
    assert text.splitlines() == ["kgc x: done in 0:03", "  rows:        3"]


def test_extract_block_names_counts_outputs_and_scores(tmp_path, capsys):
    from kgc.cli import extract_block

    summary = {
        "documents": 2, "rows": 4, "rows_this_run": 3, "rows_skipped_resume": 1, "records": 5,
        "parse_error_rate": 0.25, "seconds": 65.0, "rows_per_s": 0.05, "shards_corrupt": 1,
        "rows_duplicate": 0, "rows_not_in_input": 0, "output": str(tmp_path),
        "predictions": str(tmp_path / "predictions.jsonl"),
    }  # fmt: skip
    scores = {"scores": {"triple": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3}}}
    text = extract_block(summary, scores)
    assert text == capsys.readouterr().err.rstrip("\n")
    assert text.startswith("kgc extract: done in 1:05, 0.05 rows/s")
    assert "4 from 2 documents (1 done by an earlier run)" in text
    assert "1 rows (25.0 %)" in text and "shards_corrupt 1" in text
    assert "rows_duplicate" not in text  # zero counts are not listed
    assert f"{tmp_path / 'documents.jsonl'}" in text and "predictions.jsonl" in text
    assert "P 0.500  R 0.250  F1 0.333" in text and f"{tmp_path / 'summary.json'}" in text


def test_train_progress_draws_a_bar_on_a_terminal(monkeypatch, capsys):
    from kgc.trainlog import Progress

    monkeypatch.setenv("KGC_PROGRESS", "bar")
    p = Progress("run1")
    assert p.bar_mode
    p({"event": "start", "total_steps": 4, "step": 0, "time": 0.0})
    p({"step": 2, "loss": 1.5, "lr": 1e-3, "tokens_per_s": 900.0, "time": 1.0})
    p({"step": 4, "loss": 1.25, "time": 2.0, "checkpoint": "ckpt"})
    err = capsys.readouterr().err
    assert "[kgc train] starting run1 fresh: 4 steps" in err
    assert "\r" in err and "4/4" in err and "loss 1.2500" in err and "lr 1.00e-03" in err
    assert "step 4: checkpoint saved" in err
    assert "[kgc train] step 2/4" not in err  # the bar, not lines


def test_icl_and_graph_blocks(capsys):
    from kgc.graph.cli import build_block
    from kgc.icl.cli import icl_block

    g = build_block({
        "nodes": 3, "edges": 2, "node_mentions": 5, "edge_mentions": 4, "dropped_total": 1,
        "dropped": {"no_text": 1}, "output": "/tmp/g", "exports": {"graphml": "/tmp/g/x.graphml"},
        "seconds": 3,
    })  # fmt: skip
    assert g.splitlines()[:3] == [
        "kgc graph build: done in 0:03",
        "  graph:       3 nodes, 2 edges (5 + 4 mentions)",
        "  dropped:     1 records: {'no_text': 1}",
    ]
    assert "export graphml: /tmp/g/x.graphml" in g and "/tmp/g/summary.json" in g
    i = icl_block({
        "mode": "llmicl", "requests": 4, "cache_hits": 1, "retries": 0, "failed_requests": 0,
        "model": "m", "base_url": "http://127.0.0.1:1/v1", "seconds": 2,
        "files": {"predictions": "/tmp/p.jsonl"},
    })  # fmt: skip
    assert i.startswith("kgc icl (llmicl): done in 0:02")
    assert "4 (1 from the cache, 0 retries)" in i and "failed" not in i
    assert "predictions: /tmp/p.jsonl" in i
    assert capsys.readouterr().err == g + "\n" + i + "\n"
