// Service worker of the installable partner app, registered for the scope /partner only (the
// customer and admin pages never see it). It keeps the app shell (the page, its modules, styles,
// icons, manifest) so /partner opens with no network; the outbox of fixes lives in IndexedDB
// (js/queue.js), not here.
//
// What it stores is an allow-list of static files, fetched network first: online, a phone always
// runs the deployed code and refreshes its copy; offline (or after SLOW_MS on a network that
// hangs) it answers from the copy. It never stores, and never answers from storage, anything else:
// not /api (answers carry personal data and tokens), not Socket.IO, not /config.json (the server's
// clock), not uploaded media, not a request that carries credentials in a header, not a response
// marked no-store. Those go to the network as if there were no worker.

const CACHE_PREFIX = 'pp-partner-shell-';
// Bump when SHELL changes: the new worker fills a new cache and the old one is deleted.
const CACHE = `${CACHE_PREFIX}v1`;
// Everything /partner needs to start: the page and its whole import graph
// (tests/test_partner_app.py checks this list against partner.html and the modules' imports).
const SHELL = [
  '/partner',
  '/partner.webmanifest',
  '/css/app.css',
  '/js/partner.js',
  '/js/alerts.js',
  '/js/api.js',
  '/js/auth.js',
  '/js/config.js',
  '/js/queue.js',
  '/js/settings.js',
  '/js/socket.js',
  '/js/ui.js',
  '/vendor/socket.io/socket.io.esm.min.js',
  '/img/logo.svg',
  '/img/partner-192.png',
  '/img/partner-512.png',
  '/img/partner-maskable-192.png',
  '/img/partner-maskable-512.png',
];
const NEVER = /^\/(api|socket\.io|media)(\/|$)/;
// A network slower than this is treated as down when a stored copy exists (the fetch goes on
// and refreshes the copy for next time).
const SLOW_MS = 5_000;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // Past the HTTP cache: the shell must be one deploy's files, not an hour-old mix.
    await cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
    }
    // Take over the open partner page at once, so it works offline without a second visit.
    await self.clients.claim();
  })());
});

/** The cache key of a request the worker may answer, or null to leave it to the network. */
function shellKey(request) {
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || request.method !== 'GET') return null;
  if (NEVER.test(url.pathname) || request.headers.has('Authorization')) return null;
  // Query strings (cache busters, ?t= links) do not make another file.
  const path = url.pathname === '/partner/' ? '/partner' : url.pathname;
  return SHELL.includes(path) ? path : null;
}

function storable(response) {
  return response.ok && response.type === 'basic' && !response.redirected
    && !/no-store|private/.test(response.headers.get('Cache-Control') ?? '');
}

async function answer(request, key) {
  const cache = await caches.open(CACHE);
  const network = fetch(request).then(async (response) => {
    if (storable(response)) await cache.put(key, response.clone());
    return response;
  });
  // A server error (the app restarting behind the proxy) is no better than no network.
  const usable = network.then((response) => {
    if (response.status >= 500) throw new Error(`answered ${response.status}`);
    return response;
  });
  const stored = new Promise((resolve) => {
    const timer = setTimeout(resolve, SLOW_MS);
    usable.catch(() => {
      clearTimeout(timer);
      resolve();
    });
  }).then(() => cache.match(key)).then((hit) => hit ?? Promise.reject(new Error('not stored')));
  // Whichever comes first; with neither, the network's own answer or error.
  return Promise.any([usable, stored]).catch(() => network);
}

self.addEventListener('fetch', (event) => {
  const key = shellKey(event.request);
  if (key) event.respondWith(answer(event.request, key));
});
