// Package cards and details, shared by the landing page and the customer app.
import { el, money } from './ui.js';

export const CATEGORIES = ['Kids', 'Weddings', 'Corporate', 'Casual', 'Festival', 'Themed'];

export function packageImage(p, cls = 'thumb') {
  const src = Array.isArray(p.images) && p.images.length ? p.images[0] : null;
  if (!src) return el('div', { class: cls, role: 'img', 'aria-label': `${p.name ?? 'Package'} (no picture)` });
  const img = el('img', { class: cls, src, alt: p.name ?? '', loading: 'lazy', width: '640', height: '360' });
  return img;
}

export function rating(p) {
  if (!p.rating_count) return el('span', { class: 'muted', text: 'No reviews yet' });
  return el('span', { 'aria-label': `Rated ${Number(p.rating_avg).toFixed(1)} out of 5 from ${p.rating_count} reviews`,
    text: `★ ${Number(p.rating_avg).toFixed(1)} (${p.rating_count})` });
}

/** A package card; `action` is an optional {label, onClick} button. */
export function packageCard(p, action) {
  return el('li', { class: 'card package', dataset: { id: p.id ?? p._id } },
    packageImage(p),
    el('div', { class: 'body' },
      el('div', { class: 'spread' }, el('span', { class: 'badge', text: p.category ?? '' }), rating(p)),
      el('h3', { class: 'package-name', text: p.name ?? '' }),
      el('p', { class: 'muted', text: truncate(p.description ?? '', 140) }),
      el('div', { class: 'spread' },
        el('span', { class: 'price', text: money(p.price, p.currency) }),
        el('span', { class: 'muted', text: [p.capacity ? `up to ${p.capacity} guests` : '', p.duration_min ? durationText(p.duration_min) : ''].filter(Boolean).join(' · ') })),
      action ? el('div', { class: 'actions' }, el('button', { type: 'button', class: 'secondary', text: action.label,
        'aria-label': `${action.label}: ${p.name ?? ''}`, on: { click: () => action.onClick(p) } })) : null));
}

export function durationText(minutes) {
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return h ? `${h} h${m ? ` ${m} min` : ''}` : `${m} min`;
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
