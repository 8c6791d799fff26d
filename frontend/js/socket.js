// Socket.IO connection: authenticates with the in-memory access token (re-read on every
// reconnect), re-authenticates in place before the token expires, refreshes an expired token
// once, and tells the page when to re-read the truth over REST: pushes are hints, so after a
// reconnect or a version gap the page re-fetches.
//
// The server ends a socket whose credentials ran out, and says why first:
//   auth_expired  {code: "token_expired", message, expires_at}: refresh the token and reconnect
//                 (a tracking link cannot be refreshed: the page is told, as for a refusal);
//   session_ended {code: "session_revoked" | "partner_suspended" | "partner_not_approved", message}:
//                 not retried; the page is told through onRefused.
import { io } from '/vendor/socket.io/socket.io.esm.min.js';
import { accessToken, refresh } from './api.js';

/**
 * opts: { onConnect(socket, first), onResync(reason), onDown(reason), onRefused(error),
 *         auth (optional: e.g. { tracking_token } instead of the signed-in user's access token) }
 * Returns { socket, emit(event, data, timeoutMs) -> Promise<ack>, seen(key, version), close() }.
 */
export function connectSocket(opts = {}) {
  const socket = io({
    path: '/socket.io',
    // Websocket only: works behind nginx without sticky sessions.
    transports: ['websocket'],
    auth: (cb) => cb(opts.auth ?? { token: accessToken() }),
    reconnectionDelay: 1000,
    reconnectionDelayMax: 10_000,
  });
  let connectedOnce = false;
  let refreshedForConnect = false;
  let ended = null; // set by auth_expired / session_ended: the server is about to hang up
  let reauthTimer = null;
  const versions = new Map();
  // Re-authenticate this long before the token's expiry, so the server never has to cut us.
  const REAUTH_AHEAD_MS = 60_000;

  /** The `exp` (epoch s) of a JWT, read without verifying it (the server does that). */
  function expiryOf(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const exp = JSON.parse(atob(part)).exp;
      return Number.isFinite(exp) ? exp : null;
    } catch {
      return null;
    }
  }

  function scheduleReauth(expiresAt) {
    clearTimeout(reauthTimer);
    reauthTimer = null;
    if (opts.auth || !Number.isFinite(expiresAt)) return; // tracking links are not renewed
    const wait = Math.max(expiresAt * 1000 - Date.now() - REAUTH_AHEAD_MS, 5_000);
    reauthTimer = setTimeout(reauth, wait);
  }

  async function reauth() {
    if (!socket.connected) return;
    const current = accessToken();
    const exp = current ? expiryOf(current) : null;
    // Another request may already have refreshed the token; refresh only if it is about to go.
    if (!exp || exp * 1000 - Date.now() < REAUTH_AHEAD_MS + 30_000) {
      if (!(await refresh())) return; // signed out: the server ends the socket at expiry
    }
    const answer = await new Promise((resolve) => {
      socket.timeout(10_000).emit('auth', { token: accessToken() }, (err, ack) => resolve(err ? null : ack));
    });
    scheduleReauth(answer?.ok ? answer.expires_at : Date.now() / 1000 + REAUTH_AHEAD_MS / 1000 + 30);
  }

  socket.on('connect', () => {
    const first = !connectedOnce;
    connectedOnce = true;
    refreshedForConnect = false;
    ended = null;
    const token = accessToken();
    if (token) scheduleReauth(expiryOf(token));
    opts.onConnect?.(socket, first);
    if (!first) opts.onResync?.('reconnected');
  });
  socket.on('auth_expired', (info) => { ended = { event: 'auth_expired', ...info }; });
  socket.on('session_ended', (info) => { ended = { event: 'session_ended', ...info }; });
  socket.on('disconnect', async (reason) => {
    clearTimeout(reauthTimer);
    opts.onDown?.(reason);
    if (reason !== 'io server disconnect') return; // the client reconnects by itself
    const why = ended;
    ended = null;
    if (why?.event === 'session_ended' || (why?.event === 'auth_expired' && opts.auth)) {
      // Not something a retry fixes: say why, as for a refused connection.
      opts.onRefused?.({ code: why.code, message: why.message });
      return;
    }
    if (why?.event === 'auth_expired') {
      // The token ran out before we re-authenticated (say, a hidden tab): refresh, reconnect.
      if (await refresh()) socket.connect();
      else opts.onRefused?.({ code: why.code, message: why.message });
      return;
    }
    // The server hung up without a reason (deploy, shutdown): the client does not retry by
    // itself, so try once; a refusal then says why through connect_error.
    setTimeout(() => socket.connect(), 1000);
  });
  socket.on('connect_error', async (err) => {
    const code = err?.data?.code;
    // A refused connection is not retried by the client: refresh the token once and try again.
    if ((code === 'token_expired' || code === 'invalid_token') && !refreshedForConnect) {
      refreshedForConnect = true;
      if (await refresh()) {
        socket.connect();
        return;
      }
    }
    if (!socket.active) opts.onRefused?.(err?.data ?? { code: 'unavailable', message: err?.message });
    else opts.onDown?.('connect_error');
  });

  const onVisible = () => {
    if (document.visibilityState === 'visible' && socket.connected) opts.onResync?.('visible');
  };
  document.addEventListener('visibilitychange', onVisible);

  /** Emit with an acknowledgement; resolves with the ack or {ok:false} on timeout. */
  async function emit(event, data, timeoutMs = 10_000) {
    const send = () => new Promise((resolve) => {
      socket.timeout(timeoutMs).emit(event, data, (err, ack) => {
        resolve(err ? { ok: false, error: { code: 'timeout', message: 'No answer from the server.' } } : ack ?? { ok: true });
      });
    });
    const ack = await send();
    if (ack?.ok === false && ack.error?.code === 'token_expired' && (await refresh())) {
      // The socket outlived its access token: re-authenticate in place, then send again.
      const reauth = await new Promise((resolve) => {
        socket.timeout(timeoutMs).emit('auth', { token: accessToken() }, (err, answer) => resolve(err ? null : answer));
      });
      if (reauth?.ok) {
        scheduleReauth(reauth.expires_at);
        return send();
      }
    }
    return ack;
  }

  /**
   * Record a pushed version for `key`. Returns false (and asks for a resync) when versions
   * skipped ahead, true when the push is new, null when it is old or a duplicate.
   */
  function seen(key, version) {
    if (!Number.isFinite(version)) return true;
    const last = versions.get(key);
    if (last !== undefined && version <= last) return null;
    versions.set(key, version);
    if (last !== undefined && version > last + 1) {
      opts.onResync?.('gap');
      return false;
    }
    return true;
  }

  function close() {
    clearTimeout(reauthTimer);
    document.removeEventListener('visibilitychange', onVisible);
    socket.close();
  }

  return { socket, emit, seen, close, versions };
}
