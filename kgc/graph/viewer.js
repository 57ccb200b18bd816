
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('graph-data').textContent);
  var SVG = 'http://www.w3.org/2000/svg';
  var svg = document.getElementById('graph');
  var W = 1000, H = 700;
  var nodes = data.nodes, edges = data.edges;
  var byId = {}, colour = {}, edgeById = {};
  nodes.forEach(function (n, i) { n.index = i; byId[n.id] = n; });
  data.types.forEach(function (t) { colour[t.type] = t.colour; });
  edges = edges.filter(function (e) { return byId[e.source] && byId[e.target]; });
  edges.forEach(function (e) { edgeById[e.id] = e; });

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var x = document.createElement(tag);
    if (cls) x.className = cls;
    if (text !== undefined && text !== null) x.textContent = String(text);
    return x;
  }

  // ---- layout: Fruchterman-Reingold with a seeded PRNG (same picture every time)
  function layout() {
    var seed = 42;
    function rnd() {
      seed |= 0; seed = seed + 0x6D2B79F5 | 0;
      var t = Math.imul(seed ^ seed >>> 15, 1 | seed);
      t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    }
    var n = nodes.length;
    if (!n) return;
    var k = Math.sqrt(W * H / n) * 0.75;
    nodes.forEach(function (p) { p.x = W / 2 + (rnd() - 0.5) * W * 0.8; p.y = H / 2 + (rnd() - 0.5) * H * 0.8; });
    var iters = n <= 200 ? 300 : Math.max(40, Math.floor(3e7 / (n * n)));
    var temp = W / 10, cool = temp / (iters + 1);
    var dx = new Float64Array(n), dy = new Float64Array(n);
    for (var it = 0; it < iters; it++) {
      dx.fill(0); dy.fill(0);
      for (var i = 0; i < n; i++) {
        var a = nodes[i];
        for (var j = i + 1; j < n; j++) {
          var b = nodes[j], x = a.x - b.x, y = a.y - b.y, d2 = x * x + y * y + 0.01;
          var f = k * k / d2;
          dx[i] += x * f; dy[i] += y * f; dx[j] -= x * f; dy[j] -= y * f;
        }
      }
      edges.forEach(function (e) {
        var a = byId[e.source], b = byId[e.target];
        if (a === b) return;
        var x = a.x - b.x, y = a.y - b.y, d = Math.sqrt(x * x + y * y) + 0.01, f = d / k;
        dx[a.index] -= x * f; dy[a.index] -= y * f; dx[b.index] += x * f; dy[b.index] += y * f;
      });
      for (var m = 0; m < n; m++) {
        var p = nodes[m];
        dx[m] += (W / 2 - p.x) * 0.06 * k / 10; dy[m] += (H / 2 - p.y) * 0.06 * k / 10;
        var len = Math.sqrt(dx[m] * dx[m] + dy[m] * dy[m]) + 1e-9, step = Math.min(len, temp);
        p.x += dx[m] / len * step; p.y += dy[m] / len * step;
      }
      temp = Math.max(temp - cool, 0.5);
    }
  }

  // ---- drawing
  var nodeEls = {}, edgeEls = [];
  var unit = 1;
  function radius(n) { return unit * (4 + 3 * Math.log(1 + n.support)); }
  function draw() {
    var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    nodes.forEach(function (n) {
      minX = Math.min(minX, n.x); minY = Math.min(minY, n.y);
      maxX = Math.max(maxX, n.x); maxY = Math.max(maxY, n.y);
    });
    if (!nodes.length) { minX = minY = 0; maxX = W; maxY = H; }
    var pad = 40;
    view = { x: minX - pad, y: minY - pad, w: Math.max(maxX - minX + 2 * pad, 100), h: Math.max(maxY - minY + 2 * pad, 100) };
    setView();
    unit = Math.max(view.w, view.h) / 800;
    var ge = document.createElementNS(SVG, 'g'), gn = document.createElementNS(SVG, 'g');
    svg.appendChild(ge); svg.appendChild(gn);
    edges.forEach(function (e) {
      var a = byId[e.source], b = byId[e.target];
      var l = document.createElementNS(SVG, 'line');
      l.setAttribute('class', 'edge');
      l.setAttribute('x1', a.x); l.setAttribute('y1', a.y);
      l.setAttribute('x2', b.x); l.setAttribute('y2', b.y);
      l.setAttribute('stroke-width', String(1 + Math.log(e.support)));
      var t = document.createElementNS(SVG, 'title');
      t.textContent = a.name + ' —' + e.type + '→ ' + b.name + ' (support ' + e.support + ')';
      l.appendChild(t);
      l.__edge = e;
      l.addEventListener('click', function (ev) { ev.stopPropagation(); selectEdge(e.id); });
      ge.appendChild(l); edgeEls.push(l);
    });
    var ranked = nodes.slice().sort(function (a, b) { return b.support - a.support; });
    var labelled = {};
    ranked.slice(0, 150).forEach(function (n) { labelled[n.id] = true; });
    nodes.forEach(function (n) {
      var g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', 'n');
      var c = document.createElementNS(SVG, 'circle');
      c.setAttribute('class', 'node ' + n.kind);
      c.setAttribute('cx', n.x); c.setAttribute('cy', n.y);
      c.setAttribute('r', radius(n));
      c.setAttribute('fill', colour[n.type] || '#999');
      c.setAttribute('data-id', n.id);
      var t = document.createElementNS(SVG, 'title');
      t.textContent = n.name + ' (' + n.type + ', support ' + n.support + ')';
      c.appendChild(t);
      g.appendChild(c);
      if (labelled[n.id]) {
        var lab = document.createElementNS(SVG, 'text');
        lab.setAttribute('class', 'label');
        lab.setAttribute('x', n.x + radius(n) + 2 * unit); lab.setAttribute('y', n.y + 3.5 * unit);
        lab.setAttribute('font-size', String(11 * unit));
        lab.textContent = n.name;
        g.appendChild(lab);
      }
      c.addEventListener('click', function (ev) { ev.stopPropagation(); select(n.id); });
      gn.appendChild(g); nodeEls[n.id] = g;
    });
  }

  // ---- pan / zoom
  var view;
  function setView() { svg.setAttribute('viewBox', [view.x, view.y, view.w, view.h].join(' ')); }
  svg.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect(), s = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    var px = view.x + (ev.clientX - r.left) / r.width * view.w;
    var py = view.y + (ev.clientY - r.top) / r.height * view.h;
    view = { x: px - (px - view.x) * s, y: py - (py - view.y) * s, w: view.w * s, h: view.h * s };
    setView();
  }, { passive: false });
  var drag = null;
  svg.addEventListener('mousedown', function (ev) { drag = { x: ev.clientX, y: ev.clientY, v: view }; });
  window.addEventListener('mouseup', function () { drag = null; });
  window.addEventListener('mousemove', function (ev) {
    if (!drag) return;
    var r = svg.getBoundingClientRect();
    view = { x: drag.v.x - (ev.clientX - drag.x) / r.width * drag.v.w,
             y: drag.v.y - (ev.clientY - drag.y) / r.height * drag.v.h, w: drag.v.w, h: drag.v.h };
    setView();
  });

  // ---- legend
  function legend() {
    var box = $('legend');
    data.types.forEach(function (t) {
      var it = el('span', 'item'), sw = el('span', 'sw');
      sw.style.background = t.colour;
      it.appendChild(sw); it.appendChild(document.createTextNode(t.type + ' (' + t.count + ')'));
      it.setAttribute('data-type', t.type);
      box.appendChild(it);
    });
  }

  // ---- search
  function norm(s) { return String(s).normalize('NFKC').toLowerCase().replace(/\s+/g, ' ').trim(); }
  function search(q) {
    q = norm(q);
    var count = 0;
    nodes.forEach(function (n) {
      var g = nodeEls[n.id], hit = false;
      if (q) {
        hit = norm(n.name).indexOf(q) >= 0 || n.aliases.some(function (a) { return norm(a).indexOf(q) >= 0; });
      }
      g.classList.toggle('match', hit);
      g.classList.toggle('dim', !!q && !hit);
      if (hit) count++;
    });
    $('match-count').textContent = String(count);
    return count;
  }
  $('search').addEventListener('input', function () { search(this.value); });
  $('search').addEventListener('keydown', function (ev) {
    if (ev.key !== 'Enter') return;
    var first = nodes.filter(function (n) { return nodeEls[n.id].classList.contains('match'); })[0];
    if (first) select(first.id);
  });

  // ---- details
  function mentionBlock(grp) {
    var m = grp.m;
    var box = el('div', 'mention');
    var tasks = Object.keys(grp.tasks).map(function (t) { return t + (grp.tasks[t] > 1 ? ' ×' + grp.tasks[t] : ''); });
    var where = m.doc_id + (m.start !== null && m.start !== undefined ? ' [' + m.start + '–' + m.end + ')' : ' (position not found)') +
      ' · chunk ' + grp.chunks.join(', ') + ' · ' + tasks.join(', ') + (m.model ? ' · ' + m.model : '');
    var w = el('div', 'where', where);
    if (m.link && data.documents) {  // its place in the document view
      w.appendChild(document.createTextNode(' · '));
      var link = el('a', 'doc-link', 'show in the document');
      link.setAttribute('href', data.documents + '#' + m.link);
      w.appendChild(link);
    }
    box.appendChild(w);
    var s = el('div', 'sentence');
    if (m.sentence) {
      var a = m.start - m.sentence_start, b = m.end - m.sentence_start;
      if (a >= 0 && b <= m.sentence.length && b > a) {
        s.appendChild(document.createTextNode(m.sentence.slice(0, a)));
        s.appendChild(el('mark', null, m.sentence.slice(a, b)));
        s.appendChild(document.createTextNode(m.sentence.slice(b)));
      } else {
        s.textContent = m.sentence;
      }
    } else {
      s.textContent = '(the surface form was not found in its chunk)';
      s.className = 'sentence hint';
    }
    box.appendChild(s);
    return box;
  }
  function groupMentions(list) {
    // mentions of one place (same document span) are shown once, with the tasks that saw it
    var groups = [], byKey = {};
    list.forEach(function (m) {
      var key = [m.doc_id, m.start, m.end, m.start === null ? m.chunk : '', m.model].join('\u0001');
      var g = byKey[key];
      if (!g) { g = byKey[key] = { m: m, tasks: {}, chunks: [] }; groups.push(g); }
      g.tasks[m.task] = (g.tasks[m.task] || 0) + 1;
      if (g.chunks.indexOf(m.chunk) < 0) g.chunks.push(m.chunk);
    });
    return groups;
  }
  function relList(title, list, other) {
    var frag = document.createDocumentFragment();
    if (!list.length) return frag;
    frag.appendChild(el('h3', null, title + ' (' + list.length + ')'));
    var ul = el('ul', 'rels');
    list.forEach(function (e) {
      var li = el('li'), o = byId[other(e)];
      li.appendChild(document.createTextNode(e.type + ' → '));
      var a = el('a', null, o.name);
      a.addEventListener('click', function () { select(o.id); });
      li.appendChild(a);
      li.appendChild(document.createTextNode(' (support ' + e.support + ', '));
      var ms = el('a', 'edge-link', e.mention_count + ' mentions');
      ms.setAttribute('data-edge', e.id);
      ms.addEventListener('click', function () { selectEdge(e.id); });
      li.appendChild(ms);
      li.appendChild(document.createTextNode(')'));
      ul.appendChild(li);
    });
    frag.appendChild(ul);
    return frag;
  }
  function mentionList(d, item) {
    var groups = groupMentions(item.mentions);
    d.appendChild(el('h3', null, 'mentions (' + item.mentions.length +
      (item.mention_count > item.mentions.length ? ' of ' + item.mention_count : '') + ', at ' + groups.length + ' places)'));
    var list = el('div', 'mentions');
    list.id = 'mention-list';
    list.setAttribute('data-mentions', String(item.mentions.length));
    groups.forEach(function (g) { list.appendChild(mentionBlock(g)); });
    d.appendChild(list);
  }
  function details() {
    var d = $('details');
    while (d.firstChild) d.removeChild(d.firstChild);
    d.removeAttribute('data-node');
    d.removeAttribute('data-edge');
    return d;
  }
  function nodeLink(n) {
    var a = el('a', 'node-link', n.name);
    a.addEventListener('click', function () { select(n.id); });
    return a;
  }
  function selectEdge(id) {
    var e = edgeById[id];
    if (!e) return false;
    var a = byId[e.source], b = byId[e.target];
    Object.keys(nodeEls).forEach(function (k) { nodeEls[k].classList.toggle('sel', k === e.source || k === e.target); });
    edgeEls.forEach(function (l) { l.classList.toggle('hot', l.__edge.id === id); });
    var d = details();
    d.setAttribute('data-edge', id);
    var h = el('h2', 'name');
    h.appendChild(nodeLink(a));
    h.appendChild(document.createTextNode(' —' + e.type + '→ '));
    h.appendChild(nodeLink(b));
    d.appendChild(h);
    var meta = el('div', 'meta'), badge = el('span', 'badge', e.kind);
    badge.style.background = '#777';
    meta.appendChild(badge);
    meta.appendChild(document.createTextNode(' support ' + e.support + ' · confidence ' + e.confidence +
      ' · ' + e.mention_count + ' mentions in ' + e.doc_count + ' documents'));
    d.appendChild(meta);
    mentionList(d, e);
    return true;
  }
  function select(id) {
    var n = byId[id];
    if (!n) return false;
    Object.keys(nodeEls).forEach(function (k) { nodeEls[k].classList.toggle('sel', k === id); });
    edgeEls.forEach(function (l) { l.classList.toggle('hot', l.__edge.source === id || l.__edge.target === id); });
    var d = details();
    d.setAttribute('data-node', id);
    d.appendChild(el('h2', 'name', n.name));
    var badge = el('span', 'badge', n.type);
    badge.style.background = colour[n.type] || '#999';
    var meta = el('div', 'meta');
    meta.appendChild(badge);
    meta.appendChild(document.createTextNode(' ' + n.kind + ' · support ' + n.support +
      ' · confidence ' + n.confidence + ' · ' + n.mention_count + ' mentions in ' + n.doc_count + ' documents'));
    d.appendChild(meta);
    if (n.aliases.length) d.appendChild(el('div', 'meta', 'also written: ' + n.aliases.join(' | ')));
    d.appendChild(relList('out', edges.filter(function (e) { return e.source === id; }), function (e) { return e.target; }));
    d.appendChild(relList('in', edges.filter(function (e) { return e.target === id; }), function (e) { return e.source; }));
    mentionList(d, n);
    return true;
  }
  svg.addEventListener('click', function () { /* background click keeps the selection */ });

  // ---- go
  layout();
  draw();
  legend();
  $('total-node-count').textContent = String(data.total_nodes);
  $('total-edge-count').textContent = String(data.total_edges);
  $('rendered-node-count').textContent = String(svg.querySelectorAll('circle.node').length);
  $('rendered-edge-count').textContent = String(svg.querySelectorAll('line.edge').length);
  var params = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    if (!kv) return;
    var i = kv.indexOf('=');
    if (i > 0) params[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
  });
  if (params.q) { $('search').value = params.q; search(params.q); }
  if (params.select) select(params.select);
  if (params.edge) selectEdge(params.edge);
  $('status').textContent = 'ready';
})();
