// Leaflet helpers: a map that works offline (tiles are optional), pins built without innerHTML,
// and a marker that moves honestly: one fix behind, animated, frozen when the feed goes stale.
import { TILE_MAX_ZOOM, DEFAULT_CENTER, DEFAULT_ZOOM, WEAK_GPS_M, MIN_MOVE_M } from './config.js';
import { serverSettings } from './settings.js';
import { el } from './ui.js';
import { get } from './api.js';

const L = window.L;
// A marker glides to a new fix over this long: enough to read as movement, short enough that the
// marker is where the partner was last seen well before the next fix (one ping interval) arrives.
export const GLIDE_MS = 1000;
const stillness = window.matchMedia?.('(prefers-reduced-motion: reduce)');

/** Leaflet writes attributions as HTML; ours is plain text from the server's settings. */
function asText(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function createMap(element, { center = DEFAULT_CENTER, zoom = DEFAULT_ZOOM } = {}) {
  const map = L.map(element, { center, zoom, zoomControl: true });
  // The tile server is the deployment's (map_tile_url in GET /config.json): no tile is asked for
  // before the answer, so a configured provider is the only one the pages reach. A tile that fails
  // to load (offline, blocked) just leaves the blank background.
  serverSettings().then(({ tileUrl, tileAttribution }) => {
    L.tileLayer(tileUrl, { maxZoom: TILE_MAX_ZOOM, attribution: asText(tileAttribution), crossOrigin: true })
      .addTo(map);
  });
  return map;
}

let areasAnswer = null;

/** The service areas (GeoJSON, from GET /api/service-areas), asked once per page; a failure is asked again. */
export function serviceAreas() {
  areasAnswer ??= get('/api/service-areas').catch((err) => {
    areasAnswer = null;
    throw err;
  });
  return areasAnswer;
}

/** Shade where we deliver. The polygons take no clicks: a tap inside one still reaches the map. */
export async function drawServiceAreas(map) {
  const areas = await serviceAreas();
  const layer = L.geoJSON(areas, {
    interactive: false,
    style: { className: 'service-area', color: '#6d28d9', weight: 2, dashArray: '6 4', fillColor: '#8b5cf6',
      fillOpacity: 0.08 },
  }).addTo(map);
  layer.bringToBack();
  return layer;
}

/** A round pin with initials, coloured by status (CSS classes pin-<status>, pin-stale). */
export function pinIcon({ label = '?', status = 'idle', stale = false, arrow = false } = {}) {
  const node = el('div', { class: `pin pin-${status}${stale ? ' pin-stale' : ''}` },
    arrow ? el('span', { class: 'pin-arrow', 'aria-hidden': 'true' }) : null,
    el('span', { class: 'pin-label', text: label }));
  return L.divIcon({ html: node, className: 'pin-wrap', iconSize: [34, 34], iconAnchor: [17, 17] });
}

const R = 6371008.8;
const rad = (d) => (d * Math.PI) / 180;

export function distanceM(a, b) {
  const dLat = rad(b.lat - a.lat);
  const dLng = rad(b.lng - a.lng);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLng / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(h));
}

export function bearingDeg(a, b) {
  const y = Math.sin(rad(b.lng - a.lng)) * Math.cos(rad(b.lat));
  const x = Math.cos(rad(a.lat)) * Math.sin(rad(b.lat)) -
    Math.sin(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.cos(rad(b.lng - a.lng));
  return ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360;
}

/**
 * A marker fed with fixes {lat, lng, ts, accuracy?}. Out-of-order, poor-accuracy and
 * sub-MIN_MOVE_M fixes are dropped; an accepted fix is reached by gliding from where the marker
 * is drawn over GLIDE_MS, so it never jumps (a viewer who asked for reduced motion gets the jump).
 */
export class SmoothMarker {
  constructor(map, { label = '', status = 'en_route', title = '' } = {}) {
    this.map = map;
    this.label = label;
    this.status = status;
    this.title = title;
    this.marker = null;
    this.last = null;        // last accepted fix
    this.lastTs = 0;         // newest fix time seen, accepted or not
    this.frame = 0;
    this.frozen = false;
  }

  /** Returns true when the fix was accepted. */
  push(fix) {
    if (!Number.isFinite(fix.lat) || !Number.isFinite(fix.lng)) return false;
    const ts = Number(fix.ts) || Date.now();
    if (ts <= this.lastTs) return false;
    this.lastTs = ts;
    if (Number.isFinite(fix.accuracy) && fix.accuracy > WEAK_GPS_M && this.last) return false;
    const to = { lat: fix.lat, lng: fix.lng, ts };
    if (!this.marker) {
      this.marker = L.marker([to.lat, to.lng], { icon: this.icon(), title: this.title, keyboard: false }).addTo(this.map);
      this.last = to;
      return true;
    }
    this.thaw();
    if (distanceM(this.last, to) < MIN_MOVE_M) {
      this.last = { ...this.last, ts };
      return true;
    }
    this.rotate(bearingDeg(this.last, to));
    this.animate(to, GLIDE_MS);
    this.last = to;
    return true;
  }

  icon() {
    return pinIcon({ label: this.label, status: this.frozen ? 'stale' : this.status, stale: this.frozen, arrow: true });
  }

  rotate(deg) {
    this.bearing = deg;
    const arrow = this.marker?.getElement()?.querySelector('.pin-arrow');
    if (arrow && Number.isFinite(deg)) arrow.style.transform = `rotate(${Math.round(deg)}deg)`;
  }

  restyle() {
    this.marker.setIcon(this.icon());
    this.rotate(this.bearing);  // a new icon element has lost the old rotation
  }

  animate(to, duration) {
    cancelAnimationFrame(this.frame);  // a new fix cancels the one in flight
    if (stillness?.matches) {
      this.marker.setLatLng([to.lat, to.lng]);
      return;
    }
    const from = this.marker.getLatLng();
    const start = performance.now();
    const step = (now) => {
      const t = Math.min(1, (now - start) / duration);
      this.marker.setLatLng([from.lat + (to.lat - from.lat) * t, from.lng + (to.lng - from.lng) * t]);
      if (t < 1 && !this.frozen) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  /** Stop moving on stale data: the marker stays at the last accepted fix. */
  freeze() {
    if (this.frozen || !this.marker) return;
    cancelAnimationFrame(this.frame);
    this.frozen = true;
    if (this.last) this.marker.setLatLng([this.last.lat, this.last.lng]);
    this.restyle();
  }

  thaw() {
    if (!this.frozen) return;
    this.frozen = false;
    this.restyle();
  }

  latLng() {
    return this.marker?.getLatLng() ?? null;
  }

  remove() {
    cancelAnimationFrame(this.frame);
    this.marker?.remove();
    this.marker = null;
    this.last = null;
  }
}
