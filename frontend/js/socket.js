// Socket.IO connection: authenticates with the in-memory access token (re-read on every
// reconnect), refreshes an expired token once, and tells the page when to re-read the truth
// over REST: pushes are hints, so after a reconnect or a version gap the page re-fetches.
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
  const versions = new Map();

  socket.on('connect', () => {
    const first = !connectedOnce;
    connectedOnce = true;
    refreshedForConnect = false;
    opts.onConnect?.(socket, first);
    if (!first) opts.onResync?.('reconnected');
  });
  socket.on('disconnect', (reason) => {
    opts.onDown?.(reason);
    // The server hung up on us (suspension, session ended, deploy): the client does not retry by
    // itself, so try once; a refusal then says why through connect_error.
    if (reason === 'io server disconnect') setTimeout(() => socket.connect(), 1000);
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
      if (reauth?.ok) return send();
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
    document.removeEventListener('visibilitychange', onVisible);
    socket.close();
  }

  return { socket, emit, seen, close, versions };
}
