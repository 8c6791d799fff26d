// DOM helpers. User text only ever goes in through textContent: never innerHTML.
// Dates, times and money are written in the site's locale (settings.js, from GET /config.json).
import { locale } from './settings.js';

/**
 * Build an element. attrs: plain attributes, plus `class`, `text`, `dataset`, `on` ({event: fn})
 * and properties such as `value`, `disabled`, `hidden`. Children: nodes or strings (as text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key in PROPS) node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

const PROPS = { value: 1, disabled: 1, hidden: 1, checked: 1, selected: 1, required: 1 };

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace a container's content. */
export function mount(container, ...children) {
  container.replaceChildren();
  append(container, children);
  return container;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** Integer minor units -> "₹1,234.50" (en-IN groups lakhs: "₹1,23,456.00"). */
export function money(minor, currency = 'INR') {
  const value = (Number(minor) || 0) / 100;
  try {
    return new Intl.NumberFormat(locale(), { style: 'currency', currency }).format(value);
  } catch {
    return `${value.toFixed(2)} ${currency}`;
  }
}

/** "12 s ago", "3 min ago", "2 h ago" from an ISO string or ms. */
export function ago(when, now = Date.now()) {
  const ms = typeof when === 'number' ? when : Date.parse(when);
  if (!Number.isFinite(ms)) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "3 Dec 2026, 7:21 pm" (en-IN) from an ISO instant, in this device's time zone. */
export function dateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(d);
}

/** "Sat, 12 Dec 2026" from a calendar date "2026-12-12" (no time zone: the day is the day). */
export function dateOnly(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day ?? ''));
  if (!m) return String(day ?? '');
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return new Intl.DateTimeFormat(locale(), { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    timeZone: 'UTC' }).format(d);
}

/** An earnings period in words: "Wed, 25 Nov 2026", "Week 48, 2026" or "November 2026". */
export function periodLabel(period) {
  const text = String(period ?? '');
  const week = /^(\d{4})-W(\d{2})$/.exec(text);
  if (week) return `Week ${Number(week[2])}, ${week[1]}`;
  const month = /^(\d{4})-(\d{2})$/.exec(text);
  if (month) {
    return new Intl.DateTimeFormat(locale(), { month: 'long', year: 'numeric', timeZone: 'UTC' })
      .format(new Date(Date.UTC(Number(month[1]), Number(month[2]) - 1, 1)));
  }
  return dateOnly(text);
}

/** "12 Mar 2026" from an ISO instant, in this device's time zone. */
export function dayOf(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium' }).format(d);
}

/** "7:21 pm" (en-IN) from an ISO instant; `timeZone` is the venue's when given. */
export function timeOnly(iso, timeZone) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  try {
    return new Intl.DateTimeFormat(locale(), { hour: 'numeric', minute: '2-digit', timeZone: timeZone || undefined }).format(d);
  } catch {  // an unknown time zone in an old browser: the viewer's own clock
    return new Intl.DateTimeFormat(locale(), { hour: 'numeric', minute: '2-digit' }).format(d);
  }
}

/** A customer's name for an order: the last 6 characters of its id, upper-cased (as emails say). */
export const orderRef = (id) => String(id ?? '').slice(-6).toUpperCase();

/** "5–9 min" from an ETA in seconds: a window, not a false countdown. */
export function etaWindow(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return 'unknown';
  const mid = seconds / 60;
  if (mid < 1.5) return 'under 2 min';
  const spread = Math.max(1, Math.round(mid * 0.2));
  return `${Math.max(1, Math.round(mid - spread))}–${Math.round(mid + spread)} min`;
}

export const STATUS_LABELS = {
  pending_payment: 'Awaiting payment', placed: 'Placed', offered: 'Finding a partner',
  assigned: 'Partner assigned', en_route: 'On the way', arrived: 'Arrived',
  setup_complete: 'Set up', completed: 'Completed', cancelled: 'Cancelled', refunded: 'Refunded',
};
export const statusLabel = (s) => STATUS_LABELS[s] ?? String(s ?? '');

export function statusBadge(status) {
  return el('span', { class: `badge status-${status}`, text: statusLabel(status) });
}

/** Announce a message in an aria-live region; kind: info | error | success. */
export function say(region, message, kind = 'info') {
  if (!region) return;
  region.textContent = message ?? '';
  region.dataset.kind = kind;
  region.hidden = !message;
}

/** Short-lived notification in the page's toast stack (role=status or alert). */
export function toast(message, kind = 'info', ms = 6000) {
  let stack = document.getElementById('toasts');
  if (!stack) {
    stack = el('div', { id: 'toasts', class: 'toasts', 'aria-live': 'polite' });
    document.body.append(stack);
  }
  const item = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    el('span', { text: message }),
    el('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', text: '×',
      on: { click: () => item.remove() } }));
  stack.append(item);
  if (ms) setTimeout(() => item.remove(), ms);
  return item;
}

/** Loading / empty / error placeholders. */
export const loading = (what = 'Loading…') => el('p', { class: 'muted loading', role: 'status', text: what });
export const empty = (what) => el('p', { class: 'empty', text: what });
export function errorBox(err, retry) {
  return el('div', { class: 'error-box', role: 'alert' },
    el('p', { text: err?.message || 'Something went wrong.' }),
    retry ? el('button', { type: 'button', class: 'secondary', text: 'Try again', on: { click: retry } }) : null);
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return el('div', { class: 'field' },
    el('label', { for: id, text: label }), input, hint ? el('small', { class: 'hint', text: hint }) : null);
}

/**
 * Show `message` under `input` (in its .field) in plain words, mark the input invalid and focus it;
 * the note goes as soon as the input changes. Returns the note.
 */
export function fieldError(input, message) {
  if (!input) return null;
  const id = `${input.id || input.name}-error`;
  let note = document.getElementById(id);
  if (!note) {
    note = el('p', { id, class: 'field-error' });
    (input.closest('.field, fieldset') ?? input.parentElement).append(note);
  }
  note.textContent = message;
  input.setAttribute('aria-invalid', 'true');
  const described = (input.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean);
  if (!described.includes(id)) input.setAttribute('aria-describedby', [...described, id].join(' '));
  const clear = () => clearFieldError(input);
  input.addEventListener('input', clear, { once: true });
  input.addEventListener('change', clear, { once: true });
  input.focus();
  return note;
}

export function clearFieldError(input) {
  if (!input) return;
  const id = `${input.id || input.name}-error`;
  document.getElementById(id)?.remove();
  input.removeAttribute('aria-invalid');
  const rest = (input.getAttribute('aria-describedby') ?? '').split(/\s+/).filter((x) => x && x !== id);
  if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
  else input.removeAttribute('aria-describedby');
}

/** Run an async action with the button disabled and errors shown in `region`. */
export async function busy(button, region, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (err) {
    say(region, err?.message || String(err), 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

/** Tab switching for [role=tablist] buttons with aria-controls. */
export function tabs(tablist, onChange) {
  const buttons = $$('[role=tab]', tablist);
  const select = (btn) => {
    for (const b of buttons) {
      const on = b === btn;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
      const panel = document.getElementById(b.getAttribute('aria-controls'));
      if (panel) panel.hidden = !on;
    }
    onChange?.(btn.dataset.tab);
  };
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => select(b));
    b.addEventListener('keydown', (e) => {
      const step = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!step) return;
      const next = buttons[(i + step + buttons.length) % buttons.length];
      next.focus();
      select(next);
    });
  });
  return { select: (name) => select(buttons.find((b) => b.dataset.tab === name) ?? buttons[0]) };
}

export const idOf = (doc) => doc?.id ?? doc?._id;
