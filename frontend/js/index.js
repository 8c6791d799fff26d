// Landing page: featured packages from the public catalog.
import { get, itemsOf } from './api.js';
import { el, mount, loading, empty, errorBox } from './ui.js';
import { packageCard } from './packages.js';
import { serverSettings } from './settings.js';

const box = document.getElementById('featured');

async function loadFeatured() {
  mount(box, loading('Loading packages…'));
  try {
    // Prices are written in the site's locale: its answer is awaited with the packages.
    const [answer] = await Promise.all([get('/api/packages', { sort: 'rating', limit: 6 }), serverSettings()]);
    const items = itemsOf(answer);
    if (!items.length) {
      mount(box, empty('No packages are available yet. Please check back soon.'));
      return;
    }
    mount(box, el('ul', { class: 'packages', id: 'featured-list' },
      items.map((p) => packageCard(p, { label: 'Order', onClick: (pkg) => {
        location.href = `/customer#package=${encodeURIComponent(pkg.id ?? pkg._id)}`;
      } }))));
  } catch (err) {
    mount(box, errorBox(err, loadFeatured));
  }
}

loadFeatured();
