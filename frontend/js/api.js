// REST client: bearer token in memory, one silent refresh on an expired token, the error
// envelope turned into ApiError, and Idempotency-Key generation for order creation.

const SESSION_HINT = 'pp-session';  // "a refresh cookie may exist": never a token

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Per-field messages of a 422, joined for display. */
  get fieldMessages() {
    if (!Array.isArray(this.details)) return '';
    return this.details.map((d) => `${d.field}: ${d.message}`).join('; ');
  }
}

const state = { token: null, user: null, listeners: new Set(), refreshing: null };

export const accessToken = () => state.token;
export const currentUser = () => state.user;

/** Be told when the signed-in user changes (null on sign-out). */
export function onSession(fn) {
  state.listeners.add(fn);
  return () => state.listeners.delete(fn);
}

/** Keep the session from a verify-otp or refresh answer. */
export function setSession(answer) {
  state.token = answer?.access_token ?? null;
  if (answer?.user) state.user = normaliseUser(answer.user);
  if (!state.token) state.user = null;
  try {
    if (state.token) localStorage.setItem(SESSION_HINT, state.user?.role ?? '1');
    else localStorage.removeItem(SESSION_HINT);
  } catch { /* storage may be disabled; resume just won't be attempted */ }
  for (const fn of state.listeners) fn(state.user);
}

/** Drop the in-memory session only (e.g. another role's): the refresh cookie stays for its page. */
export function forget() {
  state.token = null;
  state.user = null;
  for (const fn of state.listeners) fn(null);
}

function normaliseUser(user) {
  return { ...user, id: user.id ?? user._id };
}

/** Swap the refresh cookie for a new access token. Concurrent callers share one request. */
export function refresh() {
  state.refreshing ??= (async () => {
    try {
      const res = await fetch('/api/auth/refresh', {
        method: 'POST', credentials: 'include',
        headers: { 'X-PartyPilot-CSRF': '1', 'Content-Type': 'application/json' }, body: '{}',
      });
      if (!res.ok) {
        setSession(null);
        return false;
      }
      const answer = await res.json();
      if (!answer.user && state.user) answer.user = state.user;
      setSession(answer);
      if (!state.user) setSession({ ...answer, user: await request('GET', '/api/users/profile') });
      return true;
    } catch {
      return false;
    } finally {
      state.refreshing = null;
    }
  })();
  return state.refreshing;
}

/** On page load: restore a session from the refresh cookie, only if one was started here. */
export async function resume() {
  let hint = null;
  try { hint = localStorage.getItem(SESSION_HINT); } catch { /* no storage */ }
  if (!hint) return null;
  return (await refresh()) ? state.user : null;
}

export async function signOut() {
  try {
    await fetch('/api/auth/logout', {
      method: 'POST', credentials: 'include',
      headers: { ...authHeader(), 'X-PartyPilot-CSRF': '1', 'Content-Type': 'application/json' }, body: '{}',
    });
  } catch { /* signing out locally is what matters */ }
  setSession(null);
}

const authHeader = () => (state.token ? { Authorization: `Bearer ${state.token}` } : {});

/**
 * Call the API. Returns parsed JSON (or null for an empty body); throws ApiError.
 * options: { body, query, headers, retry=true }
 */
export async function request(method, path, options = {}) {
  const { body, query, headers = {}, retry = true } = options;
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') params.set(k, v);
    const qs = params.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  const init = { method, headers: { Accept: 'application/json', ...authHeader(), ...headers }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach PartyPilot right now. Check your connection and try again.');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.ok) return data;
  const error = data?.error ?? {};
  if (res.status === 401 && error.code === 'token_expired' && retry && (await refresh())) {
    return request(method, path, { ...options, retry: false });
  }
  const message = error.message || `The server answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}.`;
  throw new ApiError(res.status, error.code || `http_${res.status}`, message, error.details);
}

export const get = (path, query) => request('GET', path, { query });
export const post = (path, body, headers) => request('POST', path, { body: body ?? {}, headers });
export const put = (path, body) => request('PUT', path, { body: body ?? {} });
export const del = (path) => request('DELETE', path);

/** A fresh Idempotency-Key: one per order the customer means to place, reused on retries. */
export function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** POST /api/orders with the key; the same key + body returns the same order. */
export const createOrder = (body, key) => post('/api/orders', body, { 'Idempotency-Key': key });

/** A list answer {items,total,page,limit} (or a bare array) as items. */
export const itemsOf = (answer) => (Array.isArray(answer) ? answer : answer?.items ?? []);

/** Download an authenticated file (e.g. the CSV export): a plain link cannot send the token. */
export async function download(path, fallbackName) {
  let res = await fetch(path, { headers: authHeader(), credentials: 'same-origin' });
  if (res.status === 401 && (await refresh())) res = await fetch(path, { headers: authHeader(), credentials: 'same-origin' });
  if (!res.ok) {
    let message = `The server answered ${res.status}.`;
    try { message = (await res.json()).error?.message ?? message; } catch { /* not JSON */ }
    throw new ApiError(res.status, `http_${res.status}`, message);
  }
  const name = /filename="([^"]+)"/.exec(res.headers.get('Content-Disposition') ?? '')?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await res.blob());
  const a = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
