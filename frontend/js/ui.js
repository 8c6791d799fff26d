// DOM helpers. User text only ever goes in through textContent: never innerHTML.

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

/** Integer minor units -> "₹1,234.50". */
export function money(minor, currency = 'INR') {
  const value = (Number(minor) || 0) / 100;
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(value);
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

export function dateTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? '') : d.toLocaleString();
}

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
