// Partner app (phone browser): register, sign in, go on duty and share GPS, answer offers,
// move the current job through its states, see earnings.
import { get, post, put, itemsOf, ApiError, refresh, currentUser } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { queuePing, peekPings, dropPings, countPings, queueAction, peekActions, dropAction } from './queue.js';
import { PING_INTERVAL_MS, STALE_AFTER_INTERVALS, WEAK_GPS_M } from './config.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, ago, toast, etaWindow } from './ui.js';

const ACTIVE = ['assigned', 'en_route', 'arrived', 'setup_complete'];
const NEXT = {
  assigned: ['en_route', 'Start driving'],
  en_route: ['arrived', "I've arrived"],
  arrived: ['setup_complete', 'Setup is done'],
  setup_complete: ['completed', 'Complete the job'],
};
// Worth sending again later; any other refusal is about the fix itself and retrying cannot help.
const RETRY_CODES = new Set(['unavailable', 'timeout', 'rate_limited', 'token_expired']);

const duty = { on: false, watchId: null, wakeLock: null, lastFix: null, lastSentAt: 0, fallback: 0, flushing: false,
  sharedAt: 0, sentTs: 0, freshTimer: 0 };
const state = { user: null, conn: null, job: null, jobLoaded: false, offers: new Map(), countdown: 0, jobTimer: 0 };
// The server's rule (dispatch: a partner whose last fix is older than this is stale, greyed on the
// fleet map and offered nothing). The age is the fix's own time, as the server counts it.
const STALE_MS = PING_INTERVAL_MS * STALE_AFTER_INTERVALS;

// ---- sign-in and registration --------------------------------------------------------------
// A new partner signs in with a code first (that makes a customer account and proves the email
// or phone), then registers the business on that account. A second email or phone is added
// only with a code sent to it plus a code sent to the address they signed in with.

const PHONE = /^\+[1-9]\d{6,14}$/;
const registration = { user: null, extra: null };

/** What the account lacks, as the registration body and the labels name it. */
function missingIdentifier(user) {
  if (!user.phone) return { key: 'phone', label: 'Mobile number', placeholder: '+919876543210', type: 'tel' };
  if (!user.email) return { key: 'email', label: 'Email', placeholder: 'you@example.com', type: 'email' };
  return null;
}

/** The second identifier as typed, normalised, or null when it is not valid. */
function extraValue(kind, text) {
  const value = text.trim();
  if (kind === 'phone') {
    const phone = value.replace(/[\s()-]/g, '');
    return PHONE.test(phone) ? phone : null;
  }
  return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value) ? value.toLowerCase() : null;
}

function showRegistration(user) {
  registration.user = user;
  registration.extra = missingIdentifier(user);
  $('#welcome').hidden = true;
  $('#app').hidden = true;
  $('#pending').hidden = true;
  $('#register').hidden = false;
  renderAccount($('#account'), user, showWelcome);
  $('#register-who').textContent = user.email || user.phone || 'your account';
  const form = $('#register-form');
  if (!form.elements.contact_name.value && user.name) form.elements.contact_name.value = user.name;
  const extra = registration.extra;
  $('#extra-id').hidden = !extra;
  $('#extra-codes').hidden = true;
  if (extra) {
    $('#extra-label').textContent = `${extra.label} (optional)`;
    const input = $('#extra-address');
    input.type = extra.type;
    input.placeholder = extra.placeholder;
    $('#extra-code-label').textContent = `Code sent to the new ${extra.label.toLowerCase()}`;
    $('#verify-code-label').textContent = `Code sent to ${user.email || user.phone}`;
  }
  form.elements.company_name.focus();
}

$('#extra-send').addEventListener('click', (e) => {
  const status = $('#register-status');
  const extra = registration.extra;
  const value = extra && extraValue(extra.key, $('#extra-address').value);
  if (!value) {
    say(status, extra?.key === 'phone' ? 'Enter the mobile number with its country code, e.g. +919876543210.'
      : 'Enter a valid email address.', 'error');
    $('#extra-address').focus();
    return;
  }
  say(status, '');
  busy(e.currentTarget, status, async () => {
    const toNew = await post('/api/auth/send-otp', { [extra.key]: value });
    const toCurrent = await post('/api/users/verify/send', { action: 'identifier' });
    const dev = $('#extra-dev');
    if (toNew?.dev_code && toCurrent?.dev_code) {
      // Development servers return the codes so you can register without a mailbox.
      mount(dev, 'Development codes: new ', el('strong', { id: 'extra-dev-code', text: toNew.dev_code }),
        ', sign-in address ', el('strong', { id: 'verify-dev-code', text: toCurrent.dev_code }));
      dev.hidden = false;
    } else {
      dev.hidden = true;
    }
    $('#extra-codes').hidden = false;
    say(status, `We sent a code to ${value} and one to ${toCurrent.destination}.`, 'info');
    $('#extra-code').focus();
  });
});

$('#register-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const status = $('#register-status');
  const text = (name) => String(form.elements[name].value).trim();
  const data = { company_name: text('company_name'), contact_name: text('contact_name'),
    vehicle_type: form.elements.vehicle_type.value };
  if (text('service_area')) data.service_area = text('service_area');
  const missing = ['company_name', 'contact_name'].find((k) => !data[k]);
  if (missing) {
    say(status, 'Please fill in every field.', 'error');
    form.elements[missing].focus();
    return;
  }
  const extra = registration.extra;
  if (extra && text('extra_address')) {
    const value = extraValue(extra.key, text('extra_address'));
    const codes = [text('extra_code'), text('verify_code')];
    if (!value || $('#extra-codes').hidden || !codes.every((c) => /^\d{6}$/.test(c))) {
      say(status, `To add the ${extra.label.toLowerCase()}, send the codes and enter both (6 digits each), `
        + 'or clear the field.', 'error');
      return;
    }
    Object.assign(data, { [extra.key]: value, [`${extra.key}_code`]: codes[0], verify_code: codes[1] });
  }
  busy(form.querySelector('button[type=submit]'), status, async () => {
    try {
      await post('/api/auth/partner/register', data);
    } catch (err) {
      throw new Error(err instanceof ApiError && err.fieldMessages ? `${err.message}: ${err.fieldMessages}` : err.message);
    }
    form.reset();
    // The session still says "customer": a refresh re-reads the role (now partner, pending).
    await refresh();
    $('#register').hidden = true;
    signedIn(currentUser() ?? { ...registration.user, role: 'partner', partner_status: 'pending' });
  });
});

function showWelcome() {
  $('#app').hidden = true;
  $('#pending').hidden = true;
  $('#register').hidden = true;
  $('#welcome').hidden = false;
  renderAccount($('#account'), null);
  renderSignIn($('#signin-area'), {
    title: 'Partner sign-in',
    intro: 'New partner? Sign in with your email or mobile number first, then tell us about your business.',
    roles: ['partner', 'customer'],
    onSignedIn: (user) => (user.role === 'partner' ? signedIn(user) : showRegistration(user)),
  });
}

async function signedIn(user) {
  state.user = user;
  renderAccount($('#account'), user, () => {
    goOffDuty();
    state.conn?.close();
    clearInterval(state.jobTimer);
    showWelcome();
  });
  $('#welcome').hidden = true;
  $('#register').hidden = true;
  const standing = user.partner_status;
  if (standing && standing !== 'approved') {
    showPending({ code: standing === 'suspended' ? 'partner_suspended' : 'partner_not_approved',
      message: standing === 'suspended' ? 'Your partner account is suspended.'
        : standing === 'rejected' ? 'Your application was not approved.' : 'Your partner account is not approved yet.' });
    return;
  }
  // Partner endpoints answer 403 until an admin approves the account.
  try {
    await loadJob();
  } catch (err) {
    if (err.code === 'partner_not_approved' || err.code === 'partner_suspended') {
      showPending(err);
      return;
    }
  }
  $('#pending').hidden = true;
  $('#app').hidden = false;
  offerToResumeDuty();
  connect();
  // Pushes are hints: re-read the current job now and then, in case one was missed.
  clearInterval(state.jobTimer);
  state.jobTimer = setInterval(() => { if (document.visibilityState === 'visible') loadJob().catch(() => {}); }, 60_000);
  loadOffers();
  loadEarnings();
}

function showPending(err) {
  const box = $('#pending');
  goOffDuty();  // no location sharing while the account may not work
  state.conn?.close();
  state.conn = null;
  box.hidden = false;
  $('#app').hidden = true;
  mount(box,
    el('h2', { text: err.code === 'partner_suspended' ? 'Account suspended' : 'Waiting for approval' }),
    el('p', { text: err.message }),
    err.code === 'partner_suspended' ? el('p', { class: 'muted', text: 'Contact PartyPilot operations to restore your account.' })
      : el('p', { class: 'muted', text: 'We will let you know when your account is approved.' }),
    el('button', { type: 'button', class: 'secondary', text: 'Check again', on: { click: () => signedIn({ ...state.user, partner_status: undefined }) } }));
}

// ---- socket ----------------------------------------------------------------------------

function connect() {
  state.conn?.close();
  const chip = $('#conn-chip');
  state.conn = connectSocket({
    onConnect: () => {
      chip.textContent = 'Connected';
      chip.className = 'chip ok';
      if (duty.on) state.conn.emit('availability', { online: true });
      flush();
    },
    onDown: () => {
      chip.textContent = 'Offline: positions are kept and sent later';
      chip.className = 'chip warn';
    },
    onResync: () => { loadJob().catch(() => {}); loadOffers(); },
    onRefused: (err) => {
      chip.textContent = 'Not connected';
      chip.className = 'chip warn';
      if (err.code === 'partner_suspended') showPending(err);
      else toast(`Live connection refused: ${err.message ?? ''}`, 'error');
    },
  });
  const s = state.conn.socket;
  s.on('offer', (offer) => showOffer(offer));
  s.on('offer_revoked', (msg) => revokeOffer(msg.order_id, msg.reason));
  s.on('order_status', onOrderStatus);
}

/** An order of mine changed: assigned to me (an admin's manual assignment, say), taken away, cancelled. */
function onOrderStatus(msg) {
  // An order that moved past `offered` is no longer an offer to answer: stop its countdown.
  if (msg.status !== 'offered' && state.offers.delete(msg.order_id)) renderOffers();
  const wasMine = state.job?.id === msg.order_id;
  const isMine = Boolean(msg.partner_id) && msg.partner_id === state.user?.id;
  if (isMine && ACTIVE.includes(msg.status) && !wasMine) {
    if (state.accepted !== msg.order_id) {
      toast(msg.status === 'assigned' ? 'A new job was assigned to you: see "Current job".' : 'Your current job changed.',
        'info');
    }
  } else if (wasMine && !isMine && ACTIVE.includes(msg.status)) {
    toast('This job was reassigned to another partner: you do not need to go.', 'warn');
  } else if (wasMine && msg.status === 'cancelled') {
    toast('This job was cancelled: you do not need to go.', 'warn');
  } else if (!wasMine && !isMine) {
    return;
  }
  loadJob().catch(() => {});
}

// ---- duty, GPS and the outbox ---------------------------------------------------------------

$('#duty-toggle').addEventListener('click', () => (duty.on ? goOffDuty() : goOnDuty()));

function goOnDuty() {
  if (!('geolocation' in navigator)) {
    banner('gps', 'This browser cannot share your location, so you cannot go on duty here.');
    return;
  }
  duty.on = true;
  duty.sharedAt = 0;  // "waiting for your first position" until the server accepts one
  rememberDuty(true);
  banner('resume', null);
  renderDuty();
  // Ask for location now (on a tap), never at page load.
  duty.watchId = navigator.geolocation.watchPosition(onFix, onGeoError,
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 60_000 });
  // A partner standing still gets few watch callbacks: ask for a fix when none came for an interval.
  duty.fallback = setInterval(() => {
    if (duty.on && Date.now() - duty.lastSentAt >= PING_INTERVAL_MS) {
      navigator.geolocation.getCurrentPosition(onFix, () => {}, { enableHighAccuracy: true, maximumAge: 0, timeout: 20_000 });
    }
  }, PING_INTERVAL_MS);
  state.conn?.emit('availability', { online: true });
  holdWakeLock();
}

const DUTY_HINT = 'pp-on-duty';

/** After a reload while on duty: location needs a tap to start again, so ask for one. */
function offerToResumeDuty() {
  let was = null;
  try { was = sessionStorage.getItem(DUTY_HINT); } catch { /* no storage */ }
  if (was && !duty.on) banner('resume', 'You were on duty before this page reloaded. Tap "Go on duty" to share your location again.');
}

function rememberDuty(on) {
  try {
    if (on) sessionStorage.setItem(DUTY_HINT, '1');
    else sessionStorage.removeItem(DUTY_HINT);
  } catch { /* no storage */ }
}

function goOffDuty() {
  if (!duty.on) return;
  duty.on = false;
  rememberDuty(false);
  if (duty.watchId !== null) navigator.geolocation.clearWatch(duty.watchId);
  duty.watchId = null;
  clearInterval(duty.fallback);
  duty.wakeLock?.release().catch(() => {});
  duty.wakeLock = null;
  banner('wake', null);
  state.conn?.emit('availability', { online: false });
  renderDuty();
}

function renderDuty() {
  $('#duty-state').textContent = duty.on ? 'On duty' : 'Off duty';
  const btn = $('#duty-toggle');
  btn.textContent = duty.on ? 'Go off duty' : 'Go on duty';
  btn.className = duty.on ? 'danger big' : 'primary big';
  $('#gps-chip').hidden = !duty.on;
  if (state.jobLoaded) renderJob();  // its words depend on being on duty
  clearInterval(duty.freshTimer);
  if (duty.on) duty.freshTimer = setInterval(renderFreshness, 1000);
  renderFreshness();
}

/** How old the last position the server accepted is, ticking, and what the server makes of it. */
function renderFreshness() {
  const line = $('#last-fix');
  if (!duty.on) {
    line.textContent = 'Off duty: your position is not shared and no offers reach you.';
    line.dataset.state = 'off';
    return;
  }
  if (!duty.sharedAt) {
    line.textContent = 'Waiting for your first position to reach PartyPilot…';
    line.dataset.state = 'waiting';
    return;
  }
  const age = Date.now() - duty.sharedAt;
  const staleIn = Math.max(0, Math.ceil((STALE_MS - age) / 1000));
  if (age > STALE_MS) {
    line.textContent = `Last position shared ${ago(duty.sharedAt)}. PartyPilot now shows you as out of date and `
      + 'sends you no offers. Keep this page open on screen with location on; it updates by itself.';
    line.dataset.state = 'stale';
  } else if (age > PING_INTERVAL_MS * 1.5) {
    line.textContent = `Last position shared ${ago(duty.sharedAt)}. Without a new one in ${staleIn} s you stop `
      + 'getting offers: keep this page open with location on.';
    line.dataset.state = 'late';
  } else {
    line.textContent = `Last position shared ${ago(duty.sharedAt)}.`;
    line.dataset.state = 'fresh';
  }
}

async function holdWakeLock() {
  if (!duty.on || document.visibilityState !== 'visible') return;
  if (!('wakeLock' in navigator)) {
    banner('wake', 'Keep this screen on while on duty: this browser cannot hold it on for you.');
    return;
  }
  try {
    duty.wakeLock = await navigator.wakeLock.request('screen');
    banner('wake', null);
    duty.wakeLock.addEventListener('release', () => { duty.wakeLock = null; });
  } catch {
    banner('wake', 'Keep this screen on while on duty: the phone refused to keep it awake, and location stops when it locks.');
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible' || !duty.on) return;
  // A released wake lock cannot be reused; ask again, and send what piled up while hidden.
  holdWakeLock();
  flush();
});
window.addEventListener('online', () => flush());

function onGeoError(err) {
  if (err.code === err.PERMISSION_DENIED) {
    banner('gps', 'Location is blocked for this site. Allow location in your browser settings, then go on duty again.');
    goOffDuty();
  } else {
    banner('gps', 'Waiting for a GPS fix… Move near a window or outdoors if this lasts.');
  }
}

function onFix(pos) {
  const point = readFix(pos);
  // Throttle to the ping interval: the watch may fire every second.
  if (point && Date.now() - duty.lastSentAt >= PING_INTERVAL_MS) sendFix(point);
}

/** A watch or one-off position as a fix to send; updates the GPS chip. */
function readFix(pos) {
  if (!duty.on) return null;
  banner('gps', null);
  const c = pos.coords;
  const point = { lat: c.latitude, lng: c.longitude, ts: Math.round(pos.timestamp || Date.now()) };
  if (Number.isFinite(c.accuracy)) point.accuracy = Math.round(c.accuracy * 10) / 10;
  if (Number.isFinite(c.speed) && c.speed >= 0) point.speed = c.speed;
  if (Number.isFinite(c.heading) && c.heading >= 0 && c.heading < 360) point.heading = c.heading;
  duty.lastFix = point;
  const chip = $('#gps-chip');
  const weak = point.accuracy > WEAK_GPS_M;
  chip.textContent = weak ? `Weak GPS (±${Math.round(point.accuracy)} m)` : `GPS ±${Math.round(point.accuracy ?? 0)} m`;
  chip.className = weak ? 'chip warn' : 'chip ok';
  return point;
}

/** On a status change: share a fresh position at once, whatever the throttle says. */
function sendNow() {
  if (!duty.on) return;
  navigator.geolocation.getCurrentPosition((pos) => {
    duty.lastSentAt = 0;
    onFix(pos);
  }, () => {}, { enableHighAccuracy: true, maximumAge: 0, timeout: 15_000 });
}

/** Send a fix; queue it when it cannot go now. */
async function sendFix(point) {
  if (!point) return;
  duty.lastSentAt = Date.now();
  duty.sentTs = Math.max(duty.sentTs, point.ts);
  if (!state.conn?.socket.connected) {
    await queuePing(point);
    renderQueue();
    return false;
  }
  const ack = await state.conn.emit('location', point);
  if (ack?.ok === false && RETRY_CODES.has(ack.error?.code)) {
    await queuePing(point);
    renderQueue();
  }
  if (ack?.ok !== false && (ack?.accepted ?? 1) > 0) shared(point.ts);
  return ack?.ok !== false;
}

/** The server accepted a fix taken at `ts`: its age counts from then (never from the future). */
function shared(ts) {
  const at = Math.min(Number(ts) || Date.now(), Date.now());
  if (at > duty.sharedAt) duty.sharedAt = at;
  renderFreshness();
}

/** Send queued fixes in ts order as location_batch, then queued status changes. */
async function flush() {
  if (duty.flushing || !state.conn?.socket.connected) return;
  duty.flushing = true;
  try {
    for (;;) {
      const points = await peekPings(100);
      if (!points.length) break;
      const ack = await state.conn.emit('location_batch', { points });
      if (ack?.ok === false && RETRY_CODES.has(ack.error?.code)) break;
      if (ack?.ok !== false && ack?.accepted > 0) shared(Math.max(...points.map((p) => p.ts)));
      // Accepted or refused on its merits: either way these fixes are done.
      await dropPings(points);
    }
    for (const action of await peekActions()) {
      try {
        await put(`/api/partner/orders/${encodeURIComponent(action.order_id)}/status`, { status: action.status });
      } catch (err) {
        if (err.code === 'network') break;
        toast(`A status change made offline was refused: ${err.message}`, 'error');
      }
      await dropAction(action.seq);
    }
  } finally {
    duty.flushing = false;
    renderQueue();
  }
}

async function renderQueue() {
  const n = await countPings().catch(() => 0);
  const chip = $('#queue-chip');
  chip.hidden = !n;
  chip.textContent = `${n} position${n === 1 ? '' : 's'} waiting to send`;
}

const bannerBox = $('#banners');
function banner(key, message) {
  let node = bannerBox.querySelector(`[data-key="${key}"]`);
  if (!message) {
    node?.remove();
    return;
  }
  if (!node) {
    node = el('div', { class: 'banner', role: 'alert', dataset: { key } });
    bannerBox.append(node);
  }
  node.textContent = message;
}

// ---- offers -------------------------------------------------------------------------------

function expiresMs(value) {
  if (typeof value === 'number') return value;
  const parsed = Date.parse(value);
  return Number.isFinite(parsed) ? parsed : Date.now() + 30_000;
}

function showOffer(offer) {
  const id = offer.order_id ?? offer.id;
  const expires = expiresMs(offer.expires_at ?? offer.offer_expires_ms);
  if (expires <= Date.now()) return;
  state.offers.set(id, { ...offer, order_id: id, expires });
  renderOffers();
}

function revokeOffer(orderId, reason) {
  if (!state.offers.delete(orderId)) return;
  const why = { taken: 'another partner took it', expired: 'it expired', cancelled: 'the customer cancelled' }[reason];
  toast(`Offer withdrawn${why ? `: ${why}` : ''}.`, 'warn');
  renderOffers();
}

function renderOffers() {
  const box = $('#offers');
  clearInterval(state.countdown);
  const cards = [...state.offers.values()].map((offer) => {
    const status = el('p', { class: 'status', role: 'status', hidden: true });
    const reply = (accept) => (e) => busy(e.currentTarget, status, async () => {
      if (accept) state.accepted = offer.order_id;  // its `assigned` push (often before the ack) is no news
      const ack = await state.conn.emit('offer_reply', { order_id: offer.order_id, accept });
      if (ack?.ok === false) throw new Error(ack.error?.message ?? 'The offer could not be answered.');
      state.offers.delete(offer.order_id);
      renderOffers();
      if (accept) {
        toast('Job accepted. Tap "Start driving" when you set off for the venue.', 'success');
        await loadJob();
        sendNow();
      }
    });
    return el('article', { class: 'card offer', dataset: { id: offer.order_id }, 'aria-label': 'New job offer' },
      el('h2', { text: 'New job offer' }),
      el('p', { class: 'countdown', dataset: { expires: String(offer.expires) }, 'aria-label': 'Seconds left to answer' }),
      el('dl', { class: 'kv' },
        el('dt', { text: 'Payout' }), el('dd', { text: money(offer.payout, offer.currency) }),
        Number.isFinite(offer.distance_m) ? el('dt', { text: 'Distance' }) : null,
        Number.isFinite(offer.distance_m) ? el('dd', { text: `${(offer.distance_m / 1000).toFixed(1)} km` }) : null,
        Number.isFinite(offer.eta_s) ? el('dt', { text: 'Drive' }) : null,
        Number.isFinite(offer.eta_s) ? el('dd', { text: etaWindow(offer.eta_s) }) : null,
        offer.package?.name ? el('dt', { text: 'Package' }) : null,
        offer.package?.name ? el('dd', { text: offer.package.name }) : null),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'primary', text: 'Accept', on: { click: reply(true) } }),
        el('button', { type: 'button', class: 'secondary', text: 'Decline', on: { click: reply(false) } })),
      status);
  });
  mount(box, cards);
  if (cards.length) {
    const tick = () => {
      for (const node of box.querySelectorAll('.countdown')) {
        const left = Math.max(0, Math.ceil((Number(node.dataset.expires) - Date.now()) / 1000));
        node.textContent = `${left} s`;
      }
      for (const [id, offer] of state.offers) {
        if (offer.expires <= Date.now()) state.offers.delete(id);
      }
      if ([...state.offers.values()].length !== cards.length) renderOffers();
    };
    tick();
    state.countdown = setInterval(tick, 250);
  }
}

async function loadOffers() {
  try {
    for (const offer of itemsOf(await get('/api/partner/orders/new'))) {
      if (offer.status === 'offered' && offer.offer_expires_ms) {
        showOffer({ ...offer, order_id: offer.id, expires_at: offer.offer_expires_ms });
      }
    }
  } catch { /* offers also arrive over the socket */ }
}

// ---- current job --------------------------------------------------------------------------

async function loadJob() {
  const box = $('#job');
  if (!box.childElementCount) mount(box, loading('Loading your jobs…'));
  let items;
  try {
    items = itemsOf(await get('/api/partner/orders/my', { limit: 20 }));
  } catch (err) {
    mount(box, errorBox(err, () => loadJob().catch(() => {})));
    throw err;
  }
  state.job = items.find((o) => ACTIVE.includes(o.status)) ?? null;
  state.jobLoaded = true;
  renderJob();
}

function renderJob() {
  const box = $('#job');
  const job = state.job;
  if (!job) {
    mount(box, empty(duty.on ? 'No job right now. You are on duty: new offers appear at the top of this page.'
      : 'No job right now. Go on duty to receive offers.'));
    return;
  }
  const a = job.address ?? {};
  const next = NEXT[job.status];
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const navigate = Number.isFinite(a.lat) && Number.isFinite(a.lng)
    ? el('a', { class: 'button secondary', href: `https://www.google.com/maps/dir/?api=1&destination=${a.lat},${a.lng}`,
      target: '_blank', rel: 'noopener', text: 'Navigate' }) : null;
  mount(box,
    el('div', { class: 'spread' }, el('strong', { text: job.package?.name ?? 'Job' }), statusBadge(job.status)),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Date' }), el('dd', { text: job.event_date }),
      el('dt', { text: 'Venue' }), el('dd', { text: [a.line1, a.city, a.postal_code].filter(Boolean).join(', ') }),
      el('dt', { text: 'Guests' }), el('dd', { text: job.guests }),
      job.customer?.name ? el('dt', { text: 'Customer' }) : null,
      job.customer?.name ? el('dd', { text: job.customer.name }) : null,
      job.customer?.phone ? el('dt', { text: 'Phone' }) : null,
      job.customer?.phone ? el('dd', {}, el('a', { href: `tel:${job.customer.phone}`, text: job.customer.phone })) : null,
      job.notes ? el('dt', { text: 'Notes' }) : null,
      job.notes ? el('dd', { text: job.notes }) : null),
    el('div', { class: 'row' },
      next ? el('button', { type: 'button', class: 'primary', id: 'next-status', text: next[1],
        on: { click: (e) => busy(e.currentTarget, status, () => advance(job, next[0])) } }) : null,
      navigate),
    status);
}

/** Share a position taken now and wait for the server's answer ("I've arrived" is judged by it). */
function shareFreshFix() {
  if (!duty.on || !navigator.geolocation) return Promise.resolve(false);
  // Failing a new fix in time, the watch's latest one if the server has not had it yet (the
  // throttle may have held it back).
  const latest = () => (duty.lastFix && duty.lastFix.ts > duty.sentTs ? sendFix(duty.lastFix).catch(() => false) : false);
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition((pos) => {
      const point = readFix(pos);
      resolve(point ? sendFix(point).catch(() => false) : latest());
    }, () => resolve(latest()), { enableHighAccuracy: true, maximumAge: 5_000, timeout: 4_000 });
  });
}

async function advance(job, next) {
  if (next === 'arrived') await shareFreshFix();
  try {
    const after = await put(`/api/partner/orders/${encodeURIComponent(job.id)}/status`, { status: next });
    state.job = ACTIVE.includes(after.status) ? after : null;
  } catch (err) {
    if (err.code !== 'network') throw err;
    // Offline: keep the change with its time and send it when the connection returns.
    await queueAction({ kind: 'status', order_id: job.id, status: next, at: new Date().toISOString() });
    state.job = { ...job, status: next };
    toast('You are offline: the status change will be sent when you reconnect.', 'warn');
  }
  renderJob();
  if (next !== 'arrived') sendNow();  // a status change sends the position at once (arrival just did)
  if (next === 'completed') loadEarnings();
}

// ---- earnings -----------------------------------------------------------------------------

$('#earnings-period').addEventListener('change', () => loadEarnings());

async function loadEarnings() {
  const box = $('#earnings');
  mount(box, loading('Loading earnings…'));
  try {
    const e = await get('/api/partner/earnings', { period: $('#earnings-period').value, limit: 20 });
    const cur = e.currency;
    const totals = e.totals ?? {};
    const periods = e.periods ?? [];
    const lines = itemsOf(e);
    mount(box,
      el('ul', { class: 'kpis' },
        el('li', { class: 'kpi' }, el('strong', { id: 'earned-total', text: money(totals.payout ?? 0, cur) }), 'earned'),
        el('li', { class: 'kpi' }, el('strong', { text: String(totals.orders ?? 0) }), 'jobs done'),
        el('li', { class: 'kpi' }, el('strong', { text: money(totals.commission ?? 0, cur) }), 'platform fee')),
      periods.length ? el('div', { class: 'table-wrap' }, el('table', {},
        el('caption', { class: 'visually-hidden', text: 'Earnings per period' }),
        el('thead', {}, el('tr', {}, ['Period', 'Jobs', 'Earned'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, periods.map((p) => el('tr', {}, el('td', { text: p.period }), el('td', { text: p.orders }),
          el('td', { text: money(p.payout, cur) })))))) : empty('No completed jobs yet.'),
      lines.length ? el('details', {}, el('summary', { text: 'Per job' }), el('ul', {}, lines.map((l) =>
        el('li', { text: `${l.package_name} · ${l.event_date} · ${money(l.payout, l.currency ?? cur)}` })))) : null);
  } catch (err) {
    mount(box, errorBox(err, loadEarnings));
  }
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  renderDuty();
  const user = await resumeFor(['partner', 'customer']);
  if (user?.role === 'partner') signedIn(user);
  else if (user) showRegistration(user);  // signed in, not registered yet
  else showWelcome();
}

start();
