// kgc review: the page over the review API. Document text and facts are data: they reach
// the page through textContent only. Every decision is POSTed at once; the page shows
// what the server answers (the file is the state, so a reload shows the same).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("key")) sessionStorage.setItem("kgc-review-key", params.get("key"));
  const key = sessionStorage.getItem("kgc-review-key");
  const state = { queue: [], relations: [], doc: null, current: 0, newHead: null, newTail: null };

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  async function api(path, body) {
    const opts = { headers: { "Content-Type": "application/json" } };
    if (key) opts.headers.Authorization = "Bearer " + key;
    if (body !== undefined) { opts.method = "POST"; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const d = data.detail || {};
      const msg = typeof d === "string" ? d : (d.field ? d.field + ": " : "") + (d.message || r.status);
      throw new Error(msg);
    }
    return data;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function renderQueue() {
    const nav = $("queue");
    nav.replaceChildren();
    let done = 0;
    for (const d of state.queue) {
      const a = el("a", d.id, d.done ? "done" : "");
      if (state.doc && d.id === state.doc.id) a.classList.add("current");
      a.href = "#doc=" + encodeURIComponent(d.id);
      a.dataset.doc = d.id;
      a.append(el("span", d.score.toFixed(2), "score"));
      a.addEventListener("click", (ev) => { ev.preventDefault(); open(d.id); });
      nav.append(a);
      done += d.done ? 1 : 0;
    }
    $("progress").textContent = done + " of " + state.queue.length + " documents done";
  }

  // the text cut at every fact span boundary; a piece knows its start offset (data-s)
  function renderText() {
    const doc = state.doc, box = $("doc-text");
    const spans = [];
    doc.facts.forEach((f, i) => {
      if (f.status === "rejected") return;
      for (const end of ["head", "tail"]) {
        const sp = f[end + "_span"];
        if (sp) spans.push({ s: sp[0], e: sp[1], i: i, end: end });
      }
    });
    const cuts = new Set([0, doc.text.length]);
    for (const sp of spans) { cuts.add(sp.s); cuts.add(sp.e); }
    const bounds = [...cuts].sort((a, b) => a - b);
    box.replaceChildren();
    for (let j = 0; j + 1 < bounds.length; j++) {
      const a = bounds[j], b = bounds[j + 1];
      const over = spans.filter((sp) => sp.s <= a && sp.e >= b);
      const piece = el("span", doc.text.slice(a, b));
      piece.dataset.s = String(a);
      if (over.length) {
        piece.classList.add("m");
        const mine = over.find((sp) => sp.i === state.current);
        if (mine) piece.classList.add(mine.end);
        piece.title = over.map((sp) => doc.facts[sp.i].relation + " (" + sp.end + ")").join(", ");
      }
      box.append(piece);
    }
  }

  function renderFacts() {
    const ol = $("facts");
    ol.replaceChildren();
    state.doc.facts.forEach((f, i) => {
      const li = el("li", undefined, f.status + (i === state.current ? " current" : ""));
      li.dataset.fact = String(i);
      const triple = el("span", undefined, "triple");
      triple.append(el("b", f.head), el("span", " —" + f.relation + "→ "), el("b", f.tail));
      li.append(triple, el("span", f.status, "status"), document.createElement("br"));
      const sel = el("select", undefined, "relation");
      for (const r of state.relations) {
        const o = el("option", r);
        o.value = r;
        if (r === f.relation) o.selected = true;
        sel.append(o);
      }
      sel.addEventListener("change", () => decide({ op: "relation", fact: i, relation: sel.value }));
      const acc = el("button", "accept", "accept");
      acc.type = "button";
      acc.addEventListener("click", () => decide({ op: "accept", fact: i }));
      const rej = el("button", "reject", "reject");
      rej.type = "button";
      rej.addEventListener("click", () => decide({ op: "reject", fact: i }));
      li.append(sel, acc, rej);
      li.addEventListener("click", (ev) => {
        if (ev.target.tagName === "LI" || ev.target.closest(".triple")) { state.current = i; render(); }
      });
      ol.append(li);
    });
  }

  function renderNew() {
    const sel = $("new-relation");
    if (!sel.options.length) {
      for (const r of state.relations) { const o = el("option", r); o.value = r; sel.append(o); }
    }
    $("new-head").textContent = state.newHead ? state.newHead.text : "(select text, press s)";
    $("new-tail").textContent = state.newTail ? state.newTail.text : "(select text, press o)";
  }

  function render() {
    $("doc-title").textContent = state.doc.id + (state.doc.done ? " (done)" : "");
    $("mark-done").textContent = state.doc.done ? "Mark not done (d)" : "Mark document done (d)";
    renderText();
    renderFacts();
    renderNew();
    renderQueue();
  }

  // the selection as [start, end) offsets in the document text, or null
  function selection() {
    const s = window.getSelection();
    if (!s || s.rangeCount === 0 || s.isCollapsed) return null;
    const r = s.getRangeAt(0);
    const at = (node, off) => {
      const piece = (node.nodeType === 3 ? node.parentElement : node).closest("#doc-text > span");
      return piece ? Number(piece.dataset.s) + off : null;
    };
    let a = at(r.startContainer, r.startOffset), b = at(r.endContainer, r.endOffset);
    if (a === null || b === null) return null;
    const text = state.doc.text;
    while (a < b && /\s/.test(text[a])) a++;  // a double-click takes the space after a word
    while (b > a && /\s/.test(text[b - 1])) b--;
    return b > a ? { span: [a, b], text: text.slice(a, b) } : null;
  }

  async function decide(decision) {
    if (decision.fact !== undefined) {
      const f = state.doc.facts[decision.fact];
      decision.expect = { head: f.head, relation: f.relation, tail: f.tail };
    }
    status("saving…");
    try {
      state.doc = await api("/api/documents/" + encodeURIComponent(state.doc.id) + "/decisions", decision);
      const q = state.queue.find((d) => d.id === state.doc.id);
      if (q) { q.done = state.doc.done; q.reviewed = true; }
      status("saved");
    } catch (e) {
      status(e.message, true);
    }
    render();
  }

  async function open(id) {
    try {
      state.doc = await api("/api/documents/" + encodeURIComponent(id));
      state.current = 0;
      state.newHead = state.newTail = null;
      history.replaceState(null, "", "#doc=" + encodeURIComponent(id));
      render();
      status("ready");
    } catch (e) { status(e.message, true); }
  }

  function step(docs) {
    const i = state.queue.findIndex((d) => d.id === state.doc.id);
    const next = state.queue[i + docs];
    if (next) open(next.id);
  }

  function add() {
    if (!state.newHead || !state.newTail) { status("select the subject (s) and object (o) first", true); return; }
    decide({ op: "add", head: state.newHead.span, relation: $("new-relation").value, tail: state.newTail.span })
      .then(() => { if (!$("status").classList.contains("error")) { state.newHead = state.newTail = null; renderNew(); } });
  }

  document.addEventListener("keydown", (ev) => {
    if (!state.doc || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT") return;
    const n = state.doc.facts.length, k = ev.key;
    const sel = () => selection();
    if (k === "j" && n) { state.current = Math.min(n - 1, state.current + 1); render(); }
    else if (k === "k" && n) { state.current = Math.max(0, state.current - 1); render(); }
    else if (k === "a" && n) decide({ op: "accept", fact: state.current });
    else if (k === "x" && n) decide({ op: "reject", fact: state.current });
    else if (k === "r" && n) { const s = $("facts").querySelector("li.current select"); if (s) s.focus(); }
    else if ((k === "h" || k === "t") && n) {
      const s = sel();
      if (s) decide({ op: k === "h" ? "head" : "tail", fact: state.current, span: s.span });
      else status("select text first", true);
    } else if (k === "s" || k === "o") {
      const s = sel();
      if (!s) { status("select text first", true); return; }
      if (k === "s") state.newHead = s; else state.newTail = s;
      renderNew();
    } else if (k === "n") add();
    else if (k === "d") decide({ op: "done", done: !state.doc.done });
    else if (k === "]") step(1);
    else if (k === "[") step(-1);
    else return;
    ev.preventDefault();
  });
  $("add-fact").addEventListener("click", add);
  $("mark-done").addEventListener("click", () => decide({ op: "done", done: !state.doc.done }));
  // buttons keep the text selection (mousedown would clear it)
  for (const b of [$("add-fact")]) b.addEventListener("mousedown", (ev) => ev.preventDefault());

  (async function start() {
    try {
      const q = await api("/api/queue");
      state.queue = q.documents;
      state.relations = q.relations;
      const want = new URLSearchParams(location.hash.slice(1)).get("doc");
      const first = state.queue.find((d) => d.id === want) || state.queue.find((d) => !d.done) || state.queue[0];
      if (first) await open(first.id); else status("no documents", true);
    } catch (e) { status(e.message, true); }
  })();
})();
