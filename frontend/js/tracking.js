// Live tracking of one order for its customer: the partner's marker (smoothed, frozen when
// stale), the venue, a route line, an ETA window, and "last update N s ago". Shown from assignment
// until completion; hidden again afterwards. The map keeps the partner, the venue and the route in
// view: it fits them whenever the order's state or partner changes, and again when the partner is
// about to leave the view, until the viewer pans or zooms (a button brings the following back).
// The ETA and the update's age tick every second between fixes.
//
// The route line is the partner's recent trail (the fixes this page saw, solid) and the way still
// to go: a straight dashed line from the last fix to the venue. Without a routing service (offline,
// the default) that straight segment is an honest "this far, this way", not a road route.
import { createMap, pinIcon, SmoothMarker } from './map.js';
import { serverSettings } from './settings.js';
import { ago, el, etaWindow, initials } from './ui.js';

export const TRACKABLE = new Set(['assigned', 'en_route', 'arrived', 'setup_complete']);
const FINISHED = new Set(['completed', 'cancelled', 'refunded']);
const AT_VENUE = new Set(['arrived', 'setup_complete']);
// The trail keeps this many fixes: at one fix per ping interval, the last quarter hour or so.
const TRAIL_FIXES = 30;

/** "45 s ago", and in seconds up to two minutes: an age that visibly ticks while it matters. */
function updatedAgo(at) {
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  return s < 120 ? `${s} s ago` : ago(at);
}
const FIT_PADDING_PX = 56;  // clear of the zoom buttons and the pins' own size
const FIT_MAX_ZOOM = 16;
// Re-fit when the partner comes this close to the map's edge (a share of the visible span).
const EDGE_MARGIN = -0.1;

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
    this.fitKey = '';       // order, status and partner the view was last fitted for
    this.following = true;  // false once the viewer moved the map themselves
    this.fitting = false;   // true while we move the map (so our own zooms are not the viewer's)
    this.recentre = null;
    this.trail = [];        // the partner's accepted fixes, oldest first: [[lat, lng], ...]
    this.trailLine = null;
    this.aheadLine = null;
    this.etaAt = 0;         // when etaS was estimated (the fix's time)
    // When a fix is old: the server's ping interval times its stale count (config.json). Until the
    // answer comes (the first fix needs the socket, which is slower), nothing is called stale.
    this.staleMs = Infinity;
    serverSettings().then((server) => {
      this.staleMs = server.pingIntervalMs * server.staleAfterIntervals;
      if (this.lastFixAt) this.tick();
    });
  }

  ensureMap() {
    if (this.map) return;
    this.map = createMap(this.els.map);
    // Leaflet fires dragstart for the viewer's drags only; zooms are the viewer's unless we are fitting.
    this.map.on('dragstart', () => this.setFollowing(false));
    this.map.on('zoomstart', () => { if (!this.fitting) this.setFollowing(false); });
    const Recentre = window.L.Control.extend({
      onAdd: () => {
        const button = el('button', { type: 'button', class: 'map-recentre', text: 'Show partner and venue',
          on: { click: (e) => { e.stopPropagation(); this.setFollowing(true); this.fit(); } } });
        window.L.DomEvent.disableClickPropagation(button);
        button.hidden = true;
        this.recentre = button;
        return button;
      },
    });
    new Recentre({ position: 'bottomleft' }).addTo(this.map);
    this.trailLine = window.L.polyline([], { className: 'route-trail', color: '#2563eb', weight: 4, opacity: 0.7,
      interactive: false }).addTo(this.map);
    this.aheadLine = window.L.polyline([], { className: 'route-ahead', color: '#2563eb', weight: 3, opacity: 0.9,
      dashArray: '6 8', interactive: false }).addTo(this.map);
  }

  /** Redraw the route: the trail so far, then a straight dashed line from the last fix to the venue. */
  drawRoute() {
    if (!this.trailLine) return;
    this.trailLine.setLatLngs(this.trail);
    const fix = this.partner?.last;
    const venue = this.venue?.getLatLng();
    // Once the partner is at the venue there is no way left to go.
    const ahead = fix && venue && !AT_VENUE.has(this.order?.status) ? [[fix.lat, fix.lng], venue] : [];
    this.aheadLine.setLatLngs(ahead);
  }

  setFollowing(on) {
    this.following = on;
    if (this.recentre) this.recentre.hidden = on;
  }

  /** Fit the view to the partner's latest fix, the venue and the trail (whichever are known). */
  fit() {
    if (!this.map || this.els.section.hidden) return;
    const points = this.trail.map(([lat, lng]) => window.L.latLng(lat, lng));
    if (this.venue) points.push(this.venue.getLatLng());
    const fix = this.partner?.last;
    if (fix) points.push(window.L.latLng(fix.lat, fix.lng));
    if (!points.length) return;
    this.fitting = true;
    try {
      this.map.invalidateSize({ animate: false });
      if (points.length === 1) this.map.setView(points[0], Math.max(this.map.getZoom(), 14), { animate: false });
      else {
        this.map.fitBounds(window.L.latLngBounds(points), { padding: [FIT_PADDING_PX, FIT_PADDING_PX],
          maxZoom: FIT_MAX_ZOOM, animate: false });
      }
    } finally {
      this.fitting = false;
    }
  }

  /** After a fix: fit again if the partner is leaving the view (unless the viewer took over). */
  keepInView() {
    const fix = this.partner?.last;
    if (!this.following || !fix || !this.map) return;
    const inside = (p) => this.map.getBounds().pad(EDGE_MARGIN).contains(p);
    if (!inside([fix.lat, fix.lng]) || (this.venue && !inside(this.venue.getLatLng()))) this.fit();
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
    this.ensureMap();
    this.map.invalidateSize();
    const a = order.address ?? {};
    if (Number.isFinite(a.lat) && Number.isFinite(a.lng)) {
      this.venue?.remove();
      this.venue = window.L.marker([a.lat, a.lng], {
        icon: pinIcon({ label: '★', status: 'venue' }), title: 'Venue', keyboard: false,
      }).addTo(this.map);
    }
    // A reassigned order gets a new marker: the previous partner's fixes are not this one's.
    const who = order.partner?.id ?? order.partner_id ?? order.partner?.first_name ?? '';
    const fresh = !same || !this.partner || who !== this.partnerWho;
    this.partnerWho = who;
    if (fresh) {
      this.partner?.remove();
      const name = order.partner?.first_name ?? 'Partner';
      this.partner = new SmoothMarker(this.map, { label: initials(name), status: 'en_route', title: name });
      this.lastFixAt = 0;
      this.etaS = undefined;
      this.trail = [];
    }
    this.drawRoute();
    // A new state or a new partner: show both pins again, even if the viewer had moved away.
    const key = `${order.id}|${order.status}|${who}`;
    if (key !== this.fitKey) {
      this.fitKey = key;
      this.setFollowing(true);
      this.fit();
    }
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
    const first = !this.partner.last;
    const accepted = this.partner.push({ lat: msg.lat, lng: msg.lng, ts: msg.ts, accuracy: msg.accuracy });
    if (accepted) {
      this.lastFixAt = Number(msg.ts) || Date.now();
      const last = this.partner.last;
      const tail = this.trail.at(-1);
      if (!tail || tail[0] !== last.lat || tail[1] !== last.lng) this.trail.push([last.lat, last.lng]);
      if (this.trail.length > TRAIL_FIXES) this.trail.splice(0, this.trail.length - TRAIL_FIXES);
      this.drawRoute();
    }
    if (accepted && first && this.following) this.fit();
    else if (accepted) this.keepInView();
    if (Number.isFinite(msg.eta_s)) {
      this.etaS = msg.eta_s;
      this.etaAt = Math.min(Number(msg.ts) || Date.now(), Date.now());
    }
    if (msg.stale) this.lastFixAt = Math.min(this.lastFixAt, Date.now() - this.staleMs - 1);
    this.tick();
  }

  /** A window, re-estimated on every fix and counted down between them, rather than a countdown
   * that pretends to precision; on an old position, the last estimate with its age. */
  renderEta(stale = false) {
    const status = this.order?.status;
    let text;
    if (AT_VENUE.has(status)) text = 'Your partner is at the venue.';
    else if (!Number.isFinite(this.etaS)) text = 'Waiting for the partner\'s first position…';
    else if (stale) text = `Last estimate ${ago(this.etaAt)}: about ${etaWindow(this.etaS)} away. Waiting for a new position.`;
    else {
      const left = Math.max(0, this.etaS - (Date.now() - this.etaAt) / 1000);
      text = status === 'assigned' ? `Your partner is about ${etaWindow(left)} away and will set off soon.`
        : `Arriving in ${etaWindow(left)}`;
    }
    // Written only when it changes: a live region re-reads every write aloud.
    if (this.els.eta.textContent !== text) this.els.eta.textContent = text;
  }

  tick() {
    const f = this.els.freshness;
    if (!this.lastFixAt) {
      f.textContent = 'No position yet.';
      f.dataset.stale = 'false';
      this.renderEta();
      return;
    }
    const age = Date.now() - this.lastFixAt;
    const stale = age > this.staleMs;
    this.renderEta(stale);
    f.dataset.stale = String(stale);
    if (stale) {
      // Never animate on stale data: freeze the marker where it was last seen, and say so.
      this.partner?.freeze();
      f.textContent = `Last update ${updatedAgo(this.lastFixAt)}: the partner's position may be out of date.`;
    } else {
      f.textContent = `Last update ${updatedAgo(this.lastFixAt)}`;
    }
  }

  hide() {
    clearInterval(this.timer);
    this.fitKey = '';
    this.partner?.remove();
    this.partner = null;
    this.lastFixAt = 0;
    this.trail = [];
    this.drawRoute();
    this.els.section.hidden = true;
  }
}
