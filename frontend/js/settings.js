// The server's settings a page must agree with (GET /config.json), and how far this device's clock
// is from the server's. Remembered for a start without a network (the installed partner app opens
// offline); config.js's constants are the last resort.
import { PING_INTERVAL_MS, STALE_AFTER_INTERVALS, TILE_URL } from './config.js';

// The server's map_attribution is plain text; this is the same default, as text.
const TILE_CREDIT = '© OpenStreetMap contributors';

const REMEMBERED = 'pp-config';
// A network that has not answered by then is treated as down: the page must not wait on it.
const WAIT_MS = 4_000;
// Beyond this, the phone's clock visibly disagrees with the server's (fixes carry the phone's time).
export const CLOCK_SKEW_WARN_MS = 10_000;

// The site's locale (dates, times, money). The page formats with the last one this device saw
// until the server answers; en-IN is the server's default too.
const DEFAULT_LOCALE = 'en-IN';
let current = rememberedLocale();

function usableLocale(tag) {
  if (typeof tag !== 'string' || !tag) return null;
  try { return Intl.getCanonicalLocales(tag)[0] ?? null; } catch { return null; }
}

function rememberedLocale() {
  try { return usableLocale(JSON.parse(localStorage.getItem('pp-config') ?? 'null')?.locale) ?? DEFAULT_LOCALE; }
  catch { return DEFAULT_LOCALE; }
}

/** The locale every formatter on the page uses (BCP 47, e.g. "en-IN"). */
export const locale = () => current;

const fallback = { pingIntervalMs: PING_INTERVAL_MS, staleAfterIntervals: STALE_AFTER_INTERVALS, clockOffsetMs: 0,
  tileUrl: TILE_URL, tileAttribution: TILE_CREDIT, locale: DEFAULT_LOCALE, fromServer: false };

function fromAnswer(answer) {
  const interval = Number(answer?.ping_interval_s);
  const intervals = Number(answer?.stale_after_intervals);
  if (!(interval > 0) || !(intervals > 0)) return null;
  const tiles = typeof answer.map_tile_url === 'string' && answer.map_tile_url ? answer.map_tile_url : TILE_URL;
  const credit = typeof answer.map_attribution === 'string' ? answer.map_attribution : TILE_CREDIT;
  return { pingIntervalMs: Math.round(interval * 1000), staleAfterIntervals: intervals, tileUrl: tiles,
    tileAttribution: credit, locale: usableLocale(answer.locale) ?? DEFAULT_LOCALE };
}

/**
 * { pingIntervalMs, staleAfterIntervals, tileUrl, tileAttribution, locale, clockOffsetMs (server minus device),
 * fromServer }.
 * Never throws: offline it answers with the last settings this device saw.
 */
export async function loadSettings() {
  const sent = Date.now();
  try {
    const res = await fetch('/config.json', { cache: 'no-store', credentials: 'omit',
      signal: AbortSignal.timeout(WAIT_MS) });
    if (!res.ok) throw new Error(`config: ${res.status}`);
    const answer = await res.json();
    const received = Date.now();
    const settings = fromAnswer(answer);
    if (!settings) throw new Error('config: unusable answer');
    current = settings.locale;
    try { localStorage.setItem(REMEMBERED, JSON.stringify(answer)); } catch { /* no storage */ }
    // The server stamped its clock somewhere in the round trip: assume halfway.
    const offset = Number.isFinite(answer.server_time_ms) ? Math.round(answer.server_time_ms - (sent + received) / 2) : 0;
    return { ...settings, clockOffsetMs: offset, fromServer: true };
  } catch {
    let remembered = null;
    try { remembered = fromAnswer(JSON.parse(localStorage.getItem(REMEMBERED) ?? 'null')); } catch { /* none */ }
    // A remembered server time is old news: without an answer, assume the clocks agree.
    if (remembered) current = remembered.locale;
    return remembered ? { ...remembered, clockOffsetMs: 0, fromServer: false } : { ...fallback };
  }
}

let asked = null;

/** loadSettings(), asked once per page: every map and tracker on it shares the answer. */
export function serverSettings() {
  asked ??= loadSettings();
  return asked;
}
