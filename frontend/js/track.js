// Read-only tracking of one order: /track?order=ID for its signed-in customer, or
// /track?t=TOKEN for anyone holding a tracking link (no sign-in; the link expires).
import { get } from './api.js';
import { renderSignIn, resumeFor, renderAccount } from './auth.js';
import { connectSocket } from './socket.js';
import { OrderTracker } from './tracking.js';
import { el, mount, $, loading, errorBox, statusBadge, statusLabel, dateTime, dateOnly } from './ui.js';
import { serverSettings } from './settings.js';


const params = new URLSearchParams(location.search);
const linkToken = params.get('t');
let orderId = params.get('order') ?? new URLSearchParams(location.hash.slice(1)).get('order');
const tracker = new OrderTracker({ section: $('#tracking'), map: $('#track-map'), eta: $('#eta'), freshness: $('#freshness') }, null);

async function load() {
  const box = $('#summary');
  mount(box, loading('Loading your order…'));
  try {
    const [order] = await Promise.all([linkToken ? get('/api/track', { t: linkToken }) : get(`/api/orders/${encodeURIComponent(orderId)}`),
      serverSettings()]);  // dates in the site's locale
    orderId = order.id;
    mount(box,
      el('div', { class: 'spread' }, el('h1', { text: order.package?.name ?? 'Your order' }), statusBadge(order.status)),
      el('p', { class: 'muted', text: `${dateOnly(order.event_date)} · ${order.address?.city ?? ''}${order.partner?.first_name ? ` · with ${order.partner.first_name}` : ''}` }),
      el('ol', { class: 'timeline' }, (order.history ?? []).map((h) => el('li', {}, el('strong', { text: statusLabel(h.status) }), ` · ${dateTime(h.at)}`))),
      order.status === 'completed' ? el('p', { text: 'Your party is set up. Enjoy!' }) : null);
    await tracker.follow(order);
  } catch (err) {
    mount(box, errorBox(err, load));
  }
}

function follow(auth) {
  const conn = connectSocket({ auth, onResync: () => { tracker.subscribed = false; load(); } });
  tracker.conn = conn;
  conn.socket.on('partner_location', (msg) => tracker.onLocation(msg));
  conn.socket.on('order_status', (msg) => {
    if (msg.order_id === orderId && conn.seen(`order:${orderId}`, msg.version) !== null) load();
  });
  load();
}

function signedIn(user) {
  $('#signin-area').hidden = true;
  renderAccount($('#account'), user, () => location.reload());
  follow();
}

async function start() {
  if (linkToken) {
    follow({ tracking_token: linkToken });
    return;
  }
  if (!orderId) {
    mount($('#summary'), el('p', { text: 'Open this page from an order: /track?order=ORDER_ID.' }));
    return;
  }
  const user = await resumeFor(['customer']);
  if (user) {
    signedIn(user);
    return;
  }
  $('#signin-area').hidden = false;
  mount($('#summary'), el('p', { class: 'muted', text: 'Sign in to see this order.' }));
  renderSignIn($('#signin-area'), { title: 'Sign in to track your order', roles: ['customer'], onSignedIn: signedIn });
}

start();
