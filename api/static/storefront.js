// Honeydrop storefront: a plain-JavaScript client of the public API (REST under /api, live
// stock over /ws). No framework and no build step; nothing is fetched from elsewhere.
'use strict';

(() => {
  const SESSION_KEY = 'honeydrop.session';

  // ---------------------------------------------------------------- small helpers

  const $ = (selector, root = document) => root.querySelector(selector);

  /** Builds an element: h('p', {class: 'x', onclick: f}, 'text', child). */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
      else if (name === 'class') el.className = value;
      else if (value === true) el.setAttribute(name, '');
      else el.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const money = (cents, currency) => {
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(cents / 100);
    } catch {
      return `${(cents / 100).toFixed(2)} ${currency}`;
    }
  };

  /** "14:30" today, "Tue 14:30" within the week, a date beyond. */
  const when = (iso) => {
    const date = new Date(iso);
    const time = date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
    if (date.toDateString() === new Date().toDateString()) return time;
    if (date - Date.now() < 6 * 86400000) return `${date.toLocaleDateString(undefined, { weekday: 'short' })} ${time}`;
    return `${date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${time}`;
  };

  const clock = (ms) => {
    const total = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, '0')}`;
  };

  /**
   * Makes `container` show `items` in order, one element per `key`. An element whose
   * `signature` is unchanged is kept as it is, and so is one with a field being typed in: a
   * refresh never pulls a button or a half-typed value from under the person using it. A
   * replaced element that had the focus on a button hands it to the same button in the new one.
   */
  function reconcile(container, items, key, signature, build) {
    const active = document.activeElement;
    const typing = active && active.matches('input, select, textarea');
    let refocus = null;
    const old = new Map([...container.children].filter((el) => el.dataset.key)
      .map((el) => [el.dataset.key, el]));
    const next = items.map((item) => {
      const k = String(key(item));
      const sig = signature(item);
      const existing = old.get(k);
      if (existing && (existing.dataset.signature === sig || (typing && existing.contains(active)))) {
        return existing;
      }
      const el = build(item);
      el.dataset.key = k;
      el.dataset.signature = sig;
      if (existing && existing.contains(active) && active.dataset.action) {
        refocus = () => { const same = el.querySelector(`[data-action="${active.dataset.action}"]`); if (same) same.focus(); };
      }
      return el;
    });
    next.forEach((el, i) => {
      if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
    });
    while (container.children.length > next.length) container.lastElementChild.remove();
    if (refocus) refocus();
  }

  /**
   * Wraps a GET: when calls overlap, only the answer of the newest is used (an older answer
   * arriving late must not undo a newer one). The others resolve to `undefined`.
   */
  function newestOnly(fetcher) {
    let issued = 0;
    return async (...args) => {
      const mine = ++issued;
      const answer = await fetcher(...args);
      return mine === issued ? answer : undefined;
    };
  }

  function announce(text) {
    const region = $('#announcer');
    region.textContent = '';
    // A fresh text node after a tick makes screen readers read repeated messages too.
    setTimeout(() => { region.textContent = text; }, 50);
  }

  // ---------------------------------------------------------------- session and API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  let session = readSession();
  let me = null;
  let refreshing = null;

  function readSession() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY)) || null;
    } catch {
      return null;
    }
  }

  function saveSession(auth) {
    session = {
      accessToken: auth.accessToken,
      refreshToken: auth.refreshToken,
      expiresAt: Date.now() + auth.expiresIn * 1000,
      ttlMs: auth.expiresIn * 1000,
    };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }

  function forgetSession() {
    session = null;
    me = null;
    sessionStorage.removeItem(SESSION_KEY);
  }

  /** Exchanges the refresh token once, however many requests are waiting for it. */
  function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        const refreshToken = session && session.refreshToken;
        if (!refreshToken) throw new ApiError(401, 'unauthorized', 'Please sign in.');
        const res = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ refreshToken }),
        });
        const body = await res.json().catch(() => null);
        if (!res.ok) {
          const message = (body && body.message) || 'Your session has ended.';
          signedOut(`${message} Please sign in again.`);
          throw new ApiError(res.status, body && body.code, message);
        }
        saveSession(body);
      })().finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  /** The access token, refreshed first when it is about to expire. */
  async function accessToken() {
    if (!session) return null;
    const margin = Math.min(30000, (session.ttlMs || 0) / 2);
    if (Date.now() >= session.expiresAt - margin) await refresh();
    return session && session.accessToken;
  }

  /** Calls the API; answers the JSON body or throws an ApiError with the API's message. */
  async function api(method, path, { body, auth = false, headers = {}, retried = false } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (auth) {
      const token = await accessToken();
      if (!token) throw new ApiError(401, 'unauthorized', 'Please sign in first.');
      init.headers.Authorization = `Bearer ${token}`;
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, 'network', 'The store cannot be reached right now. Try again in a moment.');
    }
    if (res.status === 401 && auth && !retried && session) {
      // The access token expired (or was refused): exchange the refresh token and try once more.
      await refresh();
      return api(method, path, { body, auth, headers, retried: true });
    }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      throw new ApiError(res.status, data && data.code,
        (data && data.message) || `The store answered ${res.status}.`);
    }
    return data;
  }

  // ---------------------------------------------------------------- state

  const fetchDrops = newestOnly(() => api('GET', '/api/drops'));
  const fetchProducts = newestOnly(() => api('GET', '/api/products'));
  const fetchAdminDrops = newestOnly(() => api('GET', '/api/admin/drops', { auth: true }));
  const fetchOutbox = newestOnly(() => api('GET', '/api/admin/outbox?limit=15', { auth: true }));
  const fetchStats = newestOnly((ids) => Promise.all(ids.map((id) =>
    api('GET', `/api/admin/products/${id}/stats`, { auth: true }))));

  const drops = new Map();        // id → drop from GET /api/drops
  const stock = new Map();        // dropId → {availableStock, version}: newest version wins
  const holds = new Map();        // dropId → {reservation, state, message}
  const bought = new Map();       // dropId → units bought by the signed-in buyer
  const places = new Map();       // dropId → {position, length}: the buyer's place in line
  const entries = new Map();      // dropId → the buyer's draw entry {entryId, position, won}
  const products = new Map();     // id → product from GET /api/products
  const restockedNow = new Set(); // product ids that came back while this page was open
  const dropErrors = new Map();   // dropId → message
  let dropsLoaded = false;
  let productsLoaded = false;

  /** Keeps the newest stock of a drop; answers whether it changed. */
  function setStock(dropId, availableStock, version) {
    const known = stock.get(dropId);
    if (known && version <= known.version) return false; // stale or already seen
    stock.set(dropId, { availableStock, version });
    return true;
  }

  // ---------------------------------------------------------------- drops

  async function loadDrops() {
    try {
      const list = await fetchDrops();
      if (!list) return;
      drops.clear();
      for (const drop of list) {
        drops.set(drop.id, drop);
        setStock(drop.id, drop.availableStock, drop.version);
      }
      dropsLoaded = true;
      renderDrops();
    } catch (e) {
      $('#drops-empty').hidden = false;
      $('#drops-empty').textContent = `Drops could not be loaded: ${e.message}`;
    }
  }

  let dropReload = null;
  function reloadDropsSoon() {
    if (dropReload) return;
    dropReload = setTimeout(() => { dropReload = null; loadDrops(); }, 300);
  }

  async function loadMyHolds() {
    if (!session) return;
    try {
      const [reservations, purchases] = await Promise.all([
        api('GET', '/api/reservations', { auth: true }),
        api('GET', '/api/purchases', { auth: true }),
      ]);
      bought.clear();
      for (const p of purchases) bought.set(p.dropId, (bought.get(p.dropId) || 0) + 1);
      for (const r of reservations) {
        if (r.status === 'active' && Date.parse(r.expiresAt) > Date.now() && !holds.has(r.dropId)) {
          holds.set(r.dropId, { reservation: r, state: 'active' });
        }
      }
      await Promise.all([...drops.values()].map(loadPlace));
      renderDrops();
    } catch (e) {
      console.warn('holds not loaded', e);
    }
  }

  /** The buyer's place in a sold-out drop's line, or their entry in a draw. */
  async function loadPlace(drop) {
    if (!session) return;
    const ask = async (path, map, none) => {
      try {
        map.set(drop.id, await api('GET', path, { auth: true }));
      } catch (e) {
        if (e.code !== none) throw e;
        map.delete(drop.id);
      }
    };
    if (drop.mode === 'draw') await ask(`/api/drops/${drop.id}/entries/me`, entries, 'not_entered');
    const soldOut = (stock.get(drop.id) || drop).availableStock === 0;
    if (drop.status === 'live' && soldOut) {
      await ask(`/api/drops/${drop.id}/waitlist`, places, 'not_waiting');
      const place = places.get(drop.id);
      if (place && place.status !== 'waiting') places.delete(drop.id);
    }
  }

  function renderDrops() {
    const sorted = [...drops.values()].sort((a, b) =>
      (a.status === b.status ? 0 : a.status === 'live' ? -1 : 1) ||
      Date.parse(a.startsAt) - Date.parse(b.startsAt) || a.id - b.id);
    // Cards whose content is unchanged stay as they are: a click on one is never lost.
    reconcile($('#drop-list'), sorted, (d) => d.id, dropSignature, dropCard);
    $('#drops-empty').hidden = !dropsLoaded || sorted.length > 0;
  }

  /** Everything a drop card shows (its countdown ticks in place). */
  function dropSignature(drop) {
    const hold = holds.get(drop.id);
    return JSON.stringify([drop, stock.get(drop.id), Boolean(session), bought.get(drop.id) || 0,
      dropErrors.get(drop.id) || '', hold ? [hold.reservation.id, hold.state, hold.message, hold.source, hold.offered, hold.won] : null,
      places.get(drop.id) || null, entries.get(drop.id) || null]);
  }

  function focusInDrop(dropId) {
    const card = $(`[data-drop-id="${dropId}"]`);
    if (!card) return;
    const target = $('.hold button:not(:disabled)', card) || $('.actions button:not(:disabled)', card) ||
      $('h3', card);
    target.focus();
  }

  function rerenderDrop(dropId, hadFocus) {
    const old = $(`[data-drop-id="${dropId}"]`);
    const drop = drops.get(dropId);
    if (!old || !drop) return;
    const focused = hadFocus || old.contains(document.activeElement);
    const card = dropCard(drop);
    card.dataset.key = String(dropId);
    card.dataset.signature = dropSignature(drop);
    old.replaceWith(card);
    if (focused) focusInDrop(dropId);
  }

  /** Re-renders a drop's card only if what it shows changed: a click on it is never lost. */
  function refreshDrop(dropId) {
    const card = $(`[data-drop-id="${dropId}"]`);
    const drop = drops.get(dropId);
    if (card && drop && card.dataset.signature !== dropSignature(drop)) rerenderDrop(dropId);
  }

  function updateDropStock(dropId) {
    const card = $(`[data-drop-id="${dropId}"]`);
    const drop = drops.get(dropId);
    if (!card || !drop) return;
    const { availableStock } = stock.get(dropId);
    $('.stock-count', card).textContent = availableStock;
    $('.bar span', card).style.width = `${percent(availableStock, drop.totalStock)}%`;
    $('.bar', card).setAttribute('aria-valuenow', availableStock);
    card.dataset.signature = dropSignature(drop);
    const soldOut = availableStock === 0;
    if (soldOut !== card.classList.contains('is-soldout')) rerenderDrop(dropId);
    card.classList.remove('flash');
    void card.offsetWidth; // restart the animation
    card.classList.add('flash');
  }

  const percent = (n, total) => (total > 0 ? Math.round((100 * n) / total) : 0);

  function dropCard(drop) {
    const { availableStock } = stock.get(drop.id) || drop;
    const live = drop.status === 'live';
    const soldOut = availableStock === 0;
    const hold = holds.get(drop.id);
    const titleId = `drop-${drop.id}-title`;
    const badge = drop.status === 'entries_open'
      ? h('span', { class: 'badge upcoming' }, `Draw · entries close ${when(drop.entriesCloseAt)}`)
      : !live
      ? h('span', { class: 'badge upcoming' }, `Opens ${when(drop.startsAt)}`)
      : soldOut
        ? h('span', { class: 'badge soldout' }, 'Sold out')
        : h('span', { class: 'badge live' }, 'Live');
    return h('li', {
      class: `card drop${soldOut ? ' is-soldout' : ''}`, 'data-drop-id': drop.id, 'aria-labelledby': titleId,
    },
    h('div', { class: `card-art tone-${drop.id % 4}`, 'aria-hidden': 'true' }, initials(drop.name)),
    h('div', { class: 'card-body' },
      h('div', { class: 'meta' }, h('h3', { id: titleId, tabindex: '-1' }, drop.name), badge),
      drop.description ? h('p', { class: 'desc' }, drop.description) : null,
      h('div', { class: 'meta' },
        h('span', { class: 'price' }, money(drop.priceCents, drop.currency)),
        drop.maxPerUser > 1 ? h('span', { class: 'muted' }, `up to ${drop.maxPerUser} each`) : null),
      h('div', { class: 'stock' },
        h('p', { class: 'stock-text' },
          h('strong', { class: 'stock-count' }, availableStock), ` of ${drop.totalStock} left`),
        h('div', {
          class: 'bar', role: 'progressbar', 'aria-label': `${drop.name}: units left`,
          'aria-valuemin': 0, 'aria-valuemax': drop.totalStock, 'aria-valuenow': availableStock,
        }, barFill(percent(availableStock, drop.totalStock)))),
      dropActions(drop, hold, live, soldOut),
      h('p', { class: 'error', role: 'alert' }, dropErrors.get(drop.id) || '')));
  }

  function barFill(width) {
    const fill = h('span');
    fill.style.width = `${width}%`;
    return fill;
  }

  const initials = (name) => name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0]).join('').toUpperCase();

  function dropActions(drop, hold, live, soldOut) {
    const parts = [];
    const owned = bought.get(drop.id) || 0;
    if (hold && hold.state === 'active') {
      const expires = Date.parse(hold.reservation.expiresAt);
      const left = expires - Date.now();
      parts.push(h('div', { class: 'hold', 'data-hold': hold.reservation.id },
        h('p', { class: 'timer-label', id: `hold-${drop.id}-label` }, holdLabel(hold)),
        h('p', {
          class: 'timer', role: 'timer', 'aria-labelledby': `hold-${drop.id}-label`,
          'data-expires': expires,
        }, clock(left)),
        h('p', { class: 'hint' }, `Buy before ${new Date(expires).toLocaleTimeString()} or the unit ${
          hold.offered ? 'passes to the next in line' : 'goes back on sale'}.`),
        h('div', { class: 'actions' },
          h('button', {
            class: 'accent', type: 'button', 'data-action': 'buy', disabled: left <= 0,
            onclick: () => buy(drop.id),
          }, `Buy for ${money(drop.priceCents, drop.currency)}`),
          h('button', {
            class: 'secondary', type: 'button', 'data-action': 'release', disabled: left <= 0,
            onclick: () => release(drop.id),
          }, 'Release'))));
      return h('div', { class: 'drop-actions' }, parts);
    }
    if (hold && hold.message) {
      parts.push(h('p', { class: `outcome ${hold.tone}`, role: 'status', 'data-source': hold.source }, hold.message));
    } else if (owned > 0) {
      parts.push(h('p', { class: 'outcome good' }, owned === 1 ? 'You own one of these.' : `You own ${owned} of these.`));
    }
    if (drop.status === 'entries_open') return drawActions(drop, parts);
    const entry = entries.get(drop.id);
    if (entry && entry.position && !entry.won && !hold && owned === 0) {
      parts.push(h('p', { class: 'outcome info' },
        `The draw is done and you did not win this time (entry #${entry.entryId}, drawn #${entry.position}).`));
    }
    const place = places.get(drop.id);
    if (live && soldOut && session && place) {
      parts.push(h('p', { class: 'outcome info', 'data-place': place.position },
        `You are number ${place.position} in line (${place.length} waiting). If a unit comes back, it is held for you.`));
      parts.push(h('div', { class: 'actions' },
        h('button', { class: 'secondary', type: 'button', 'data-action': 'leave-waitlist', onclick: () => leaveLine(drop.id) },
          'Leave the line')));
      return h('div', { class: 'drop-actions' }, parts);
    }
    let label = 'Reserve';
    let disabled = false;
    let action = () => reserve(drop.id);
    let name = 'reserve';
    if (!live) {
      label = 'Not open yet';
      disabled = true;
    } else if (soldOut && session && owned < drop.maxPerUser) {
      label = 'Join the waitlist';
      name = 'join-waitlist';
      action = () => joinLine(drop.id);
    } else if (soldOut) {
      label = 'Sold out';
      disabled = true;
    } else if (!session) {
      label = 'Sign in to reserve';
      action = () => {
        $('#auth-email').focus();
        $('#auth-error').textContent = `Sign in or create an account to reserve ${drop.name}.`;
      };
    }
    parts.push(h('div', { class: 'actions' },
      h('button', { class: 'primary', type: 'button', 'data-action': name, disabled, onclick: action }, label)));
    return h('div', { class: 'drop-actions' }, parts);
  }

  function holdLabel(hold) {
    if (hold.won) return 'You won the draw: held for you';
    if (hold.offered) return 'Your turn: a unit came back and is held for you';
    return 'Held for you';
  }

  /** A draw taking entries: enter it, or see that you did. */
  function drawActions(drop, parts) {
    const entry = entries.get(drop.id);
    if (entry) {
      parts.push(h('p', { class: 'outcome good', 'data-entry': entry.entryId },
        `You are in the draw (entry #${entry.entryId}). Winners are drawn ${when(drop.entriesCloseAt)}; check it with GET /api/drops/${drop.id}/draw.`));
      return h('div', { class: 'drop-actions' }, parts);
    }
    const signIn = () => {
      $('#auth-email').focus();
      $('#auth-error').textContent = `Sign in or create an account to enter the ${drop.name} draw.`;
    };
    parts.push(h('div', { class: 'actions' },
      h('button', {
        class: 'primary', type: 'button', 'data-action': 'enter-draw',
        onclick: session ? () => enterDraw(drop.id) : signIn,
      }, session ? 'Enter the draw' : 'Sign in to enter the draw')));
    return h('div', { class: 'drop-actions' }, parts);
  }

  function enterDraw(dropId) {
    return guarded(dropId, async () => {
      const entry = await api('POST', `/api/drops/${dropId}/entries`, { auth: true });
      entries.set(dropId, entry);
      announce(`You are in the draw, entry #${entry.entryId}.`);
    });
  }

  function joinLine(dropId) {
    return guarded(dropId, async () => {
      const place = await api('POST', `/api/drops/${dropId}/waitlist`, { auth: true });
      places.set(dropId, place);
      announce(`You are number ${place.position} in line.`);
    });
  }

  function leaveLine(dropId) {
    return guarded(dropId, async () => {
      await api('DELETE', `/api/drops/${dropId}/waitlist`, { auth: true });
      places.delete(dropId);
      announce('You left the line.');
    });
  }

  /** A returned unit (or a draw's win) became a hold for this buyer: `hold_offered`. */
  function holdOffered(data) {
    const known = holds.get(data.dropId);
    if (known && known.reservation.id === data.reservationId && known.state === 'active') return;
    const drop = drops.get(data.dropId);
    places.delete(data.dropId);
    holds.set(data.dropId, {
      reservation: { id: data.reservationId, dropId: data.dropId, expiresAt: data.expiresAt },
      state: 'active', offered: true,
    });
    announce(`${drop ? drop.name : 'A unit'} is held for you until ${new Date(data.expiresAt).toLocaleTimeString()}.`);
    if (drop) rerenderDrop(data.dropId);
    else reloadDropsSoon();
  }

  /** A draw this buyer entered was done: `draw_result`. */
  function drawResult(data) {
    const hold = holds.get(data.dropId);
    if (data.won && hold) {
      hold.won = true;
      rerenderDrop(data.dropId);
    }
    if (!data.won) places.set(data.dropId, { status: 'waiting', position: data.position, length: data.position });
    reloadDropsSoon();
    // The entry's own record says where it was drawn.
    api('GET', `/api/drops/${data.dropId}/entries/me`, { auth: true })
      .then((mine) => { entries.set(data.dropId, mine); refreshDrop(data.dropId); })
      .catch((e) => console.warn('entry not loaded', e));
  }

  /** Runs a buyer's action on a drop: buttons wait meanwhile, and an error is shown in words. */
  async function guarded(dropId, work) {
    dropErrors.delete(dropId);
    const card = $(`[data-drop-id="${dropId}"]`);
    // Disabling the focused button drops its focus; the new card gets it back.
    const hadFocus = Boolean(card && card.contains(document.activeElement));
    if (card) for (const b of card.querySelectorAll('button')) b.disabled = true;
    try {
      await work();
    } catch (e) {
      dropErrors.set(dropId, e.message);
      announce(e.message);
    }
    rerenderDrop(dropId, hadFocus);
  }

  function reserve(dropId) {
    return guarded(dropId, async () => {
      const headers = {};
      const drop = drops.get(dropId);
      if (drop && drop.requireChallenge) {
        // The drop asks for proof of work (ALTCHA): a second or two of this device's time.
        announce('Checking you are not a bot — solving a quick puzzle…');
        const challenge = await api('GET', '/api/challenge');
        headers['X-Altcha'] = await window.solveAltcha(challenge);
      }
      const reservation = await api('POST', `/api/drops/${dropId}/reserve`, { auth: true, headers });
      holds.set(dropId, { reservation, state: 'active' });
      announce(`Reserved. You have until ${new Date(reservation.expiresAt).toLocaleTimeString()} to buy.`);
    });
  }

  function buy(dropId) {
    const hold = holds.get(dropId);
    if (!hold) return undefined;
    return guarded(dropId, async () => {
      const drop = drops.get(dropId);
      try {
        const purchase = await api('POST', `/api/drops/${hold.reservation.id}/purchase`, {
          auth: true,
          headers: { 'Idempotency-Key': hold.idempotencyKey || (hold.idempotencyKey = newKey()) },
        });
        bought.set(dropId, (bought.get(dropId) || 0) + 1);
        endHold(dropId, 'purchased', 'good',
          `You bought ${drop.name} for ${money(purchase.amountCents, purchase.currency)}. Order #${purchase.id}.`);
      } catch (e) {
        if (e.code === 'reservation_expired' || e.code === 'reservation_released') {
          endHold(dropId, 'expired', 'sad', `${e.message}. The unit is back on sale.`);
          return;
        }
        throw e;
      }
    });
  }

  function release(dropId) {
    const hold = holds.get(dropId);
    if (!hold) return undefined;
    return guarded(dropId, async () => {
      await api('DELETE', `/api/reservations/${hold.reservation.id}`, { auth: true });
      endHold(dropId, 'released', 'info', 'Released. The unit is back on sale for everyone.');
    });
  }

  function endHold(dropId, state, tone, message) {
    const hold = holds.get(dropId);
    if (!hold) return;
    hold.state = state;
    hold.tone = tone;
    hold.message = message;
    announce(message);
  }

  const newKey = () => (crypto.randomUUID ? crypto.randomUUID()
    : `${Date.now()}-${Math.random().toString(16).slice(2)}`);

  /**
   * The server says a hold ended unbought: `reservation_expired` on our socket, or (`source`
   * 'check') our own look after the socket stayed quiet.
   */
  function holdExpired(reservationId, dropId, source = 'socket') {
    const hold = holds.get(dropId);
    if (!hold || hold.reservation.id !== reservationId || hold.state !== 'active') return;
    const drop = drops.get(dropId);
    endHold(dropId, 'expired', 'sad',
      `Your hold on ${drop ? drop.name : 'this drop'} ended before you bought it. The unit is back on sale.`);
    hold.source = source;
    rerenderDrop(dropId);
  }

  let lastScheduleCheck = 0;

  // Countdowns tick here; a hold whose time is up waits for the server's word, and asks for
  // it if the socket stays quiet (it may have been reconnecting).
  function tick() {
    const now = Date.now();
    for (const timer of document.querySelectorAll('.timer[data-expires]')) {
      const left = Number(timer.dataset.expires) - now;
      timer.textContent = left > 0 ? clock(left) : 'Time is up';
      if (left <= 0) {
        for (const b of timer.closest('.hold').querySelectorAll('button')) b.disabled = true;
      }
    }
    for (const [dropId, hold] of holds) {
      const overdue = now - Date.parse(hold.reservation.expiresAt);
      if (hold.state === 'active' && overdue > 4000 && now - (hold.checkedAt || 0) > 3000) {
        hold.checkedAt = now;
        settleHold(dropId, hold);
      }
    }
    if (now - lastScheduleCheck > 2000) {
      for (const drop of drops.values()) {
        const opens = Date.parse(drop.startsAt);
        const closes = drop.endsAt ? Date.parse(drop.endsAt) : Infinity;
        if ((drop.status === 'upcoming' && now >= opens) || now >= closes) {
          lastScheduleCheck = now;
          reloadDropsSoon();
          break;
        }
      }
    }
  }

  async function settleHold(dropId, hold) {
    try {
      const mine = await api('GET', '/api/reservations', { auth: true });
      const current = mine.find((r) => r.id === hold.reservation.id);
      if (current && current.status === 'expired') holdExpired(current.id, dropId, 'check');
    } catch (e) {
      console.warn('hold not settled', e);
    }
  }

  // ---------------------------------------------------------------- catalog

  async function loadProducts() {
    try {
      const list = await fetchProducts();
      if (!list) return;
      products.clear();
      for (const p of list) products.set(p.id, p);
      productsLoaded = true;
      renderProducts();
      if (me && me.role === 'admin') renderAdminProducts();
    } catch (e) {
      $('#catalog-empty').hidden = false;
      $('#catalog-empty').textContent = `The catalog could not be loaded: ${e.message}`;
    }
  }

  function renderProducts() {
    reconcile($('#product-list'), [...products.values()], (p) => p.id, productSignature, productCard);
    $('#catalog-empty').hidden = !productsLoaded || products.size > 0;
  }

  const productSignature = (p) =>
    JSON.stringify([p.name, p.priceCents, p.inStock, p.stockQuantity, p.waitingCount, restockedNow.has(p.id)]);

  function productCard(p) {
    const titleId = `product-${p.id}-title`;
    const art = p.imageUrl
      ? h('div', { class: 'card-art' }, h('img', { src: p.imageUrl, alt: '' }))
      : h('div', { class: `card-art tone-${(p.id + 1) % 4}`, 'aria-hidden': 'true' }, initials(p.name));
    const state = p.inStock
      ? h('span', { class: `badge ${restockedNow.has(p.id) ? 'back' : 'instock'}` },
        restockedNow.has(p.id) ? 'Back in stock' : 'In stock')
      : h('span', { class: 'badge soldout' }, 'Sold out');
    return h('li', { class: 'card product', 'data-product-id': p.id, 'aria-labelledby': titleId },
      art,
      h('div', { class: 'card-body' },
        h('div', { class: 'meta' }, h('h3', { id: titleId }, p.name), state),
        p.description ? h('p', { class: 'desc' }, p.description) : null,
        h('div', { class: 'meta' },
          h('span', { class: 'price' }, money(p.priceCents, p.currency)),
          p.inStock && p.stockQuantity !== null && p.stockQuantity !== undefined
            ? h('span', { class: 'muted' }, `${p.stockQuantity} left`) : null,
          !p.inStock && p.waitingCount > 0
            ? h('span', { class: 'muted' }, `${p.waitingCount} waiting`) : null),
        p.inStock ? null : notifyForm(p)));
  }

  function notifyForm(p) {
    const inputId = `notify-${p.id}-email`;
    const hintId = `notify-${p.id}-hint`;
    const result = h('p', { class: 'note', role: 'status' });
    const error = h('p', { class: 'error', role: 'alert' });
    const input = h('input', {
      id: inputId, type: 'email', name: 'email', autocomplete: 'email', required: true,
      'aria-describedby': hintId, placeholder: 'you@example.com',
    });
    const button = h('button', { class: 'secondary', type: 'submit' }, 'Notify me');
    const form = h('form', { class: 'notify', novalidate: true },
      h('label', { for: inputId }, 'Email me when it is back'),
      h('div', { class: 'row' }, input, button),
      h('p', { class: 'hint', id: hintId },
        'We first send a confirmation email. Only after you confirm on the page its link opens do we write again — once, ' +
        'when this is back in stock. Every email has a one-click unsubscribe link.'),
      result, error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      result.textContent = '';
      error.textContent = '';
      if (!input.value.trim()) {
        error.textContent = 'Enter your email address.';
        input.focus();
        return;
      }
      button.disabled = true;
      try {
        const answer = await api('POST', `/api/products/${p.id}/notify-me`, { body: { email: input.value.trim() } });
        result.textContent = answer.message;
      } catch (e) {
        error.textContent = e.message;
        input.focus();
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  function productRestocked(data) {
    const product = products.get(data.productId);
    if (!product) {
      loadProducts();
      return;
    }
    product.inStock = true;
    if (data.stockQuantity !== undefined) product.stockQuantity = data.stockQuantity;
    restockedNow.add(product.id);
    renderProducts();
    const card = $(`[data-product-id="${product.id}"]`);
    if (card) card.classList.add('flash');
    announce(`${product.name} is back in stock.`);
    if (me && me.role === 'admin') renderAdminProducts();
  }

  // ---------------------------------------------------------------- live socket

  let socket = null;
  let socketGeneration = 0;
  let reconnectDelay = 1000;

  function setLive(state, text) {
    $('#live').dataset.state = state;
    $('#live-text').textContent = text;
  }

  async function connect() {
    const generation = ++socketGeneration;
    if (socket) socket.close();
    socket = null;
    setLive('connecting', 'Connecting…');
    let token = null;
    try {
      token = await accessToken();
    } catch {
      token = null;
    }
    if (generation !== socketGeneration) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    const ws = new WebSocket(`${scheme}//${location.host}/ws${query}`);
    socket = ws;
    ws.addEventListener('open', () => {
      if (generation !== socketGeneration) return;
      reconnectDelay = 1000;
      setLive('live', 'Live');
    });
    ws.addEventListener('message', (event) => {
      if (generation !== socketGeneration) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(frame);
    });
    ws.addEventListener('close', () => {
      if (generation !== socketGeneration) return;
      setLive('down', 'Reconnecting…');
      const delay = reconnectDelay;
      reconnectDelay = Math.min(reconnectDelay * 2, 15000);
      setTimeout(() => { if (generation === socketGeneration) connect(); }, delay);
    });
  }

  function onFrame({ event, data }) {
    switch (event) {
      case 'snapshot': {
        for (const d of data.drops || []) {
          if (setStock(d.dropId, d.availableStock, d.version)) updateDropStock(d.dropId);
          if (dropsLoaded && !drops.has(d.dropId)) reloadDropsSoon();
        }
        let productChanged = false;
        for (const p of data.products || []) {
          const known = products.get(p.productId);
          if (!known) continue;
          if (known.inStock !== p.inStock || known.stockQuantity !== p.stockQuantity) {
            // Back while this page was open, but its product_restocked fell in a reconnect.
            if (!known.inStock && p.inStock) restockedNow.add(known.id);
            known.inStock = p.inStock;
            known.stockQuantity = p.stockQuantity;
            productChanged = true;
          }
        }
        if (productsLoaded && (data.products || []).some((p) => !products.has(p.productId))) loadProducts();
        else if (productChanged) renderProducts();
        break;
      }
      case 'stock_update': {
        const before = stock.get(data.dropId);
        if (setStock(data.dropId, data.availableStock, data.version)) {
          if (drops.has(data.dropId)) updateDropStock(data.dropId);
          // Offers made to the line move everyone's place up.
          if (places.has(data.dropId) && drops.has(data.dropId)) {
            loadPlace(drops.get(data.dropId)).then(() => refreshDrop(data.dropId))
              .catch((e) => console.warn('place not loaded', e));
          }
          // A new drop, or units added to one, also change what the listing says.
          if (dropsLoaded && (!drops.has(data.dropId) || (before && data.availableStock > before.availableStock))) {
            reloadDropsSoon();
          }
        }
        break;
      }
      case 'product_restocked':
        productRestocked(data);
        break;
      case 'reservation_expired':
        holdExpired(data.reservationId, data.dropId);
        break;
      case 'hold_offered':
        holdOffered(data);
        break;
      case 'draw_result':
        drawResult(data);
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------- account

  async function onAuthSubmit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const mode = event.submitter && event.submitter.value === 'signup' ? 'signup' : 'login';
    const email = $('#auth-email').value.trim();
    const password = $('#auth-password').value;
    const error = $('#auth-error');
    error.textContent = '';
    if (!email || !password) {
      error.textContent = 'Enter your email and a password.';
      (email ? $('#auth-password') : $('#auth-email')).focus();
      return;
    }
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    try {
      const auth = await api('POST', `/api/auth/${mode}`, { body: { email, password } });
      saveSession(auth);
      $('#auth-password').value = '';
      await signedIn();
      announce(mode === 'signup' ? 'Account created. You are signed in.' : 'You are signed in.');
      $('#drops-title').scrollIntoView({ block: 'start' });
    } catch (e) {
      error.textContent = e.message;
      $('#auth-password').focus();
    } finally {
      for (const b of form.querySelectorAll('button')) b.disabled = false;
    }
  }

  async function signedIn() {
    try {
      me = await api('GET', '/api/auth/me', { auth: true });
    } catch (e) {
      if (e.status === 401) {
        signedOut('Your session has ended. Please sign in again.');
        return;
      }
      throw e;
    }
    // Cards first, then the account bar: once the page says who is signed in, its buttons are
    // the signed-in ones.
    renderDrops();
    showAccount();
    connect();
    await loadMyHolds();
    if (me.role === 'admin') showAdmin();
  }

  function signedOut(message) {
    forgetSession();
    holds.clear();
    bought.clear();
    places.clear();
    entries.clear();
    showAccount();
    hideAdmin();
    renderDrops();
    connect();
    if (message) $('#auth-error').textContent = message;
  }

  async function signOut() {
    try {
      await api('POST', '/api/auth/logout', { auth: true });
    } catch {
      // Signing out locally is what matters; the session also ends on its own.
    }
    signedOut();
    announce('You are signed out.');
    $('#auth-email').focus();
  }

  function showAccount() {
    const signedInNow = Boolean(session && me);
    $('#whoami').hidden = !signedInNow;
    $('#whoami').textContent = signedInNow ? `${me.displayName} · ${me.email}${me.emailVerified === false ? ' (not verified: see your inbox)' : ''}${me.role === 'admin' ? ' · admin' : ''}` : '';
    $('#sign-out').hidden = !signedInNow;
    $('#sign-in-link').hidden = signedInNow;
    $('#sign-in').hidden = signedInNow;
    $('.intro').classList.toggle('signed-in', signedInNow);
  }

  // ---------------------------------------------------------------- admin

  let adminTimer = null;
  const stats = new Map(); // productId → stats

  function hideAdmin() {
    const section = $('#admin');
    section.hidden = true;
    section.replaceChildren();
    $('#nav-admin').hidden = true;
    clearInterval(adminTimer);
    adminTimer = null;
  }

  function showAdmin() {
    const section = $('#admin');
    $('#nav-admin').hidden = false;
    section.hidden = false;
    section.replaceChildren(
      h('div', { class: 'block-head' },
        h('h2', { id: 'admin-title' }, 'Admin'),
        h('p', { class: 'muted' }, 'Only admins see this. Everything here goes through the admin API.')),
      h('div', { class: 'panels' },
        h('div', { class: 'panel' }, newDropForm(),
          h('h3', {}, 'Drops'),
          h('p', { class: 'error', id: 'admin-drops-error', role: 'alert' }),
          h('div', { class: 'rows', id: 'admin-drops' })),
        h('div', { class: 'panel' }, newProductForm(),
          h('h3', {}, 'Products and alerts'),
          h('div', { class: 'rows', id: 'admin-products' })),
        h('div', { class: 'panel wide', id: 'outbox-panel' },
          h('h3', {}, 'Outbox'),
          h('p', { class: 'hint' }, 'In embedded mode emails are written to DATA_DIR/outbox instead of being sent. ' +
            'The newest are shown here, links and all.'),
          h('div', { class: 'actions' },
            h('button', { class: 'secondary', type: 'button', id: 'outbox-refresh', onclick: refreshAdmin }, 'Refresh')),
          h('p', { class: 'error', id: 'outbox-error', role: 'alert' }),
          h('p', { class: 'muted', id: 'outbox-empty', hidden: true },
            'No emails yet. Try “Notify me” on a sold-out product.'),
          h('div', { class: 'mail-list', id: 'outbox' }))));
    refreshAdmin();
    clearInterval(adminTimer);
    // Alerts go out in the background: keep the figures and the outbox current.
    adminTimer = setInterval(() => { if (!document.hidden) refreshAdmin(); }, 2000);
  }

  function refreshAdmin() {
    loadAdminDrops();
    loadStats();
    loadOutbox();
  }

  function field(id, label, input) {
    input.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input);
  }

  function adminForm(title, fields, submitLabel, onSubmit) {
    const error = h('p', { class: 'error', role: 'alert' });
    const note = h('p', { class: 'note', role: 'status' });
    const button = h('button', { class: 'primary', type: 'submit' }, submitLabel);
    const form = h('form', { novalidate: true }, h('div', { class: 'form-grid' }, fields),
      h('div', { class: 'actions' }, button), error, note);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      note.textContent = '';
      button.disabled = true;
      try {
        note.textContent = await onSubmit(form);
      } catch (e) {
        error.textContent = e.message;
      } finally {
        button.disabled = false;
      }
    });
    return h('div', { class: 'rows' }, h('h3', {}, title), form);
  }

  const cents = (text) => Math.round(Number(String(text).replace(',', '.')) * 100);

  function newDropForm() {
    return adminForm('New drop', [
      h('div', { class: 'wide' }, field('new-drop-name', 'Name', h('input', { required: true, maxlength: 200 }))),
      field('new-drop-price', 'Price (USD)', h('input', { type: 'number', min: 0, step: '0.01', value: '120', required: true })),
      field('new-drop-stock', 'Units', h('input', { type: 'number', min: 0, step: 1, value: '10', required: true })),
      field('new-drop-opens', 'Opens in (min)', h('input', { type: 'number', min: 0, step: 1, value: '0' })),
      field('new-drop-draw', 'Draw: entries close in (min, 0 = first come)', h('input', { type: 'number', min: 0, step: 1, value: '0' })),
    ], 'Create drop', async () => {
      const minutes = Number($('#new-drop-opens').value || 0);
      const drawMinutes = Number($('#new-drop-draw').value || 0);
      const body = {
        name: $('#new-drop-name').value.trim(),
        priceCents: cents($('#new-drop-price').value),
        totalStock: Number($('#new-drop-stock').value),
      };
      if (minutes > 0) body.startsAt = new Date(Date.now() + minutes * 60000).toISOString();
      if (drawMinutes > 0) {
        body.mode = 'draw';
        body.entriesCloseAt = new Date(Date.now() + (minutes + drawMinutes) * 60000).toISOString();
      }
      const drop = await api('POST', '/api/admin/drops', { auth: true, body });
      $('#new-drop-name').value = '';
      loadAdminDrops();
      loadDrops();
      return `Created “${drop.name}” with ${drop.totalStock} units.`;
    });
  }

  async function loadAdminDrops() {
    const box = $('#admin-drops');
    if (!box) return;
    try {
      const list = await fetchAdminDrops();
      if (!list) return;
      $('#admin-drops-error').textContent = '';
      reconcile(box, list.slice(0, 12), (d) => d.id,
        (d) => JSON.stringify([d.name, d.availableStock, d.totalStock]), adminDropRow);
    } catch (e) {
      $('#admin-drops-error').textContent = e.message;
    }
  }

  function adminDropRow(d) {
    const inputId = `add-stock-${d.id}`;
    const existing = $(`#${inputId}`);
    const input = h('input', { type: 'number', min: 1, step: 1, value: existing ? existing.value : '5' });
    const error = h('p', { class: 'error', role: 'alert' });
    const button = h('button', {
      class: 'secondary', type: 'button', 'data-action': 'add-stock',
      onclick: async () => {
        error.textContent = '';
        button.disabled = true;
        try {
          await api('PATCH', `/api/admin/drops/${d.id}`, { auth: true, body: { addStock: Number(input.value) } });
          await loadAdminDrops();
        } catch (e) {
          error.textContent = e.message;
        }
        button.disabled = false;
      },
    }, 'Add units');
    return h('div', { class: 'row-item', 'data-admin-drop': d.id },
      h('div', { class: 'row-head' }, h('strong', {}, d.name),
        h('span', { class: 'figures' }, h('span', {}, h('b', {}, d.availableStock), ` of ${d.totalStock} on sale`))),
      h('div', { class: 'inline' }, field(inputId, ['Units to add', h('span', { class: 'sr-only' }, ` to ${d.name}`)], input), button),
      error);
  }

  function newProductForm() {
    return adminForm('New product', [
      h('div', { class: 'wide' }, field('new-product-name', 'Name', h('input', { required: true, maxlength: 200 }))),
      field('new-product-price', 'Price (USD)', h('input', { type: 'number', min: 0, step: '0.01', value: '12.50' })),
      field('new-product-quantity', 'Units on hand', h('input', { type: 'number', min: 0, step: 1, value: '0' })),
    ], 'Create product', async () => {
      const quantity = Number($('#new-product-quantity').value || 0);
      const product = await api('POST', '/api/admin/products', {
        auth: true,
        body: {
          name: $('#new-product-name').value.trim(),
          priceCents: cents($('#new-product-price').value),
          inStock: quantity > 0,
          stockQuantity: quantity,
        },
      });
      $('#new-product-name').value = '';
      await loadProducts();
      return `Created “${product.name}”.`;
    });
  }

  function renderAdminProducts() {
    const box = $('#admin-products');
    if (!box) return;
    reconcile(box, [...products.values()], (p) => p.id,
      (p) => JSON.stringify([p.name, p.inStock, p.stockQuantity, stats.get(p.id) || null]), adminProductRow);
  }

  function adminProductRow(p) {
    const s = stats.get(p.id);
    const inputId = `restock-${p.id}`;
    const existing = $(`#${inputId}`);
    const input = h('input', { type: 'number', min: 1, step: 1, value: existing ? existing.value : '10' });
    const error = h('p', { class: 'error', role: 'alert' });
    const change = async (body, button) => {
      error.textContent = '';
      button.disabled = true;
      try {
        await api('PATCH', `/api/admin/products/${p.id}`, { auth: true, body });
        await loadProducts();
        loadStats();
      } catch (e) {
        error.textContent = e.message;
      }
      button.disabled = false;
    };
    const control = p.inStock
      ? h('button', {
        class: 'secondary', type: 'button', 'data-action': 'sell-out',
        onclick: (e) => change({ stockQuantity: 0 }, e.currentTarget),
      }, 'Mark sold out')
      : h('div', { class: 'inline' },
        field(inputId, ['Units back', h('span', { class: 'sr-only' }, ` in stock of ${p.name}`)], input),
        h('button', {
          class: 'accent', type: 'button', 'data-action': 'restock',
          onclick: (e) => change({ inStock: true, stockQuantity: Number(input.value) }, e.currentTarget),
        }, 'Back in stock'));
    return h('div', { class: 'row-item', 'data-admin-product': p.id },
      h('div', { class: 'row-head' }, h('strong', {}, p.name),
        h('span', { class: `badge ${p.inStock ? 'instock' : 'soldout'}` }, p.inStock ? 'In stock' : 'Sold out')),
      s ? h('div', { class: 'figures', 'data-stats': p.id },
        h('span', {}, 'Subscribers: ', h('b', {}, s.subscribers.pending), ' pending · ',
          h('b', {}, s.subscribers.confirmed), ' confirmed · ', h('b', {}, s.subscribers.notified), ' alerted'),
        h('span', { 'data-alerts': p.id }, 'Alerts: ', h('b', {}, s.alerts.queued), ' queued · ',
          h('b', {}, s.alerts.sent), ' sent · ', h('b', {}, s.alerts.failed), ' failed'))
        : h('div', { class: 'figures' }, 'Loading figures…'),
      control, error);
  }

  async function loadStats() {
    try {
      const all = await fetchStats([...products.keys()].slice(0, 20));
      if (!all) return;
      for (const s of all) stats.set(s.productId, s);
      renderAdminProducts();
    } catch (e) {
      console.warn('stats not loaded', e);
    }
  }

  async function loadOutbox() {
    const box = $('#outbox');
    if (!box) return;
    try {
      const mails = await fetchOutbox();
      if (!mails) return;
      $('#outbox-error').textContent = '';
      $('#outbox-empty').hidden = mails.length > 0;
      reconcile(box, mails, (m) => m.id, () => '', mailItem);
    } catch (e) {
      $('#outbox-error').textContent = e.message;
      $('#outbox-empty').hidden = true;
      box.replaceChildren();
    }
  }

  function mailItem(m) {
    return h('article', { class: 'mail', 'data-mail-id': m.id, 'aria-label': m.subject },
      h('h4', {}, m.subject),
      h('p', { class: 'mail-meta' }, `To ${m.to}`, m.date ? ` · ${new Date(m.date).toLocaleString()}` : ''),
      h('pre', {}, linkify(m.text)));
  }

  /** Plain text with its links made clickable (as text nodes and anchors, never as HTML). */
  function linkify(text) {
    const parts = [];
    const pattern = /https?:\/\/[^\s<>"]+/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      parts.push(text.slice(last, match.index));
      parts.push(h('a', { href: match[0], target: '_blank', rel: 'noopener' }, match[0]));
      last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    return parts;
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('#sign-in').addEventListener('submit', onAuthSubmit);
    $('#sign-out').addEventListener('click', signOut);
    $('#sign-in-link').addEventListener('click', (event) => {
      event.preventDefault();
      $('#sign-in').scrollIntoView({ block: 'center' });
      $('#auth-email').focus();
    });
    showAccount();
    loadDrops();
    loadProducts();
    if (session) {
      signedIn().catch((e) => { $('#auth-error').textContent = e.message; connect(); });
    } else {
      connect();
    }
    setInterval(tick, 250);
  }

  start();
})();
