// Live tracking of one order for its customer: the partner's marker (smoothed, frozen when
// stale), the venue, an ETA window, and "last update N s ago". Shown from assignment until
// completion; hidden again afterwards.
import { PING_INTERVAL_MS, STALE_AFTER_INTERVALS } from './config.js';
import { createMap, pinIcon, SmoothMarker } from './map.js';
import { ago, etaWindow, initials } from './ui.js';

export const TRACKABLE = new Set(['assigned', 'en_route', 'arrived', 'setup_complete']);
const FINISHED = new Set(['completed', 'cancelled', 'refunded']);
const STALE_MS = PING_INTERVAL_MS * STALE_AFTER_INTERVALS;

export class OrderTracker {
  /** els: { section, map, eta, freshness }; conn: from connectSocket() (or null). */
  constructor(els, conn) {
    this.els = els;
    this.conn = conn;
    this.map = null;
    this.venue = null;
    this.partner = null;
    this.order = null;
    this.lastFixAt = 0;
    this.timer = 0;
    this.subscribed = false;
  }

  /** Show or hide tracking for `order` according to its status. */
  async follow(order) {
    const same = this.order && this.order.id === order.id;
    if (!same) this.subscribed = false;
    this.order = order;
    if (!TRACKABLE.has(order.status)) {
      this.hide();
      // Joining the order's room brings its status pushes too, so subscribe before assignment.
      if (!this.subscribed) await this.subscribe();
      return;
    }
    this.els.section.hidden = false;
    if (!this.map) this.map = createMap(this.els.map);
    this.map.invalidateSize();
    const a = order.address ?? {};
    if (Number.isFinite(a.lat) && Number.isFinite(a.lng)) {
      this.venue?.remove();
      this.venue = window.L.marker([a.lat, a.lng], {
        icon: pinIcon({ label: '★', status: 'venue' }), title: 'Venue', keyboard: false,
      }).addTo(this.map);
      if (!same) this.map.setView([a.lat, a.lng], 13);
    }
    const fresh = !same || !this.partner;
    if (fresh) {
      this.partner?.remove();
      const name = order.partner?.first_name ?? 'Partner';
      this.partner = new SmoothMarker(this.map, { label: initials(name), status: 'en_route', title: name });
      this.lastFixAt = 0;
      this.etaS = undefined;
    }
    this.renderEta();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), 1000);
    this.tick();
    // (Re)subscribing when tracking starts: the answer brings the partner's last known position.
    if (fresh || !this.subscribed) await this.subscribe();
  }

  /** Ask the server for this order's live feed (again after a reconnect). */
  async subscribe() {
    this.subscribed = false;
    if (!this.conn || !this.order || FINISHED.has(this.order.status)) return;
    const ack = await this.conn.emit('track', { order_id: this.order.id });
    this.subscribed = ack?.ok !== false;
    if (!this.subscribed) this.els.freshness.textContent = `Live updates unavailable: ${ack.error?.message ?? 'refused'}`;
  }

  /** A `partner_location` push. */
  onLocation(msg) {
    if (!this.order || msg.order_id !== this.order.id || !this.partner) return;
    const accepted = this.partner.push({ lat: msg.lat, lng: msg.lng, ts: msg.ts, accuracy: msg.accuracy });
    if (accepted) this.lastFixAt = Number(msg.ts) || Date.now();
    if (Number.isFinite(msg.eta_s)) this.etaS = msg.eta_s;
    this.renderEta();
    if (msg.stale) this.lastFixAt = Math.min(this.lastFixAt, Date.now() - STALE_MS - 1);
    this.tick();
  }

  /** A window, re-estimated on every fix, rather than a countdown that pretends to precision. */
  renderEta() {
    const status = this.order?.status;
    if (status === 'arrived' || status === 'setup_complete') this.els.eta.textContent = 'Your partner is at the venue.';
    else if (!Number.isFinite(this.etaS)) this.els.eta.textContent = 'Waiting for the partner\'s first position…';
    else if (status === 'assigned') this.els.eta.textContent = `Your partner is about ${etaWindow(this.etaS)} away and will set off soon.`;
    else this.els.eta.textContent = `Arriving in ${etaWindow(this.etaS)}`;
  }

  tick() {
    const f = this.els.freshness;
    if (!this.lastFixAt) {
      f.textContent = 'No position yet.';
      f.dataset.stale = 'false';
      return;
    }
    const age = Date.now() - this.lastFixAt;
    const stale = age > STALE_MS;
    f.dataset.stale = String(stale);
    if (stale) {
      // Never animate on stale data: freeze the marker where it was last seen, and say so.
      this.partner?.freeze();
      f.textContent = `Last update ${ago(this.lastFixAt)}: the partner's position may be out of date.`;
    } else {
      f.textContent = `Last update ${ago(this.lastFixAt)}`;
    }
  }

  hide() {
    clearInterval(this.timer);
    this.partner?.remove();
    this.partner = null;
    this.lastFixAt = 0;
    this.els.section.hidden = true;
  }
}
