(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('doc-data').textContent);
  var colour = {}, tintOf = {}, docs = {}, activeEls = [];
  data.types.forEach(function (t) { colour[t.type] = t.colour; tintOf[t.type] = t.tint; });

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var x = document.createElement(tag);
    if (cls) x.className = cls;
    if (text !== undefined && text !== null) x.textContent = String(text);
    return x;
  }
  function clear(x) { while (x.firstChild) x.removeChild(x.firstChild); }
  function isNode(r) { return r.name !== undefined; }
  function recLine(r) {
    return isNode(r) ? r.name + ' (' + r.type + ', ' + r.kind + ')'
      : r.source + ' —' + r.type + '→ ' + r.target + ' (' + r.kind + ')';
  }
  function tasksText(tasks) {
    return Object.keys(tasks).map(function (t) {
      return (t || 'task not recorded') + (tasks[t] > 1 ? ' ×' + tasks[t] : '');
    }).join(', ');
  }
  function modelsText(models) {
    var ms = models.filter(function (m) { return m; });
    return ms.length ? 'model ' + ms.join(', ') : 'model not recorded';
  }
  function spanTitle(sp) {
    var lines = sp.recs.map(function (x) {
      var r = data.records[x.r];
      return recLine(r) + ' · confidence ' + r.confidence + ' · ' + tasksText(x.tasks) + ' · ' + modelsText(x.models);
    });
    if (sp.more) lines.push('+' + sp.more + ' more');
    return lines.join('\n');
  }

  // ---- documents: text pieces, marks (one per piece of a span), gaps
  function build(parent, pieces, entry) {
    pieces.forEach(function (p) {
      if (typeof p === 'string') {
        parent.appendChild(document.createTextNode(p));
      } else if (p.gap !== undefined) {
        var g = el('span', 'gap', '[…]');
        g.title = p.gap === null ? 'the rest of the document is not shown' : p.gap + ' characters not shown';
        parent.appendChild(g);
      } else {
        var sp = entry.spans[p.k], m = el('mark', 'sp');
        m.setAttribute('data-k', String(p.k));
        if (sp && sp.type !== null && colour[sp.type]) {
          m.style.background = tintOf[sp.type];
          m.style.borderBottomColor = colour[sp.type];
        }
        if (sp) m.title = spanTitle(sp);
        (entry.marks[p.k] = entry.marks[p.k] || []).push(m);
        m.addEventListener('click', function (ev) {
          ev.stopPropagation();
          show(entry.d.id, [p.k], false);
          try { history.replaceState(null, '', '#doc=' + encodeURIComponent(entry.d.id) + '&span=' + p.k); } catch (e) { /* file: URLs may refuse */ }
        });
        build(m, p.c, entry);
        parent.appendChild(m);
      }
    });
  }
  function renderDocs() {
    var box = $('docs'), toc = $('toc'), spans = 0;
    data.documents.forEach(function (d) {
      var entry = { d: d, spans: {}, marks: {} };
      d.spans.forEach(function (sp) { entry.spans[sp.k] = sp; });
      var sec = el('section', 'doc');
      sec.setAttribute('data-doc', d.id);
      sec.appendChild(el('h2', null, d.id));
      d.notes.forEach(function (n) { sec.appendChild(el('div', 'note', n)); });
      var text = el('div', 'text');
      build(text, d.body, entry);
      sec.appendChild(text);
      var n = Object.keys(entry.marks).length;
      sec.setAttribute('data-spans', String(n));
      spans += n;
      entry.section = sec;
      docs[d.id] = entry;
      box.appendChild(sec);
      var a = el('a', null, d.id + ' ');
      a.href = '#doc=' + encodeURIComponent(d.id);
      a.appendChild(el('span', 'n', '(' + n + ')'));
      toc.appendChild(a);
    });
    $('rendered-doc-count').textContent = String(data.documents.length);
    $('total-doc-count').textContent = String(data.total_docs);
    $('rendered-span-count').textContent = String(spans);
  }

  // ---- the details of a span: every record there, its confidence, tasks and models
  function spanDetails(entry, sp) {
    var box = el('div', 'span');
    box.appendChild(el('div', 'surface', sp.text));
    box.appendChild(el('div', 'meta', entry.d.id + ' [' + sp.s + '–' + sp.e + ') · span ' + sp.k));
    sp.recs.forEach(function (x) {
      var r = data.records[x.r], rec = el('div', 'rec');
      rec.setAttribute('data-record', r.id);
      var head = el('div');
      var badge = el('span', 'badge', isNode(r) ? r.type : r.kind);
      badge.style.background = isNode(r) ? (colour[r.type] || '#999') : '#777';
      head.appendChild(badge);
      head.appendChild(document.createTextNode(' '));
      head.appendChild(el('span', 'name', isNode(r) ? r.name : r.source + ' —' + r.type + '→ ' + r.target));
      rec.appendChild(head);
      rec.appendChild(el('div', 'meta', r.kind + ' · confidence ' + r.confidence + ' (support ' + r.support +
        ', ' + r.mentions + ' mentions in the graph)'));
      rec.appendChild(el('div', 'meta', 'here: ' + tasksText(x.tasks) + ' · role ' + x.roles.join(', ') +
        ' · ' + modelsText(x.models)));
      if (r.in_graph) {
        var a = el('a', 'graph-link', 'open in the graph view');
        a.href = data.graph + '#' + (isNode(r) ? 'select=' : 'edge=') + encodeURIComponent(r.id);
        rec.appendChild(a);
      }
      box.appendChild(rec);
    });
    if (sp.more) box.appendChild(el('div', 'hint', '+' + sp.more + ' more records at this place'));
    return box;
  }
  function show(docId, ks, scroll) {
    activeEls.forEach(function (x) { x.classList.remove('active'); });
    activeEls = [];
    var panel = $('span-details'), entry = docs[docId];
    clear(panel);
    panel.setAttribute('data-doc', entry ? docId : '');
    panel.setAttribute('data-span', entry ? ks.join(',') : '');
    if (!entry) {
      panel.appendChild(el('p', 'hint', 'document ' + docId + ' is not in this view (see the notes above)'));
      return false;
    }
    entry.section.classList.add('active');
    activeEls.push(entry.section);
    var first = null;
    ks.forEach(function (k) {
      var marks = entry.marks[k] || [];
      marks.forEach(function (m) { m.classList.add('active'); activeEls.push(m); });
      if (!first && marks.length) first = marks[0];
      if (entry.spans[k]) panel.appendChild(spanDetails(entry, entry.spans[k]));
      else panel.appendChild(el('p', 'hint', 'span ' + k + ' of this document is not highlighted here (see its notes)'));
    });
    if (!ks.length) panel.appendChild(el('p', 'hint', docId + ': click a highlighted span'));
    if (scroll) (first || entry.section).scrollIntoView({ block: first ? 'center' : 'start' });
    return true;
  }

  // ---- legend, notes, deep links
  function legend() {
    var box = $('legend');
    data.types.forEach(function (t) {
      var it = el('span', 'item'), sw = el('span', 'sw');
      sw.style.background = t.colour;
      it.appendChild(sw);
      it.appendChild(document.createTextNode(t.type + ' (' + t.count + ')'));
      it.setAttribute('data-type', t.type);
      box.appendChild(it);
    });
  }
  function params() {
    var out = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var i = kv.indexOf('=');
      if (i <= 0) return;
      try { out[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1)); } catch (e) { /* malformed */ }
    });
    return out;
  }
  function route() {
    var p = params();
    if (p.doc === undefined) return;
    var ks = (p.span || '').split(',').filter(function (s) { return /^\d+$/.test(s); }).map(Number);
    show(p.doc, ks, true);
  }

  renderDocs();
  legend();
  data.notes.forEach(function (n) { $('notes').appendChild(el('div', null, n)); });
  $('graph-link').href = data.graph;
  window.addEventListener('hashchange', route);
  route();
  $('status').textContent = 'ready';
})();
