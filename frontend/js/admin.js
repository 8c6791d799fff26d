// Operations console: live fleet map beside the order board, manual assignment, per-order
// timeline and dispatch audit, payments and refunds, partner standing, package CRUD, stats and
// CSV exports.
import { get, put, post, del, itemsOf, download, idempotencyKey, ApiError } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { createMap, drawServiceAreas, pinIcon, serviceAreas } from './map.js';
import { CATEGORIES } from './packages.js';
import { moneyWords, refundable, PAYMENT_STATUS_LABELS, KIND_LABELS } from './checkout.js';
import { serverSettings } from './settings.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, statusLabel, dateTime, ago, tabs,
  toast, initials, STATUS_LABELS } from './ui.js';

// When a partner's last fix is old on the map: the server's ping interval times its stale count
// (GET /config.json). The fleet tick's own `stale` status decides until the answer comes.
let staleMs = Infinity;
serverSettings().then((server) => { staleMs = server.pingIntervalMs * server.staleAfterIntervals; });
const ASSIGNABLE = new Set(['placed', 'offered', 'assigned']);

const state = { conn: null, map: null, pins: new Map(), partners: new Map(), orders: new Map(), openOrder: null,
  fleetVersion: null, subscribeTimer: 0, boardTimer: 0, tick: 0, partnersFetched: 0, waitingTimer: 0,
  waitingTick: 0, pick: null, kept: null, currency: 'INR' };

// ---- session -----------------------------------------------------------------------------

function showSignIn() {
  state.conn?.close();
  state.conn = null;
  clearInterval(state.tick);
  clearInterval(state.waitingTick);
  $('#app').hidden = true;
  $('#signin-area').hidden = false;
  renderAccount($('#account'), null);
  renderSignIn($('#signin-area'), { title: 'Operations sign-in', roles: ['admin'], onSignedIn: signedIn });
}

async function signedIn(user) {
  $('#signin-area').hidden = true;
  $('#app').hidden = false;
  renderAccount($('#account'), user, showSignIn);
  if (!state.map) {
    state.map = createMap($('#fleet-map'));
    drawServiceAreas(state.map).catch(() => { /* the fleet map works without the shading */ });
    state.map.on('moveend', () => {
      clearTimeout(state.subscribeTimer);
      state.subscribeTimer = setTimeout(subscribeFleet, 300);
    });
  }
  state.map.invalidateSize();
  await loadPartnerNames();
  connect();
  loadBoard();
  loadWaiting();
  clearInterval(state.tick);
  state.tick = setInterval(refreshPins, 1000);
  // Waiting times age, and retries happen without an event: a slow re-read keeps the queue true.
  clearInterval(state.waitingTick);
  state.waitingTick = setInterval(loadWaiting, 30_000);
}

const view = tabs($('#tabs'), (tab) => {
  if (tab === 'live') state.map?.invalidateSize();
  if (tab === 'partners') loadPartners();
  if (tab === 'payments') loadPayments();
  if (tab === 'packages') loadPackages();
  if (tab === 'stats') loadStats();
  if (tab === 'analytics') openAnalytics();
});

// ---- socket ----------------------------------------------------------------------------

function connect() {
  state.conn?.close();
  state.conn = connectSocket({
    onConnect: () => subscribeFleet(),
    onResync: () => { loadBoard(); if (state.openOrder) openOrder(state.openOrder); },
    onRefused: (err) => toast(`Live updates are off: ${err.message ?? 'connection refused'}`, 'error', 0),
  });
  const s = state.conn.socket;
  s.on('fleet', onFleet);
  s.on('order_status', onOrderStatus);
  s.on('payment_status', onPaymentStatus);
  s.on('dispatch_alert', onAlert);
}

function bbox() {
  const b = state.map.getBounds();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90), clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)];
}

async function subscribeFleet() {
  if (!state.conn?.socket.connected) return;
  const ack = await state.conn.emit('fleet_subscribe', { bbox: bbox() });
  if (ack?.ok === false) toast(`Fleet map: ${ack.error?.message ?? 'subscription refused'}`, 'error');
}

// ---- fleet map -------------------------------------------------------------------------

async function loadPartnerNames() {
  state.partnersFetched = Date.now();
  try {
    for (let page = 1; page <= 10; page += 1) {
      const answer = await get('/api/admin/partners', { limit: 100, page });
      for (const p of itemsOf(answer)) state.partners.set(p.id, p);
      if (page * 100 >= (answer?.total ?? 0)) break;
    }
  } catch { /* names are a nicety: pins still show */ }
}

const partnerName = (id) => {
  const p = state.partners.get(id);
  return p?.contact_name || p?.company_name || `Partner ${id.slice(0, 6)}`;
};

function onFleet(msg) {
  if (msg.type === 'snapshot') {
    for (const id of [...state.pins.keys()]) removePin(id);
    state.fleetVersion = msg.version ?? null;
  } else if (Number.isFinite(msg.version) && Number.isFinite(state.fleetVersion) && msg.version > state.fleetVersion + 1) {
    // A delta went missing: ask for a fresh snapshot rather than draw a wrong map.
    state.fleetVersion = msg.version;
    subscribeFleet();
    return;
  } else if (Number.isFinite(msg.version)) {
    state.fleetVersion = msg.version;
  }
  let unknown = false;
  for (const p of msg.partners ?? []) {
    upsertPin(p);
    if (!state.partners.has(p.id)) unknown = true;
  }
  for (const id of msg.removed ?? []) removePin(id);
  $('#fleet-count').textContent = `${state.pins.size} partner${state.pins.size === 1 ? '' : 's'} on the map`;
  if (unknown && Date.now() - state.partnersFetched > 10_000) loadPartnerNames().then(refreshPins);
}

function pinStatus(p) {
  const stale = p.status === 'stale' || (p.last_seen && Date.now() - p.last_seen > staleMs && p.status !== 'offline');
  return { status: stale ? 'stale' : p.status || 'idle', stale };
}

function upsertPin(p) {
  let pin = state.pins.get(p.id);
  const look = pinStatus(p);
  if (!pin) {
    const card = el('div', { class: 'hover-card-body' });
    const marker = window.L.marker([p.lat, p.lng], {
      icon: pinIcon({ label: initials(partnerName(p.id)), ...look }), title: partnerName(p.id), keyboard: true,
      alt: partnerName(p.id),
    }).addTo(state.map);
    marker.bindTooltip(card, { className: 'hover-card', direction: 'top', offset: [0, -16] });
    marker.getElement()?.setAttribute('data-partner-id', p.id);
    pin = { marker, card, data: p, look: '' };
    state.pins.set(p.id, pin);
  }
  pin.data = { ...pin.data, ...p };
  pin.marker.setLatLng([p.lat, p.lng]);
  drawPin(p.id, pin);
}

function drawPin(id, pin) {
  const look = pinStatus(pin.data);
  const key = `${look.status}|${partnerName(id)}`;
  if (key !== pin.look) {
    pin.look = key;
    pin.marker.setIcon(pinIcon({ label: initials(partnerName(id)), ...look }));
    pin.marker.getElement()?.setAttribute('data-partner-id', id);
    pin.marker.getElement()?.setAttribute('data-status', look.status);
  }
  const d = pin.data;
  const partner = state.partners.get(id);
  mount(pin.card,
    el('strong', { text: partnerName(id) }),
    partner?.company_name ? el('div', { text: partner.company_name }) : null,
    el('div', { text: `Status: ${look.status}` }),
    el('div', { class: 'last-seen', text: `Last seen ${d.last_seen ? ago(d.last_seen) : 'never'}` }),
    partner?.vehicle_type ? el('div', { text: `Vehicle: ${partner.vehicle_type}` }) : null);
}

function refreshPins() {
  for (const [id, pin] of state.pins) drawPin(id, pin);
}

function removePin(id) {
  state.pins.get(id)?.marker.remove();
  state.pins.delete(id);
}

// ---- order board -------------------------------------------------------------------------

for (const [value, label] of Object.entries(STATUS_LABELS)) $('#board-status').append(el('option', { value, text: label }));
$('#board-status').addEventListener('change', () => loadBoard());
$('#export-csv').addEventListener('click', (e) => busy(e.currentTarget, null, async () => {
  try {
    await download(`/api/admin/orders?format=csv${$('#board-status').value ? `&status=${$('#board-status').value}` : ''}`, 'orders.csv');
  } catch (err) {
    toast(`Export failed: ${err.message}`, 'error');
  }
}));

async function loadBoard() {
  const box = $('#board');
  if (!state.orders.size) mount(box, loading('Loading orders…'));
  try {
    const items = itemsOf(await get('/api/admin/orders', { limit: 50, status: $('#board-status').value || undefined }));
    state.orders = new Map(items.map((o) => [o.id, o]));
    renderBoard();
  } catch (err) {
    mount(box, errorBox(err, loadBoard));
  }
}

function renderBoard() {
  const box = $('#board');
  const items = [...state.orders.values()];
  if (!items.length) {
    mount(box, empty('No orders here yet.'));
    return;
  }
  mount(box, el('ul', { class: 'orders', id: 'board-list' }, items.map((o) =>
    el('li', { class: 'board-item', dataset: { id: o.id } },
      el('div', { class: 'spread' }, el('strong', { text: o.package?.name ?? 'Order' }),
        el('span', { class: 'row' }, o.arrival_unverified ? el('span', { class: 'badge warn', text: 'arrived away', title: farText(o.arrival_unverified) }) : null,
          statusBadge(o.status))),
      el('div', { class: 'muted', text: `${o.event_date} · ${o.address?.city ?? ''} · ${money(o.price, o.currency)}${o.partner_id ? ` · ${partnerName(o.partner_id)}` : ''}${scheduled(o) ? ` · scheduled: offers start ${venueTime(o.dispatch_at, o.timezone)}` : ''}` }),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'secondary', text: 'Open', 'aria-label': `Open order ${o.package?.name ?? ''}`,
          on: { click: () => openOrder(o.id) } }))))));
}

function onOrderStatus(msg) {
  const fresh = state.conn?.seen(`order:${msg.order_id}`, msg.version);
  if (fresh === null) return;
  const known = state.orders.get(msg.order_id);
  if (known) {
    known.status = msg.status;
    if (msg.partner_id) known.partner_id = msg.partner_id;
    renderBoard();
  } else if (!$('#board-status').value || $('#board-status').value === msg.status) {
    // A new order: read the board from the API, once for a burst of them.
    clearTimeout(state.boardTimer);
    state.boardTimer = setTimeout(loadBoard, 500);
  }
  if (state.openOrder === msg.order_id) openOrder(msg.order_id);
  refreshWaitingSoon(); // any change may start or end a wait, a late arrival or an away-arrival flag
}

function onPaymentStatus(msg) {
  // The version is the order's, shared with order_status, and either push of one change may come
  // first: whichever is new updates the board; the payments list changed either way.
  const fresh = state.conn?.seen(`order:${msg.order_id}`, msg.version);
  if (fresh !== null) {
    const known = state.orders.get(msg.order_id);
    if (known) {
      Object.assign(known, { status: msg.status, payment_status: msg.payment_status, amount_due: msg.amount_due,
        amount_paid: msg.amount_paid, amount_refunded: msg.amount_refunded });
      renderBoard();
    }
    if (state.openOrder === msg.order_id) openOrder(msg.order_id);
  }
  if (!$('#panel-payments').hidden) {
    clearTimeout(payments.timer);
    payments.timer = setTimeout(loadPayments, 400);
  }
}

// ---- waiting for a partner ---------------------------------------------------------------

function minutesText(seconds) {
  const m = Math.max(0, Math.round(seconds / 60));
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** "18:42" in the venue's zone when known. */
function clock(iso, timeZone) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  try {
    return d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: timeZone || undefined });
  } catch {
    return d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  }
}

/** The needs-attention queue: orders with no partner yet whose dispatch time has come (the
 * persistent list behind `dispatch_alert`), each with "Assign", and partners whose tracking went
 * dark mid-job, each with their job and a phone number. Shown only while there is something. */
async function loadWaiting() {
  let page;
  let dark;
  let flagged;
  try {
    [page, dark, flagged] = await Promise.all([get('/api/admin/orders/unassigned', { limit: 50 }),
      get('/api/admin/partners/dark').catch(() => ({ items: [] })),
      get('/api/admin/orders/attention').catch(() => ({ items: [] }))]);
  } catch {
    return; // keep the last list; the next event or the 30 s re-read tries again
  }
  const items = itemsOf(page);
  const darkItems = itemsOf(dark);
  const flaggedItems = itemsOf(flagged);
  const count = (page.total ?? items.length) + darkItems.length + flaggedItems.length;
  $('#waiting').hidden = !count;
  $('#waiting-count').textContent = String(count);
  mount($('#waiting-list'), items.map((o) => {
    const why = o.offered ? 'an offer is out now'
      : o.attempts ? `nobody took it${o.radius_m ? ` within ${Math.round(o.radius_m / 1000)} km` : ''}${o.next_retry_at ? `; next try ${clock(o.next_retry_at, o.timezone)}` : ''}`
        : 'looking for a partner';
    return el('li', { class: 'board-item', dataset: { id: o.id, kind: 'unassigned' } },
      el('div', { class: 'spread' }, el('strong', { text: `No partner: ${o.package ?? 'order'}` }),
        el('span', { class: o.waiting_s >= 600 ? 'badge warn' : 'badge', text: `waiting ${minutesText(o.waiting_s)}` })),
      el('div', { class: 'muted', text: [o.city, why, o.arrive_before ? `arrival window closes ${clock(o.arrive_before, o.timezone)}` : null]
        .filter(Boolean).join(' · ') }),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'primary', text: 'Assign', 'aria-label': `Assign ${o.package ?? 'order'}`,
          on: { click: () => assignFromQueue(o.id) } }),
        el('button', { type: 'button', class: 'secondary', text: 'Open', 'aria-label': `Open waiting order ${o.package ?? ''}`,
          on: { click: () => openOrder(o.id) } })));
  }), darkItems.map((d) => el('li', { class: 'board-item', dataset: { partner: d.partner_id, kind: 'dark' } },
    el('div', { class: 'spread' }, el('strong', { text: `Tracking dark: ${d.name}` }),
      el('span', { class: 'badge warn', text: d.dark_s == null ? 'never shared a position' : `no GPS for ${minutesText(d.dark_s)}` })),
    el('div', { class: 'muted', text: [d.online ? 'on a job' : 'went off duty during a job', d.package,
      statusLabel(d.order_status)].filter(Boolean).join(' · ') }),
    el('div', { class: 'row' },
      el('button', { type: 'button', class: 'secondary', text: 'Open job', 'aria-label': `Open the job of ${d.name}`,
        on: { click: () => openOrder(d.order_id) } }),
      d.phone ? el('a', { class: 'button secondary', href: `tel:${d.phone}`, text: `Call ${d.phone}` }) : null))),
  flaggedItems.map(attentionItem));
}

/** A late arrival (the window closed, or closes before the partner's ETA) or an arrival marked
 * away from the venue, with the order's panel and the partner's phone. */
function attentionItem(a) {
  const late = a.kind === 'late';
  const title = late ? `Late: ${a.package ?? 'order'}` : `Arrived away from the venue: ${a.package ?? 'order'}`;
  const badge = late ? `${minutesText(a.late_s)} late` : farText(a);
  const detail = late
    ? [a.partner_name, statusLabel(a.order_status), a.arrive_before ? `window closes ${clock(a.arrive_before, a.timezone)}` : null,
      a.eta_s == null ? 'no position for an ETA' : `ETA ~${Math.max(1, Math.round(a.eta_s / 60))} min`]
    : [a.partner_name, a.reason ? `“${a.reason}”` : null, a.at ? `marked ${clock(a.at, a.timezone)}` : null];
  return el('li', { class: 'board-item', dataset: { id: a.order_id, kind: a.kind } },
    el('div', { class: 'spread' }, el('strong', { text: title }), el('span', { class: 'badge warn', text: badge })),
    el('div', { class: 'muted', text: detail.filter(Boolean).join(' · ') }),
    el('div', { class: 'row' },
      el('button', { type: 'button', class: 'secondary', text: 'Open order', 'aria-label': `Open order ${a.package ?? ''} of ${a.partner_name ?? ''}`,
        on: { click: () => openOrder(a.order_id) } }),
      a.partner_phone ? el('a', { class: 'button secondary', href: `tel:${a.partner_phone}`, text: `Call ${a.partner_phone}` }) : null));
}

/** "640 m from the venue", "no fresh position": what the arrival check said. */
function farText(flag) {
  if (flag.code === 'position_stale') return 'no fresh position';
  if (flag.code === 'position_unknown') return 'no position';
  return flag.distance_m == null ? 'away from the venue' : `${distanceText(flag.distance_m)} from the venue`;
}

/** "Assign" in the queue: the order's panel with the ranked partners, ready to search. */
async function assignFromQueue(id) {
  await openOrder(id);
  const form = $('#assign-form');
  if (!form) return;
  form.scrollIntoView({ block: 'start' });
  $('#assign-search')?.focus({ preventScroll: true });
}

function refreshWaitingSoon() {
  clearTimeout(state.waitingTimer);
  state.waitingTimer = setTimeout(loadWaiting, 800);
}

function onAlert(alert) {
  const item = toast(`No partner took order ${String(alert.order_id).slice(0, 8)}${alert.radius_m ? ` within ${Math.round(alert.radius_m / 1000)} km` : ''}: assign it manually.`, 'error', 0);
  item.insertBefore(el('button', { type: 'button', class: 'link', text: 'Open', on: { click: () => {
    view.select('live');
    openOrder(alert.order_id);
    item.remove();
  } } }), item.lastChild);
  loadBoard();
  loadWaiting();
}

async function openOrder(id) {
  // Re-opened by a live update: leave the operator's scroll position alone.
  const shown = state.openOrder === id && !$('#order-panel').hidden;
  if (!shown) {
    clearPick();
    state.kept = null;
  }
  state.openOrder = id;
  const panel = $('#order-panel');
  panel.hidden = false;
  mount(panel, loading('Loading order…'));
  let order;
  let audit;
  let contacts;
  try {
    [order, audit, contacts] = await Promise.all([get(`/api/orders/${encodeURIComponent(id)}`),
      get(`/api/admin/orders/${encodeURIComponent(id)}/audit`),
      get(`/api/admin/orders/${encodeURIComponent(id)}/contacts`).catch(() => null)]);
  } catch (err) {
    mount(panel, errorBox(err, () => openOrder(id)));
    return;
  }
  const history = Array.isArray(order.history) ? order.history : [];
  mount(panel,
    el('div', { class: 'spread' }, el('h2', { text: order.package?.name ?? 'Order' }), statusBadge(order.status),
      el('button', { type: 'button', class: 'link', text: 'Close', on: { click: () => { panel.hidden = true; state.openOrder = null; clearPick(); } } })),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Order' }), el('dd', {}, el('code', { text: order.id })),
      el('dt', { text: 'Event' }), el('dd', { text: `${order.event_date} · ${order.guests} guests` }),
      order.arrive_after ? el('dt', { text: 'Arrival' }) : null,
      order.arrive_after ? el('dd', { id: 'panel-window', text: windowText(order) }) : null,
      scheduled(order) ? el('dt', { text: 'Dispatch' }) : null,
      scheduled(order) ? el('dd', { id: 'panel-dispatch', text: `scheduled: offers start ${venueTime(order.dispatch_at, order.timezone)}` }) : null,
      order.arrival_unverified ? el('dt', { text: 'Arrival check' }) : null,
      order.arrival_unverified ? el('dd', { id: 'panel-far' }, el('span', { class: 'badge warn', text: 'arrived away from the venue' }),
        ` ${farText(order.arrival_unverified)}`, order.arrival_unverified.reason ? ` · “${order.arrival_unverified.reason}”` : '',
        order.arrival_unverified.at ? el('span', { class: 'muted', text: ` (${venueTime(order.arrival_unverified.at, audit?.story?.timezone)})` }) : null) : null,
      el('dt', { text: 'Venue' }), el('dd', { text: [order.address?.line1, order.address?.city, order.address?.postal_code].filter(Boolean).join(', ') }),
      el('dt', { text: 'Price' }), el('dd', { text: `${money(order.price, order.currency)} (${order.payment_option})` }),
      el('dt', { text: 'Payment' }), el('dd', { id: 'panel-money' }, moneyWords(order),
        order.payment_option !== 'cash' ? el('span', { class: 'muted', text: ` (${order.payment_status ?? 'unpaid'})` }) : null,
        order.payment_option !== 'cash' ? el('div', {}, el('button', { type: 'button', class: 'link', text: 'Payments of this order',
          on: { click: () => showPaymentsOf(order.id) } })) : null),
      el('dt', { text: 'Customer' }), el('dd', { id: 'panel-customer' }, contactLine(contacts?.customer, 'account deleted')),
      el('dt', { text: 'Partner' }), el('dd', { id: 'panel-partner' }, order.partner_id
        ? contactLine(contacts?.partner ?? { name: partnerName(order.partner_id) }, '') : 'none yet'),
      order.notes ? el('dt', { text: 'Notes' }) : null, order.notes ? el('dd', { text: order.notes }) : null),
    ASSIGNABLE.has(order.status) ? assignForm(order) : null,
    el('h3', { text: 'Timeline' }),
    el('ol', { class: 'timeline' }, history.map((h) => el('li', {}, el('strong', { text: statusLabel(h.status) }),
      ` · ${venueTime(h.at, audit?.story?.timezone)} · ${h.by_role ?? ''}`, h.reason ? el('span', { class: 'muted', text: ` (${h.reason})` }) : null))),
    el('h3', { text: 'How dispatch handled it' }),
    auditStory(audit));
  if (!shown) panel.scrollIntoView({ block: 'start' });
}

const SKIP_LABELS = { excluded: 'already passed on it', offline: 'off duty', unknown: 'no position since a restart',
  stale: 'stale GPS', busy: 'busy', unreachable: 'app closed', offered: 'holding other offers', not_approved: 'not approved' };

/** The dispatch audit as the server tells it (story), each search with its ranked candidates, and
 * the raw entries behind a disclosure. */
function auditStory(audit) {
  const story = audit?.story ?? { steps: [] };
  const raw = itemsOf(audit);
  if (!story.steps.length && !raw.length) return empty('No dispatch decisions recorded yet.');
  const lastSearch = story.steps.findLastIndex((s) => s.search?.candidates?.length);
  return el('div', { class: 'audit-story' },
    el('p', { class: 'muted', text: `Times in ${story.timezone}.` }),
    el('ol', { class: 'timeline', id: 'audit-story' }, story.steps.map((step, i) => el('li', { dataset: { kind: step.kind } },
      el('time', { datetime: step.at, class: 'audit-time', text: step.time }), ' ',
      el('span', { class: 'audit-text', text: step.text }),
      step.search?.candidates?.length ? candidateTable(step.search, i === lastSearch) : null))),
    el('details', { id: 'audit-raw' },
      el('summary', { text: `Raw audit entries (${raw.length})` }),
      el('ol', { class: 'timeline', id: 'audit' }, raw.map((a) =>
        el('li', {}, el('strong', { text: a.event }), ` · ${dateTime(a.at)}`,
          el('div', { class: 'muted', text: auditText(a.data) }))))));
}

function candidateTable(search, open) {
  const skipped = Object.entries(search.skipped ?? {}).map(([k, n]) => `${n} ${SKIP_LABELS[k] ?? k}`).join(', ');
  return el('details', { class: 'audit-candidates', open },
    el('summary', { text: `Candidates within ${distanceText(search.radius_m)} (${search.candidates.length} free${skipped ? `; skipped ${skipped}` : ''})` }),
    el('div', { class: 'table-wrap' }, el('table', { class: 'compact' },
      el('thead', {}, el('tr', {}, ['Rank', 'Partner', 'Distance', 'ETA', 'Idle', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, search.candidates.map((c) => el('tr', { class: c.offered ? 'offered' : '' },
        el('td', { text: `#${c.rank}` }), el('td', { text: c.name }), el('td', { text: distanceText(c.distance_m) }),
        el('td', { text: `~${Math.max(1, Math.round(c.eta_s / 60))} min` }),
        el('td', { text: c.idle_s == null ? '—' : durationText(c.idle_s) }),
        el('td', { text: c.offered ? 'offered' : '' })))))),
    search.excluded?.length ? el('p', { class: 'muted', text: `Left out: ${search.excluded.map((e) => `${e.name} (${e.why})`).join(', ')}` }) : null);
}

/** "Asha Rao · +91 98450 12345" with the number as a call link. */
function contactLine(person, missing) {
  if (!person) return missing;
  return [person.name || '—', person.phone ? ' · ' : null,
    person.phone ? el('a', { href: `tel:${person.phone}`, text: person.phone }) : null];
}

/** A moment in the service area's zone (the dispatch story's), as the story tells its times. */
function venueTime(iso, timeZone) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  try {
    return d.toLocaleString('en-GB', { timeZone, day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  } catch {
    return dateTime(iso);
  }
}

/** "45 s", "14 min", "3 h 41 min": the same words as the dispatch story. */
function durationText(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : minutesText(s);
}

function distanceText(m) {
  return m >= 1000 ? `${(m / 1000).toFixed(1).replace(/\.0$/, '')} km` : `${Math.round(m / 10) * 10} m`;
}

/** The arrival window in the venue's time zone (what the customer chose), and in the viewer's if it differs. */
function windowText(order) {
  const zone = order.timezone || undefined;
  const fmt = (iso, tz) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', timeZone: tz });
  if (order.asap) return `as soon as possible (by ${fmt(order.arrive_before, zone)}${zone ? ` ${zone}` : ''})`;
  const venue = `${fmt(order.arrive_after, zone)}–${fmt(order.arrive_before, zone)}${zone ? ` ${zone}` : ''}`;
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return zone && zone !== local ? `${venue} (${fmt(order.arrive_after)}–${fmt(order.arrive_before)} your time)` : venue;
}

/** A placed order whose dispatch starts later (its arrival window is later). */
function scheduled(order) {
  return order.status === 'placed' && order.dispatch_at && new Date(order.dispatch_at).getTime() > Date.now();
}

function auditText(data) {
  if (!data || typeof data !== 'object') return '';
  return Object.entries(data).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ').slice(0, 400);
}

const CANDIDATE_STATES = { free: 'free', offered: 'holding an offer', busy: 'on a job', unreachable: 'app closed',
  stale: 'GPS stale', off_duty: 'off duty', no_position: 'no position yet' };

/** Assisted assignment: approved partners ranked as dispatch would offer them the order (free ones
 * first, by ETA and idle time), the others with why they are not free; searchable by name; the pick
 * is drawn on the fleet map. */
function assignForm(order) {
  const search = el('input', { id: 'assign-search', type: 'search', autocomplete: 'off', placeholder: 'Name, company or phone' });
  const list = el('div', { id: 'assign-list', class: 'assign-list' }, loading('Ranking partners…'));
  const picked = el('p', { id: 'assign-picked', class: 'muted', 'aria-live': 'polite', text: 'Pick a partner from the list.' });
  const reason = el('input', { id: 'assign-reason', maxlength: '300', placeholder: 'e.g. customer asked for this partner' });
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const form = el('form', { class: 'stack', id: 'assign-form', novalidate: true },
    el('h3', { text: order.partner_id ? 'Reassign' : 'Assign a partner' }),
    el('p', { class: 'muted', text: 'Free partners first, in the order dispatch would offer it (best ETA, then longest idle); then the rest, with why they are not free.' }),
    el('div', { class: 'field' }, el('label', { for: 'assign-search', text: 'Find a partner' }), search),
    list, picked,
    el('div', { class: 'field' }, el('label', { for: 'assign-reason', text: 'Reason' }), reason),
    el('div', { class: 'row' }, el('button', { type: 'submit', class: 'primary', text: 'Assign' })), status);
  // A live update re-renders the panel: the pick survives it.
  const pick = { id: state.kept?.order === order.id ? state.kept.id : '', rows: [], venue: null, extra: [] };

  const render = () => {
    const text = search.value.trim().toLowerCase();
    const rows = [...pick.rows, ...pick.extra.filter((r) => !pick.rows.some((x) => x.partner_id === r.partner_id))]
      .filter((r) => !text || [r.name, r.company_name, r.phone].some((v) => v && v.toLowerCase().includes(text)));
    if (!rows.length) {
      mount(list, empty(text ? 'No approved partner matches.' : 'No approved partner has shared a position near this venue. Search by name.'));
      return;
    }
    mount(list, el('div', { class: 'table-wrap' }, el('table', { class: 'compact', id: 'candidate-table' },
      el('thead', {}, el('tr', {}, ['', 'Rank', 'Partner', 'State', 'Distance', 'ETA', 'Idle', 'Jobs today', 'Last fix'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows.map((r) => {
        const radio = el('input', { type: 'radio', name: 'assign-partner', value: r.partner_id, id: `pick-${r.partner_id}`,
          checked: pick.id === r.partner_id, on: { change: () => choose(r) } });
        return el('tr', { dataset: { id: r.partner_id, state: r.state }, class: pick.id === r.partner_id ? 'picked' : '',
          on: { click: (e) => { if (e.target !== radio) { radio.checked = true; choose(r); } } } },
          el('td', {}, radio),
          el('td', { text: r.rank ? `#${r.rank}` : '' }),
          el('td', {}, el('label', { for: `pick-${r.partner_id}`, text: r.name }), r.current ? el('span', { class: 'chip', text: 'current' }) : null,
            r.company_name && r.company_name !== r.name ? el('div', { class: 'muted', text: r.company_name }) : null),
          el('td', { text: CANDIDATE_STATES[r.state] ?? r.state }),
          el('td', { text: r.distance_m == null ? '—' : distanceText(r.distance_m) }),
          el('td', { text: r.eta_s == null ? '—' : `~${Math.max(1, Math.round(r.eta_s / 60))} min` }),
          el('td', { text: r.idle_s == null ? '—' : durationText(r.idle_s) }),
          el('td', { text: String(r.jobs_today ?? 0) }),
          el('td', { text: r.fix_age_s == null ? '—' : `${durationText(r.fix_age_s)} ago` }));
      })))));
  };

  const choose = (r) => {
    pick.id = r.partner_id;
    state.kept = { order: order.id, id: r.partner_id };
    for (const tr of list.querySelectorAll('tr[data-id]')) tr.classList.toggle('picked', tr.dataset.id === r.partner_id);
    const facts = [CANDIDATE_STATES[r.state], r.distance_m == null ? null : `${distanceText(r.distance_m)} away`,
      r.eta_s == null ? null : `~${Math.max(1, Math.round(r.eta_s / 60))} min`].filter(Boolean).join(', ');
    mount(picked, `Picked ${r.name} (${facts}).`, r.lat != null ? ' ' : null,
      r.lat != null ? el('button', { type: 'button', class: 'link', text: 'Show on map', on: { click: () => $('#fleet-map').scrollIntoView({ block: 'center' }) } }) : null);
    drawPick(r, pick.venue);
  };

  const load = async (q) => {
    try {
      const answer = await get(`/api/admin/orders/${encodeURIComponent(order.id)}/candidates`, { q: q || undefined, limit: 100 });
      pick.venue = answer.venue;
      if (q) pick.extra = answer.items;
      else pick.rows = answer.items;
      render();
      const kept = !q && pick.id ? pick.rows.find((r) => r.partner_id === pick.id) : null;
      if (kept) choose(kept);
    } catch (err) {
      mount(list, errorBox(err, () => load(q)));
    }
  };
  let searchTimer = 0;
  search.addEventListener('input', () => {
    render();
    // Partners far away or without a position are not in the nearby list: ask the server by name.
    clearTimeout(searchTimer);
    if (search.value.trim().length >= 2) searchTimer = setTimeout(() => load(search.value.trim()), 300);
  });
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') e.preventDefault(); });
  load();

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!pick.id) {
      say(status, 'Pick a partner from the list.', 'error');
      return;
    }
    busy(form.querySelector('button[type=submit]'), status, async () => {
      await put(`/api/admin/orders/${encodeURIComponent(order.id)}/assign`, { partner_id: pick.id, reason: reason.value.trim() });
      toast(`Order assigned to ${partnerName(pick.id)}.`, 'success');
      clearPick();
      state.kept = null;
      refreshWaitingSoon();
      await loadBoard();
      await openOrder(order.id);
    });
  });
  return form;
}

/** The picked partner and the venue on the fleet map, joined by a line, both in view. */
function drawPick(r, venue) {
  clearPick();
  if (!state.map || r.lat == null || !venue) return;
  const L = window.L;
  const from = [r.lat, r.lng];
  const to = [venue.lat, venue.lng];
  state.pick = L.layerGroup([
    L.polyline([from, to], { className: 'assign-route', color: '#7c3aed', weight: 4, dashArray: '8 6' }),
    L.circleMarker(to, { className: 'assign-venue', radius: 9, color: '#7c3aed', fillColor: '#fff', fillOpacity: 1, weight: 3 })
      .bindTooltip('Venue', { permanent: true, direction: 'right' }),
    L.circleMarker(from, { className: 'assign-partner', radius: 20, color: '#7c3aed', fill: false, weight: 3 })
      .bindTooltip(r.name, { permanent: true, direction: 'left', className: 'assign-partner-label' }),
  ]).addTo(state.map);
  state.map.fitBounds(L.latLngBounds([from, to]).pad(0.3), { maxZoom: 16 });
}

function clearPick() {
  state.pick?.remove();
  state.pick = null;
}

// ---- payments ----------------------------------------------------------------------------

const PAYMENTS_PAGE = 25;
// `kept`: rows refunded here since the filters last changed, shown even when they stop matching the
// filters (a refund turns "Paid" into "Partly refunded"), so a row never vanishes under the admin.
const payments = { page: 1, turn: 0, timer: 0, kept: new Map() };
const PROVIDER_NAMES = { simulated: 'Simulator', stripe: 'Stripe', razorpay: 'Razorpay' };
const orderRef = (id) => `#${String(id).slice(-6).toUpperCase()}`;  // as receipts and refund notices name it

for (const [value, label] of Object.entries(PAYMENT_STATUS_LABELS)) $('#pay-status').append(el('option', { value, text: label }));
$('#payment-filters').addEventListener('submit', (e) => {
  e.preventDefault();
  refilter();
});
$('#payment-filters').addEventListener('reset', () => setTimeout(refilter, 0));  // after the fields are cleared
for (const id of ['#pay-status', '#pay-provider']) $(id).addEventListener('change', () => refilter());

function refilter(page = 1) {
  payments.page = page;
  payments.kept.clear();
  loadPayments();
}

$('#export-payments').addEventListener('click', (e) => busy(e.currentTarget, null, async () => {
  const params = new URLSearchParams({ format: 'csv' });
  for (const [k, v] of Object.entries(paymentFilters())) if (v) params.set(k, v);
  try {
    await download(`/api/admin/payments?${params}`, 'payments.csv');
  } catch (err) {
    toast(`Export failed: ${err.message}`, 'error');
  }
}));

function paymentFilters() {
  const value = (id) => $(id).value.trim() || undefined;
  return { status: value('#pay-status'), provider: value('#pay-provider'), date_from: value('#pay-from'),
    date_to: value('#pay-to'), order_id: value('#pay-order') };
}

/** The payments tab, filtered to one order. */
function showPaymentsOf(orderId) {
  for (const id of ['#pay-status', '#pay-provider', '#pay-from', '#pay-to']) $(id).value = '';
  $('#pay-order').value = orderId;
  payments.page = 1;
  payments.kept.clear();
  view.select('payments');
}

async function loadPayments() {
  const box = $('#payments');
  const turn = ++payments.turn;  // the last filter asked for wins over slower earlier answers
  if (!$('#payment-table')) mount(box, loading('Loading payments…'));
  try {
    const answer = await get('/api/admin/payments', { ...paymentFilters(), page: payments.page, limit: PAYMENTS_PAGE });
    const items = itemsOf(answer);
    if (turn !== payments.turn) return;
    renderTotals(answer?.totals ?? {}, answer?.total ?? items.length);
    renderPayments(withKept(items));
    renderPaymentsPager(answer?.total ?? items.length);
  } catch (err) {
    if (turn !== payments.turn) return;
    mount($('#payment-totals'));
    mount($('#payments-pager'));
    mount(box, errorBox(err instanceof ApiError && err.fieldMessages ? new Error(`${err.message}: ${err.fieldMessages}`) : err,
      loadPayments));
  }
}

/** The customer's name as the payments list carries it, or a short id when the account is gone. */
function customerName(p) {
  const c = p.customer;
  return c?.name || c?.email || c?.phone || `Customer ${String(p.customer_id ?? '').slice(0, 6)}`;
}

/** The page's rows plus those refunded here that no longer match the filters, newest first. */
function withKept(items) {
  const shown = new Set(items.map((p) => p.id));
  for (const p of items) if (payments.kept.has(p.id)) payments.kept.set(p.id, p);
  const gone = [...payments.kept.values()].filter((p) => !shown.has(p.id)).map((p) => ({ ...p, unmatched: true }));
  return [...items, ...gone].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
}

function renderTotals(totals, total) {
  const currencies = Object.keys(totals);
  const box = $('#payment-totals');
  $('#payment-count').textContent = total ? `${total} payment${total === 1 ? '' : 's'} match the filters; the totals cover all of them.` : '';
  if (!currencies.length) {
    mount(box);
    return;
  }
  mount(box, currencies.flatMap((currency) => {
    const t = totals[currency];
    const suffix = currencies.length > 1 ? ` (${currency})` : '';
    const item = (name, label, value) => el('li', { class: 'kpi', dataset: { total: name, currency } },
      el('strong', { text: money(value, currency) }), `${label}${suffix}`);
    return [item('captured', 'Captured', t.captured), item('refunded', 'Refunded', t.refunded), item('net', 'Net', t.net)];
  }));
}

function renderPayments(items) {
  const box = $('#payments');
  if (!items.length) {
    mount(box, empty('No payments match these filters.'));
    return;
  }
  const heads = [['Date'], ['Order'], ['Customer'], ['Provider'], ['Kind'], ['Status'], ['Amount', 'num'], ['Refunded', 'num'],
    ['', 'actions']];
  mount(box, el('div', { class: 'table-wrap' }, el('table', { id: 'payment-table', class: 'payments-table' },
    el('thead', {}, el('tr', {}, heads.map(([h, cls]) => el('th', { scope: 'col', class: cls, text: h })))),
    el('tbody', {}, items.map(paymentRow)))));
}

function paymentRow(p) {
  const m = (v) => money(v, p.currency);
  const pending = (p.refunds ?? []).filter((r) => r.status === 'pending').reduce((sum, r) => sum + (Number(r.amount) || 0), 0);
  const left = refundable(p);
  const customer = p.customer;
  return el('tr', { dataset: { id: p.id } },
    el('td', { class: 'nowrap', text: dateTime(p.created_at) }),
    el('td', {}, el('button', { type: 'button', class: 'link mono', text: orderRef(p.order_id), title: p.order_id,
      'aria-label': `Open order ${orderRef(p.order_id)}`, on: { click: () => { view.select('live'); openOrder(p.order_id); } } })),
    el('td', {}, el('div', { text: customerName(p) }),
      customer?.email && customer.name ? el('div', { class: 'muted small', text: customer.email }) : null),
    el('td', { text: PROVIDER_NAMES[p.provider] ?? p.provider }),
    el('td', { text: KIND_LABELS[p.kind] ?? p.kind }),
    el('td', {}, el('span', { class: `badge pay-${p.status}`, text: PAYMENT_STATUS_LABELS[p.status] ?? p.status }),
      p.status === 'failed' && p.failure_message ? el('div', { class: 'muted small', text: p.failure_message }) : null,
      p.unmatched ? el('div', { class: 'muted small', text: 'Refunded just now: no longer matches the filters' }) : null),
    el('td', { class: 'num', text: m(p.amount) }),
    el('td', { class: 'num refunded' }, Number(p.amount_refunded) > 0 ? m(p.amount_refunded) : '—',
      pending ? el('div', { class: 'muted small', text: `${m(pending)} pending` }) : null),
    el('td', { class: 'actions' }, left > 0 ? el('button', { type: 'button', class: 'secondary small', text: 'Refund',
      'aria-label': `Refund payment of ${m(p.amount)} for order ${orderRef(p.order_id)}`, on: { click: () => openRefund(p) } }) : null));
}

function renderPaymentsPager(total) {
  const pages = Math.max(1, Math.ceil(total / PAYMENTS_PAGE));
  const box = $('#payments-pager');
  if (pages === 1) {
    mount(box);
    return;
  }
  const go = (page) => refilter(page);
  mount(box,
    el('button', { type: 'button', class: 'secondary', text: 'Previous', disabled: payments.page <= 1, on: { click: () => go(payments.page - 1) } }),
    el('span', { text: `Page ${payments.page} of ${pages} · ${total} payments` }),
    el('button', { type: 'button', class: 'secondary', text: 'Next', disabled: payments.page >= pages, on: { click: () => go(payments.page + 1) } }));
}

/** The refund dialog: amount (what is left, editable) and a reason; safe to retry after an error. */
function openRefund(p) {
  const dialog = $('#refund-dialog');
  const m = (v) => money(v, p.currency);
  let left = refundable(p);
  // One key per refund the admin means to make. A retry after an error sends the same key, so the
  // server answers with the refund it already started instead of making a second one.
  let key = idempotencyKey();
  let tried = false;
  const before = new Set((p.refunds ?? []).map((r) => r.id));
  const amount = el('input', { id: 'refund-amount', type: 'number', min: '0.01', step: '0.01', inputmode: 'decimal',
    required: true, value: (left / 100).toFixed(2) });
  const limit = el('small', { class: 'hint', id: 'refund-limit' });
  const reason = el('input', { id: 'refund-reason', maxlength: '300', required: true, autocomplete: 'off',
    placeholder: 'e.g. goodwill for a late setup' });
  const status = el('p', { class: 'status', id: 'refund-status', role: 'alert', hidden: true });
  const submit = el('button', { type: 'submit', class: 'danger', id: 'refund-submit', text: 'Refund' });
  const showLimit = () => {
    limit.textContent = `Up to ${m(left)}.`;
    amount.max = (left / 100).toFixed(2);
  };
  showLimit();
  const form = el('form', { class: 'stack', id: 'refund-form', novalidate: true },
    el('h2', { id: 'refund-title', text: `Refund for order ${orderRef(p.order_id)}` }),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Customer' }), el('dd', { text: customerName(p.customer_id) }),
      el('dt', { text: 'Payment' }), el('dd', { text: `${m(p.amount)} · ${KIND_LABELS[p.kind] ?? p.kind} · ${dateTime(p.captured_at ?? p.created_at)}` }),
      el('dt', { text: 'Refunded' }), el('dd', { text: m(p.amount_refunded) })),
    el('div', { class: 'field' }, el('label', { for: 'refund-amount', text: `Amount to refund (${p.currency})` }), amount, limit),
    el('div', { class: 'field' }, el('label', { for: 'refund-reason', text: 'Reason' }), reason,
      el('small', { class: 'hint', text: 'Required. The customer sees it in their refund notice.' })),
    status,
    el('div', { class: 'row' }, submit,
      el('button', { type: 'button', class: 'link', text: 'Close', on: { click: () => dialog.close() } })));
  mount(dialog, form);
  dialog.addEventListener('close', () => { if (tried) loadPayments(); }, { once: true });  // the row and totals
  dialog.showModal();
  amount.focus();

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const wanted = Math.round(Number(amount.value) * 100);
    if (!amount.value || !Number.isFinite(wanted) || wanted < 1) {
      say(status, 'Enter the amount to refund.', 'error');
      amount.focus();
      return;
    }
    if (wanted > left) {
      say(status, `At most ${m(left)} can be refunded from this payment.`, 'error');
      amount.focus();
      return;
    }
    if (!reason.value.trim()) {
      say(status, 'Give a reason: the customer sees it in their refund notice.', 'error');
      reason.focus();
      return;
    }
    submit.disabled = true;
    tried = true;
    say(status, 'Refunding…');
    try {
      const answer = await post(`/api/admin/payments/${encodeURIComponent(p.id)}/refund`,
        { amount: wanted, reason: reason.value.trim() }, { 'Idempotency-Key': key });
      const made = (answer?.payment?.refunds ?? []).filter((r) => !before.has(r.id)).pop();
      if (made?.status === 'failed') {
        say(status, 'The payment provider refused this refund, so nothing was refunded.', 'error');
        key = idempotencyKey();  // that refund is over: another try is a new refund
        unlock();
        return;
      }
      if (answer?.payment) payments.kept.set(p.id, answer.payment);
      dialog.close();
      toast(made?.status === 'pending'
        ? `Refund of ${m(made.amount)} requested: waiting for the payment provider to confirm it.`
        : `Refunded ${m(made?.amount ?? wanted)} for order ${orderRef(p.order_id)}.`, 'success');
    } catch (err) {
      refundFailed(err);
    } finally {
      submit.disabled = false;
    }
  });

  function unlock() {
    amount.readOnly = false;
    reason.readOnly = false;
    submit.textContent = 'Refund';
  }

  function refundFailed(err) {
    if (err instanceof ApiError && err.code === 'refund_exceeds_captured') {
      left = Math.max(0, Number(err.details?.refundable) || 0);
      showLimit();
      if (left > 0) {
        amount.value = (left / 100).toFixed(2);
        say(status, `Only ${m(left)} can still be refunded from this payment: another refund got there first. The amount is updated; check it and refund again.`, 'error');
      } else {
        say(status, 'Nothing is left to refund from this payment: another refund took the rest.', 'error');
        submit.hidden = true;
      }
    } else if (err instanceof ApiError && err.code === 'payment_refused') {
      say(status, `The payment provider refused the refund, so nothing was refunded. ${err.message}`, 'error');
      key = idempotencyKey();  // that refund is over: another try is a new refund
      unlock();
    } else if (err instanceof ApiError && (err.status === 503 || err.status === 0)) {
      say(status, 'The payment provider is not answering. The refund is on hold and will be retried automatically. You can also retry now: it cannot be refunded twice.', 'error');
      // The refund on hold has this amount and reason: a retry must be the same request.
      amount.readOnly = true;
      reason.readOnly = true;
      submit.textContent = 'Retry refund';
    } else {
      say(status, err instanceof ApiError && err.fieldMessages ? `${err.message}: ${err.fieldMessages}` : err.message, 'error');
    }
  }
}

// ---- partners ----------------------------------------------------------------------------

$('#partner-status').addEventListener('change', () => loadPartners());

async function loadPartners() {
  const box = $('#partners');
  mount(box, loading('Loading partners…'));
  try {
    const items = itemsOf(await get('/api/admin/partners', { status: $('#partner-status').value || undefined, limit: 100 }));
    for (const p of items) state.partners.set(p.id, p);
    if (!items.length) {
      mount(box, empty('No partners with this standing.'));
      return;
    }
    const status = el('p', { class: 'status', role: 'status', hidden: true });
    const act = (p, verb) => (e) => busy(e.currentTarget, status, async () => {
      await put(`/api/admin/partners/${encodeURIComponent(p.id)}/${verb}`);
      toast(`${p.company_name || p.contact_name}: ${verb === 'approve' ? 'approved' : verb === 'reject' ? 'rejected' : 'suspended'}.`, 'success');
      loadPartners();
    });
    mount(box, status, el('div', { class: 'table-wrap' }, el('table', { id: 'partner-table' },
      el('thead', {}, el('tr', {}, ['Company', 'Contact', 'Vehicle', 'Area', 'Standing', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, items.map((p) => el('tr', { dataset: { id: p.id } },
        el('td', { text: p.company_name }),
        el('td', {}, el('div', { text: p.contact_name }), el('div', { class: 'muted', text: [p.email, p.phone].filter(Boolean).join(' · ') })),
        el('td', { text: p.vehicle_type }), el('td', { text: p.service_area ?? '' }),
        el('td', {}, el('span', { class: 'badge', text: p.status }), p.online ? el('span', { class: 'chip ok', text: 'on duty' }) : null),
        el('td', {}, el('div', { class: 'row' },
          p.status !== 'approved' && p.status !== 'rejected' ? el('button', { type: 'button', class: 'primary', text: 'Approve', on: { click: act(p, 'approve') } }) : null,
          p.status === 'rejected' || p.status === 'suspended' ? el('button', { type: 'button', class: 'secondary', text: 'Approve', on: { click: act(p, 'approve') } }) : null,
          p.status === 'pending' ? el('button', { type: 'button', class: 'secondary', text: 'Reject', on: { click: act(p, 'reject') } }) : null,
          p.status === 'approved' ? el('button', { type: 'button', class: 'danger', text: 'Suspend', on: { click: act(p, 'suspend') } }) : null))))))));
  } catch (err) {
    mount(box, errorBox(err, loadPartners));
  }
}

// ---- packages ----------------------------------------------------------------------------

$('#new-package').addEventListener('click', () => editPackage(null));

async function loadPackages() {
  const box = $('#admin-packages');
  mount(box, loading('Loading packages…'));
  try {
    const items = itemsOf(await get('/api/admin/packages', { limit: 100 }));
    if (items[0]?.currency) state.currency = items[0].currency;
    if (!items.length) {
      mount(box, empty('No packages yet. Create the first one.'));
      return;
    }
    mount(box, el('div', { class: 'table-wrap' }, el('table', { id: 'package-table' },
      el('thead', {}, el('tr', {}, ['Name', 'Category', 'Price', 'Guests', 'Rating', 'State', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, items.map((p) => el('tr', { dataset: { id: p.id } },
        el('td', { text: p.name }), el('td', { text: p.category }), el('td', { text: money(p.price, p.currency) }),
        el('td', { text: p.capacity }), el('td', { text: p.rating_count ? `${Number(p.rating_avg).toFixed(1)} (${p.rating_count})` : '—' }),
        el('td', { text: p.active ? 'active' : 'archived' }),
        el('td', {}, el('div', { class: 'row' },
          el('button', { type: 'button', class: 'secondary', text: 'Edit', on: { click: () => editPackage(p) } }),
          p.active ? el('button', { type: 'button', class: 'danger', text: 'Archive', 'aria-label': `Archive ${p.name}`,
            on: { click: (e) => confirmArchive(e.currentTarget, p) } })
            : el('button', { type: 'button', class: 'secondary', text: 'Restore', 'aria-label': `Restore ${p.name}`,
              on: { click: (e) => busy(e.currentTarget, null, () => restorePackage(p)) } })))))))));
  } catch (err) {
    mount(box, errorBox(err, loadPackages));
  }
}

/** Archiving hides a package from customers: ask first, in place, and offer an undo after. */
function confirmArchive(button, p) {
  const cell = button.parentElement;
  const before = [...cell.childNodes];
  const back = () => { cell.replaceChildren(...before); button.focus(); };
  const yes = el('button', { type: 'button', class: 'danger', text: 'Yes, archive', on: { click: (e) => busy(e.currentTarget, null, async () => {
    try {
      await del(`/api/admin/packages/${encodeURIComponent(p.id)}`);
    } catch (err) {
      toast(err.message, 'error');
      back();
      return;
    }
    const item = toast(`${p.name} archived: customers no longer see it.`, 'success', 10_000);
    item.insertBefore(el('button', { type: 'button', class: 'link', text: 'Undo', on: { click: () => {
      item.remove();
      restorePackage(p);
    } } }), item.lastChild);
    loadPackages();
  }) } });
  mount(cell, el('span', { class: 'confirm', role: 'group', 'aria-label': `Archive ${p.name}?` },
    el('span', { text: `Archive ${p.name}? Customers will no longer see it. ` }), yes,
    el('button', { type: 'button', class: 'link', text: 'Keep it', on: { click: back } })));
  yes.focus();
}

async function restorePackage(p) {
  try {
    await put(`/api/admin/packages/${encodeURIComponent(p.id)}`, { active: true });
    toast(`${p.name} is back in the catalog.`, 'success');
  } catch (err) {
    toast(err.message, 'error');
  }
  loadPackages();
}

/** "₹" for INR: the symbol the price field is in. */
function currencySymbol(currency) {
  try {
    return new Intl.NumberFormat('en-IN', { style: 'currency', currency }).formatToParts(0).find((x) => x.type === 'currency')?.value ?? currency;
  } catch {
    return currency;
  }
}

function editPackage(p) {
  const box = $('#package-editor');
  box.hidden = false;
  const input = (id, attrs) => el('input', { id, ...attrs });
  const f = {
    name: input('pk-name', { required: true, maxlength: '120', value: p?.name ?? '' }),
    category: el('select', { id: 'pk-category' }, CATEGORIES.map((c) => el('option', { value: c, text: c, selected: p?.category === c }))),
    description: el('textarea', { id: 'pk-description', maxlength: '4000', value: p?.description ?? '' }),
    price: input('pk-price', { type: 'number', min: '1', step: '0.01', required: true, value: p ? (p.price / 100).toFixed(2) : '' }),
    capacity: input('pk-capacity', { type: 'number', min: '1', step: '1', required: true, value: p?.capacity ?? '' }),
    duration: input('pk-duration', { type: 'number', min: '15', step: '15', required: true, value: p?.duration_min ?? 120 }),
    tags: input('pk-tags', { value: (p?.tags ?? []).join(', ') }),
    features: el('textarea', { id: 'pk-features', value: (p?.features ?? []).join('\n') }),
    images: el('textarea', { id: 'pk-images', value: (p?.images ?? []).join('\n') }),
    active: input('pk-active', { type: 'checkbox', checked: p ? Boolean(p.active) : true }),
  };
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const field = (label, node, hint) => el('div', { class: 'field' }, el('label', { for: node.id, text: label }), node,
    hint ? el('small', { class: 'hint', text: hint }) : null);
  const form = el('form', { class: 'stack', id: 'package-form', novalidate: true },
    el('h3', { id: 'editor-title', text: p ? `Edit ${p.name}` : 'New package' }),
    el('div', { class: 'grid2' }, field('Name', f.name), field('Category', f.category)),
    field('Description', f.description),
    el('div', { class: 'grid2' }, field(`Price (${currencySymbol(p?.currency ?? state.currency)})`, f.price), field('Guests (max)', f.capacity)),
    el('div', { class: 'grid2' }, field('Duration (minutes)', f.duration), field('Tags', f.tags, 'Comma separated')),
    field('Features', f.features, 'One per line'),
    field('Image URLs', f.images, 'One per line'),
    el('label', { class: 'choice' }, f.active, 'Active (shown to customers)'),
    el('div', { class: 'row' }, el('button', { type: 'submit', class: 'primary', text: p ? 'Save changes' : 'Create package' }),
      el('button', { type: 'button', class: 'link', text: 'Cancel', on: { click: () => { box.hidden = true; } } })),
    status);
  mount(box, form);
  f.name.focus();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const lines = (node) => node.value.split('\n').map((s) => s.trim()).filter(Boolean);
    const body = {
      name: f.name.value.trim(), category: f.category.value, description: f.description.value.trim(),
      price: Math.round(Number(f.price.value) * 100), capacity: Number(f.capacity.value), duration_min: Number(f.duration.value),
      tags: f.tags.value.split(',').map((s) => s.trim()).filter(Boolean), features: lines(f.features), images: lines(f.images),
      active: f.active.checked,
    };
    busy(form.querySelector('button[type=submit]'), status, async () => {
      try {
        if (p) await put(`/api/admin/packages/${encodeURIComponent(p.id)}`, body);
        else await post('/api/admin/packages', body);
      } catch (err) {
        throw new Error(err instanceof ApiError && err.fieldMessages ? `${err.message}: ${err.fieldMessages}` : err.message);
      }
      box.hidden = true;
      toast(p ? 'Package saved.' : 'Package created.', 'success');
      loadPackages();
    });
  });
}

// ---- stats ---------------------------------------------------------------------------------

async function loadStats() {
  const box = $('#stats');
  mount(box, loading('Loading stats…'));
  try {
    const s = await get('/api/admin/stats');
    const byStatus = s.orders_by_status ?? {};
    mount(box,
      el('ul', { class: 'kpis', id: 'kpis' },
        kpi('Orders', s.orders_total ?? 0), kpi('Revenue (completed)', money(s.revenue ?? 0, s.currency)),
        kpi('Avg time to assign', s.avg_time_to_assign_s == null ? '—' : `${Math.round(s.avg_time_to_assign_s)} s`),
        kpi('Partners on duty', s.partners_online ?? 0), kpi('Customers', s.customers ?? 0)),
      el('h3', { text: 'Orders by status' }),
      Object.keys(byStatus).length ? el('table', {}, el('tbody', {}, Object.entries(byStatus).map(([k, v]) =>
        el('tr', {}, el('th', { scope: 'row', text: statusLabel(k) }), el('td', { text: v }))))) : empty('No orders yet.'),
      el('h3', { text: 'Partners by standing' }),
      el('table', {}, el('tbody', {}, Object.entries(s.partners_by_status ?? {}).map(([k, v]) =>
        el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { text: v }))))));
  } catch (err) {
    mount(box, errorBox(err, loadStats));
  }
}

const kpi = (label, value) => el('li', { class: 'kpi' }, el('strong', { text: value }), label);

// ---- analytics -----------------------------------------------------------------------------

const MAX_DAYS = { day: 92, hour: 7 };
// Axis steps for counts and seconds: whole numbers, 1-2-5 up to ten million.
const WHOLE_STEPS = Array.from({ length: 8 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();
const analytics = { uPlot: null, charts: [], ready: false, last: null, resizeTimer: 0 };

/** "2026-12-03" for a Date, in the viewer's calendar. */
function isoDay(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

function dayCount(from, to) {
  return Math.round((new Date(`${to}T00:00:00Z`) - new Date(`${from}T00:00:00Z`)) / 86_400_000) + 1;
}

function seriesParams() {
  const params = new URLSearchParams({ from: $('#series-from').value, to: $('#series-to').value, bucket: $('#series-bucket').value });
  if ($('#series-area').value) params.set('area', $('#series-area').value);
  return params;
}

/** The Analytics tab: the last 30 days by day at first; uPlot is loaded only when it is opened. */
async function openAnalytics() {
  if (!analytics.ready) {
    analytics.ready = true;
    const today = new Date();
    $('#series-to').value = isoDay(today);
    $('#series-from').value = isoDay(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 29));
    // An hourly view is at most a week: switching to it keeps the last 7 days of the range.
    $('#series-bucket').addEventListener('change', () => {
      const bucket = $('#series-bucket').value;
      const to = $('#series-to').value;
      if (to && $('#series-from').value && dayCount($('#series-from').value, to) > MAX_DAYS[bucket]) {
        const end = new Date(`${to}T00:00:00`);
        $('#series-from').value = isoDay(new Date(end.getFullYear(), end.getMonth(), end.getDate() - MAX_DAYS[bucket] + 1));
      }
    });
    $('#series-form').addEventListener('submit', (e) => { e.preventDefault(); loadSeries(); });
    $('#series-csv').addEventListener('click', () => downloadSeries());
    serviceAreas().then((areas) => {
      const names = (areas?.features ?? []).map((f) => f.properties?.name).filter(Boolean);
      $('#series-area').append(...names.map((n) => el('option', { value: n, text: n })));
    }).catch(() => { /* all areas still works */ });
  }
  await loadSeries();
}

async function downloadSeries() {
  try {
    await download(`/api/admin/stats/series?${seriesParams()}&format=csv`, 'stats.csv');
  } catch (err) {
    toast(err.message, 'error');
  }
}

/** The chart's width: its card's, less the padding (the grid decides the card's). */
function chartWidth(figure) {
  const style = getComputedStyle(figure);
  return Math.max(240, Math.floor(figure.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
}

window.addEventListener('resize', () => {
  clearTimeout(analytics.resizeTimer);
  analytics.resizeTimer = setTimeout(() => {
    for (const chart of analytics.charts) chart.setSize({ width: chartWidth(chart.root.parentElement), height: 200 });
  }, 200);
});

/** "₹1.2L": an axis label (minor units in, major units shown). */
function compactMoney(minor, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency, notation: 'compact', maximumFractionDigits: 1 }).format(minor / 100);
  } catch {
    return String(Math.round(minor / 100));
  }
}

/** "45 s", "12 min", "5 h", "3 d": an axis label. */
function shortDuration(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${+(s / 60).toFixed(1)} min`;
  return s < 172_800 ? `${+(s / 3600).toFixed(1)} h` : `${+(s / 86_400).toFixed(1)} d`;
}

// Axis steps for waits: round seconds, minutes, hours and days.
const DURATION_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
  86_400, 172_800, 604_800, 1_209_600, 2_592_000];

/** A money figure in major units for the legend and the totals. */
function majorUnits(minor, currency) {
  return money(minor ?? 0, currency);
}

// A money axis spans at least ₹1,000 (minor units): with no revenue yet, finer ticks all read "₹0".
const MONEY_AXIS_FLOOR = 100_000;
const CHARTS = [
  { id: 'orders', title: 'Orders and cancellations', series: [
    { label: 'Orders', key: 'orders', stroke: '#2563eb', fill: 'rgba(37,99,235,.12)' },
    { label: 'Cancellations', key: 'cancellations', stroke: '#dc2626' }] },
  { id: 'revenue', title: 'Revenue (completed orders)', money: true, series: [
    { label: 'Revenue', key: 'revenue', stroke: '#059669', fill: 'rgba(5,150,105,.12)' }] },
  { id: 'assign', title: 'Order → assignment, median', gaps: true, duration: true, series: [
    { label: 'Median wait', key: 'assign_p50_s', stroke: '#d97706' }] },
  { id: 'ontime', title: 'On-time arrivals', percent: true, gaps: true, series: [
    { label: 'On time (%)', key: 'on_time_share', stroke: '#7c3aed', scale: 100 }] },
  { id: 'partners', title: 'Active partners', series: [
    { label: 'Partners with an assigned order', key: 'active_partners', stroke: '#0f766e' }] },
];

async function loadSeries() {
  const box = $('#series-charts');
  const from = $('#series-from').value;
  const to = $('#series-to').value;
  const bucket = $('#series-bucket').value;
  if (!from || !to) return;
  if (dayCount(from, to) > MAX_DAYS[bucket]) {
    mount(box, errorBox(new Error(`By ${bucket}, a range is at most ${MAX_DAYS[bucket]} days: shorten it or pick “day”.`)));
    return;
  }
  mount(box, loading('Loading figures…'));
  let data;
  try {
    [data, analytics.uPlot] = await Promise.all([get(`/api/admin/stats/series?${seriesParams()}`),
      analytics.uPlot ?? import('/vendor/uplot/uPlot.esm.js').then((m) => m.default)]);
  } catch (err) {
    mount(box, errorBox(err instanceof ApiError && err.fieldMessages ? new Error(`${err.message}: ${err.fieldMessages}`) : err, loadSeries));
    return;
  }
  analytics.last = data;
  drawSeries(data);
}

function drawSeries(data) {
  const uPlot = analytics.uPlot;
  const t = data.totals;
  $('#series-note').textContent = `${data.area ?? 'All areas'} · by ${data.bucket} · times in ${data.timezone} · figures by the day or hour each order was placed${data.truncated ? ' · too many orders: only the first were counted' : ''}.`;
  mount($('#series-totals'),
    kpi('Orders', t.orders), kpi('Revenue (completed)', majorUnits(t.revenue, data.currency)), kpi('Cancellations', t.cancellations),
    kpi('Median order → assignment', t.assign_p50_s == null ? '—' : durationText(t.assign_p50_s)),
    kpi('On time', t.on_time_share == null ? '—' : `${Math.round(t.on_time_share * 100)} % of ${t.arrivals}`),
    kpi('Active partners', t.active_partners));
  for (const chart of analytics.charts) chart.destroy();
  analytics.charts = [];
  const box = $('#series-charts');
  box.replaceChildren();
  const points = data.points;
  const xs = points.map((p) => Date.parse(p.start) / 1000);
  const zone = data.timezone;
  for (const spec of CHARTS) {
    const figure = el('figure', { class: 'card chart', id: `chart-${spec.id}` },
      el('figcaption', {}, el('strong', { text: spec.title })));
    box.append(figure);
    const series = [{}, ...spec.series.map((s) => ({
      label: s.label, stroke: s.stroke, fill: s.fill, width: 2, spanGaps: false,
      // A bucket with no assignment or no arrival has no figure: dots keep a lone one visible.
      points: spec.gaps ? { show: true, size: 6 } : undefined,
      value: (u, v) => (v == null ? '—' : spec.money ? majorUnits(v, data.currency) : spec.percent ? `${Math.round(v)} %`
        : spec.duration ? durationText(v) : String(v)),
    }))];
    const values = spec.series.map((s) => points.map((p) => (p[s.key] == null ? null : p[s.key] * (s.scale ?? 1))));
    const opts = {
      width: chartWidth(figure), height: 200, series,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
      scales: { x: { time: true }, y: spec.percent ? { range: [0, 100] } : { range: (u, min, max) => [0, Math.max(spec.money ? MONEY_AXIS_FLOOR : 1, max)] } },
      // Counts step by whole numbers; money reads compact on the axis (₹1.2L), exact in the legend.
      axes: [{}, { size: spec.money || spec.percent || spec.duration ? 64 : 48, incrs: spec.duration ? DURATION_STEPS : spec.money || spec.percent ? undefined : WHOLE_STEPS,
        values: (u, splits) => splits.map((v) => (spec.money ? compactMoney(v, data.currency) : spec.percent ? `${v} %`
          : spec.duration ? shortDuration(v) : String(v))) }],
      legend: { live: true },
    };
    const chart = new uPlot(opts, [xs, ...values], figure);
    chart.root.setAttribute('role', 'img');
    chart.root.setAttribute('aria-label', `${spec.title} by ${data.bucket}, ${points[0]?.label} to ${points.at(-1)?.label}`);
    analytics.charts.push(chart);
  }
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  const user = await resumeFor(['admin']);
  if (user) signedIn(user);
  else showSignIn();
}

start();
