// Customer app: browse and search packages, order one, follow orders live, cancel, review.
import { get, post, createOrder, idempotencyKey, itemsOf, currentUser, ApiError } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { createMap, pinIcon } from './map.js';
import { OrderTracker, TRACKABLE } from './tracking.js';
import { CATEGORIES, packageCard, packageImage, rating, durationText } from './packages.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, statusLabel, dateTime, tabs,
  toast } from './ui.js';

const PAGE_SIZE = 12;
const PAYMENT_LABELS = { deposit: 'Deposit now, rest on the day', full: 'Paid in full', cash: 'Cash on the day' };
const CANCELLABLE = new Set(['pending_payment', 'placed', 'offered', 'assigned']);

const state = { page: 1, selected: null, orderKey: null, orderBodyHash: '', venueMap: null, venueMarker: null,
  conn: null, orders: new Map(), openOrderId: null, pendingOrder: false };

const tracker = new OrderTracker({ section: $('#tracking'), map: $('#track-map'), eta: $('#eta'),
  freshness: $('#freshness') }, null);

// ---- session ---------------------------------------------------------------------------

const view = tabs($('#tabs'), (tab) => {
  if (tab === 'orders') showOrders();
});

function signedIn(user) {
  $('#signin-area').hidden = true;
  $('#orders-signin').hidden = true;
  renderAccount($('#account'), user, signedOut);
  state.conn?.close();
  state.conn = connectSocket({
    onResync: () => resync(),
    onRefused: (err) => toast(`Live updates are off: ${err.message ?? 'connection refused'}`, 'warn'),
  });
  tracker.conn = state.conn;
  state.conn.socket.on('order_status', onOrderStatus);
  state.conn.socket.on('partner_location', (msg) => tracker.onLocation(msg));
  if (state.pendingOrder) {
    state.pendingOrder = false;
    $('#order-section').hidden = false;
    setUpVenueMap();
    $('#event-date').focus();
  }
  if (!$('#panel-orders').hidden) showOrders();
}

function signedOut() {
  state.conn?.close();
  state.conn = null;
  tracker.hide();
  renderAccount($('#account'), null);
  mount($('#account'), el('button', { type: 'button', class: 'secondary', text: 'Sign in', on: { click: askSignIn } }));
  state.orders.clear();
  mount($('#order-list'));
  $('#order-detail').hidden = true;
}

function askSignIn(where = $('#signin-area')) {
  const box = where instanceof Event ? $('#signin-area') : where;
  // One sign-in form at a time: the header's and the My-orders tab's share the same ids.
  for (const other of [$('#signin-area'), $('#orders-signin')]) {
    if (other !== box) {
      other.hidden = true;
      mount(other);
    }
  }
  box.hidden = false;
  renderSignIn(box, {
    title: 'Sign in to order and track',
    intro: 'Use your email or mobile number. First time here? Signing in creates your account.',
    roles: ['customer'], onSignedIn: signedIn,
  });
}

// ---- browse ----------------------------------------------------------------------------

for (const name of CATEGORIES) $('#category').append(el('option', { value: name, text: name }));

function filters() {
  const major = (id) => {
    const v = $(id).value.trim();
    return v === '' ? undefined : Math.round(Number(v) * 100);
  };
  return { q: $('#q').value.trim() || undefined, category: $('#category').value || undefined,
    sort: $('#sort').value, min_price: major('#min-price'), max_price: major('#max-price'),
    page: state.page, limit: PAGE_SIZE };
}

async function loadPackages() {
  const box = $('#package-results');
  mount(box, loading('Loading packages…'));
  mount($('#pager'));
  try {
    const answer = await get('/api/packages', filters());
    const items = itemsOf(answer);
    const total = answer?.total ?? items.length;
    $('#result-count').textContent = `${total} package${total === 1 ? '' : 's'} found`;
    if (!items.length) {
      mount(box, empty('No packages match. Try fewer words or a wider price range.'));
      return;
    }
    mount(box, el('ul', { class: 'packages', id: 'package-list' },
      items.map((p) => packageCard(p, { label: 'View', onClick: showPackage }))));
    renderPager(total);
  } catch (err) {
    $('#result-count').textContent = '';
    mount(box, errorBox(err, loadPackages));
  }
}

function renderPager(total) {
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  if (pages === 1) return;
  const go = (page) => { state.page = page; loadPackages(); };
  mount($('#pager'),
    el('button', { type: 'button', class: 'secondary', text: 'Previous', disabled: state.page <= 1,
      on: { click: () => go(state.page - 1) } }),
    el('span', { text: `Page ${state.page} of ${pages}` }),
    el('button', { type: 'button', class: 'secondary', text: 'Next', disabled: state.page >= pages,
      on: { click: () => go(state.page + 1) } }));
}

$('#filters').addEventListener('submit', (e) => {
  e.preventDefault();
  state.page = 1;
  loadPackages();
});
for (const id of ['#category', '#sort']) $(id).addEventListener('change', () => { state.page = 1; loadPackages(); });

// ---- package detail and order form ------------------------------------------------------

async function showPackage(p) {
  const box = $('#package-detail');
  box.hidden = false;
  $('#browse').hidden = true;
  $('#order-section').hidden = true;
  mount(box, loading('Loading package…'));
  let pkg = p;
  try {
    pkg = await get(`/api/packages/${encodeURIComponent(p.id ?? p)}`);
  } catch (err) {
    mount(box, errorBox(err), el('button', { type: 'button', class: 'link', text: 'Back to packages', on: { click: backToBrowse } }));
    return;
  }
  state.selected = pkg;
  mount(box,
    el('button', { type: 'button', class: 'link', text: '← All packages', on: { click: backToBrowse } }),
    packageImage(pkg, 'thumb'),
    el('h2', { id: 'detail-name', text: pkg.name }),
    el('div', { class: 'row' }, el('span', { class: 'badge', text: pkg.category }), rating(pkg)),
    el('p', { text: pkg.description }),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Price' }), el('dd', { class: 'price', text: money(pkg.price, pkg.currency) }),
      el('dt', { text: 'Guests' }), el('dd', { text: `up to ${pkg.capacity}` }),
      el('dt', { text: 'Duration' }), el('dd', { text: durationText(pkg.duration_min || 0) })),
    pkg.features?.length ? el('ul', { class: 'features' }, pkg.features.map((f) => el('li', { text: f }))) : null,
    pkg.tags?.length ? el('ul', { class: 'tags', 'aria-label': 'Tags' }, pkg.tags.map((t) => el('li', { class: 'tag', text: t }))) : null,
    el('button', { type: 'button', class: 'primary big', id: 'start-order', text: 'Order this package', on: { click: startOrder } }));
  $('#detail-name').scrollIntoView?.({ block: 'nearest' });
}

function backToBrowse() {
  $('#package-detail').hidden = true;
  $('#order-section').hidden = true;
  $('#browse').hidden = false;
  if (location.hash) history.replaceState(null, '', location.pathname);
}

function tomorrow() {
  const d = new Date();
  d.setDate(d.getDate() + 1);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

function startOrder() {
  const pkg = state.selected;
  $('#order-title').textContent = `Order: ${pkg.name}`;
  $('#event-date').min = tomorrow();
  $('#guests').max = String(pkg.capacity || 100000);
  $('#guests-hint').textContent = pkg.capacity ? `This package serves up to ${pkg.capacity} guests.` : '';
  $('#order-total').textContent = `Total: ${money(pkg.price, pkg.currency)}`;
  state.orderKey = null;
  say($('#order-status'), '');
  if (!currentUser()) {
    state.pendingOrder = true;
    askSignIn();
    $('#signin-area').scrollIntoView?.();
    return;
  }
  $('#order-section').hidden = false;
  setUpVenueMap();
  $('#event-date').focus();
}

function setUpVenueMap() {
  if (!state.venueMap) {
    state.venueMap = createMap($('#venue-map'));
    state.venueMap.on('click', (e) => placeVenue(e.latlng.lat, e.latlng.lng));
    for (const id of ['#lat', '#lng']) {
      $(id).addEventListener('change', () => {
        const lat = Number($('#lat').value);
        const lng = Number($('#lng').value);
        if (Number.isFinite(lat) && Number.isFinite(lng) && $('#lat').value && $('#lng').value) placeVenue(lat, lng, false);
      });
    }
  }
  setTimeout(() => state.venueMap.invalidateSize(), 0);
}

function placeVenue(lat, lng, fill = true) {
  if (fill) {
    $('#lat').value = lat.toFixed(6);
    $('#lng').value = lng.toFixed(6);
  }
  if (!state.venueMarker) {
    state.venueMarker = window.L.marker([lat, lng], { icon: pinIcon({ label: '★', status: 'venue' }), draggable: true,
      title: 'Venue', keyboard: false }).addTo(state.venueMap);
    state.venueMarker.on('dragend', () => {
      const p = state.venueMarker.getLatLng();
      placeVenue(p.lat, p.lng);
    });
  } else {
    state.venueMarker.setLatLng([lat, lng]);
  }
}

$('#order-back').addEventListener('click', () => { $('#order-section').hidden = true; });

function orderBody() {
  const form = $('#order-form');
  return {
    package_id: state.selected.id,
    event_date: $('#event-date').value,
    address: { line1: $('#line1').value.trim(), city: $('#city').value.trim(), postal_code: $('#postal-code').value.trim(),
      lat: Number($('#lat').value), lng: Number($('#lng').value) },
    guests: Number($('#guests').value),
    notes: $('#notes').value.trim(),
    payment_option: form.querySelector('input[name=payment_option]:checked')?.value ?? 'deposit',
  };
}

function checkOrder(body) {
  if (!body.event_date) return ['#event-date', 'Choose the event date.'];
  if (body.event_date < tomorrow()) return ['#event-date', 'The event date must be in the future.'];
  if (!Number.isInteger(body.guests) || body.guests < 1) return ['#guests', 'Enter the number of guests.'];
  if (state.selected.capacity && body.guests > state.selected.capacity) {
    return ['#guests', `This package serves up to ${state.selected.capacity} guests.`];
  }
  if (!body.address.line1) return ['#line1', 'Enter the venue address.'];
  if (!body.address.city) return ['#city', 'Enter the city.'];
  if (!body.address.postal_code) return ['#postal-code', 'Enter the postal code.'];
  if (!$('#lat').value || !$('#lng').value) return ['#lat', 'Click the map to place the venue.'];
  return null;
}

$('#order-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const status = $('#order-status');
  const body = orderBody();
  const problem = checkOrder(body);
  if (problem) {
    say(status, problem[1], 'error');
    $(problem[0]).focus();
    return;
  }
  // One key per distinct order: a retry of the same form reuses it, so a flaky network
  // cannot create the order twice; changing the form means a new order and a new key.
  const hash = JSON.stringify(body);
  if (!state.orderKey || hash !== state.orderBodyHash) {
    state.orderKey = idempotencyKey();
    state.orderBodyHash = hash;
  }
  busy($('#place-order'), status, async () => {
    say(status, 'Placing your order…');
    try {
      const order = await createOrder(body, state.orderKey);
      state.orderKey = null;
      say(status, `Order placed: ${order.package?.name ?? ''} on ${order.event_date}.`, 'success');
      toast('Order placed. We are finding a partner near you.', 'success');
      $('#order-form').reset();
      state.venueMarker?.remove();
      state.venueMarker = null;
      $('#order-section').hidden = true;
      backToBrowse();
      view.select('orders');
      await openOrder(order.id, order);
    } catch (err) {
      if (err instanceof ApiError && err.fieldMessages) throw new Error(`${err.message}: ${err.fieldMessages}`);
      throw err;
    }
  });
});

// ---- my orders ---------------------------------------------------------------------------

async function showOrders() {
  if (!currentUser()) {
    $('#orders-signin').hidden = false;
    askSignIn($('#orders-signin'));
    return;
  }
  const box = $('#order-list');
  mount(box, loading('Loading your orders…'));
  try {
    const items = itemsOf(await get('/api/orders/myorders', { limit: 50 }));
    state.orders = new Map(items.map((o) => [o.id, o]));
    renderOrderList();
  } catch (err) {
    mount(box, errorBox(err, showOrders));
  }
}

function renderOrderList() {
  const box = $('#order-list');
  const items = [...state.orders.values()];
  if (!items.length) {
    mount(box, empty('No orders yet. Pick a package to plan your first party.'));
    return;
  }
  mount(box, el('ul', { class: 'orders', id: 'orders' }, items.map((o) =>
    el('li', { class: 'card', dataset: { id: o.id } },
      el('div', { class: 'spread' }, el('strong', { text: o.package?.name ?? 'Package' }), statusBadge(o.status)),
      el('p', { class: 'muted', text: `${o.event_date} · ${o.address?.city ?? ''} · ${money(o.price, o.currency)}` }),
      el('button', { type: 'button', class: 'secondary', text: 'Details', 'aria-label': `Details of ${o.package?.name ?? 'order'}`,
        on: { click: () => openOrder(o.id) } })))));
}

async function openOrder(id, known) {
  state.openOrderId = id;
  const detail = $('#order-detail');
  detail.hidden = false;
  let order = known;
  if (!order) {
    mount($('#order-body'), loading('Loading order…'));
    try {
      order = await get(`/api/orders/${encodeURIComponent(id)}`);
    } catch (err) {
      mount($('#order-body'), errorBox(err, () => openOrder(id)));
      return;
    }
  }
  state.orders.set(order.id, order);
  renderOrderList();
  renderOrder(order);
  detail.scrollIntoView?.({ block: 'nearest' });
}

function renderOrder(order) {
  const history = Array.isArray(order.history) ? order.history : [];
  const body = $('#order-body');
  mount(body,
    el('h2', { id: 'order-detail-title', text: order.package?.name ?? 'Order' }),
    el('p', { id: 'order-detail-status' }, statusBadge(order.status)),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Event date' }), el('dd', { text: order.event_date }),
      el('dt', { text: 'Venue' }), el('dd', { text: [order.address?.line1, order.address?.city, order.address?.postal_code].filter(Boolean).join(', ') }),
      el('dt', { text: 'Guests' }), el('dd', { text: order.guests }),
      el('dt', { text: 'Price' }), el('dd', { text: money(order.price, order.currency) }),
      el('dt', { text: 'Payment' }), el('dd', { text: PAYMENT_LABELS[order.payment_option] ?? order.payment_option }),
      order.partner ? el('dt', { text: 'Partner' }) : null,
      order.partner ? el('dd', { text: [order.partner.first_name, order.partner.vehicle_type].filter(Boolean).join(' · ') }) : null,
      order.notes ? el('dt', { text: 'Notes' }) : null,
      order.notes ? el('dd', { class: 'order-notes', text: order.notes }) : null),
    el('h3', { text: 'Timeline' }),
    el('ol', { class: 'timeline', 'aria-label': 'Status history' }, history.map((h) =>
      el('li', {}, el('strong', { text: statusLabel(h.status) }), ` · ${dateTime(h.at)}`,
        h.reason ? el('span', { class: 'muted', text: ` (${h.reason})` }) : null))),
    TRACKABLE.has(order.status)
      ? el('p', {}, el('a', { href: `/track?order=${encodeURIComponent(order.id)}`, text: 'Open the tracking page' })) : null,
    shareBlock(order),
    cancelBlock(order),
    reviewBlock(order));
  tracker.follow(order);
}

const SHAREABLE = new Set(['placed', 'offered', 'assigned', 'en_route', 'arrived', 'setup_complete']);

/** A link anyone can open to follow the delivery without signing in (it expires). */
function shareBlock(order) {
  if (!SHAREABLE.has(order.status)) return null;
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const field = el('input', { id: 'share-url', readonly: '', hidden: true, 'aria-label': 'Tracking link' });
  return el('div', { class: 'stack' },
    el('button', { type: 'button', class: 'secondary', text: 'Share a tracking link', on: { click: (e) => busy(e.currentTarget, status, async () => {
      const link = await post(`/api/orders/${encodeURIComponent(order.id)}/tracking-link`);
      field.value = link.url;
      field.hidden = false;
      field.select();
      let copied = false;
      try { await navigator.clipboard?.writeText(link.url); copied = Boolean(navigator.clipboard); } catch { copied = false; }
      status.hidden = false;
      status.textContent = `${copied ? 'Copied. ' : ''}Anyone with this link can follow the delivery until ${dateTime(link.expires_at)}.`;
    }) } }),
    field, status);
}

function cancelBlock(order) {
  if (!CANCELLABLE.has(order.status)) return null;
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const reason = el('input', { maxlength: '300', placeholder: 'Optional' });
  const confirmBox = el('div', { class: 'stack', hidden: true },
    el('p', { text: 'Cancel this order? This cannot be undone.' }),
    (() => { reason.id = 'cancel-reason'; return el('div', { class: 'field' }, el('label', { for: 'cancel-reason', text: 'Reason' }), reason); })(),
    el('div', { class: 'row' },
      el('button', { type: 'button', class: 'danger', text: 'Yes, cancel the order', on: { click: (e) => busy(e.currentTarget, status, async () => {
        const after = await post(`/api/orders/${encodeURIComponent(order.id)}/cancel`, { reason: reason.value.trim() || null });
        toast('Your order was cancelled.', 'success');
        state.orders.set(after.id, after);
        renderOrderList();
        renderOrder(after);
      }) } }),
      el('button', { type: 'button', class: 'link', text: 'Keep it', on: { click: () => { confirmBox.hidden = true; } } })));
  return el('div', { class: 'stack' },
    el('button', { type: 'button', class: 'danger', text: 'Cancel order', on: { click: () => { confirmBox.hidden = false; reason.focus(); } } }),
    confirmBox, status);
}

function reviewBlock(order) {
  if (order.status !== 'completed') return null;
  if (order.reviewed) return el('p', { class: 'muted', text: 'Thank you for your review.' });
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const text = el('textarea', { id: 'review-text', maxlength: '2000' });
  const stars = el('fieldset', {}, el('legend', { text: 'Your rating' }),
    el('div', { class: 'stars' }, [1, 2, 3, 4, 5].map((n) => el('label', { class: 'choice' },
      el('input', { type: 'radio', name: 'rating', value: String(n), required: true }), `${n}★`))));
  const form = el('form', { class: 'stack', id: 'review-form' }, el('h3', { text: 'How was your party?' }), stars,
    el('div', { class: 'field' }, el('label', { for: 'review-text', text: 'Comments' }), text),
    el('button', { type: 'submit', class: 'primary', text: 'Send review' }), status);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const picked = form.querySelector('input[name=rating]:checked');
    if (!picked) {
      say(status, 'Choose from 1 to 5 stars.', 'error');
      return;
    }
    busy(form.querySelector('button[type=submit]'), status, async () => {
      await post(`/api/orders/${encodeURIComponent(order.id)}/review`, { rating: Number(picked.value), text: text.value.trim() });
      const after = { ...order, reviewed: 1 };
      state.orders.set(after.id, after);
      renderOrder(after);
      toast('Thanks for your review!', 'success');
    });
  });
  return form;
}

// ---- live updates --------------------------------------------------------------------------

function onOrderStatus(msg) {
  const fresh = state.conn?.seen(`order:${msg.order_id}`, msg.version);
  if (fresh === null) return;
  const known = state.orders.get(msg.order_id);
  if (known) {
    known.status = msg.status;
    renderOrderList();
  }
  if (msg.order_id === state.openOrderId) {
    // The push is a hint: re-read the order (history, partner) from the API.
    openOrder(msg.order_id);
  }
}

async function resync() {
  if (!currentUser()) return;
  tracker.subscribed = false;  // a new connection has joined no rooms yet
  if (!$('#panel-orders').hidden) await showOrders();
  if (state.openOrderId) await openOrder(state.openOrderId);
  else await tracker.subscribe();
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  const user = await resumeFor(['customer']);
  if (user) signedIn(user);
  else signedOut();
  await loadPackages();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('package');
  if (wanted) showPackage(wanted);
}

start();
