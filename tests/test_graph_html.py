"""The HTML view in headless Chromium with networking disabled: every node is drawn, search
and node selection work, mentions show their sentences, graph text cannot inject markup.
A screenshot is kept in out/test-artifacts/ (gitignored)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kgc.graph.config import GraphConfig

pytestmark = pytest.mark.timeout(600)  # includes installing chromium when it is missing
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "corpus"
ARTIFACTS = ROOT / "out" / "test-artifacts"
NO_NETWORK = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=5000",
]


def _find() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def find_chromium() -> str:
    """Debian's chromium; installed with apt-get (as root) when missing (else a skip)."""
    path = _find()
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed (needs root + apt-get)")
    cmd = ["apt-get", "install", "-y", "-q", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=240, env=env)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=env)
    path = _find()
    if not path:
        pytest.skip(f"chromium is not installable here: {done.stderr.strip()[-300:]}")
    return path


def browse(chromium: str, page: Path, tmp_path: Path, fragment: str = "", shot: Path | None = None):
    args = [chromium, *NO_NETWORK, f"--user-data-dir={tmp_path / 'profile'}"]
    if shot is not None:
        args += ["--window-size=1400,900", f"--screenshot={shot}"]
    else:
        args.append("--dump-dom")
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)<', dom, re.S)
    assert m, f"#{element_id} not in the page"
    return html.unescape(m.group(1))


def build(tmp_path: Path, rows_path: Path, **extra) -> tuple[dict, Path]:
    from kgc.graph.stream import run_build

    data = {
        "input": {"paths": [str(rows_path)]},
        "output": {"path": str(tmp_path / "graph")},
        "canonical": {"alias_file": str(CORPUS / "aliases.tsv")},
        "exports": ["html"],
        **extra,
    }
    summary = run_build(GraphConfig.model_validate(data), progress=False)
    return summary, tmp_path / "graph"


def test_page_is_self_contained(tmp_path):
    summary, d = build(tmp_path, CORPUS / "demo.jsonl")
    for name in ("graph.html", "documents.html"):  # the graph view and the document view
        page = (d / name).read_text(encoding="utf-8")
        assert "<link" not in page and "@import" not in page and "url(" not in page
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
        assert "default-src 'none'" in page  # the page itself forbids every fetch
        assert "fetch(" not in page and "XMLHttpRequest" not in page
    assert summary["exports"]["html"]["nodes_shown"] == summary["nodes"]
    assert summary["exports"]["html"]["documents"]["documents_shown"] == 9


def test_headless_chromium_shows_every_node_search_and_mentions(chromium, tmp_path):
    from kgc.graph.stream import read_graph

    summary, d = build(tmp_path, CORPUS / "demo.jsonl")
    nodes, edges = read_graph(d)
    obama = next(n for n in nodes if n["name"] == "Barack Obama")
    dom = browse(chromium, d / "graph.html", tmp_path, f"q=obama&select={obama['id']}")
    assert text_of(dom, "status") == "ready"
    assert int(text_of(dom, "rendered-node-count")) == len(nodes) == summary["nodes"]
    assert int(text_of(dom, "rendered-edge-count")) == len(edges) == summary["edges"]
    assert dom.count('class="node ') == len(nodes)
    hits = [n for n in nodes if any("obama" in s.lower() for s in [n["name"], *n["aliases"]])]
    assert int(text_of(dom, "match-count")) == len(hits) >= 2
    # the clicked (selected) node: its details and every mention's sentence
    assert f'data-node="{obama["id"]}"' in dom
    m = re.search(r'id="mention-list" data-mentions="(\d+)"', dom)
    assert m and int(m.group(1)) == min(obama["mention_count"], 20)
    page_text = html.unescape(re.sub(r"<[^>]+>", "", dom))
    for mention in obama["mentions"][:20]:
        assert mention["sentence"] in page_text
    marked = {html.unescape(x) for x in re.findall(r"<mark>(.*?)</mark>", dom)}
    assert marked == {"Barack Obama", "Obama", "barack  obama"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "graph.png"
    shot.unlink(missing_ok=True)
    browse(chromium, d / "graph.html", tmp_path, f"select={obama['id']}", shot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_node_cap_and_markup_in_names_stays_text(chromium, tmp_path):
    from conftest import write_jsonl

    evil = '</script><img src=x onerror="document.title=1"><b>bold</b>'
    docs = [
        {
            "id": f"d{i}",
            "text": f"{evil} met P{i}.",
            "entity": [
                {"entity": evil, "entity_type": "person"},
                {"entity": f"P{i}", "entity_type": "person"},
            ],
        }
        for i in range(30)
    ]
    src = write_jsonl(tmp_path / "evil.jsonl", docs)
    summary, d = build(tmp_path, src, html={"max_nodes": 5, "title": "<i>t</i>"})
    assert summary["nodes"] == 31
    from kgc.graph.stream import read_graph

    bad = next(n for n in read_graph(d)[0] if n["name"] == evil)
    dom = browse(chromium, d / "graph.html", tmp_path, f"select={bad['id']}")
    assert text_of(dom, "status") == "ready"
    assert int(text_of(dom, "rendered-node-count")) == 5
    assert int(text_of(dom, "total-node-count")) == 31
    assert "<img" not in dom and "<b>bold" not in dom and "<i>t</i>" not in dom
    assert html.escape(evil, quote=False) in dom  # shown as text in the details panel
    page = json.dumps(evil)
    assert page not in (d / "graph.html").read_text(encoding="utf-8")  # `<` escaped in the data
