// Paying for an order: the provider's checkout (Stripe's Payment Element, Razorpay Checkout, or the
// offline test form of the payment simulator), and the words the pages use for an order's money.
// The server decides what is owed next and through which providers; a provider's script is loaded
// only once the server says that provider is on, so the offline product loads nothing from outside.
import { get, post, ApiError } from './api.js';
import { el, mount, money, say, loading, errorBox } from './ui.js';

// Mirrors the server's PARTYPILOT_PAYMENT_EXPIRY_S default (docs/payments.md, "Unpaid orders").
// The server's policy, from GET /api/payments/config (live bindings: importers see the update).
// Until the answer arrives these are the documented defaults.
export let PAYMENT_WINDOW_MIN = 30;
export let REFUND_AFTER_ASSIGN_BP = 5000;

// Orders that can still take money (api/paymentflow.py PAYABLE_ORDER).
const PAYABLE = new Set(['pending_payment', 'placed', 'offered', 'assigned', 'en_route', 'arrived', 'setup_complete',
  'completed']);
const CAPTURED = new Set(['succeeded', 'partially_refunded', 'refunded']);

export const PAYMENT_STATUS_LABELS = {
  created: 'Started, not paid', succeeded: 'Paid', failed: 'Declined', partially_refunded: 'Partly refunded',
  refunded: 'Refunded',
};
export const KIND_LABELS = { deposit: 'Deposit', full: 'Full price', balance: 'Balance' };
export const REFUND_STATUS_LABELS = { pending: 'Refund in progress', succeeded: 'Refunded', failed: 'Refund refused by the provider' };
export const PROVIDER_LABELS = { simulated: 'Test checkout', stripe: 'Stripe', razorpay: 'Razorpay' };

const num = (v) => Number(v) || 0;

/** Whether the customer can pay something on this order now. */
export const canPay = (order) => order.payment_option !== 'cash' && num(order.amount_due) > 0 && PAYABLE.has(order.status);

/** What is left to refund from a payment: captured minus refunded minus refunds still pending. */
export function refundable(payment) {
  if (!CAPTURED.has(payment.status)) return 0;
  const held = (payment.refunds ?? []).filter((r) => r.status === 'pending' || r.status === 'succeeded')
    .reduce((sum, r) => sum + num(r.amount), 0);
  return Math.max(0, num(payment.amount) - Math.max(held, num(payment.amount_refunded)));
}

/** The order's money in words, truthful at every stage: "Deposit ₹6,000.00 paid · ₹14,000.00 due". */
export function moneyWords(order) {
  const m = (v) => money(v, order.currency);
  const price = num(order.price);
  const paid = num(order.amount_paid);
  const refunded = num(order.amount_refunded);
  const due = num(order.amount_due);
  const closed = order.status === 'cancelled' || order.status === 'refunded';
  if (order.payment_option === 'cash') {
    if (closed) return 'Cash on the day: nothing due';
    if (order.status === 'completed') return `Cash on the day: ${m(price)}`;
    return `Cash on the day: ${m(due)} due`;
  }
  const parts = [];
  if (refunded > 0 && refunded >= paid) parts.push(`${m(refunded)} refunded in full`);
  else if (refunded > 0) parts.push(`${m(paid)} paid`, `${m(refunded)} refunded`);
  else if (paid >= price && price > 0) parts.push(`Paid in full: ${m(paid)}`);
  else if (paid > 0 && order.payment_option === 'deposit' && paid === num(order.deposit_amount)) parts.push(`Deposit ${m(paid)} paid`);
  else if (paid > 0) parts.push(`${m(paid)} paid`);
  else if (closed) parts.push('Nothing paid');
  else if (order.payment_option === 'deposit' && num(order.deposit_amount) > 0) parts.push(`Nothing paid yet · deposit ${m(order.deposit_amount)} due now`);
  else parts.push('Nothing paid yet');
  if (due > 0 && !(paid === 0 && order.payment_option === 'deposit' && num(order.deposit_amount) > 0)) parts.push(`${m(due)} due`);
  return parts.join(' · ');
}

/** The pay button's words: "Complete payment", "Pay deposit ₹6,000.00", "Pay balance ₹14,000.00". */
export function payLabel(order) {
  const m = (v) => money(v, order.currency);
  if (order.status === 'pending_payment') return 'Complete payment';
  if (num(order.amount_paid) === 0 && order.payment_option === 'deposit' && num(order.deposit_amount) > 0) {
    return `Pay deposit ${m(order.deposit_amount)}`;
  }
  if (num(order.amount_paid) === 0) return `Pay ${m(order.amount_due)}`;
  return `Pay balance ${m(order.amount_due)}`;
}

// ---- configuration and outside scripts -------------------------------------------------------

let configAnswer = null;

/** GET /api/payments/config, once per page (a failure is asked again next time). */
export function paymentsConfig() {
  configAnswer ??= get('/api/payments/config').then((config) => {
    PAYMENT_WINDOW_MIN = Math.round(config.payment_expiry_s / 60);
    REFUND_AFTER_ASSIGN_BP = config.refund_after_assign_bp;
    return config;
  }).catch((err) => {
    configAnswer = null;
    throw err;
  });
  return configAnswer;
}

const scripts = new Map();

/** Load a provider's script once; resolves with the global it defines. */
function loadScript(src, globalName, what) {
  if (window[globalName]) return Promise.resolve(window[globalName]);
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const node = el('script', { src, async: true });
      node.addEventListener('load', () => (window[globalName] ? resolve(window[globalName])
        : reject(new Error(`The ${what} payment form did not start. Try again in a moment.`))));
      node.addEventListener('error', () => {
        scripts.delete(src);
        node.remove();
        reject(new Error(`Could not load the ${what} payment form. Check your connection and try again.`));
      });
      document.head.append(node);
    }));
  }
  return scripts.get(src);
}

// ---- answers and errors ----------------------------------------------------------------------

/** Words for a failed payment call; `code` lets the caller act on it. */
function problem(err) {
  if (!(err instanceof ApiError)) return err?.message || String(err);
  switch (err.code) {
    case 'nothing_due': case 'already_paid': return 'This order is already paid.';
    case 'order_closed': return 'This order is closed and takes no more payments.';
    case 'cash_order': return 'This order is paid in cash to the partner on the day.';
    case 'payment_provider_unavailable':
      return 'The payment service is not answering. Nothing was charged: try again in a moment.';
    case 'payment_refused': return `The payment provider refused: ${err.message}`;
    case 'invalid_signature': return 'The payment could not be verified. Nothing was recorded: try again.';
    default: return err.message;
  }
}

/** What a confirm/verify/checkout answer means for the customer: paid, declined or still processing. */
export function outcomeOf(answer) {
  const payment = answer?.payment ?? {};
  if (CAPTURED.has(payment.status)) return { paid: true, payment, order: answer.order };
  if (payment.status === 'failed') {
    const why = payment.failure_message ? `: ${String(payment.failure_message).replace(/[.\s]+$/, '')}` : '';
    return { declined: true, payment, message: `Payment declined${why}. No money was taken — you can try again.` };
  }
  return { pending: true, payment, order: answer?.order,
    message: 'Your payment is still being processed. Your order updates as soon as it is confirmed.' };
}

/** After Stripe sent the customer away (3-D Secure, a bank page) and back: record the payment. */
export async function finishStripeReturn(orderId, paymentIntentId) {
  return outcomeOf(await post('/api/payments/stripe/confirm', { order_id: orderId, payment_intent_id: paymentIntentId }));
}

// ---- the checkout ----------------------------------------------------------------------------

const PROVIDERS = {
  simulated: {
    choice: 'Test checkout (no real money)',
    prepare: (order) => post('/api/payments/simulated/create-payment', { order_id: order.id }),
    render: renderSimulated,
  },
  stripe: {
    choice: 'Card or wallet (Stripe)',
    prepare: (order) => post('/api/payments/stripe/create-intent', { order_id: order.id }),
    render: renderStripe,
  },
  razorpay: {
    choice: 'UPI, card or netbanking (Razorpay)',
    prepare: (order) => post('/api/payments/razorpay/create-order', { order_id: order.id }),
    render: renderRazorpay,
  },
};

/**
 * Show the checkout for what `order` owes next in `box`.
 * handlers: { onPaid(outcome), onLeave(), customer } — onPaid after a captured (or still
 * processing) payment, onLeave when the customer leaves without paying.
 */
export async function openCheckout(box, order, handlers) {
  const retry = () => openCheckout(box, order, handlers);
  mount(box, loading('Preparing the checkout…'));
  let config;
  try {
    config = await paymentsConfig();
  } catch (err) {
    mount(box, errorBox(err, retry), leaveButton(handlers));
    return;
  }
  const providers = (config.providers ?? []).filter((name) => name in PROVIDERS);
  const pending = order.status === 'pending_payment';
  const status = el('p', { class: 'status', id: 'checkout-status', role: 'status', 'aria-live': 'polite', hidden: true });
  const summary = el('div', { class: 'pay-now', id: 'pay-now' }, loading('Working out what is due…'));
  const area = el('div', { class: 'stack', id: 'pay-area' });
  const ctx = { order, config, status, handlers, box };
  mount(box,
    el('h2', { id: 'checkout-title', text: num(order.amount_paid) > 0 ? 'Pay the balance' : 'Pay for your order' }),
    el('p', { class: 'muted', text: [order.package?.name, order.event_date].filter(Boolean).join(' · ') }),
    summary,
    providers.length > 1 ? chooser(providers, (name) => showProvider(name)) : null,
    area, status,
    pending ? el('p', { class: 'hint hold-note', text: `We hold your order until it is paid and look for a partner once the payment goes through. Unpaid orders are cancelled ${PAYMENT_WINDOW_MIN} minutes after they are placed.` }) : null,
    leaveButton(handlers, pending ? 'Pay later' : 'Back to the order'));
  if (!providers.length) {
    mount(summary);
    mount(area, errorBox(new Error('Online payment is not available right now. Please try again later.')));
    return;
  }

  let shown = 0;
  async function showProvider(name) {
    const turn = ++shown;  // a later choice wins over a slower earlier one
    say(status, '');
    mount(area, loading('Starting the checkout…'));
    let charge;
    try {
      charge = await PROVIDERS[name].prepare(order);
    } catch (err) {
      if (turn !== shown) return;
      if (err instanceof ApiError && (err.code === 'nothing_due' || err.code === 'already_paid')) {
        handlers.onPaid({ paid: true, already: true, order: { id: order.id } });
        return;
      }
      mount(summary);
      mount(area, el('div', { class: 'error-box', role: 'alert' }, el('p', { text: problem(err) }),
        err instanceof ApiError && err.status >= 500
          ? el('button', { type: 'button', class: 'secondary', text: 'Try again', on: { click: () => showProvider(name) } }) : null));
      return;
    }
    if (turn !== shown) return;
    renderSummary(summary, order, charge);
    mount(area);
    try {
      await PROVIDERS[name].render(area, charge, ctx);
    } catch (err) {
      if (turn === shown) mount(area, errorBox(err, () => showProvider(name)));
    }
  }
  await showProvider(providers[0]);
}

function leaveButton(handlers, text = 'Back') {
  return el('button', { type: 'button', class: 'link', id: 'checkout-leave', text, on: { click: () => handlers.onLeave() } });
}

function chooser(providers, onPick) {
  return el('fieldset', { class: 'provider-choice' }, el('legend', { text: 'How would you like to pay?' }),
    providers.map((name, i) => el('label', { class: 'choice' },
      el('input', { type: 'radio', name: 'pay-provider', value: name, checked: i === 0,
        on: { change: (e) => { if (e.currentTarget.checked) onPick(name); } } }),
      PROVIDERS[name].choice)));
}

/** "Paying now: ₹6,000.00 — Deposit. The rest, ₹14,000.00, is due on the day." */
function renderSummary(box, order, charge) {
  const m = (v) => money(v, charge.currency || order.currency);
  const rest = num(order.price) - num(order.amount_paid) - num(charge.amount);
  const explain = {
    deposit: rest > 0 ? `Deposit. The rest, ${m(rest)}, is due on the day.` : 'Deposit.',
    full: 'The full price of your order.',
    balance: 'The balance: what is left of the price.',
  }[charge.kind] ?? '';
  mount(box,
    el('span', { class: 'label', text: 'Paying now' }),
    el('strong', { class: 'amount', id: 'pay-amount', text: m(charge.amount) }),
    el('span', { class: 'muted', id: 'pay-kind', text: explain }),
    el('span', { class: 'muted', text: `Order total ${m(order.price)}${num(order.amount_paid) ? ` · paid so far ${m(order.amount_paid)}` : ''}` }));
}

/** Disable the pay buttons while a request runs; report its outcome. */
async function paying(buttons, ctx, action) {
  for (const b of buttons) b.disabled = true;
  say(ctx.status, 'Paying…');
  try {
    const outcome = outcomeOf(await action());
    if (outcome.declined) {
      say(ctx.status, outcome.message, 'error');
      return;
    }
    say(ctx.status, outcome.paid ? 'Payment received.' : outcome.message, 'success');
    ctx.handlers.onPaid(outcome);
  } catch (err) {
    if (err instanceof ApiError && (err.code === 'nothing_due' || err.code === 'already_paid')) {
      ctx.handlers.onPaid({ paid: true, already: true, order: { id: ctx.order.id } });
      return;
    }
    say(ctx.status, problem(err), 'error');
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

// The simulator: a local card form. Nothing leaves the machine and nothing is charged.
function renderSimulated(area, charge, ctx) {
  const m = money(charge.amount, charge.currency);
  const input = (id, value, attrs = {}) => el('input', { id, value, autocomplete: 'off', inputmode: 'numeric', ...attrs });
  const pay = el('button', { type: 'submit', class: 'primary big', id: 'pay-submit', text: `Pay ${m}` });
  const decline = el('button', { type: 'button', class: 'secondary', id: 'pay-decline', text: 'Simulate a declined card' });
  const run = (outcome) => paying([pay, decline], ctx,
    () => post('/api/payments/simulated/checkout', { order_id: ctx.order.id, outcome }));
  const form = el('form', { class: 'stack test-checkout', id: 'test-checkout', novalidate: true },
    el('fieldset', { class: 'stack' },
      el('legend', {}, el('span', { class: 'badge test-badge', text: 'TEST' }), ' Test checkout — no real money'),
      el('p', { class: 'hint', text: 'A demo of paying: no card is charged, whatever you type.' }),
      el('div', { class: 'field' }, el('label', { for: 'card-number', text: 'Card number' }),
        input('card-number', '4242 4242 4242 4242', { maxlength: '23' })),
      el('div', { class: 'grid2 card-extra' },
        el('div', { class: 'field' }, el('label', { for: 'card-expiry', text: 'Expiry' }), input('card-expiry', '12 / 34', { maxlength: '7' })),
        el('div', { class: 'field' }, el('label', { for: 'card-cvc', text: 'CVC' }), input('card-cvc', '123', { maxlength: '4' })))),
    pay, decline);
  form.addEventListener('submit', (e) => { e.preventDefault(); run('succeeded'); });
  decline.addEventListener('click', () => run('failed'));
  mount(area, form);
}

// Stripe: the Payment Element in Stripe's own frame; the server re-reads the intent on confirm.
async function renderStripe(area, charge, ctx) {
  mount(area, loading('Loading the secure card form…'));
  await loadScript('https://js.stripe.com/v3', 'Stripe', 'Stripe');
  const stripe = window.Stripe(charge.publishable_key || ctx.config.stripe_publishable_key);
  const elements = stripe.elements({ clientSecret: charge.client_secret });
  const frame = el('div', { id: 'stripe-payment-element', class: 'provider-frame' });
  const pay = el('button', { type: 'submit', class: 'primary big', id: 'pay-submit', text: `Pay ${money(charge.amount, charge.currency)}` });
  const form = el('form', { class: 'stack', id: 'stripe-form', novalidate: true }, frame, pay);
  mount(area, form);
  elements.create('payment').mount(frame);
  // Only methods that must leave the page (a bank's 3-D Secure page) come back here, to be recorded.
  const back = new URL('/customer', location.origin);
  back.searchParams.set('order', ctx.order.id);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    paying([pay], ctx, async () => {
      const { error, paymentIntent } = await stripe.confirmPayment({
        elements, redirect: 'if_required', confirmParams: { return_url: back.href } });
      // Stripe's own words (a declined card, an incomplete number); nothing reached our server.
      if (error) throw new Error(`${error.message || 'The payment did not go through.'} Nothing was charged.`);
      return post('/api/payments/stripe/confirm',
        { order_id: ctx.order.id, payment_intent_id: paymentIntent?.id ?? charge.payment_intent_id });
    });
  });
}

// Razorpay: its Checkout opens over the page; its handler gets the signed answer we verify.
async function renderRazorpay(area, charge, ctx) {
  mount(area, loading('Loading Razorpay Checkout…'));
  await loadScript('https://checkout.razorpay.com/v1/checkout.js', 'Razorpay', 'Razorpay');
  const pay = el('button', { type: 'button', class: 'primary big', id: 'pay-submit', text: `Pay ${money(charge.amount, charge.currency)}` });
  pay.addEventListener('click', () => {
    say(ctx.status, '');
    const checkout = new window.Razorpay({
      key: charge.key_id || ctx.config.razorpay_key_id, amount: charge.amount, currency: charge.currency,
      order_id: charge.razorpay_order_id, name: 'PartyPilot',
      description: `${KIND_LABELS[charge.kind] ?? 'Payment'} · ${ctx.order.package?.name ?? 'your order'}`,
      prefill: { email: ctx.handlers.customer?.email ?? '', contact: ctx.handlers.customer?.phone ?? '' },
      handler: (answer) => paying([pay], ctx, () => post('/api/payments/razorpay/verify', {
        order_id: ctx.order.id, razorpay_order_id: answer.razorpay_order_id,
        razorpay_payment_id: answer.razorpay_payment_id, razorpay_signature: answer.razorpay_signature })),
      modal: { ondismiss: () => { if (!ctx.status.textContent) say(ctx.status, 'The payment window was closed. Nothing was charged.'); } },
    });
    checkout.on('payment.failed', (answer) => say(ctx.status,
      `Payment declined${answer?.error?.description ? `: ${answer.error.description}` : ''}. No money was taken — you can try again.`, 'error'));
    checkout.open();
  });
  mount(area, pay);
}
