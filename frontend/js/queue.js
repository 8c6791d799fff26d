// An IndexedDB outbox for the partner app: GPS fixes and status changes made while offline,
// kept with their client timestamps and flushed in order when the connection returns. It outlives
// a reload and a closed tab (the installed app opens offline and keeps queueing). Each record
// names its `owner` (the partner signed in when it was made): only that partner's session may
// send it; `stripOwner` gives the fix as the server takes it.
const DB_NAME = 'partypilot';
const VERSION = 1;
const MAX_PINGS = 5000;  // about 40 hours at one fix per 30 s; older ones are dropped first

let opening = null;

function open() {
  opening ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains('pings')) db.createObjectStore('pings', { keyPath: 'ts' });
      if (!db.objectStoreNames.contains('actions')) db.createObjectStore('actions', { keyPath: 'seq', autoIncrement: true });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opening;
}

async function tx(store, mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = fn(t.objectStore(store));
    t.oncomplete = () => resolve(result?.result ?? result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

/** Keep a fix for later (a later fix with the same ts replaces it). */
export async function queuePing(point, owner) {
  await tx('pings', 'readwrite', (s) => s.put(owner ? { ...point, owner } : point));
  const count = await tx('pings', 'readonly', (s) => s.count());
  if (count > MAX_PINGS) {
    await tx('pings', 'readwrite', (s) => {
      const cursor = s.openCursor();
      let left = count - MAX_PINGS;
      cursor.onsuccess = () => {
        const c = cursor.result;
        if (c && left-- > 0) { c.delete(); c.continue(); }
      };
    });
  }
}

/** The oldest `limit` queued fixes, in ts order. */
export async function peekPings(limit = 100) {
  return tx('pings', 'readonly', (s) => s.getAll(null, limit));
}

/** A queued fix without its bookkeeping: the server refuses unknown fields. */
export function stripOwner({ owner, ...point }) {
  return point;
}

export async function dropPings(points) {
  await tx('pings', 'readwrite', (s) => { for (const p of points) s.delete(p.ts); });
}

export async function countPings() {
  return tx('pings', 'readonly', (s) => s.count());
}

/** Queue an action such as {kind: 'status', order_id, status, at, owner}. */
export async function queueAction(action) {
  await tx('actions', 'readwrite', (s) => s.add(action));
}

export async function peekActions() {
  return tx('actions', 'readonly', (s) => s.getAll());
}

export async function dropAction(seq) {
  await tx('actions', 'readwrite', (s) => s.delete(seq));
}
