// sagaflow's dashboard: a client of the worker's admin API (docs/admin-api.md).
// Plain JavaScript, no dependencies, no build step. Every text from the API
// goes into the page as text (never as HTML), and the token lives only in
// this tab's sessionStorage.
'use strict';

const POLL_MS = Number(new URLSearchParams(location.search).get('poll_ms')) || 1000;
const HISTORY_MS = 10 * 60 * 1000;
const PAGE = 50;
const STATUSES = ['running', 'compensating', 'completed', 'compensated', 'parked'];
const COLORS = { running: '#3a78d8', compensating: '#6fa0e8', completed: '#2e9d5b', compensated: '#d48a1c', parked: '#8455c9' };
const COMMANDS = {
  retry: 'Retry: run the step the saga is parked on again',
  cancel: 'Cancel: compensate the completed steps (only before the pivot)',
  resolve: 'Resolve: mark the parked step as done by hand, with its output',
  refund: 'Refund: start the refund saga that undoes a completed sale',
};

// ---- DOM helpers -----------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const svg = ['svg', 'g', 'rect', 'line', 'text', 'polyline', 'title', 'path'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const fmtInt = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));
const fmtRate = (n) => (n === undefined || n === null || !isFinite(n) ? '–' : n.toFixed(1));
const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '').slice(0, 23) : '–');
const fmtDur = (ms) => (ms === undefined || ms === null ? '–' : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`);
const badge = (s) => h('span', { class: `status ${s}`, 'data-status': s }, s);
const sagaLink = (id) => h('a', { href: `#/saga/${encodeURIComponent(id)}`, 'data-saga': id }, id);

// ---- The API, with the token -----------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let tokenAsk = null;

/** Asks for the token once; every request waiting on a 401 retries with it. */
function askToken(message) {
  if (!tokenAsk) {
    tokenAsk = new Promise((resolve) => {
      const dialog = $('#token-dialog');
      $('#token-error').textContent = message || '';
      $('#token-input').value = '';
      $('#token-form').onsubmit = (ev) => {
        ev.preventDefault();
        sessionStorage.setItem('sagaflow.token', $('#token-input').value.trim());
        dialog.close();
        tokenAsk = null;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
    });
  }
  return tokenAsk;
}

async function api(path, { method = 'GET', body, ok = [] } = {}) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem('sagaflow.token');
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await res.json().catch(() => null);
    if (res.status === 401) {
      await askToken(token ? 'That token was refused; check it and paste it again.' : '');
      continue;
    }
    if (!res.ok && !ok.includes(res.status)) {
      throw new ApiError(res.status, (answer && answer.error) || `${res.status} ${res.statusText}`);
    }
    return { status: res.status, body: answer };
  }
}

// ---- Routing ----------------------------------------------------------------

let stopView = () => {};

function route() {
  stopView();
  stopView = () => {};
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const view = $('#view');
  view.replaceChildren();
  // What a view says it has shown (read by tests) belongs to that view.
  for (const k of Object.keys(view.dataset)) delete view.dataset[k];
  let name = 'sale';
  if (path.startsWith('/saga/')) {
    name = 'sagas';
    stopView = sagaView(view, decodeURIComponent(path.slice('/saga/'.length)));
  } else if (path === '/sagas') {
    name = 'sagas';
    stopView = listView(view, params);
  } else if (path === '/audit') {
    name = 'audit';
    stopView = auditView(view, params);
  } else {
    stopView = saleView(view);
  }
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === name));
}

/** Calls `tick` now and every `ms` until the view is left; returns the stop. */
function every(ms, tick) {
  let stopped = false;
  let timer = null;
  const loop = async () => {
    if (stopped) return;
    try { await tick(); } catch (e) { showError(e); }
    if (!stopped) timer = setTimeout(loop, ms);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}

function showError(e) {
  const live = $('#live');
  live.textContent = `error: ${e.message}`;
  live.classList.add('stale');
}

function markLive(atMs) {
  const live = $('#live');
  live.textContent = `updated ${fmtTime(atMs).slice(11, 19)} UTC`;
  live.dataset.at = String(atMs);
  live.classList.remove('stale');
}

// ---- Sale view --------------------------------------------------------------

/** The samples behind the rates and the chart, kept for this tab. */
function loadSamples() {
  try { return JSON.parse(sessionStorage.getItem('sagaflow.samples') || '[]'); } catch { return []; }
}

function saleView(root) {
  const samples = loadSamples();
  const tile = (k, label) => h('div', { class: 'tile' }, h('div', { class: 'k' }, label), h('div', { class: 'v', 'data-k': k }, '–'));
  const legend = h('div', { class: 'legend' }, STATUSES.map((s) => h('span', {}, h('i', { class: `swatch-${s}` }), s)));
  const chart = h('svg', { class: 'chart', viewBox: '0 0 800 180', preserveAspectRatio: 'none', 'data-test': 'chart' });
  const breakers = h('tbody');
  const stock = h('tbody');
  const parked = h('tbody');
  const compensated = h('tbody');
  const intake = h('span', { 'data-k': 'intake' });
  root.append(
    h('h1', {}, 'Sale'),
    h('div', { class: 'tiles' },
      tile('started_per_sec', 'started / s'), tile('ended_per_sec', 'ended / s'),
      tile('p50_ms', 'p50 latency (ms)'), tile('p99_ms', 'p99 latency (ms)'),
      tile('total', 'sagas'), STATUSES.map((s) => tile(s, s)),
      tile('dead_lettered', 'dead-lettered (this worker)')),
    h('div', { class: 'card' }, h('h2', {}, 'Sagas by status, the last minutes'), legend, chart,
      h('p', { class: 'muted' }, 'Intake: ', intake)),
    h('div', { class: 'grid2' },
      h('div', { class: 'card' }, h('h2', {}, 'Circuit breakers'),
        h('table', {}, h('thead', {}, h('tr', {}, ['dependency', 'state', 'since', 'waiting', 'opened', 'refused', 'probes'].map((c) => h('th', {}, c)))), breakers)),
      h('div', { class: 'card' }, h('h2', {}, 'Stock left per SKU'),
        h('table', {}, h('thead', {}, h('tr', {}, ['SKU', 'available', 'reserved', 'sold', 'initial'].map((c, i) => h('th', { class: i ? 'num' : '' }, c)))), stock)),
      h('div', { class: 'card' }, h('h2', {}, h('a', { href: '#/sagas?status=parked' }, 'Parked sagas'), ' (waiting for an operator)'),
        h('table', {}, h('thead', {}, h('tr', {}, ['saga', 'since', 'why'].map((c) => h('th', {}, c)))), parked)),
      h('div', { class: 'card' }, h('h2', {}, h('a', { href: '#/sagas?status=compensated' }, 'Compensated'), ', the latest and why'),
        h('table', {}, h('thead', {}, h('tr', {}, ['saga', 'ended', 'why'].map((c) => h('th', {}, c)))), compensated))),
  );
  let lists = 0;
  return every(POLL_MS, async () => {
    const { body: sale } = await api('/api/sale');
    const st = sale.stats;
    $('#engine').textContent = sale.engine;
    const ended = st.completed + st.compensated;
    samples.push({ t: sale.at_ms, total: st.total, ended, ...Object.fromEntries(STATUSES.map((s) => [s, st[s]])) });
    while (samples.length > 2 && samples[0].t < sale.at_ms - HISTORY_MS) samples.shift();
    sessionStorage.setItem('sagaflow.samples', JSON.stringify(samples.slice(-1200)));
    // Rates over the last ~5 s of samples: steadier than one poll apart.
    const base = samples.find((s) => s.t >= sale.at_ms - 5000) || samples[0];
    const dt = (sale.at_ms - base.t) / 1000;
    const set = (k, v) => { const el = root.querySelector(`[data-k="${k}"]`); if (el) el.textContent = v; };
    set('started_per_sec', dt > 0 ? fmtRate(Math.max(0, st.total - base.total) / dt) : '–');
    set('ended_per_sec', dt > 0 ? fmtRate(Math.max(0, ended - base.ended) / dt) : '–');
    set('p50_ms', fmtInt(st.p50_ms));
    set('p99_ms', fmtInt(st.p99_ms));
    set('total', fmtInt(st.total));
    STATUSES.forEach((s) => set(s, fmtInt(st[s])));
    set('dead_lettered', sale.intake ? fmtInt(sale.intake.dead_lettered) : '–');
    intake.textContent = !sale.health ? 'the worker is starting' : sale.health.intake_paused ? `paused: ${sale.health.intake_paused}` : 'taking messages';
    drawChart(chart, samples, sale.at_ms);
    breakers.replaceChildren(...((sale.health && sale.health.breakers) || []).map((b) => h('tr', { 'data-breaker': b.dependency },
      h('td', {}, b.dependency), h('td', {}, badge(b.state)), h('td', {}, fmtTime(b.since_ms)),
      h('td', { class: 'num' }, fmtInt(b.waiting)), h('td', { class: 'num' }, fmtInt(b.opened_total)),
      h('td', { class: 'num' }, fmtInt(b.refused_total)), h('td', { class: 'num' }, fmtInt(b.probes_total)))));
    if (Array.isArray(sale.stock)) {
      stock.replaceChildren(...sale.stock.map((l) => h('tr', { 'data-sku': l.sku },
        h('td', {}, l.sku), h('td', { class: 'num', 'data-k': 'available' }, fmtInt(l.available)), h('td', { class: 'num' }, fmtInt(l.reserved)),
        h('td', { class: 'num' }, fmtInt(l.sold)), h('td', { class: 'num' }, fmtInt(l.initial)))));
    } else if (sale.stock && sale.stock.error) {
      stock.replaceChildren(h('tr', {}, h('td', { class: 'error', colspan: 5 }, sale.stock.error)));
    }
    // The lists cost a query each: every fifth poll is enough.
    if (lists++ % 5 === 0) {
      const [p, c] = await Promise.all([api('/api/sagas?status=parked&limit=10'), api('/api/sagas?status=compensated&limit=8')]);
      parked.replaceChildren(...p.body.map((r) => h('tr', {}, h('td', {}, sagaLink(r.id)), h('td', {}, fmtTime(r.updated_ms)), h('td', { class: 'wrap' }, r.reason || ''))));
      // Why: the action that failed for good, from each saga's timeline.
      const docs = await Promise.all(c.body.map((r) => api(`/api/sagas/${encodeURIComponent(r.id)}`).then((d) => d.body, () => null)));
      compensated.replaceChildren(...c.body.map((r, i) => {
        const failed = docs[i] && docs[i].timeline.find((t) => t.phase === 'action' && t.status === 'failed');
        const why = failed ? `${failed.step}: ${failed.last_error || 'failed'}` : (r.reason || '');
        return h('tr', {}, h('td', {}, sagaLink(r.id)), h('td', {}, fmtTime(r.ended_ms || r.updated_ms)), h('td', { class: 'wrap', 'data-why': '' }, why));
      }));
    }
    root.dataset.polls = String(Number(root.dataset.polls || 0) + 1);
    markLive(sale.at_ms);
  });
}

/** Counts by status over time, one line each, on a shared scale. */
function drawChart(svg, samples, now) {
  const W = 800, H = 180, pad = 24;
  // The last ten minutes, or since the page began watching (at least one).
  const first = samples.length ? samples[0].t : now;
  const from = Math.max(now - HISTORY_MS, Math.min(first, now - 60 * 1000));
  const span = now - from;
  const max = Math.max(1, ...samples.flatMap((s) => STATUSES.map((k) => s[k] || 0)));
  const x = (t) => pad + ((t - from) / span) * (W - pad - 4);
  const y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const kids = [
    h('line', { x1: pad, y1: H - pad, x2: W - 4, y2: H - pad, stroke: '#dde1e8' }),
    h('text', { x: 2, y: pad - 8, 'font-size': 11, fill: '#6b7385' }, fmtInt(max)),
    h('text', { x: pad, y: H - 6, 'font-size': 11, fill: '#6b7385' }, `−${Math.round(span / 1000)} s`),
    h('text', { x: W - 30, y: H - 6, 'font-size': 11, fill: '#6b7385' }, 'now'),
  ];
  for (const k of STATUSES) {
    const pts = samples.filter((s) => s.t >= from).map((s) => `${x(s.t).toFixed(1)},${y(s[k] || 0).toFixed(1)}`).join(' ');
    if (pts) kids.push(h('polyline', { points: pts, fill: 'none', stroke: COLORS[k], 'stroke-width': 2, 'data-series': k }));
  }
  svg.replaceChildren(...kids);
}

// ---- Saga list --------------------------------------------------------------

/** The `--where` terms the list's filters make (empty: none set). */
function whereTerms(f) {
  const terms = [];
  if (f.status) terms.push(`status=${f.status}`);
  if (f.saga) terms.push(`saga=${f.saga}`);
  if (f.step) terms.push(`step=${f.step}`);
  if (f.error) terms.push(`error~${f.error}`);
  if (f.from) terms.push(`started>${new Date(f.from).toISOString()}`);
  if (f.to) terms.push(`started<${new Date(f.to).toISOString()}`);
  return terms.join(' and ');
}

function listView(root, params) {
  const f = Object.fromEntries(['status', 'saga', 'step', 'error', 'from', 'to'].map((k) => [k, params.get(k) || '']));
  const page = Math.max(0, Number(params.get('page')) || 0);
  const input = (k, label, type = 'text') => h('label', {}, label, h('input', { name: k, type, value: f[k], 'data-filter': k }));
  const status = h('select', { name: 'status', 'data-filter': 'status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: f.status === s }, s)));
  const form = h('form', { class: 'filters', 'data-test': 'filters' },
    h('label', {}, 'status', status), input('saga', 'saga'), input('step', 'step (last attempt)'), input('error', 'error contains'),
    input('from', 'started after', 'datetime-local'), input('to', 'started before', 'datetime-local'),
    h('button', { type: 'submit', 'data-test': 'apply' }, 'Apply'));
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    new FormData(form).forEach((v, k) => { if (v) q.set(k, v); });
    location.hash = `#/sagas?${q}`;
  };
  const rows = h('tbody', { 'data-test': 'rows' });
  const info = h('span', { class: 'muted' });
  const go = (p) => { const q = new URLSearchParams(params); q.set('page', p); location.hash = `#/sagas?${q}`; };
  const prev = h('button', { disabled: page === 0, onclick: () => go(page - 1) }, '← newer');
  const next = h('button', { 'data-test': 'next', onclick: () => go(page + 1) }, 'older →');
  const terms = whereTerms(f);
  const onlyStatus = !f.saga && !f.step && !f.error && !f.from && !f.to;
  const bulk = h('div', { class: 'actions' },
    h('span', { class: 'muted' }, terms ? `Every saga matching “${terms}”: ` : 'Set a filter to command the sagas it selects. '),
    Object.keys(COMMANDS).map((c) => h('button', { disabled: !terms, 'data-bulk': c, onclick: () => confirmBulk(c, terms) }, `${c} all…`)));
  root.append(h('h1', {}, 'Sagas'), form, bulk,
    h('table', {}, h('thead', {}, h('tr', {}, ['id', 'saga', 'status', 'started', onlyStatus ? 'duration' : 'step', onlyStatus ? 'reason' : 'last error'].map((c) => h('th', {}, c)))), rows),
    h('div', { class: 'pager' }, prev, next, info));
  (async () => {
    try {
      const url = onlyStatus
        ? `/api/sagas?limit=${PAGE}&offset=${page * PAGE}${f.status ? `&status=${f.status}` : ''}`
        : `/api/sagas?where=${encodeURIComponent(terms)}&limit=${PAGE}&offset=${page * PAGE}`;
      const { body } = await api(url);
      rows.replaceChildren(...body.map((r) => h('tr', { 'data-row': r.id },
        h('td', {}, sagaLink(r.id)), h('td', {}, r.saga), h('td', {}, badge(r.status)), h('td', {}, fmtTime(r.created_ms)),
        h('td', {}, onlyStatus ? (r.ended_ms ? fmtDur(r.ended_ms - r.created_ms) : '–') : (r.step || '')),
        h('td', { class: 'wrap' }, (onlyStatus ? r.reason : r.error) || ''))));
      next.disabled = body.length < PAGE;
      info.textContent = body.length
        ? `${page * PAGE + 1}–${page * PAGE + body.length}, ${onlyStatus ? 'newest first' : 'oldest first'}`
        : 'no sagas match';
      root.dataset.loaded = '1';
    } catch (e) {
      rows.replaceChildren(h('tr', {}, h('td', { class: 'error', colspan: 6 }, e.message)));
    }
  })();
  return () => {};
}

// ---- One saga ---------------------------------------------------------------

function sagaView(root, id) {
  let doc = null;
  const head = h('div');
  const actions = h('div', { class: 'actions' });
  const svg = h('svg', { class: 'timeline', 'data-test': 'timeline' });
  const detail = h('div', { class: 'detail', 'data-test': 'detail' }, 'Hover or click a bar for its details.');
  const table = h('tbody');
  const commands = h('tbody', { 'data-test': 'commands' });
  const input = h('pre');
  root.append(head, actions,
    h('div', { class: 'card' }, h('h2', {}, 'Timeline'), svg, detail,
      h('div', { class: 'legend' }, [['ok', 'attempt ok'], ['failed', 'attempt failed'], ['retry_wait', 'retry wait'], ['breaker_wait', 'breaker wait'], ['park', 'parked'], ['command', 'operator command (dashed line)']]
        .map(([k, l]) => h('span', {}, h('i', { class: `swatch-${k}` }), l)))),
    h('div', { class: 'card' }, h('h2', {}, 'Steps'),
      h('table', {}, h('thead', {}, h('tr', {}, ['step', 'phase', 'activity', 'status', 'attempts', 'duration', 'last error'].map((c) => h('th', {}, c)))), table)),
    h('div', { class: 'card' }, h('h2', {}, 'Operator commands'),
      h('table', {}, h('thead', {}, h('tr', {}, ['when', 'command', 'operator', 'reason'].map((c) => h('th', {}, c)))), commands)),
    h('div', { class: 'card' }, h('h2', {}, 'Order'), input));
  const load = async () => {
    const { body } = await api(`/api/sagas/${encodeURIComponent(id)}`);
    doc = body;
    const s = doc.saga;
    head.replaceChildren(h('div', {},
      h('h1', {}, 'Saga ', h('span', { 'data-test': 'saga-id' }, s.id), ' ', badge(s.status)),
      h('p', {}, `${s.saga} · started ${fmtTime(s.created_ms)} UTC · `, s.ended_ms ? `ended after ${fmtDur(s.ended_ms - s.created_ms)}` : 'not ended'),
      s.reason ? h('p', { class: 'wrap', 'data-test': 'reason' }, s.reason) : null,
      doc.refund_of ? h('p', { 'data-test': 'refund-of' }, 'Refund of ', sagaLink(doc.refund_of.saga_id), ` (asked by ${doc.refund_of.operator}: ${doc.refund_of.reason})`) : null,
      doc.refunded_by ? h('p', { 'data-test': 'refunded-by' }, 'Refunded by ', sagaLink(doc.refunded_by.id), ' ', badge(doc.refunded_by.status)) : null));
    actions.replaceChildren(...Object.keys(COMMANDS).map((c) => h('button', { 'data-command': c, onclick: () => confirmOne(c, doc).then((sent) => sent && load()) }, `${c}…`)));
    drawTimeline(svg, detail, doc);
    table.replaceChildren(...doc.timeline.map((t) => h('tr', {},
      h('td', {}, t.step), h('td', {}, t.phase), h('td', {}, t.activity), h('td', {}, badge(t.status)),
      h('td', { class: 'num' }, t.attempts), h('td', { class: 'num' }, fmtDur(t.duration_ms)), h('td', { class: 'wrap' }, t.last_error || ''))));
    commands.replaceChildren(...doc.commands.map((c) => h('tr', { 'data-command-row': c.command },
      h('td', {}, fmtTime(c.at_ms)), h('td', {}, c.command + (c.step ? ` ${c.step}` : '')), h('td', {}, c.operator), h('td', { class: 'wrap' }, c.reason))));
    input.textContent = JSON.stringify(doc.input, null, 2);
    root.dataset.status = s.status;
    markLive(Date.now());
  };
  // A saga that has not ended keeps changing: follow it.
  return every(2 * POLL_MS, async () => {
    if (!doc || !['completed', 'compensated'].includes(doc.saga.status)) await load();
  });
}

/** Bars on a time axis: a row per step and phase, markers for commands. */
function drawTimeline(svg, detail, doc) {
  const rows = [];
  for (const t of doc.timeline) if (!rows.some((r) => r.step === t.step && r.phase === t.phase)) rows.push({ step: t.step, phase: t.phase });
  const spans = doc.spans || [];
  const now = Date.now();
  const start = doc.saga.created_ms;
  const end = Math.max(start + 1, doc.saga.ended_ms || 0, ...spans.map((s) => s.end_ms || now), ...doc.commands.map((c) => c.at_ms));
  const W = Math.max(600, (svg.parentElement && svg.parentElement.clientWidth) || 900), L = 210, R = 10, rowH = 22, top = 24;
  const H = top + rows.length * rowH + 24;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('height', H);
  svg.setAttribute('width', W);
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
  const kids = [h('line', { class: 'axis', x1: L, y1: top - 4, x2: W - R, y2: top - 4 }),
    h('text', { x: L, y: 12 }, '0'), h('text', { x: W - R - 60, y: 12 }, fmtDur(end - start))];
  rows.forEach((r, i) => {
    kids.push(h('text', { x: 4, y: top + i * rowH + 14 }, `${r.step}${r.phase === 'compensation' ? ' (undo)' : ''}`));
    kids.push(h('line', { class: 'axis', x1: L, y1: top + (i + 1) * rowH, x2: W - R, y2: top + (i + 1) * rowH }));
  });
  const describe = (s) => `${s.step} ${s.phase} · ${s.kind === 'attempt' ? `attempt ${s.attempt} ${s.ok ? 'ok' : 'failed'}` : s.kind.replace('_', ' ')}` +
    ` · ${fmtTime(s.start_ms)} → ${s.end_ms ? fmtTime(s.end_ms) : 'now'} (${fmtDur((s.end_ms || now) - s.start_ms)})${s.error ? `\n${s.error}` : ''}`;
  for (const s of spans) {
    const i = rows.findIndex((r) => r.step === s.step && r.phase === s.phase);
    if (i < 0) continue;
    const x0 = x(s.start_ms), x1 = x(s.end_ms || now);
    const cls = s.kind === 'attempt' ? `attempt ${s.ok ? 'ok' : 'failed'}` : s.kind;
    const text = describe(s);
    kids.push(h('rect', { class: cls, 'data-span': s.kind, x: x0.toFixed(1), y: top + i * rowH + 4, width: Math.max(2, x1 - x0).toFixed(1), height: rowH - 8,
      onmouseenter: () => { detail.textContent = text; }, onclick: () => { detail.textContent = text; } }, h('title', {}, text)));
  }
  for (const c of doc.commands) {
    const cx = x(c.at_ms);
    const text = `${c.command} by ${c.operator} at ${fmtTime(c.at_ms)}: ${c.reason}`;
    kids.push(h('g', { class: 'command', 'data-marker': c.command }, h('line', { x1: cx, y1: top - 8, x2: cx, y2: H - 18 }),
      h('text', { x: Math.min(cx + 3, W - 200), y: H - 6 }, `${c.command} by ${c.operator}: ${c.reason}`.slice(0, 60)), h('title', {}, text)));
  }
  svg.replaceChildren(...kids);
}

// ---- Commands, always through a dry run -------------------------------------

function operator() {
  const name = $('#operator').value.trim();
  if (name) localStorage.setItem('sagaflow.operator', name);
  return name;
}

/**
 * Shows what a command would touch, asks for a reason, sends it on
 * confirmation; resolves true once it was sent.
 */
function confirmDialog({ title, what, targets, extra, send }) {
  return new Promise((resolve) => {
    const dialog = $('#confirm-dialog');
    $('#confirm-title').textContent = title;
    $('#confirm-what').textContent = what;
    $('#confirm-extra').replaceChildren(...(extra || []));
    $('#confirm-reason').value = '';
    $('#confirm-error').textContent = '';
    $('#confirm-result').textContent = '';
    delete $('#confirm-result').dataset.outcome;
    $('#confirm-ok').disabled = targets.length === 0;
    $('#confirm-ok').textContent = `Send to ${targets.length} saga${targets.length === 1 ? '' : 's'}`;
    $('#confirm-targets').replaceChildren(h('table', { 'data-test': 'dry-run' },
      h('thead', {}, h('tr', {}, ['saga', 'status', 'step', 'last error'].map((c) => h('th', {}, c)))),
      h('tbody', {}, targets.slice(0, 500).map((t) => h('tr', { 'data-target': t.id }, h('td', {}, t.id), h('td', {}, badge(t.status)), h('td', {}, t.step || ''), h('td', { class: 'wrap' }, t.error || '')))),
      targets.length > 500 ? h('tfoot', {}, h('tr', {}, h('td', { colspan: 4 }, `… and ${targets.length - 500} more`))) : null));
    let sent = false;
    $('#confirm-cancel').onclick = () => { dialog.close(); resolve(sent); };
    $('#confirm-form').onsubmit = async (ev) => {
      ev.preventDefault();
      const reason = $('#confirm-reason').value.trim();
      const who = operator();
      if (!who) { $('#confirm-error').textContent = 'Put your name in “operator” (top right): it goes into the audit with the reason.'; return; }
      if (!reason) { $('#confirm-error').textContent = 'A reason is required.'; return; }
      $('#confirm-ok').disabled = true;
      try {
        const answer = await send(who, reason);
        sent = true;
        $('#confirm-result').textContent = JSON.stringify(answer, null, 2);
        $('#confirm-result').dataset.outcome = answer.outcome || (answer.sent !== undefined ? 'sent' : '');
        $('#confirm-cancel').textContent = 'Close';
      } catch (e) {
        $('#confirm-error').textContent = e.message;
        $('#confirm-ok').disabled = false;
      }
    };
    $('#confirm-cancel').textContent = 'Back';
    dialog.showModal();
  });
}

async function confirmOne(command, doc) {
  const id = doc.saga.id;
  const extra = [];
  let step, output;
  if (command === 'resolve') {
    step = h('select', { 'data-test': 'resolve-step' }, doc.timeline.filter((t) => t.status !== 'ok').map((t) => h('option', { value: t.step }, `${t.step} (${t.phase})`)));
    output = h('textarea', { rows: 2, 'data-test': 'resolve-output' }, '{}');
    extra.push(h('label', {}, 'Step done by hand', step), h('label', {}, 'Its output (JSON)', output));
  }
  const { body: dry } = await api(`/api/sagas/${encodeURIComponent(id)}/${command}`, { method: 'POST', body: { dry_run: true } });
  return confirmDialog({
    title: `${command} saga ${id}`,
    what: COMMANDS[command],
    targets: dry.targets,
    extra,
    send: async (who, reason) => {
      const body = { operator: who, reason, wait: 10 };
      if (command === 'resolve') { body.step = step.value; body.output = JSON.parse(output.value || '{}'); }
      const { body: answer } = await api(`/api/sagas/${encodeURIComponent(id)}/${command}`, { method: 'POST', body, ok: [409] });
      return answer;
    },
  });
}

async function confirmBulk(command, terms) {
  const { body: dry } = await api(`/api/bulk/${command}`, { method: 'POST', body: { where: terms, dry_run: true } });
  let step, output;
  const extra = [];
  if (command === 'resolve') {
    step = h('input', { type: 'text', placeholder: 'the step they are parked on' });
    output = h('textarea', { rows: 2 }, '{}');
    extra.push(h('label', {}, 'Step done by hand', step), h('label', {}, 'Its output (JSON)', output));
  }
  return confirmDialog({
    title: `${command}: every saga matching “${terms}”`,
    what: `${COMMANDS[command]}. Exactly these sagas (the dry run), one command each; any that stopped matching are skipped, and sagas that match from now on are left alone. The run is in the audit under its bulk id.`,
    targets: dry.targets,
    extra,
    send: async (who, reason) => {
      // The dry run's ids, so the server acts on exactly the rows shown.
      const ids = dry.targets.map((t) => t.id);
      const body = { where: terms, ids, confirm_targets: ids.length, operator: who, reason, wait: 10 };
      if (command === 'resolve') { body.step = step.value; body.output = JSON.parse(output.value || '{}'); }
      const { body: answer } = await api(`/api/bulk/${command}`, { method: 'POST', body });
      return answer;
    },
  });
}

// ---- Audit ------------------------------------------------------------------

function auditView(root, params) {
  const since = params.get('since') || '24h';
  const rows = h('tbody', { 'data-test': 'audit' });
  root.append(h('h1', {}, `Operator commands, last ${since}`),
    h('table', {}, h('thead', {}, h('tr', {}, ['when', 'saga', 'command', 'operator', 'reason', 'bulk', 'outcome', 'detail'].map((c) => h('th', {}, c)))), rows));
  (async () => {
    try {
      const { body } = await api(`/api/audit?since=${encodeURIComponent(since)}&limit=1000`);
      rows.replaceChildren(...body.slice().reverse().map((a) => h('tr', {},
        h('td', {}, fmtTime(a.at_ms)), h('td', {}, sagaLink(a.saga_id)), h('td', {}, a.command), h('td', {}, a.operator),
        h('td', { class: 'wrap' }, a.reason), h('td', {}, a.bulk_id || ''), h('td', {}, a.outcome), h('td', { class: 'wrap' }, a.detail || ''))));
    } catch (e) {
      rows.replaceChildren(h('tr', {}, h('td', { class: 'error', colspan: 8 }, e.message)));
    }
  })();
  return () => {};
}

// ---- Start ------------------------------------------------------------------

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  $('#operator').value = localStorage.getItem('sagaflow.operator') || '';
  $('#operator').addEventListener('change', operator);
  route();
});
