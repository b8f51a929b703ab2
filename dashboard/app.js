/* app.js — poold's operator page: polls GET /stats and GET /readyz every
 * 2 s with the token the operator typed, renders the visible page of the
 * org table only (thousands of orgs stay fast), draws small charts of the
 * last 5 minutes, sends resize / drain / pause / resume, and looks up one
 * message's stored result. Plain DOM and
 * canvas: no library, nothing loaded from elsewhere. */
'use strict';

const POLL_MS = 2000;
const HISTORY = 150; /* points: 5 minutes at 2 s */
const PAGE_SIZE = 50;
/* Upper bounds of the stats' wait_hist buckets, ms (last: +Inf). */
const WAIT_LE_MS = [0.05, 0.1, 0.25, 0.5, 1, 5, 10, 50, 100, 1000, 10000, Infinity];

const state = {
  token: sessionStorage.getItem('poold-token') || '',
  rows: [],          /* [{org, ...stats}] */
  sortKey: 'org',
  sortDir: 1,
  filter: '',
  page: 0,
  readOnly: false,
  prevTotals: null,
  prevAt: 0,
  history: { rate: [], p99: [], timeouts: [], conns: [] },
  timer: null,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = !text;
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + state.token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let json = null;
  try { json = await r.json(); } catch (_) { /* not JSON */ }
  return { status: r.status, json };
}

/* The outcome of the operator's last action; stays until the next one. */
function notice(text, isError) {
  const n = $('notice');
  n.textContent = text;
  n.className = isError ? 'error' : 'muted';
  n.hidden = false;
}

function errorText(r) {
  const e = r.json && r.json.error;
  return e ? `${r.status} ${e.code}: ${e.message}` : `HTTP ${r.status}`;
}

/* ---- quantiles from the wait histogram ---------------------------------- */

/* q-quantile in ms of all acquires: those that never waited count as 0. */
function quantile(hist, acquired, waited, q) {
  if (!hist || !acquired) return null;
  const total = Math.max(acquired, waited);
  let rank = q * total - (total - waited); /* zero-wait acquires first */
  if (rank <= 0) return 0;
  for (let i = 0; i < hist.length; i++) {
    rank -= hist[i];
    if (rank <= 0) return WAIT_LE_MS[i];
  }
  return WAIT_LE_MS[WAIT_LE_MS.length - 2];
}

function fmtMs(v) {
  if (v === null || v === undefined) return '—';
  if (v === Infinity) return '>10000';
  if (v === 0) return '0';
  return v < 1 ? v.toFixed(2) : String(Math.round(v));
}

/* ---- rendering ------------------------------------------------------------ */

function fillDl(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function statPairs(s) {
  return [
    ['max size', s.max_size], ['active', s.active], ['idle', s.idle],
    ['waiting', s.waiting], ['timeouts', s.total_timeouts],
    ['rejected', s.waiters_rejected ?? '—'],
    ['rate limited', s.rate_limited ?? '—'],
    ['held too long', s.held_too_long ?? '—'], ['acquired', s.acquired],
  ];
}

function visibleRows() {
  const f = state.filter;
  const rows = f ? state.rows.filter((r) => r.org.toLowerCase().includes(f)) : state.rows.slice();
  const k = state.sortKey, d = state.sortDir;
  rows.sort((a, b) => {
    const x = a[k] ?? -1, y = b[k] ?? -1;
    if (x < y) return -d;
    if (x > y) return d;
    return a.org < b.org ? -1 : 1;
  });
  return rows;
}

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text;
  tr.append(td);
  return td;
}

function button(label, action, org, extra) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.org = org;
  if (extra) Object.assign(b.dataset, extra);
  return b;
}

function controls(td, r) {
  td.className = 'controls';
  const size = document.createElement('input');
  size.type = 'number';
  size.min = '1';
  size.value = r.max_size;
  size.className = 'size';
  size.setAttribute('aria-label', 'new size for ' + r.org);
  td.append(size, button('Resize', 'resize', r.org), button('Drain', 'drain', r.org),
    r.paused ? button('Resume', 'resume', r.org) : button('Pause', 'pause', r.org));
}

function renderTable() {
  const rows = visibleRows();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const tbody = document.querySelector('#orgs tbody');
  const focused = document.activeElement;
  /* Do not redraw under a size being typed in. */
  if (focused && focused.classList.contains('size') && tbody.contains(focused)) return;
  const frag = document.createDocumentFragment();
  for (const r of rows.slice(start, start + PAGE_SIZE)) {
    const tr = document.createElement('tr');
    tr.dataset.org = r.org;
    const name = cell(tr, r.org);
    name.className = 'org';
    if (r.paused) {
      const tag = document.createElement('span');
      tag.className = 'paused';
      tag.textContent = 'paused';
      name.append(' ', tag);
    }
    for (const k of ['max_size', 'active', 'idle', 'waiting', 'total_timeouts', 'waiters_rejected'])
      cell(tr, r[k] ?? '—').dataset.key = k;
    cell(tr, fmtMs(r.p50)).dataset.key = 'p50';
    cell(tr, fmtMs(r.p99)).dataset.key = 'p99';
    for (const k of ['rate_limited', 'held_too_long', 'acquired'])
      cell(tr, r[k] ?? '—').dataset.key = k;
    const td = document.createElement('td');
    if (!state.readOnly) controls(td, r);
    tr.append(td);
    if (r.waiting > 0) tr.className = 'hot';
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
  $('count').textContent = `${rows.length} of ${state.rows.length} orgs`;
  $('page').textContent = `page ${state.page + 1} / ${pages}`;
  $('prev').disabled = state.page === 0;
  $('next').disabled = state.page >= pages - 1;
  for (const th of document.querySelectorAll('#orgs th[data-key]'))
    th.setAttribute('aria-sort', th.dataset.key === state.sortKey
      ? (state.sortDir > 0 ? 'ascending' : 'descending') : 'none');
  document.querySelector('#orgs th.controls').hidden = state.readOnly;
}

/* ---- charts --------------------------------------------------------------- */

function push(series, v) {
  series.push(v);
  if (series.length > HISTORY) series.shift();
}

function drawChart(canvas, series) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const vals = series.filter((v) => Number.isFinite(v));
  const max = Math.max(1, ...vals);
  ctx.strokeStyle = '#d0d7de';
  ctx.beginPath();
  ctx.moveTo(0, h - 0.5);
  ctx.lineTo(w, h - 0.5);
  ctx.stroke();
  ctx.fillStyle = '#57606a';
  ctx.font = '11px sans-serif';
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 11);
  const last = series.length ? series[series.length - 1] : null;
  if (last !== null && Number.isFinite(last)) ctx.fillText('now ' + last.toFixed(1), w - 70, 11);
  ctx.strokeStyle = '#0969da';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  series.forEach((v, i) => {
    const x = (w * (HISTORY - series.length + i)) / (HISTORY - 1); /* newest at the right */
    const y = h - 2 - ((Number.isFinite(v) ? v : 0) / max) * (h - 16);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function updateCharts(totals, conn, now) {
  const p = state.prevTotals;
  if (p) {
    const dt = (now - state.prevAt) / 1000;
    const hist = totals.wait_hist.map((n, i) => n - (p.wait_hist[i] || 0));
    push(state.history.rate, Math.max(0, (totals.acquired - p.acquired) / dt));
    push(state.history.p99, quantile(hist, totals.acquired - p.acquired,
      totals.wait_count - p.wait_count, 0.99) ?? 0);
    push(state.history.timeouts, Math.max(0, (totals.total_timeouts - p.total_timeouts +
      (totals.waiters_rejected || 0) - (p.waiters_rejected || 0)) / dt));
  }
  push(state.history.conns, conn.active + conn.idle);
  state.prevTotals = totals;
  state.prevAt = now;
  drawChart($('c-rate'), state.history.rate);
  drawChart($('c-p99'), state.history.p99);
  drawChart($('c-timeouts'), state.history.timeouts);
  drawChart($('c-conns'), state.history.conns);
}

/* ---- polling -------------------------------------------------------------- */

async function refreshReady() {
  try {
    const r = await fetch('/readyz');
    $('ready').textContent = r.ok ? 'ready' : 'not ready';
    $('ready').dataset.state = r.ok ? 'ready' : 'down';
  } catch (_) {
    $('ready').textContent = 'unreachable';
    $('ready').dataset.state = 'down';
  }
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    refreshReady();
    const r = await api('GET', '/stats');
    if (r.status === 401) {
      stop();
      showError('Wrong token (401 unauthorized): enter the admin or read-only token.');
      return;
    }
    if (r.status !== 200) {
      showError('GET /stats failed: ' + errorText(r));
      return;
    }
    showError('');
    const { pools, totals, connections } = r.json;
    state.rows = Object.entries(pools).map(([org, s]) => Object.assign({ org }, s, {
      p50: quantile(s.wait_hist, s.acquired, s.wait_count, 0.5),
      p99: quantile(s.wait_hist, s.acquired, s.wait_count, 0.99),
    }));
    fillDl($('conn'), [['cap', connections.max_size], ['open', connections.active + connections.idle],
      ['in use', connections.active], ['waiting', connections.waiting],
      ['timeouts', connections.total_timeouts], ['created', connections.created]]);
    fillDl($('totals'), [['orgs with a pool', state.rows.length], ...statPairs(totals)]);
    updateCharts(totals, connections, performance.now());
    renderTable();
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    showError('poold unreachable: ' + e.message);
  } finally {
    state.busy = false;
  }
}

/* A read-only token is found without changing anything: a resize with an
 * empty body is refused before any change, 400 for the admin token (the
 * body is checked after the token) and 403 for a read-only one. */
async function probeScope() {
  const r = await api('PUT', '/pools/_scope_probe/size', {});
  state.readOnly = r.status === 403;
  $('scope').hidden = !state.readOnly;
  $('scope').textContent = state.readOnly ? 'Read-only token: controls are hidden.' : '';
}

function start() {
  $('main').hidden = false;
  $('login').hidden = true;
  $('logout').hidden = false;
  state.prevTotals = null;
  refresh();
  state.timer = setInterval(refresh, POLL_MS);
}

function stop() {
  clearInterval(state.timer);
  state.timer = null;
  $('main').hidden = true;
  $('login').hidden = false;
  $('logout').hidden = true;
  sessionStorage.removeItem('poold-token');
}

async function login(token) {
  state.token = token;
  const r = await api('GET', '/stats');
  if (r.status === 401) {
    showError('Wrong token (401 unauthorized): enter the admin or read-only token.');
    return;
  }
  if (r.status !== 200) {
    showError('GET /stats failed: ' + errorText(r));
    return;
  }
  sessionStorage.setItem('poold-token', token);
  showError('');
  await probeScope();
  start();
}

/* ---- one message's stored result ------------------------------------------ */

/* org id + message id -> GET /orgs/{org_id}/messages/{message_id}: the
 * stored result, or why there is none (404: never processed, or past the
 * retention). */
async function lookup(org, id) {
  const out = $('lookup-result');
  const r = await api('GET', `/orgs/${encodeURIComponent(org)}/messages/${encodeURIComponent(id)}`);
  out.hidden = false;
  out.replaceChildren();
  if (r.status !== 200) {
    out.className = 'error';
    out.textContent = r.status === 404
      ? `${org} / ${id}: not found (never processed, or past the retention)`
      : `${org} / ${id}: ${errorText(r)}`;
    return;
  }
  const m = r.json;
  out.className = '';
  const dl = document.createElement('dl');
  fillDl(dl, [['org', m.org_id], ['message', m.message_id],
    ['passed', m.passed ? 'yes' : 'no'], ['checks', m.details.checks],
    ['failed', m.details.failed.length ? m.details.failed.join(', ') : 'none'],
    ['processed at', m.processed_at]]);
  out.append(dl);
}

/* ---- controls ------------------------------------------------------------- */

async function act(action, org, tr) {
  let r;
  if (action === 'resize') {
    const n = Number(tr.querySelector('input.size').value);
    r = await api('PUT', `/pools/${encodeURIComponent(org)}/size`, { max_size: n });
  } else {
    if (action === 'drain' && !confirm(`Drain ${org}? Its services are closed and rebuilt.`)) return;
    r = await api('POST', `/pools/${encodeURIComponent(org)}/${action}`);
  }
  const what = `${action} ${org}: `;
  if (r.status === 403) {
    state.readOnly = true;
    $('scope').hidden = false;
    $('scope').textContent = 'Read-only token: controls are hidden.';
  }
  notice(r.status === 200 ? what + 'done' : what + errorText(r), r.status !== 200);
  document.activeElement.blur();
  refresh();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    login($('token').value.trim());
  });
  $('logout').addEventListener('click', () => {
    stop();
    state.token = '';
  });
  $('lookup').addEventListener('submit', (ev) => {
    ev.preventDefault();
    lookup($('lookup-org').value.trim(), $('lookup-id').value);
  });
  $('search').addEventListener('input', (ev) => {
    state.filter = ev.target.value.trim().toLowerCase();
    state.page = 0;
    renderTable();
  });
  $('prev').addEventListener('click', () => { state.page--; renderTable(); });
  $('next').addEventListener('click', () => { state.page++; renderTable(); });
  document.querySelector('#orgs thead').addEventListener('click', (ev) => {
    const key = ev.target.dataset && ev.target.dataset.key;
    if (!key) return;
    state.sortDir = state.sortKey === key ? -state.sortDir : (key === 'org' ? 1 : -1);
    state.sortKey = key;
    renderTable();
  });
  document.querySelector('#orgs tbody').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (b) act(b.dataset.action, b.dataset.org, b.closest('tr'));
  });
  if (state.token) login(state.token);
});
