// Customer app: browse and search packages, order one, pay for it, follow orders live, cancel, review.
import { get, post, createOrder, idempotencyKey, itemsOf, currentUser, ApiError } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { createMap, drawServiceAreas, pinIcon } from './map.js';
import { OrderTracker, TRACKABLE } from './tracking.js';
import { CATEGORIES, packageCard, packageImage, rating, durationText } from './packages.js';
import { openCheckout, moneyWords, payLabel, canPay, paymentsConfig, finishStripeReturn, PAYMENT_STATUS_LABELS,
  KIND_LABELS, REFUND_STATUS_LABELS, PROVIDER_LABELS, PAYMENT_WINDOW_MIN, REFUND_AFTER_ASSIGN_BP } from './checkout.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, statusLabel, dateTime, dateOnly, dayOf,
  timeOnly, orderRef, fieldError, tabs, toast } from './ui.js';
import { serverSettings } from './settings.js';

serverSettings();  // the site's locale, asked first: formatters use it once it answers

const PAGE_SIZE = 12;
const CANCELLABLE = new Set(['pending_payment', 'placed', 'offered', 'assigned']);

const state = { page: 1, selected: null, orderKey: null, orderBodyHash: '', venueMap: null, venueMarker: null,
  conn: null, orders: new Map(), openOrderId: null, pendingOrder: false, placeOptions: [], activeOption: -1 };

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
  state.conn.socket.on('payment_status', onPaymentStatus);
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
  closeCheckout();
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
// A phone shows the search box and folds the rest; a wider screen has room for all of it.
if (matchMedia('(min-width: 40rem)').matches) $('#more-filters').open = true;

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
    const [answer] = await Promise.all([get('/api/packages', filters()), serverSettings()]);  // prices in the locale
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
    el('button', { type: 'button', class: 'primary big', id: 'start-order', text: 'Order this package', on: { click: startOrder } }),
    reviewsSection(pkg));
  $('#detail-name').scrollIntoView?.({ block: 'nearest' });
}

const REVIEWS_PAGE = 5;

/** The package's rating and its reviews, newest first, a page at a time ("Show more reviews"). */
function reviewsSection(pkg) {
  const id = pkg.id ?? pkg._id;
  const list = el('ol', { class: 'reviews', id: 'review-list', 'aria-label': 'Reviews, newest first' });
  const status = el('p', { class: 'muted', role: 'status' });
  const more = el('button', { type: 'button', class: 'secondary', id: 'more-reviews', text: 'Show more reviews', hidden: true });
  const count = Number(pkg.rating_count) || 0;
  let page = 0;
  const load = async () => {
    more.disabled = true;
    try {
      const answer = await get(`/api/packages/${encodeURIComponent(id)}/reviews`, { page: page + 1, limit: REVIEWS_PAGE });
      page += 1;
      list.append(...itemsOf(answer).map(reviewItem));
      const total = Number(answer?.total) || 0;
      status.textContent = total ? '' : 'No reviews yet. Reviews come from customers after their party.';
      more.hidden = page * REVIEWS_PAGE >= total;
    } catch {
      status.textContent = 'The reviews could not be loaded just now.';
      more.hidden = false;
      more.textContent = 'Try again';
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener('click', () => {
    more.textContent = 'Show more reviews';
    load();
  });
  load();
  return el('section', { class: 'package-reviews', id: 'package-reviews', 'aria-labelledby': 'reviews-title' },
    el('h3', { id: 'reviews-title', text: 'Reviews' }),
    count ? el('p', { class: 'rating-summary', id: 'rating-summary',
      text: `★ ${Number(pkg.rating_avg).toFixed(1)} out of 5 · ${count} review${count === 1 ? '' : 's'}` }) : null,
    list, status, more);
}

function reviewItem(r) {
  const stars = Math.max(0, Math.min(5, Number(r.rating) || 0));
  return el('li', { class: 'review' },
    el('div', { class: 'spread' },
      el('span', { class: 'review-stars', role: 'img', 'aria-label': `Rated ${stars} out of 5`,
        text: '★'.repeat(stars) + '☆'.repeat(5 - stars) }),
      el('span', { class: 'muted review-date', text: dayOf(r.created_at) })),
    el('p', { class: 'reviewer', text: r.reviewer }),
    r.text ? el('p', { class: 'review-text', text: r.text }) : null);
}

function backToBrowse() {
  $('#package-detail').hidden = true;
  $('#order-section').hidden = true;
  $('#browse').hidden = false;
  if (location.hash) history.replaceState(null, '', location.pathname);
}

/** Today's date (local): an order for today means "as soon as possible". */
function today() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

function startOrder() {
  const pkg = state.selected;
  $('#order-title').textContent = `Order: ${pkg.name}`;
  $('#event-date').min = today();
  $('#guests').max = String(pkg.capacity || 100000);
  $('#guests-hint').textContent = pkg.capacity ? `This package serves up to ${pkg.capacity} guests.` : '';
  $('#order-total').textContent = `Total: ${money(pkg.price, pkg.currency)}`;
  explainPayment();
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
  venueSays('');
  loadSlots();
  $('#event-date').focus();
}

/** Whether we deliver to the placed venue, in plain words, before the order is sent (the answer
 * comes from the arrival slots' check of the venue: one question, one source). */
function venueSays(text, kind) {
  // The address was retyped since the pin was placed: an answer about the pin would mislead.
  if (kind && state.addressDrifted) return;
  const notice = $('#venue-notice');
  notice.hidden = !text;
  notice.textContent = text;
  notice.classList.toggle('bad', kind === 'error');
  notice.classList.toggle('good', kind === 'success');
  // After a pick from the list or "use my location", the answer is what the customer waits for.
  if (kind && state.revealNotice) {
    state.revealNotice = false;
    notice.scrollIntoView?.({ block: 'nearest' });
  }
}

/** The arrival slots for the chosen date, in the venue's time zone (the server's list: it knows
 * the area's zone and which slots can still be met). "As soon as possible" is offered for today. */
function loadSlots() {
  state.slotsLoading = fillSlots();
  return state.slotsLoading;
}

async function fillSlots() {
  const select = $('#arrival-slot');
  const hint = $('#slot-hint');
  const date = $('#event-date').value;
  const ask = `${date}|${$('#lat').value}|${$('#lng').value}`;
  state.slotsAsked = ask;
  const placed = Boolean($('#lat').value && $('#lng').value);
  if (!date) {
    select.replaceChildren(el('option', { value: '', text: 'Choose the event date first' }));
    select.disabled = true;
    hint.textContent = '';
    if (!placed) return; // nothing to ask yet; with a venue, still say whether we deliver there
  }
  // Without a date, the server answers for today where the venue is (the phone's today can be
  // another day there).
  const params = date ? { event_date: date } : {};
  if (placed) Object.assign(params, { lat: $('#lat').value, lng: $('#lng').value });
  let answer;
  try {
    answer = await get('/api/orders/arrival-slots', params);
  } catch (err) {
    if (state.slotsAsked !== ask) return;
    select.replaceChildren(el('option', { value: '', text: '—' }));
    select.disabled = true;
    const detail = err.details?.[0];
    const outside = detail?.type === 'outside_service_area';
    hint.textContent = outside ? 'Choose a venue we deliver to first.'
      : detail?.message ? `${detail.message[0].toUpperCase()}${detail.message.slice(1)}.` : err.message;
    if (outside) {
      venueSays(NOT_SERVED, 'error');
      showAreasAndPin();
    }
    // The area is checked before the date: a date error means the venue itself is served.
    else if (placed && detail?.type === 'date_not_future') venueSays('We deliver here.', 'success');
    else if (placed) venueSays('');
    return;
  }
  if (state.slotsAsked !== ask) return; // the date or venue changed meanwhile
  if (params.lat) venueSays(`We deliver here: ${answer.area}.`, 'success');
  if (!date) return;
  const chosen = select.value; // kept when still offered (placing the venue re-reads the slots)
  const offered = new Set(answer.slots.map((s) => s.label));
  const pick = chosen === 'asap' && answer.asap ? 'asap' : offered.has(chosen) ? chosen : answer.default;
  const options = [];
  if (answer.asap) {
    options.push(el('option', { value: 'asap', text: `As soon as possible (within ${answer.asap_window_min} min)` }));
  }
  for (const slot of answer.slots) {
    const option = el('option', { value: slot.label, text: slot.label.replace('-', ' – ') });
    option.dataset.after = slot.arrive_after;
    option.dataset.before = slot.arrive_before;
    if (slot.label === pick) option.selected = true;
    options.push(option);
  }
  if (!options.length) options.push(el('option', { value: '', text: 'No slot left today: choose a later date' }));
  select.replaceChildren(...options);
  select.disabled = !answer.asap && !answer.slots.length;
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  hint.textContent = answer.timezone === local ? 'When the partner arrives to set up.'
    : `When the partner arrives to set up, in local time at the venue (${answer.timezone}).`;
}

$('#event-date').addEventListener('change', loadSlots);

function setUpVenueMap() {
  if (!state.venueMap) {
    state.venueMap = createMap($('#venue-map'));
    drawServiceAreas(state.venueMap).then((layer) => { state.venueAreas = layer; },
      () => { /* the notice still says whether we deliver */ });
    state.venueMap.on('click', (e) => {
      placeVenue(e.latlng.lat, e.latlng.lng);
      nameVenue(e.latlng.lat, e.latlng.lng);
    });
    for (const id of ['#lat', '#lng']) $(id).addEventListener('change', typedCoordinates);
  }
  setTimeout(() => state.venueMap.invalidateSize(), 0);
}

/** Coordinates typed into the latitude and longitude fields move the pin and the map there. */
function typedCoordinates() {
  const lat = Number($('#lat').value);
  const lng = Number($('#lng').value);
  if (!$('#lat').value || !$('#lng').value || !(Math.abs(lat) <= 90) || !(Math.abs(lng) <= 180)) return;
  placeVenue(lat, lng, { fill: false, zoom: 15 });
  nameVenue(lat, lng);
}

/** Put the venue pin at (lat, lng): fill the coordinate fields, bring the map there (zoomed to at
 * least `zoom` when given), and ask whether we deliver there. */
function placeVenue(lat, lng, { fill = true, zoom = null } = {}) {
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
      nameVenue(p.lat, p.lng);
    });
  } else {
    state.venueMarker.setLatLng([lat, lng]);
  }
  if (!state.locating) locateSays('');  // "pin placed where you are" no longer describes the pin
  if (zoom !== null) state.venueMap.setView([lat, lng], Math.max(zoom, state.venueMap.getZoom()));
  else if (!state.venueMap.getBounds().contains([lat, lng])) state.venueMap.panTo([lat, lng]);
  state.addressDrifted = false;
  venueSays('Checking whether we deliver here…');
  loadSlots();
}

/** Zoom out to the pin and the shaded areas, so "pick a place inside the shaded area" can be done. */
function showAreasAndPin() {
  if (!state.venueAreas || !state.venueMarker) return;
  const bounds = state.venueAreas.getBounds().extend(state.venueMarker.getLatLng());
  state.venueMap.fitBounds(bounds, { padding: [16, 16] });
}

function clearVenue() {
  state.venueMarker?.remove();
  state.venueMarker = null;
  closeOptions();
  venueSays('');
  line1Says(LINE1_HINT);
  $('#locate-status').textContent = '';
  $('#locate-status').classList.remove('bad');
}

// ---- the venue's address: suggestions as the customer types, "use my location" -------------------

const NOT_SERVED = 'Not yet in this area: we do not deliver to this spot yet. Pick a place inside the shaded area on the map.';
const LINE1_HINT = 'Start typing a street, area or landmark, then pick it from the list.';
// What to add after picking a suggestion: the gazetteer knows streets and places, not buildings.
const AFTER_PICK = {
  road: 'Now add the house or building number to the address.',
  locality: 'Now add the house number and street to the address.',
  nearby: 'Check the address and add the house or building number.',
  landmark: 'If the party is not at this place itself, add the exact address and drag the pin.',
};
const PICK_ZOOM = { locality: 15, road: 16 };
const HOUSE_NUMBER = /^\s*((?:no\.?\s*|#)?\d+[a-z]?(?:[/-]\d+[a-z]?)?)(?:\s*,\s*|\s+)(?!(?:st|nd|rd|th)\b)\S/i;
const SUGGEST_AFTER_MS = 250;  // a pause in typing, not every keystroke
const MIN_QUERY = 2;
// "12.9716, 77.5946" pasted into the address box: decimals on both sides, so "12 5th Cross" is not one.
const COORDINATES = /^\s*(-?\d{1,2}\.\d+)\s*[,;\s]\s*(-?\d{1,3}\.\d+)\s*$/;

function line1Says(text) {
  $('#line1-hint').textContent = text;
}

/** The address text the placed pin stands for (after a pick, or the reverse lookup's name for it). */
function rememberVenueText() {
  state.venueText = $('#line1').value.trim().toLowerCase();
}

function onAddressInput() {
  clearTimeout(state.placeTimer);
  state.placeSeq = (state.placeSeq ?? 0) + 1;  // an answer still on its way is for older text
  const text = $('#line1').value.trim();
  // A new address typed over the picked one: "we deliver here" was about the pin's place, not
  // this text. Adding a house number keeps the picked text, and the answer.
  if (state.venueText && !text.toLowerCase().includes(state.venueText) && !$('#venue-notice').hidden) {
    state.venueText = '';
    state.addressDrifted = true;
    venueSays('Pick the new address from the list (or move the pin) and we will say whether we deliver there.');
  }
  const coords = text.match(COORDINATES);
  if (coords && Math.abs(Number(coords[1])) <= 90 && Math.abs(Number(coords[2])) <= 180) {
    const lat = Number(coords[1]);
    const lng = Number(coords[2]);
    showOptions([{ coordinates: true, lat, lng, name: 'Go to these coordinates', label: `${lat}, ${lng}` }]);
    return;
  }
  if (text.length < MIN_QUERY) {
    closeOptions();
    line1Says(LINE1_HINT);
    return;
  }
  const seq = state.placeSeq;
  state.placeTimer = setTimeout(() => suggest(text, seq), SUGGEST_AFTER_MS);
}

async function suggest(text, seq) {
  let answer;
  try {
    answer = await get('/api/places/search', { q: text, limit: 6 });
  } catch (err) {
    if (seq !== state.placeSeq) return;
    closeOptions();
    line1Says(err.status === 429 ? 'Too many searches just now: wait a moment, or tap the map where the party is.'
      : 'Address search is not available right now: tap the map where the party is instead.');
    return;
  }
  if (seq !== state.placeSeq || document.activeElement !== $('#line1')) return;
  if (!answer.places.length) {
    closeOptions();
    // The venue is placed and the customer is adding the house number: nothing to complain about.
    if ($('#lat').value && $('#lng').value) return;
    line1Says(`No place matches "${text}". Check the spelling, try a landmark nearby, or tap the map.`);
    return;
  }
  line1Says(LINE1_HINT);
  showOptions(answer.places);
}

function showOptions(places) {
  const list = $('#place-options');
  state.placeOptions = places;
  state.activeOption = -1;
  const keepFocus = (e) => e.preventDefault();  // a tap on an option must not blur the address field
  mount(list, places.map((place, i) => {
    let rest = place.label.startsWith(`${place.name}, `) ? place.label.slice(place.name.length + 2) : place.label;
    if (rest === place.name) rest = '';
    const outside = place.area === null ? 'Not yet in our delivery area' : '';
    // Read out as one phrase ("Koramangala 5th Block, Bengaluru 560095"), not run together.
    const spoken = [place.name, rest, outside].filter(Boolean).join(', ');
    return el('li', { role: 'option', id: `place-option-${i}`, class: 'place-option', 'aria-selected': 'false',
      'aria-label': spoken, on: { pointerdown: keepFocus, mousedown: keepFocus, click: () => pickPlace(place) } },
    el('span', { class: 'place-name', text: place.name }),
    rest ? el('span', { class: 'place-sub', text: rest }) : null,
    outside ? el('span', { class: 'place-out', text: outside }) : null);
  }));
  list.hidden = false;
  $('#line1').setAttribute('aria-expanded', 'true');
  $('#line1').removeAttribute('aria-activedescendant');
  // On a phone the keyboard covers the lower half: bring the field to the top so the list shows.
  const visible = window.visualViewport?.height ?? window.innerHeight;
  if (list.getBoundingClientRect().bottom > visible) $('#line1').scrollIntoView?.({ block: 'start' });
}

function closeOptions() {
  const list = $('#place-options');
  list.hidden = true;
  list.replaceChildren();
  state.placeOptions = [];
  state.activeOption = -1;
  $('#line1').setAttribute('aria-expanded', 'false');
  $('#line1').removeAttribute('aria-activedescendant');
}

function moveActive(step) {
  const count = state.placeOptions.length;
  state.activeOption = (state.activeOption + step + count + (state.activeOption < 0 && step < 0 ? 1 : 0)) % count;
  $('#place-options').querySelectorAll('[role=option]').forEach((option, i) => {
    option.setAttribute('aria-selected', String(i === state.activeOption));
    if (i === state.activeOption) {
      $('#line1').setAttribute('aria-activedescendant', option.id);
      option.scrollIntoView?.({ block: 'nearest' });
    }
  });
}

function pickPlace(place) {
  clearTimeout(state.placeTimer);
  state.placeSeq = (state.placeSeq ?? 0) + 1;
  closeOptions();
  if (place.coordinates) {
    placeVenue(place.lat, place.lng, { zoom: 16 });
    $('#line1').value = '';
    nameVenue(place.lat, place.lng, { overwrite: true });
    return;
  }
  // "12 MG Road": the house number the customer typed is kept in front of the picked street.
  const number = $('#line1').value.match(HOUSE_NUMBER)?.[1];
  const keep = number && place.kind !== 'address' && !place.line1.includes(number);  // not "100 Feet Road"
  $('#line1').value = keep ? `${number}, ${place.line1}` : place.line1;
  if (place.city) $('#city').value = place.city;
  if (place.postal_code) $('#postal-code').value = place.postal_code;
  line1Says(AFTER_PICK[place.kind] ?? AFTER_PICK.nearby);
  rememberVenueText();
  state.revealNotice = true;
  placeVenue(place.lat, place.lng, { zoom: PICK_ZOOM[place.kind] ?? 17 });
}

$('#line1').addEventListener('input', onAddressInput);
$('#line1').addEventListener('keydown', (e) => {
  if ($('#place-options').hidden || !state.placeOptions?.length) return;
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    e.preventDefault();
    moveActive(e.key === 'ArrowDown' ? 1 : -1);
  } else if (e.key === 'Enter') {
    e.preventDefault();  // picks a place; it does not send the order
    pickPlace(state.placeOptions[Math.max(0, state.activeOption)]);
  } else if (e.key === 'Escape') {
    e.preventDefault();
    closeOptions();
  }
});
$('#line1').addEventListener('blur', () => setTimeout(() => {
  if (document.activeElement !== $('#line1')) closeOptions();
}, 150));

/** Fill the address from what the position is called: every field when asked to (my location, typed
 * coordinates in the address box), otherwise only the empty ones (a tap on the map). */
async function nameVenue(lat, lng, { overwrite = false } = {}) {
  state.nameSeq = (state.nameSeq ?? 0) + 1;
  const seq = state.nameSeq;
  let answer;
  try {
    answer = await get('/api/places/reverse', { lat: lat.toFixed(6), lng: lng.toFixed(6) });
  } catch {
    if (overwrite && seq === state.nameSeq) line1Says('We could not look up this spot\'s address: type it, please.');
    return;
  }
  if (seq !== state.nameSeq) return;  // the pin moved again meanwhile
  const place = answer.place;
  if (!place) {
    if (overwrite || !$('#line1').value.trim()) line1Says('We have no name for this spot: type the address, please.');
    return;
  }
  let filled = false;
  for (const [id, value] of [['#line1', place.line1], ['#city', place.city], ['#postal-code', place.postal_code]]) {
    if (value && (overwrite || !$(id).value.trim())) {
      $(id).value = value;
      filled = true;
    }
  }
  if (filled) line1Says(AFTER_PICK.nearby);
  if (filled || overwrite) rememberVenueText();
}

function locateSays(text, bad = false) {
  $('#locate-status').textContent = text;
  $('#locate-status').classList.toggle('bad', bad);
  if (bad) $('#locate-status').scrollIntoView?.({ block: 'nearest' });
}

function useMyLocation() {
  if (!navigator.geolocation) {
    locateSays('This browser cannot share your location: type the address instead.', true);
    return;
  }
  const button = $('#use-location');
  button.disabled = true;
  locateSays('Finding where you are…');
  navigator.geolocation.getCurrentPosition((position) => {
    button.disabled = false;
    const { latitude, longitude, accuracy } = position.coords;
    state.revealNotice = true;
    state.locating = true;
    placeVenue(latitude, longitude, { zoom: 17 });
    state.locating = false;
    locateSays(accuracy > 100
      ? `Your phone places you within about ${Math.round(accuracy)} m: drag the pin to the exact spot.`
      : 'Pin placed where you are. Drag it if the party is somewhere else.');
    nameVenue(latitude, longitude, { overwrite: true });
  }, (error) => {
    button.disabled = false;
    locateSays(error.code === error.PERMISSION_DENIED
      ? 'Location is blocked for this site, so we cannot see where you are. Type the address instead, or allow location for this site in your browser settings and try again.'
      : error.code === error.TIMEOUT ? 'Finding your location took too long. Try again, or type the address.'
        : 'Your location is not available right now. Type the address instead.', true);
  }, { enableHighAccuracy: true, timeout: 15_000, maximumAge: 60_000 });
}

$('#use-location').addEventListener('click', useMyLocation);

$('#order-back').addEventListener('click', () => { $('#order-section').hidden = true; });

/** Say what the chosen payment option means for this package: what is paid now, and how. */
async function explainPayment() {
  const pkg = state.selected;
  const option = $('#order-form').querySelector('input[name=payment_option]:checked')?.value;
  const m = (v) => money(v, pkg.currency);
  const note = $('#pay-note');
  if (option === 'cash') {
    note.textContent = `You pay ${m(pkg.price)} in cash to the partner on the day.`;
    return;
  }
  if (option === 'full') {
    note.textContent = `Next you pay ${m(pkg.price)} online. We start looking for a partner once it is paid.`;
    return;
  }
  note.textContent = 'Next you pay the deposit online; the rest on the day.';
  try {
    // The server's own rule (the checkout shows the exact amount it computes).
    const deposit = Math.floor((pkg.price * (await paymentsConfig()).deposit_rate_bp) / 10_000);
    if (state.selected === pkg && $('#order-form').querySelector('input[name=payment_option]:checked')?.value === 'deposit') {
      note.textContent = `Next you pay a deposit of ${m(deposit)} online; the rest, ${m(pkg.price - deposit)}, on the day.`;
    }
  } catch { /* the general sentence stands */ }
}

for (const radio of document.querySelectorAll('#order-form input[name=payment_option]')) {
  radio.addEventListener('change', explainPayment);
}

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
    ...slotWindow(),
  };
}

/** The chosen slot as the order's arrival window; nothing for "as soon as possible". */
function slotWindow() {
  const option = $('#arrival-slot').selectedOptions[0];
  if (!option?.dataset.after) return {};
  return { arrive_after: option.dataset.after, arrive_before: option.dataset.before };
}

// The order body's fields and the form's inputs: a server's field error is shown beside its input.
const ORDER_INPUTS = { event_date: '#event-date', guests: '#guests', 'address.line1': '#line1', 'address.city': '#city',
  'address.postal_code': '#postal-code', 'address.lat': '#line1', 'address.lng': '#line1', notes: '#notes',
  arrive_after: '#arrival-slot', arrive_before: '#arrival-slot' };

/** Put the server's first field error beside its input, in a sentence; false when none fits. */
function serverFieldError(err) {
  for (const d of Array.isArray(err.details) ? err.details : []) {
    const input = d?.field ? $(ORDER_INPUTS[String(d.field).replace(/^body\./, '')] ?? '#none') : null;
    if (input && d.message) {
      const words = String(d.message);
      fieldError(input, `${words[0].toUpperCase()}${words.slice(1)}${/[.!?]$/.test(words) ? '' : '.'}`);
      return true;
    }
  }
  return false;
}

function checkOrder(body) {
  if (!body.event_date) return ['#event-date', 'Choose the event date.'];
  if (body.event_date < today()) return ['#event-date', 'The event date must be today or later.'];
  if (!$('#arrival-slot').value) return ['#arrival-slot', 'Choose when the partner should arrive.'];
  if (!Number.isInteger(body.guests) || body.guests < 1) return ['#guests', 'Enter the number of guests.'];
  if (state.selected.capacity && body.guests > state.selected.capacity) {
    return ['#guests', `This package serves up to ${state.selected.capacity} guests.`];
  }
  if (!body.address.line1) return ['#line1', 'Enter the venue address.'];
  if (!body.address.city) return ['#city', 'Enter the city.'];
  if (!body.address.postal_code) return ['#postal-code', 'Enter the postal code.'];
  if (!$('#lat').value || !$('#lng').value) {
    return ['#line1', 'Place the venue: pick the address from the list, use your location, or tap the map.'];
  }
  return null;
}

$('#order-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const status = $('#order-status');
  await state.slotsLoading;  // a date or venue just changed: its slots are on their way
  const body = orderBody();
  const problem = checkOrder(body);
  if (problem) {
    // The words go next to the field; the status line only points at it.
    say(status, 'Please check the highlighted field.', 'error');
    fieldError($(problem[0]), problem[1]);
    return;
  }
  say(status, '');
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
      say(status, `Order placed: ${order.package?.name ?? ''} on ${dateOnly(order.event_date)}.`, 'success');
      $('#order-form').reset();
      clearVenue();
      $('#order-section').hidden = true;
      backToBrowse();
      view.select('orders');
      if (order.status === 'pending_payment') {
        showCheckout(order);  // the order waits for its money: pay straight away
      } else {
        await openOrder(order.id, order);
        placedToast(state.orders.get(order.id) ?? order);  // a push may have moved it on already
      }
    } catch (err) {
      const placedField = err instanceof ApiError ? serverFieldError(err) : false;
      if (placedField) {
        say(status, 'Please check the highlighted field.', 'error');
        return;
      }
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
    const [mine] = await Promise.all([get('/api/orders/myorders', { limit: 50 }), serverSettings()]);
    const items = itemsOf(mine);
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
      el('div', { class: 'spread' }, el('strong', { text: o.package?.name ?? 'Package' }),
        o.status === 'pending_payment' ? el('span', { class: 'badge pay-needed', text: 'Payment needed' }) : statusBadge(o.status)),
      el('p', { class: 'muted', text: `${dateOnly(o.event_date)} · ${o.address?.city ?? ''} · ${money(o.price, o.currency)}` }),
      el('p', { class: 'hint order-ref', text: `Order ${orderRef(o.id)}` }),
      o.amount_paid !== undefined ? el('p', { class: 'money-words', text: moneyWords(o) }) : null,
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'secondary', text: 'Details', 'aria-label': `Details of ${o.package?.name ?? 'order'}`,
          on: { click: () => openOrder(o.id) } }),
        o.status === 'pending_payment' && canPay(o)
          ? el('button', { type: 'button', class: 'primary', text: 'Pay now', 'aria-label': `Pay for ${o.package?.name ?? 'order'}`,
            on: { click: () => showCheckout(o) } }) : null)))));
}

// ---- checkout ------------------------------------------------------------------------------

/** The checkout step for an order that owes money: in place of the order list and detail. */
function showCheckout(order) {
  state.openOrderId = null;  // pushes about this order must not open its detail under the checkout
  tracker.hide();
  $('#order-list').hidden = true;
  $('#order-detail').hidden = true;
  const box = $('#checkout');
  box.hidden = false;
  openCheckout(box, order, {
    customer: currentUser(),
    onPaid: (outcome) => {
      if (outcome.already) toast('This order is already paid.', 'info');
      else if (outcome.paid) toast(`Payment received: ${money(outcome.payment.amount, outcome.payment.currency)}. Thank you!`, 'success');
      else toast(outcome.message, 'info');
      openOrder(order.id);
    },
    onLeave: () => openOrder(order.id),
  });
  box.scrollIntoView?.({ block: 'start' });
}

function closeCheckout() {
  const box = $('#checkout');
  if (box.hidden) return;
  box.hidden = true;
  mount(box);
  $('#order-list').hidden = false;
}

async function openOrder(id, known) {
  closeCheckout();
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

/** "Between 10:00 am and 1:00 pm", in the venue's time zone (the window the partner aims for). */
function arrivalWindow(order) {
  const from = timeOnly(order.arrive_after, order.timezone);
  const to = timeOnly(order.arrive_before, order.timezone);
  return order.asap ? `As soon as possible, by ${to}` : `Between ${from} and ${to}`;
}

function renderOrder(order) {
  const history = Array.isArray(order.history) ? order.history : [];
  const body = $('#order-body');
  mount(body,
    el('h2', { id: 'order-detail-title', text: order.package?.name ?? 'Order' }),
    el('p', { id: 'order-detail-status' }, statusBadge(order.status)),
    payBlock(order),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Order' }), el('dd', { class: 'order-ref', text: orderRef(order.id) }),
      el('dt', { text: 'Event date' }), el('dd', { text: dateOnly(order.event_date) }),
      order.arrive_after ? el('dt', { text: 'Arrival' }) : null,
      order.arrive_after ? el('dd', { id: 'arrival-window', text: arrivalWindow(order) }) : null,
      el('dt', { text: 'Venue' }), el('dd', { text: [order.address?.line1, order.address?.city, order.address?.postal_code].filter(Boolean).join(', ') }),
      el('dt', { text: 'Guests' }), el('dd', { text: order.guests }),
      moneyRows(order),
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
    paymentsBlock(order),
    shareBlock(order),
    cancelBlock(order),
    reviewBlock(order));
  tracker.follow(order);
}

/** Price, what is paid, refunded and still due, in words and in figures. */
function moneyRows(order) {
  const m = (v) => money(v, order.currency);
  const rows = [el('dt', { text: 'Price' }), el('dd', { text: m(order.price) }),
    el('dt', { text: 'Payment' }), el('dd', { id: 'money-words', text: moneyWords(order) })];
  if (order.payment_option === 'cash') return rows;
  rows.push(el('dt', { text: 'Paid so far' }), el('dd', { id: 'amount-paid', text: m(order.amount_paid) }));
  if (Number(order.amount_refunded) > 0) {
    rows.push(el('dt', { text: 'Refunded' }), el('dd', { id: 'amount-refunded', text: m(order.amount_refunded) }));
  }
  rows.push(el('dt', { text: 'Still due' }), el('dd', { id: 'amount-due', text: m(order.amount_due) }));
  return rows;
}

/** The call to pay: "Complete payment" while the order is held for it, else the deposit or balance. */
function payBlock(order) {
  if (!canPay(order)) return null;
  const held = order.status === 'pending_payment';
  const placedAt = Date.parse(order.created_at ?? order.history?.[0]?.at ?? '');
  const by = Number.isFinite(placedAt)
    ? timeOnly(placedAt + PAYMENT_WINDOW_MIN * 60_000) : null;
  return el('div', { class: `pay-block${held ? ' held' : ''}`, id: 'pay-block' },
    held ? el('p', { text: 'Your order is on hold until it is paid: we start looking for a partner as soon as the payment goes through.' }) : null,
    held ? el('p', { class: 'hint', text: `Unpaid orders are cancelled ${PAYMENT_WINDOW_MIN} minutes after they are placed${by ? ` (this one at ${by})` : ''}.` }) : null,
    el('button', { type: 'button', class: 'primary', id: 'pay-button', text: payLabel(order), on: { click: () => showCheckout(order) } }));
}

/** The order's receipts: each payment with its kind, time, state and refunds. */
function paymentsBlock(order) {
  if (order.payment_option === 'cash') return null;
  const list = el('div', { id: 'payments', 'aria-live': 'polite' }, loading('Loading payments…'));
  loadReceipts(order.id, list);
  return el('section', { class: 'receipts-section', 'aria-labelledby': 'payments-title' },
    el('h3', { id: 'payments-title', text: 'Payments' }), list);
}

async function loadReceipts(orderId, box) {
  try {
    const items = itemsOf(await get('/api/payments/history', { order_id: orderId, limit: 50 }))
      .filter((p) => p.status !== 'created');  // a checkout started and left: no money moved
    if (state.openOrderId !== orderId) return;
    mount(box, items.length ? el('ul', { class: 'receipts' }, items.map(receipt)) : empty('No payments yet.'));
  } catch (err) {
    mount(box, errorBox(err, () => loadReceipts(orderId, box)));
  }
}

function receipt(p) {
  const m = (v) => money(v, p.currency);
  const refunds = Array.isArray(p.refunds) ? p.refunds : [];
  return el('li', { class: 'receipt', dataset: { id: p.id } },
    el('div', { class: 'spread' },
      el('strong', { class: 'amount', text: m(p.amount) }),
      el('span', { class: `badge pay-${p.status}`, text: PAYMENT_STATUS_LABELS[p.status] ?? p.status })),
    el('div', { text: `${KIND_LABELS[p.kind] ?? p.kind} · ${dateTime(p.captured_at ?? p.created_at)}` }),
    p.status === 'failed' ? el('div', { class: 'muted', text: `${p.failure_message || 'Declined'}: nothing was charged.` }) : null,
    refunds.length ? el('ul', { class: 'refunds', 'aria-label': 'Refunds' }, refunds.map((r) =>
      el('li', { text: `${REFUND_STATUS_LABELS[r.status] ?? r.status}: ${m(r.amount)} · ${dateTime(r.settled_at ?? r.at)}${r.reason ? ` · ${r.reason}` : ''}` }))) : null,
    el('div', { class: 'hint ref', text: `${PROVIDER_LABELS[p.provider] ?? p.provider} · ref. ${orderRef(p.id)}` }));
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
    refundNote(order),
    (() => { reason.id = 'cancel-reason'; return el('div', { class: 'field' }, el('label', { for: 'cancel-reason', text: 'Reason' }), reason); })(),
    el('div', { class: 'row' },
      el('button', { type: 'button', class: 'danger', text: 'Yes, cancel the order', on: { click: (e) => busy(e.currentTarget, status, async () => {
        const after = await post(`/api/orders/${encodeURIComponent(order.id)}/cancel`, { reason: reason.value.trim() || null });
        const back = Number(after.amount_refunded) || 0;
        const owed = (Number(order.amount_paid) || 0) > (Number(order.amount_refunded) || 0);
        toast(back > 0 ? `Your order was cancelled. ${money(back, after.currency)} is on its way back to you.`
          : `Your order was cancelled.${owed ? ' Your refund is being processed.' : ''}`, 'success');
        state.orders.set(after.id, after);
        renderOrderList();
        renderOrder(after);
      }) } }),
      el('button', { type: 'button', class: 'link', text: 'Keep it', on: { click: () => { confirmBox.hidden = true; } } })));
  return el('div', { class: 'stack' },
    el('button', { type: 'button', class: 'danger', text: 'Cancel order', on: { click: () => { confirmBox.hidden = false; reason.focus(); } } }),
    confirmBox, status);
}

/** What cancelling gives back (the policy in docs/payments.md: all before assignment, a share after). */
function refundNote(order) {
  const kept = (Number(order.amount_paid) || 0) - (Number(order.amount_refunded) || 0);
  if (kept <= 0) return null;
  const m = (v) => money(v, order.currency);
  if (order.status !== 'assigned') return el('p', { class: 'hint', text: `Everything you paid (${m(kept)}) comes back to you.` });
  const back = Math.floor((kept * REFUND_AFTER_ASSIGN_BP) / 10_000);
  return el('p', { class: 'hint', text: back > 0
    ? `A partner is already assigned, so ${REFUND_AFTER_ASSIGN_BP / 100} % of what you paid (${m(back)}) comes back to you.`
    : 'A partner is already assigned, so what you paid is not refunded.' });
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

const SEARCHING = new Set(['placed', 'offered']);

/** "We are finding a partner" only while we are: withdrawn as soon as the order moves on. */
function placedToast(order) {
  state.placedToast?.item.remove();
  const text = SEARCHING.has(order.status) ? 'Order placed. We are finding a partner near you.'
    : `Order placed. ${statusLabel(order.status)}.`;
  state.placedToast = { orderId: order.id, item: toast(text, 'success') };
}

function onOrderStatus(msg) {
  const fresh = state.conn?.seen(`order:${msg.order_id}`, msg.version);
  if (state.placedToast?.orderId === msg.order_id && !SEARCHING.has(msg.status)) {
    state.placedToast.item.remove();
    state.placedToast = null;
  }
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

function onPaymentStatus(msg) {
  // The order's version counter is shared with order_status, so whichever push of one change comes
  // second looks like a duplicate: the open order was re-read by the first, but a listed order's
  // amounts are not in order_status, so they are read again either way.
  const fresh = state.conn?.seen(`order:${msg.order_id}`, msg.version);
  const known = state.orders.get(msg.order_id);
  if (known && fresh !== null) {
    known.status = msg.status;
    known.payment_status = msg.payment_status;
    renderOrderList();
  }
  if (msg.order_id === state.openOrderId) {
    if (fresh !== null) openOrder(msg.order_id);  // amounts come from the API
  } else if (known) {
    get(`/api/orders/${encodeURIComponent(msg.order_id)}`).then((order) => {
      state.orders.set(order.id, order);
      renderOrderList();
    }, () => { /* the list keeps the status from the push */ });
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
  paymentsConfig().catch(() => {});  // the payment policy the order pages quote; asked again on failure
  const user = await resumeFor(['customer']);
  if (user) signedIn(user);
  else signedOut();
  await loadPackages();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('package');
  if (wanted) showPackage(wanted);
  await returnFromStripe();
}

/** Back from a page Stripe sent the customer to (a bank's check): record the payment, show the order. */
async function returnFromStripe() {
  const params = new URLSearchParams(location.search);
  const orderId = params.get('order');
  const intent = params.get('payment_intent');
  if (!orderId || !intent || !currentUser()) return;
  history.replaceState(null, '', location.pathname);
  view.select('orders');
  try {
    const outcome = await finishStripeReturn(orderId, intent);
    if (outcome.paid) toast(`Payment received: ${money(outcome.payment.amount, outcome.payment.currency)}. Thank you!`, 'success');
    else toast(outcome.message, outcome.declined ? 'error' : 'info');
  } catch (err) {
    toast(err.message, 'error');
  }
  await openOrder(orderId);
}

start();
