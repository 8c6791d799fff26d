// Front-end constants. The tile server is the only outside host the pages talk to; offline, the
// map still draws markers, routes and controls over a blank background.
export const TILE_URL = 'https://tile.openstreetmap.org/{z}/{x}/{y}.png';
export const TILE_ATTRIBUTION = '&copy; OpenStreetMap contributors';
export const TILE_MAX_ZOOM = 19;

// Where maps open before they know better (the seeded demo service area).
export const DEFAULT_CENTER = [12.9716, 77.5946];
export const DEFAULT_ZOOM = 12;

// Must match the server's ping interval (settings.ping_interval_s): pings are throttled to it and
// a fix older than STALE_AFTER_INTERVALS intervals is shown as stale.
export const PING_INTERVAL_MS = 30_000;
export const STALE_AFTER_INTERVALS = 3;

// accuracy is a 95 % radius in metres; above this a fix is "weak GPS" and not animated to.
export const WEAK_GPS_M = 100;
// Moves shorter than this are GPS jitter, not motion.
export const MIN_MOVE_M = 20;
