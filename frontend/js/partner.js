// Partner app (phone browser, installable: partner.webmanifest, partner-sw.js): register, sign in,
// go on duty and share GPS, answer offers, move the current job through its states, see earnings.
// Without a network it still opens (the service worker keeps the shell) and, for the partner who
// was signed in, goes on duty and queues fixes on the phone until the connection returns.
import { get, post, put, itemsOf, ApiError, refresh, currentUser } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { queuePing, peekPings, dropPings, stripOwner, countPings, queueAction, peekActions, dropAction } from './queue.js';
import { PING_INTERVAL_MS, STALE_AFTER_INTERVALS, WEAK_GPS_M } from './config.js';
import { loadSettings, locale, CLOCK_SKEW_WARN_MS } from './settings.js';
import { alertOffer, isMuted, setMuted, unlock, testSound } from './alerts.js';
import { el, mount, $, money, say, busy, loading, empty, errorBox, statusBadge, ago, toast, etaWindow, dateOnly,
  fieldError, periodLabel } from './ui.js';

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
const state = { user: null, conn: null, job: null, jobLoaded: false, offers: new Map(), countdown: 0, jobTimer: 0,
  offline: false, reconnecting: false, retryTimer: 0, pendingTimer: 0, alerted: new Set() };
// The server's settings (GET /config.json, remembered for offline starts): the ping interval the
// phone throttles to, and its staleness rule (dispatch: a partner whose last fix is older than
// staleAfterIntervals intervals is stale, greyed on the fleet map and offered nothing), plus how
// far the server's clock is from this phone's. config.js's defaults hold only until start() asks.
const server = { pingIntervalMs: PING_INTERVAL_MS, staleAfterIntervals: STALE_AFTER_INTERVALS, clockOffsetMs: 0,
  fromServer: false };
const staleMs = () => server.pingIntervalMs * server.staleAfterIntervals;
/** Now, by the server's clock. */
const serverNow = () => Date.now() + server.clockOffsetMs;

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
    fieldError($('#extra-address'), extra?.key === 'phone' ? 'Enter the mobile number with its country code, e.g. +919876543210.'
      : 'Enter a valid email address, e.g. you@example.com.');
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
    say(status, '');
    fieldError(form.elements[missing], missing === 'company_name' ? 'Enter your company name.' : 'Enter your name.');
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
      // A field the server refused: the words go beside it.
      const refused = err instanceof ApiError && Array.isArray(err.details)
        ? err.details.find((d) => form.elements[String(d?.field ?? '').replace(/^body\./, '')] && d.message) : null;
      if (refused) {
        const words = String(refused.message);
        fieldError(form.elements[String(refused.field).replace(/^body\./, '')],
          `${words[0].toUpperCase()}${words.slice(1)}${/[.!?]$/.test(words) ? '' : '.'}`);
        return;
      }
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
  recallShared(user);
  state.offline = false;
  clearTimeout(state.retryTimer);
  banner('offline', null);
  renderAccount($('#account'), user, signedOut);
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
  rememberPartner(user);
  offerToResumeDuty();
  connect();
  // Pushes are hints: re-read the current job now and then, in case one was missed.
  clearInterval(state.jobTimer);
  state.jobTimer = setInterval(() => { if (document.visibilityState === 'visible') loadJob().catch(() => {}); }, 60_000);
  loadOffers();
  loadEarnings();
}

function signedOut() {
  goOffDuty();
  state.conn?.close();
  state.conn = null;
  state.offline = false;
  clearTimeout(state.retryTimer);
  clearInterval(state.jobTimer);
  clearInterval(state.pendingTimer);
  banner('offline', null);
  forgetPartner();
  showWelcome();
}

// ---- opening without a network ----------------------------------------------------------------
// The service worker opens the page offline, but the session cannot be resumed without the
// server. The partner last signed in on this phone may still go on duty: fixes queue in
// IndexedDB under their id, and the session is picked up (and the queue sent) when the server
// answers again. Only the id and name are kept here, never a token.

const PARTNER_KEY = 'pp-partner';

function rememberPartner(user) {
  try {
    localStorage.setItem(PARTNER_KEY, JSON.stringify({ id: user.id, name: user.name ?? '' }));
  } catch { /* no storage: this phone will not open offline */ }
}

function rememberedPartner() {
  try {
    const partner = JSON.parse(localStorage.getItem(PARTNER_KEY) ?? 'null');
    return partner?.id ? partner : null;
  } catch {
    return null;
  }
}

function forgetPartner() {
  try { localStorage.removeItem(PARTNER_KEY); } catch { /* nothing kept */ }
}

function showOffline(partner) {
  state.user = { ...partner, role: 'partner' };
  recallShared(state.user);
  state.offline = true;
  $('#welcome').hidden = true;
  $('#register').hidden = true;
  $('#pending').hidden = true;
  $('#app').hidden = false;
  renderAccount($('#account'), state.user, signedOut);
  banner('offline', 'No connection. You can still go on duty: your positions are kept on this phone and sent '
    + 'when the connection returns. Offers and jobs need a connection.');
  const chip = $('#conn-chip');
  chip.textContent = 'Offline: positions are kept and sent later';
  chip.className = 'chip warn';
  mount($('#offers'));
  mount($('#job'), empty('Your current job shows here when you are back online.'));
  mount($('#earnings'), empty('Your earnings show here when you are back online.'));
  offerToResumeDuty();
  renderQueue();
  renderFreshness();
  retryLater();
}

/** While offline: ask the server again now and then (and at once when the phone says it is online). */
function retryLater(ms = 10_000) {
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(reconnect, ms);
}

async function reconnect() {
  if (!state.offline || state.reconnecting) return;
  clearTimeout(state.retryTimer);
  state.reconnecting = true;
  let settings;
  let resumed;
  try {
    settings = await loadSettings();
    resumed = settings.fromServer && state.offline && await refresh();
  } finally {
    state.reconnecting = false;
  }
  if (!state.offline) return;
  if (!settings.fromServer) {
    retryLater();
    return;
  }
  Object.assign(server, settings);
  if (resumed && currentUser()?.role === 'partner') {
    signedIn(currentUser());
    return;
  }
  if (!resumed && !(await loadSettings()).fromServer) {
    retryLater();  // the network dropped again mid-way: that says nothing about the session
    return;
  }
  // The server answers but the session is over (signed out elsewhere, expired): sign in again.
  // The queued positions stay on the phone and go once this partner is signed in.
  goOffDuty();
  state.offline = false;
  banner('offline', null);
  showWelcome();
  toast('Please sign in again: the positions kept on this phone are sent once you do.', 'warn', 0);
}

function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  // Without it the page works the same online; it just cannot open offline.
  navigator.serviceWorker.register('/partner-sw.js', { scope: '/partner' }).catch(() => {});
}

// Installing: Chrome offers it when the manifest and worker qualify; we show our own button
// instead of its banner, in the duty card where the partner looks.
let installPrompt = null;
window.addEventListener('beforeinstallprompt', (e) => {
  e.preventDefault();
  installPrompt = e;
  $('#install-app').hidden = false;
});
window.addEventListener('appinstalled', () => { $('#install-app').hidden = true; });
$('#install-app').addEventListener('click', async () => {
  const prompt = installPrompt;
  installPrompt = null;
  $('#install-app').hidden = true;
  if (!prompt) return;
  prompt.prompt();
  await prompt.userChoice.catch(() => {});
});

// ---- offer alerts ---------------------------------------------------------------------------

const alertsToggle = $('#offer-alerts');
alertsToggle.checked = !isMuted();
alertsToggle.addEventListener('change', () => {
  setMuted(!alertsToggle.checked);
  if (alertsToggle.checked) testSound();
});
// Sound needs a tap on the page first: any tap will do.
document.addEventListener('pointerdown', unlock, { once: true });

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
      : el('p', { class: 'muted', text: 'This page checks by itself every minute and opens the app once you are '
        + 'approved; you can also check now.' }),
    el('button', { type: 'button', class: 'secondary', text: 'Check again', on: { click: checkStanding } }));
  // Nothing is pushed to a partner who is not approved yet: ask now and then while the page is seen.
  clearInterval(state.pendingTimer);
  if (err.code !== 'partner_suspended') {
    state.pendingTimer = setInterval(() => {
      if (box.hidden) clearInterval(state.pendingTimer);
      else if (document.visibilityState === 'visible') checkStanding();
    }, 60_000);
  }
}

function checkStanding() {
  clearInterval(state.pendingTimer);
  signedIn({ ...state.user, partner_status: undefined });
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
      renderFreshness();
    },
    onDown: () => {
      chip.textContent = 'Offline: positions are kept and sent later';
      chip.className = 'chip warn';
      renderFreshness();
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
  // A position the server still counts stays counted; an older one means "waiting for your first".
  if (serverNow() - duty.sharedAt > staleMs()) duty.sharedAt = 0;
  duty.refusal = null;
  unlock();  // this tap lets offers beep later
  rememberDuty(true);
  banner('resume', null);
  renderDuty();
  // Ask for location now (on a tap), never at page load.
  duty.watchId = navigator.geolocation.watchPosition(onFix, onGeoError,
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 60_000 });
  // A partner standing still gets few watch callbacks: ask for a fix when none came for an interval.
  duty.fallback = setInterval(() => {
    if (duty.on && Date.now() - duty.lastSentAt >= server.pingIntervalMs) {
      navigator.geolocation.getCurrentPosition(onFix, () => {}, { enableHighAccuracy: true, maximumAge: 0, timeout: 20_000 });
    }
  }, server.pingIntervalMs);
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

/**
 * The partner's freshness as the server judges it, ticking: the last fix the server accepted, aged
 * by the server's clock from the fix's own time (capped by its arrival), against the server's
 * interval. Fresh: offers come. Late: they stop soon. Stale: greyed on the fleet map, no offers.
 * Each says what to do about it.
 */
function renderFreshness() {
  const line = $('#last-fix');
  const chip = $('#fresh-chip');
  const show = (name, label, kind, text) => {
    line.textContent = text;
    line.dataset.state = name;
    chip.hidden = !label;
    chip.textContent = label ?? '';
    chip.className = `chip ${kind ?? ''}`;
    chip.dataset.state = name;
  };
  if (!duty.on) {
    show('off', null, null, 'Off duty: your position is not shared and no offers reach you.');
    return;
  }
  const fix = whatToFix();
  if (!duty.sharedAt) {
    show('waiting', 'Not shared yet', 'warn', `Waiting for your first position to reach PartyPilot… ${fix}`.trim());
    return;
  }
  const age = serverNow() - duty.sharedAt;
  const seen = `Last position shared ${ago(duty.sharedAt, serverNow())}.`;
  const staleIn = Math.max(0, Math.ceil((staleMs() - age) / 1000));
  if (age > staleMs()) {
    show('stale', 'Stale: no offers', 'bad', `${seen} PartyPilot now shows you as out of date and sends you no `
      + `offers. ${fix || 'Keep this page open on screen with location on; it updates by itself.'}`);
  } else if (age > server.pingIntervalMs * 1.5) {
    show('late', 'Late', 'warn', `${seen} Without a new one in ${staleIn} s you stop getting offers. `
      + `${fix || 'Keep this page open with location on.'}`);
  } else {
    show('fresh', 'Fresh', 'ok', `${seen} ${fix || 'You can get offers.'}`);
  }
}

const connected = () => !state.offline && Boolean(state.conn?.socket.connected);

/** What, if anything, keeps this phone's positions (or offers) from getting through in time. */
function whatToFix() {
  const skew = server.clockOffsetMs;
  if (duty.refusal === 'future_ts' || duty.refusal === 'too_old' || Math.abs(skew) > CLOCK_SKEW_WARN_MS) {
    const off = Math.round(Math.abs(skew) / 1000);
    const how = Math.abs(skew) > CLOCK_SKEW_WARN_MS ? `is ${off} s ${skew > 0 ? 'behind' : 'ahead of'}`
      : 'disagrees with';
    return `This phone's clock ${how} PartyPilot's, so your positions count as too old or are refused: `
      + 'turn on automatic date and time in the phone\'s settings.';
  }
  // (The connection chip already says that positions wait on the phone.)
  if (!connected()) return 'No connection, so no offers reach you: check mobile data or Wi-Fi.';
  if (duty.refusal === 'inaccurate') return 'The GPS fix is too rough to use: move near a window or outdoors.';
  if (!duty.lastFix || Date.now() - duty.lastFix.ts > server.pingIntervalMs * 1.5) {
    return 'The phone has not given a new GPS position lately: check that location is on for this site.';
  }
  return '';
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
window.addEventListener('online', () => (state.offline ? reconnect() : flush()));

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
  // Throttle to the server's ping interval: the watch may fire every second.
  if (point && Date.now() - duty.lastSentAt >= server.pingIntervalMs) sendFix(point);
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
    await queuePing(point, state.user?.id);
    renderQueue();
    return false;
  }
  const ack = await state.conn.emit('location', point);
  if (ack?.ok === false && RETRY_CODES.has(ack.error?.code)) {
    await queuePing(point, state.user?.id);
    renderQueue();
  } else if (ack?.ok === false) {
    duty.refusal = ack.error?.code ?? null;  // about the fix itself (its clock, its accuracy): say so
    renderFreshness();
  }
  if (ack?.ok !== false && (ack?.accepted ?? 1) > 0) shared(point.ts);
  return ack?.ok !== false;
}

/** The server accepted a fix taken at `ts`: as it counts, the fix's own time, capped by its arrival. */
function shared(ts) {
  const at = Math.min(Number(ts) || serverNow(), serverNow());
  if (at > duty.sharedAt) {
    duty.sharedAt = at;
    try {
      localStorage.setItem(SHARED_KEY, JSON.stringify({ owner: state.user?.id, at }));
    } catch { /* no storage: a reload starts from "waiting" */ }
  }
  duty.refusal = null;
  renderFreshness();
  checkArrival();
}

// When the server last got a position from this partner outlives a reload: what it shows about
// the partner does not start again with the page.
const SHARED_KEY = 'pp-shared-at';

function recallShared(user) {
  try {
    const last = JSON.parse(localStorage.getItem(SHARED_KEY) ?? 'null');
    duty.sharedAt = last?.owner === user?.id && Number.isFinite(last.at) ? Math.max(duty.sharedAt, last.at) : 0;
  } catch {
    duty.sharedAt = 0;
  }
}

/** Send queued fixes in ts order as location_batch, then queued status changes. */
async function flush() {
  if (duty.flushing || !state.conn?.socket.connected) return;
  duty.flushing = true;
  try {
    for (;;) {
      const queued = await peekPings(100);
      if (!queued.length) break;
      // Another partner's fixes (one who signed out on this phone) can only go with their session.
      const mine = queued.filter((p) => !p.owner || p.owner === state.user?.id);
      if (mine.length < queued.length) await dropPings(queued.filter((p) => !mine.includes(p)));
      if (!mine.length) continue;
      const points = mine.map(stripOwner);
      const ack = await state.conn.emit('location_batch', { points });
      if (ack?.ok === false && RETRY_CODES.has(ack.error?.code)) break;
      if (ack?.ok !== false && ack?.accepted > 0) shared(Math.max(...points.map((p) => p.ts)));
      // Accepted or refused on its merits: either way these fixes are done.
      await dropPings(points);
    }
    for (const action of await peekActions()) {
      if (action.owner && action.owner !== state.user?.id) {
        await dropAction(action.seq);
        continue;
      }
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
  return Number.isFinite(parsed) ? parsed : serverNow() + 30_000;
}

/** A pushed offer or one from the REST list (the two carry different fields: keep both). */
function showOffer(offer) {
  const id = offer.order_id ?? offer.id;
  const expires = expiresMs(offer.expires_at ?? offer.offer_expires_ms);
  // Offers expire by the server's clock.
  if (expires <= serverNow()) return;
  const fields = Object.fromEntries(Object.entries(offer).filter(([, v]) => v !== null && v !== undefined));
  state.offers.set(id, { ...state.offers.get(id), ...fields, order_id: id, expires });
  const isNew = !state.alerted.has(id);
  renderOffers();
  if (isNew) {
    state.alerted.add(id);
    alertOffer();
    // It counts down: make sure it is on screen.
    $(`#offers [data-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  }
}

function revokeOffer(orderId, reason) {
  if (!state.offers.delete(orderId)) return;
  const why = { taken: 'another partner took it', expired: 'it expired', cancelled: 'the customer cancelled' }[reason];
  toast(`Offer withdrawn${why ? `: ${why}` : ''}.`, 'warn');
  renderOffers();
}

/** "YYYY-MM-DD" of `ms` in `timeZone` (the venue's), for "today" and "tomorrow". */
function dayIn(ms, timeZone) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' })
      .format(new Date(ms));
  } catch {
    return null;
  }
}

/** "Today, Thu 3 Dec · 16:00–19:00": the event's date and the arrival slot in the venue's time. */
function whenText(offer) {
  const parts = [];
  if (offer.event_date) {
    const day = new Date(`${offer.event_date}T00:00:00Z`);
    const label = Number.isNaN(day.getTime()) ? offer.event_date
      : new Intl.DateTimeFormat(locale(), { weekday: 'short', day: 'numeric', month: 'short', timeZone: 'UTC' }).format(day);
    const tz = offer.timezone || undefined;
    const today = dayIn(serverNow(), tz);
    const tomorrow = dayIn(serverNow() + 86_400_000, tz);
    parts.push(offer.event_date === today ? `Today, ${label}` : offer.event_date === tomorrow ? `Tomorrow, ${label}` : label);
  }
  const from = Date.parse(offer.arrive_after);
  const to = Date.parse(offer.arrive_before);
  if (Number.isFinite(from) && Number.isFinite(to)) {
    let time;
    try {
      time = new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
        timeZone: offer.timezone || undefined });
    } catch {
      time = new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    }
    parts.push(offer.asap ? `as soon as possible, by ${time.format(to)}` : `arrive ${time.format(from)}–${time.format(to)}`);
  }
  return parts.join(' · ');
}

/** Metres between two points (haversine). */
function metresBetween(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLng = (b.lng - a.lng) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLng / 2) ** 2;
  return 2 * 6_371_000 * Math.asin(Math.sqrt(h));
}

/** "2.3 km away" from the server's figure; from the venue's rough spot when only that is known. */
function distanceText(offer) {
  if (Number.isFinite(offer.distance_m)) {
    const km = offer.distance_m / 1000;
    return km < 1 ? `${Math.max(100, Math.round(offer.distance_m / 100) * 100)} m away` : `${km.toFixed(1)} km away`;
  }
  const rough = offer.approx_location ?? offer.pickup;
  if (rough && duty.lastFix) {
    // The spot is snapped to a ~1 km grid: say no more than that.
    return `about ${Math.max(1, Math.round(metresBetween(duty.lastFix, rough) / 1000))} km away`;
  }
  return null;
}

function offerFacts(offer) {
  const facts = [];
  const add = (label, value) => {
    if (value === null || value === undefined || value === '') return;
    facts.push(el('dt', { text: label }), el('dd', { text: String(value) }));
  };
  const distance = distanceText(offer);
  add('Distance', distance && Number.isFinite(offer.eta_s) ? `${distance}, ${etaWindow(offer.eta_s)} drive` : distance);
  add('When', whenText(offer));
  add('Package', offer.package?.name);
  add('Guests', Number.isFinite(offer.guests) ? offer.guests : null);
  const area = [...new Set([offer.area, offer.city].filter(Boolean))].join(', ');
  add('Area', area);
  return facts;
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
      el('div', { class: 'spread' },
        el('h2', { text: 'New job offer' }),
        el('p', { class: 'countdown', dataset: { expires: String(offer.expires) }, 'aria-label': 'Seconds left to answer' })),
      el('p', { class: 'payout' }, el('strong', { text: money(offer.payout, offer.currency) }), ' for you'),
      el('dl', { class: 'kv' }, offerFacts(offer)),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'primary', text: 'Accept', on: { click: reply(true) } }),
        el('button', { type: 'button', class: 'secondary', text: 'Decline', on: { click: reply(false) } })),
      status);
  });
  mount(box, cards);
  if (cards.length) {
    const tick = () => {
      for (const node of box.querySelectorAll('.countdown')) {
        const left = Math.max(0, Math.ceil((Number(node.dataset.expires) - serverNow()) / 1000));
        node.textContent = `${left} s`;
      }
      for (const [id, offer] of state.offers) {
        if (offer.expires <= serverNow()) state.offers.delete(id);
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
      el('dt', { text: 'Date' }), el('dd', { text: dateOnly(job.event_date) }),
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
    job.status === 'en_route' ? el('p', { id: 'arrival-hint', class: 'arrival-hint', role: 'status' }) : null,
    el('div', { id: 'arrival-reason-box' }),
    status);
  renderArrival();
  if (job.status === 'en_route') checkArrival();
}

// ---- arrival by geofence ------------------------------------------------------------------
// After each fix the server accepted, the page asks where the partner stands against the venue
// (GET /api/partner/orders/{id}/arrival, judged from the server's copy of the fix). Inside the
// radius, "I've arrived" is offered as one tap; outside it, a tap is refused (409) and the page
// offers to mark arrival anyway with a reason, which the order keeps and admins see.
const ARRIVAL_ASK_MS = 5_000;  // at most one question per this, whatever the fix rate
const arrival = { orderId: null, answer: null, askedAt: 0, asking: false, told: null, later: 0 };

async function checkArrival() {
  const job = state.job;
  if (!job || job.status !== 'en_route') return;
  const wait = arrival.askedAt + ARRIVAL_ASK_MS - Date.now();
  if (arrival.asking || wait > 0) {
    // Asked a moment ago: ask once more when the window passes, so the newest fix is judged.
    clearTimeout(arrival.later);
    arrival.later = setTimeout(checkArrival, Math.max(wait, 500));
    return;
  }
  arrival.asking = true;
  arrival.askedAt = Date.now();
  try {
    const answer = await get(`/api/partner/orders/${encodeURIComponent(job.id)}/arrival`);
    if (state.job?.id !== job.id) return;
    arrival.orderId = job.id;
    arrival.answer = answer;
    renderArrival();
    if (answer.at_venue && arrival.told !== job.id) {
      // Once per job: bring the button into view (a toast would sit over it) and buzz.
      arrival.told = job.id;
      $('#next-status')?.scrollIntoView({ block: 'center', behavior: 'smooth' });
      try { navigator.vibrate?.(200); } catch { /* no vibration */ }
    }
  } catch { /* a hint only: the tap itself is judged by the server */ } finally {
    arrival.asking = false;
  }
}

function renderArrival() {
  const hint = $('#arrival-hint');
  const button = $('#next-status');
  const answer = arrival.orderId === state.job?.id ? arrival.answer : null;
  const here = !!answer?.at_venue && state.job?.status === 'en_route';
  button?.classList.toggle('at-venue', here);
  if (!hint) return;
  hint.dataset.here = String(here);
  if (!answer) hint.textContent = 'Arrival opens when your phone shares a position at the venue.';
  else if (here) hint.textContent = 'You are at the venue: tap "I\'ve arrived".';
  else if (answer.code === 'not_at_venue') {
    hint.textContent = `You are ${metresText(answer.distance_m)} from the venue. Arrival opens within ${answer.radius_m} m.`;
  } else hint.textContent = answer.message;
}

function metresText(metres) {
  return metres >= 1000 ? `${(metres / 1000).toFixed(1)} km` : `${Math.round(metres / 10) * 10} m`;
}

/** "I've arrived" was refused for the position: offer to mark arrival anyway, with a reason. */
function askReason(job, err) {
  const box = $('#arrival-reason-box');
  if (!box) return;
  const status = el('p', { class: 'status', role: 'status', hidden: true });
  const input = el('textarea', { id: 'arrival-reason', name: 'reason', rows: 2, maxlength: 300, required: true,
    placeholder: 'For example: the gate is on the service road; GPS is weak inside the hall' });
  const form = el('form', { class: 'stack arrival-reason', novalidate: true },
    el('p', { class: 'status', role: 'alert', dataset: { kind: 'error' }, text: err.message }),
    el('label', { for: 'arrival-reason', text: 'Already at the venue? Say why, and we mark arrival anyway' }),
    input,
    el('small', { class: 'hint', text: 'The customer is told you have arrived; the team sees your reason.' }),
    el('div', { class: 'row' },
      el('button', { type: 'submit', class: 'primary', text: 'Mark arrived anyway' }),
      el('button', { type: 'button', class: 'secondary', text: 'Not yet',
        on: { click: () => mount(box) } })),
    status);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const reason = input.value.trim();
    if (reason.length < 3) {
      say(status, 'Say in a few words why you are marking arrival here.', 'error');
      input.focus();
      return;
    }
    busy(form.querySelector('button[type=submit]'), status, async () => {
      const after = await put(`/api/partner/orders/${encodeURIComponent(job.id)}/status`, { status: 'arrived', reason });
      state.job = ACTIVE.includes(after.status) ? after : null;
      renderJob();
    });
  });
  mount(box, form);
  input.focus();
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
    if (next === 'arrived' && err.details?.reason_accepted) {
      askReason(job, err);
      return;
    }
    if (err.code !== 'network') throw err;
    // Offline: keep the change with its time and send it when the connection returns.
    await queueAction({ kind: 'status', order_id: job.id, status: next, at: new Date().toISOString(),
      owner: state.user?.id });
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
        el('tbody', {}, periods.map((p) => el('tr', {}, el('td', { text: periodLabel(p.period) }), el('td', { text: p.orders }),
          el('td', { text: money(p.payout, cur) })))))) : empty('No completed jobs yet.'),
      lines.length ? el('details', {}, el('summary', { text: 'Per job' }), el('ul', {}, lines.map((l) =>
        el('li', { text: `${l.package_name} · ${dateOnly(l.event_date)} · ${money(l.payout, l.currency ?? cur)}` })))) : null);
  } catch (err) {
    mount(box, errorBox(err, loadEarnings));
  }
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  registerWorker();
  renderDuty();
  const resumed = resumeFor(['partner', 'customer']);
  Object.assign(server, await loadSettings());
  const partner = rememberedPartner();
  if (!server.fromServer && partner) {
    // No answer from the server: open for the partner signed in on this phone, and take the
    // session back if the resume gets through after all.
    showOffline(partner);
    resumed.then((user) => { if (state.offline && user?.role === 'partner') signedIn(user); }).catch(() => {});
    return;
  }
  const user = await resumed;
  if (user?.role === 'partner') signedIn(user);
  else if (user) showRegistration(user);  // signed in, not registered yet
  else showWelcome();
}

start();
