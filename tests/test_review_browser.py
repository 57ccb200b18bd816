"""`kgc review` in a real browser: headless Debian chromium driven by Playwright (no browser
download; `executable_path`). Reject a fact, add one by selecting a span of the text, reload,
and find both in the corrections file. A screenshot of the review page is kept as a test
artifact ($KGC_TEST_ARTIFACTS, default out/test-artifacts/, gitignored)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.review import DOCS, extraction

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


def chromium_path() -> str:
    path = os.environ.get("KGC_CHROMIUM") or shutil.which("chromium")
    path = path or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium binary (apt-get install chromium, or set KGC_CHROMIUM)")
    return path


@pytest.fixture
def server(tmp_path, monkeypatch):
    import uvicorn

    from kgc.review_app import create_app

    monkeypatch.delenv("KGC_API_KEYS", raising=False)
    folder = extraction(tmp_path / "extract", DOCS)
    corrections = tmp_path / "corrections.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = uvicorn.Config(create_app(folder, corrections), host="127.0.0.1", port=port,
                         log_level="warning")  # fmt: skip
    srv = uvicorn.Server(cfg)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}", corrections
    srv.should_exit = True
    t.join(10)


def test_reject_a_fact_add_one_by_selection_reload_and_find_both(server):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (dev extra)"
    )
    expect = playwright.expect
    exe = chromium_path()
    url, corrections = server
    artifacts = Path(os.environ.get("KGC_TEST_ARTIFACTS") or ROOT / "out" / "test-artifacts")
    text = DOCS[0]["text"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(f"{url}/#doc=d1")
        expect(page.locator("#status")).to_have_text("ready")
        assert page.locator("#doc-text").text_content() == text
        assert page.locator("#facts li").count() == 2
        # reject the second fact with its button
        page.locator("#facts li").nth(1).locator("button.reject").click()
        expect(page.locator("#status")).to_have_text("saved")

        # select "Ada Lovelace" and "London" in the text (a DOM Range), s / o, then add
        def select(word: str) -> None:
            page.evaluate(
                """([word]) => {
                  const box = document.getElementById('doc-text');
                  const full = box.textContent, at = full.indexOf(word);
                  const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
                  let pos = 0, range = document.createRange(), n;
                  while ((n = walker.nextNode())) {
                    const len = n.data.length;
                    if (at >= pos && at < pos + len) range.setStart(n, at - pos);
                    if (at + word.length > pos && at + word.length <= pos + len) {
                      range.setEnd(n, at + word.length - pos); break; }
                    pos += len;
                  }
                  const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
                }""",
                [word],
            )

        select("Ada Lovelace")
        page.keyboard.press("s")
        select("London")
        page.keyboard.press("o")
        page.select_option("#new-relation", "located_in")
        page.keyboard.press("n")
        expect(page.locator("#facts li")).to_have_count(3)
        page.reload()
        expect(page.locator("#status")).to_have_text("ready")
        statuses = page.locator("#facts li .status").all_text_contents()
        assert statuses == ["model", "rejected", "added"]
        assert page.locator("#facts li.rejected .triple").text_content() == (
            "Ada Lovelace —works_for→ Analytical Society"
        )
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "review.png"), full_page=True)
        browser.close()
    rec = json.loads(corrections.read_text())
    assert rec["id"] == "d1" and rec["text"] == text
    assert rec["relation"] == [
        {"head": "Ada Lovelace", "relation": "born_in", "tail": "London"},
        {"head": "Ada Lovelace", "relation": "located_in", "tail": "London"},
    ]
    added = rec["review"]["facts"][2]
    assert added["head_span"] == [0, 12] and text[slice(*added["tail_span"])] == "London"
    assert (artifacts / "review.png").stat().st_size > 10_000
