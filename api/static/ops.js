// Honeydrop operations console: a client of the admin API under /api/admin/ops, like any
// other. The access token lives in memory only (never in storage), every action is a POST
// with it as a bearer token (no cookies, so no cross-site request can act), and the page
// refreshes its tables once a second.
'use strict';

const $ = (selector) => document.querySelector(selector);
const state = { token: null, refresh: null, queue: 'mail', itemState: 'failed', timer: null, busy: false };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

/** Exchanges the refresh token for new tokens (access tokens live minutes, a console hours). */
async function renew() {
  if (!state.refresh) return false;
  const response = await fetch('/api/auth/refresh', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refreshToken: state.refresh }),
  });
  if (!response.ok) return false;
  const body = await response.json();
  state.token = body.accessToken;
  state.refresh = body.refreshToken;
  return true;
}

async function api(path, method = 'GET', retried = false) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json' },
  });
  if (response.status === 401 && !retried && await renew()) return api(path, method, true);
  if (response.status === 401) {
    signOut('Your session ended; sign in again.');
    throw new Error('unauthorized');
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.message) || `HTTP ${response.status}`);
  return body;
}

function ago(iso) {
  if (!iso) return '—';
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (Math.abs(seconds) < 60) return seconds >= 0 ? `${seconds}s ago` : `in ${-seconds}s`;
  const minutes = Math.round(seconds / 60);
  if (Math.abs(minutes) < 90) return minutes >= 0 ? `${minutes} min ago` : `in ${-minutes} min`;
  return new Date(iso).toLocaleString();
}

function lag(seconds) {
  if (!seconds) return '0';
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds / 60)} min`;
}

/** Bars of finished (honey) and failed (red) items per minute, oldest on the left. */
function spark(perMinute) {
  const width = 150, height = 26, bar = width / perMinute.length;
  const top = Math.max(1, ...perMinute.map((m) => m.done + m.failed));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  const total = perMinute.reduce((sum, m) => sum + m.done, 0);
  const failed = perMinute.reduce((sum, m) => sum + m.failed, 0);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${total} finished and ${failed} failed in the last 15 minutes`);
  perMinute.forEach((m, i) => {
    const done = (m.done / top) * height, bad = (m.failed / top) * height;
    for (const [cls, h, y] of [['done', done, height - done], ['failed', bad, height - done - bad]]) {
      if (h <= 0) continue;
      const rect = document.createElementNS(ns, 'rect');
      rect.setAttribute('class', cls);
      rect.setAttribute('x', i * bar + 1);
      rect.setAttribute('y', y);
      rect.setAttribute('width', bar - 2);
      rect.setAttribute('height', Math.max(h, 1));
      svg.append(rect);
    }
  });
  return svg;
}

async function act(path, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const answer = await api(`/api/admin/ops${path}`, 'POST');
    $('#status').textContent = `Done: ${answer.affected} changed`;
  } catch (error) {
    $('#status').textContent = `Failed: ${error.message}`;
  }
  await refresh();
}

function queueRow(q) {
  const name = q.name;
  const row = el('tr', {
    'data-queue': name,
    class: name === state.queue ? 'selected' : '',
    onclick: (event) => {
      if (event.target.closest('button')) return;
      state.queue = name;
      refresh();
    },
  },
  el('th', { scope: 'row' }, el('div', {}, name), el('div', { class: 'muted' }, q.job || 'email ledger')),
  el('td', { class: 'n' }, q.ready),
  el('td', { class: 'n' }, q.scheduled),
  el('td', { class: 'n' }, q.inFlight),
  el('td', { class: 'n' }, q.retrying),
  el('td', { class: q.failed > 0 ? 'n hot' : 'n', 'data-failed': q.failed }, q.failed),
  el('td', { class: 'n' }, q.doneRecently),
  el('td', { class: 'n lag' }, lag(q.lagSeconds)),
  el('td', {}, spark(q.perMinute)),
  el('td', {}, q.paused
    ? el('span', { class: 'badge paused', title: `by ${q.paused.by} ${ago(q.paused.at)}` }, 'Paused')
    : el('span', { class: 'badge running' }, 'Running')),
  el('td', {}, el('div', { class: 'actions' },
    q.paused
      ? el('button', { type: 'button', 'data-action': 'resume', onclick: () => act(`/queues/${name}/resume`) }, 'Resume')
      : el('button', { type: 'button', 'data-action': 'pause', onclick: () => act(`/queues/${name}/pause`) }, 'Pause'),
    q.failed > 0 ? el('button', { type: 'button', 'data-action': 'retry-all', onclick: () => act(`/queues/${name}/retry-failed`) }, 'Retry all') : '',
    q.failed > 0 ? el('button', { type: 'button', class: 'danger', 'data-action': 'discard-all', onclick: () => act(`/queues/${name}/discard-failed`, `Discard all ${q.failed} failed items of ${name}?`) }, 'Discard all') : '',
  )));
  return row;
}

function describe(item) {
  const p = item.payload || {};
  if (item.queue === 'mail') return `${p.kind} → ${p.recipient}`;
  return JSON.stringify(p);
}

function itemRow(item) {
  const base = `/queues/${item.queue}/items/${encodeURIComponent(item.id)}`;
  return el('tr', { 'data-item': item.id },
    el('td', {}, el('code', {}, item.id.length > 14 ? `${item.id.slice(0, 12)}…` : item.id)),
    el('td', { class: 'what' }, describe(item)),
    el('td', { class: 'n' }, item.attempts),
    el('td', {}, ago(item.dueAt)),
    el('td', { class: 'err' }, item.lastError || ''),
    el('td', {}, el('div', { class: 'actions' },
      item.state === 'failed' ? el('button', { type: 'button', 'data-action': 'retry', onclick: () => act(`${base}/retry`) }, 'Retry') : '',
      item.state === 'failed' ? el('button', { type: 'button', class: 'danger', 'data-action': 'discard', onclick: () => act(`${base}/discard`, 'Discard this item?') }, 'Discard') : '',
      ['scheduled', 'retrying'].includes(item.state) ? el('button', { type: 'button', 'data-action': 'run-now', onclick: () => act(`${base}/run-now`) }, 'Run now') : '',
    )));
}

function workerRow(w) {
  const inFlight = Object.entries(w.inFlight || {}).filter(([, n]) => n > 0).map(([q, n]) => `${q} ${n}`).join(', ');
  return el('tr', { 'data-worker': w.name, 'data-state': w.state },
    el('th', { scope: 'row' }, el('code', {}, w.name)),
    el('td', {}, `${w.host} · ${w.pid}`),
    el('td', {}, w.version),
    el('td', {}, ago(w.startedAt)),
    el('td', { class: 'beat' }, ago(w.lastHeartbeat)),
    el('td', {}, inFlight || '—'),
    el('td', { class: 'n' }, w.smtpBusy),
    el('td', { class: 'n' }, `${(w.rssBytes / 1048576).toFixed(0)} MB`),
    el('td', {}, el('span', { class: `badge ${w.state}` }, w.state)),
    el('td', {}, w.state === 'running'
      ? el('button', { type: 'button', 'data-action': 'quiet', onclick: () => act(`/workers/${encodeURIComponent(w.name)}/quiet`, `Quiet ${w.name}? It finishes what it holds and takes nothing new.`) }, 'Quiet')
      : ''));
}

/**
 * Puts one row per item in `tbody`, keeping a row whose item has not changed (`sig`), so a
 * button under the pointer is not swapped out between press and release.
 */
function reconcile(tbody, items, key, sig, render) {
  const kept = new Map([...tbody.children].map((row) => [row.dataset.key, row]));
  const rows = items.map((item) => {
    const old = kept.get(key(item));
    if (old && old.dataset.sig === sig(item)) return old;
    const row = render(item);
    row.dataset.key = key(item);
    row.dataset.sig = sig(item);
    return row;
  });
  rows.forEach((row, i) => {
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
  });
  while (tbody.children.length > rows.length) tbody.lastElementChild.remove();
}

/** A worker's row changes with its state and load; its heartbeat's age is updated in place. */
function workerSig(w) {
  return JSON.stringify([w.state, w.inFlight, w.smtpBusy, Math.round(w.rssBytes / 1048576)]);
}

async function refresh() {
  if (!state.token || state.busy) return;
  state.busy = true;
  try {
    const query = `state=${state.itemState}&limit=50`;
    const [queues, items, workers, audit] = await Promise.all([
      api('/api/admin/ops/queues'),
      api(`/api/admin/ops/queues/${state.queue}/items?${query}`),
      api('/api/admin/ops/workers'),
      api('/api/admin/ops/audit?limit=20'),
    ]);
    // The lag grows every second while items wait: updated in place, not by a new row.
    const queueSig = (q) => JSON.stringify([{ ...q, lagSeconds: 0 }, q.name === state.queue]);
    reconcile($('#queues tbody'), queues.queues, (q) => q.name, queueSig, queueRow);
    for (const q of queues.queues) {
      const row = document.querySelector(`#queues tr[data-key="${CSS.escape(q.name)}"]`);
      if (row) row.querySelector('td.lag').textContent = lag(q.lagSeconds);
    }
    $('#items-queue').textContent = state.queue;
    const itemKey = (i) => `${i.queue}/${i.id}`;
    reconcile($('#items tbody'), items.items, itemKey, (i) => JSON.stringify(i), itemRow);
    $('#items-empty').hidden = items.items.length > 0;
    reconcile($('#workers tbody'), workers, (w) => w.name, workerSig, workerRow);
    for (const w of workers) {
      const row = document.querySelector(`#workers tr[data-key="${CSS.escape(w.name)}"]`);
      if (row) row.querySelector('td.beat').textContent = ago(w.lastHeartbeat);
    }
    $('#audit').replaceChildren(...audit.map((a) => el('li', {},
      el('time', { datetime: a.at }, ago(a.at)),
      el('span', {}, `${a.actor} · ${a.action} ${a.target}${a.item ? ` ${a.item}` : ''} · ${a.affected} changed`))));
    $('#updated').textContent = new Date(queues.at).toLocaleTimeString();
  } catch (error) {
    if (state.token) $('#status').textContent = `Cannot refresh: ${error.message}`;
  } finally {
    state.busy = false;
  }
}

function signOut(message = 'Signed out') {
  state.token = null;
  state.refresh = null;
  clearInterval(state.timer);
  $('#console').hidden = true;
  $('#sign-in').hidden = false;
  $('#sign-out').hidden = true;
  $('#status').textContent = message;
}

$('#sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#sign-in-error').textContent = '';
  const response = await fetch('/api/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: $('#email').value, password: $('#password').value }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $('#sign-in-error').textContent = body.message || 'Cannot sign in.';
    return;
  }
  state.token = body.accessToken;
  state.refresh = body.refreshToken;
  try {
    await api('/api/admin/ops/queues');
  } catch (error) {
    state.token = null;
    $('#sign-in-error').textContent = 'This account is not an admin.';
    return;
  }
  $('#sign-in').hidden = true;
  $('#console').hidden = false;
  $('#sign-out').hidden = false;
  $('#status').textContent = `Signed in as ${$('#email').value}`;
  await refresh();
  state.timer = setInterval(refresh, 1000);
});

$('#sign-out').addEventListener('click', () => signOut());

$('#states').addEventListener('click', (event) => {
  const tab = event.target.closest('[role="tab"]');
  if (!tab) return;
  state.itemState = tab.dataset.state;
  for (const t of document.querySelectorAll('#states [role="tab"]')) {
    t.setAttribute('aria-selected', String(t === tab));
  }
  refresh();
});
