// Operations console: live fleet map beside the order board, manual assignment, per-order
// timeline and dispatch audit, partner standing, package CRUD, stats and CSV export.
import { get, put, post, del, itemsOf, download, ApiError } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { createMap, pinIcon } from './map.js';
import { CATEGORIES } from './packages.js';
import { PING_INTERVAL_MS, STALE_AFTER_INTERVALS } from './config.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, statusLabel, dateTime, ago, tabs,
  toast, initials, STATUS_LABELS } from './ui.js';

const STALE_MS = PING_INTERVAL_MS * STALE_AFTER_INTERVALS;
const ASSIGNABLE = new Set(['placed', 'offered', 'assigned']);

const state = { conn: null, map: null, pins: new Map(), partners: new Map(), orders: new Map(), openOrder: null,
  fleetVersion: null, subscribeTimer: 0, boardTimer: 0, tick: 0, partnersFetched: 0 };

// ---- session -----------------------------------------------------------------------------

function showSignIn() {
  state.conn?.close();
  state.conn = null;
  clearInterval(state.tick);
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
    state.map.on('moveend', () => {
      clearTimeout(state.subscribeTimer);
      state.subscribeTimer = setTimeout(subscribeFleet, 300);
    });
  }
  state.map.invalidateSize();
  await loadPartnerNames();
  connect();
  loadBoard();
  clearInterval(state.tick);
  state.tick = setInterval(refreshPins, 1000);
}

const view = tabs($('#tabs'), (tab) => {
  if (tab === 'live') state.map?.invalidateSize();
  if (tab === 'partners') loadPartners();
  if (tab === 'packages') loadPackages();
  if (tab === 'stats') loadStats();
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
  const stale = p.status === 'stale' || (p.last_seen && Date.now() - p.last_seen > STALE_MS && p.status !== 'offline');
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
      el('div', { class: 'spread' }, el('strong', { text: o.package?.name ?? 'Order' }), statusBadge(o.status)),
      el('div', { class: 'muted', text: `${o.event_date} · ${o.address?.city ?? ''} · ${money(o.price, o.currency)}${o.partner_id ? ` · ${partnerName(o.partner_id)}` : ''}` }),
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
}

function onAlert(alert) {
  const item = toast(`No partner took order ${String(alert.order_id).slice(0, 8)}${alert.radius_m ? ` within ${Math.round(alert.radius_m / 1000)} km` : ''}: assign it manually.`, 'error', 0);
  item.insertBefore(el('button', { type: 'button', class: 'link', text: 'Open', on: { click: () => {
    view.select('live');
    openOrder(alert.order_id);
    item.remove();
  } } }), item.lastChild);
  loadBoard();
}

async function openOrder(id) {
  state.openOrder = id;
  const panel = $('#order-panel');
  panel.hidden = false;
  mount(panel, loading('Loading order…'));
  let order;
  let audit;
  try {
    [order, audit] = await Promise.all([get(`/api/orders/${encodeURIComponent(id)}`),
      get(`/api/admin/orders/${encodeURIComponent(id)}/audit`)]);
  } catch (err) {
    mount(panel, errorBox(err, () => openOrder(id)));
    return;
  }
  const history = Array.isArray(order.history) ? order.history : [];
  mount(panel,
    el('div', { class: 'spread' }, el('h2', { text: order.package?.name ?? 'Order' }), statusBadge(order.status),
      el('button', { type: 'button', class: 'link', text: 'Close', on: { click: () => { panel.hidden = true; state.openOrder = null; } } })),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Order' }), el('dd', {}, el('code', { text: order.id })),
      el('dt', { text: 'Event' }), el('dd', { text: `${order.event_date} · ${order.guests} guests` }),
      el('dt', { text: 'Venue' }), el('dd', { text: [order.address?.line1, order.address?.city, order.address?.postal_code].filter(Boolean).join(', ') }),
      el('dt', { text: 'Price' }), el('dd', { text: `${money(order.price, order.currency)} (${order.payment_option})` }),
      el('dt', { text: 'Partner' }), el('dd', { text: order.partner_id ? partnerName(order.partner_id) : 'none yet' }),
      order.notes ? el('dt', { text: 'Notes' }) : null, order.notes ? el('dd', { text: order.notes }) : null),
    ASSIGNABLE.has(order.status) ? assignForm(order) : null,
    el('h3', { text: 'Timeline' }),
    el('ol', { class: 'timeline' }, history.map((h) => el('li', {}, el('strong', { text: statusLabel(h.status) }),
      ` · ${dateTime(h.at)} · ${h.by_role ?? ''}`, h.reason ? el('span', { class: 'muted', text: ` (${h.reason})` }) : null))),
    el('h3', { text: 'Dispatch audit' }),
    itemsOf(audit).length ? el('ol', { class: 'timeline', id: 'audit' }, itemsOf(audit).map((a) =>
      el('li', {}, el('strong', { text: a.event }), ` · ${dateTime(a.at)}`,
        el('div', { class: 'muted', text: auditText(a.data) })))) : empty('No dispatch decisions recorded yet.'));
}

function auditText(data) {
  if (!data || typeof data !== 'object') return '';
  return Object.entries(data).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ').slice(0, 400);
}

function assignForm(order) {
  const select = el('select', { id: 'assign-partner', required: true },
    el('option', { value: '', text: 'Choose a partner…' }),
    [...state.partners.values()].filter((p) => p.status === 'approved').map((p) =>
      el('option', { value: p.id, text: `${p.contact_name || p.company_name}${p.online ? ' (on duty)' : ''}` })));
  const reason = el('input', { id: 'assign-reason', maxlength: '300', placeholder: 'e.g. customer asked for this partner' });
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const form = el('form', { class: 'stack', id: 'assign-form' },
    el('h3', { text: order.partner_id ? 'Reassign' : 'Assign manually' }),
    el('div', { class: 'field' }, el('label', { for: 'assign-partner', text: 'Partner' }), select),
    el('div', { class: 'field' }, el('label', { for: 'assign-reason', text: 'Reason' }), reason),
    el('button', { type: 'submit', class: 'primary', text: 'Assign' }), status);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!select.value) {
      say(status, 'Choose a partner.', 'error');
      return;
    }
    busy(form.querySelector('button[type=submit]'), status, async () => {
      await put(`/api/admin/orders/${encodeURIComponent(order.id)}/assign`, { partner_id: select.value, reason: reason.value.trim() });
      toast('Order assigned.', 'success');
      await loadBoard();
      await openOrder(order.id);
    });
  });
  return form;
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
          p.status === 'approved' || p.status === 'pending' ? el('button', { type: 'button', class: 'danger', text: 'Suspend', on: { click: act(p, 'suspend') } }) : null))))))));
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
          p.active ? el('button', { type: 'button', class: 'danger', text: 'Archive', on: { click: (e) => busy(e.currentTarget, null, async () => {
            try {
              await del(`/api/admin/packages/${encodeURIComponent(p.id)}`);
              toast(`${p.name} archived.`, 'success');
            } catch (err) {
              toast(err.message, 'error');
            }
            loadPackages();
          }) } }) : null))))))));
  } catch (err) {
    mount(box, errorBox(err, loadPackages));
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
    el('div', { class: 'grid2' }, field('Price (major units)', f.price), field('Guests (max)', f.capacity)),
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

// ---- start -----------------------------------------------------------------------------

async function start() {
  const user = await resumeFor(['admin']);
  if (user) signedIn(user);
  else showSignIn();
}

start();
