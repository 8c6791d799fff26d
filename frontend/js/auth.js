// One-time-code sign-in: ask for an email or phone, send a code, verify it, keep the session.
import { post, setSession, resume, signOut, currentUser, forget } from './api.js';
import { el, mount, field, say, busy } from './ui.js';

const PHONE = /^\+[1-9]\d{6,14}$/;

/** {email} or {phone} from what the user typed, or null when it is neither. */
export function destination(text) {
  const value = text.trim();
  if (value.includes('@')) return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value) ? { email: value.toLowerCase() } : null;
  const phone = value.replace(/[\s()-]/g, '');
  return PHONE.test(phone) ? { phone } : null;
}

/**
 * Render the two-step sign-in form into `container`.
 * opts: { title, intro, roles: ['customer'], onSignedIn(user) }
 */
export function renderSignIn(container, opts) {
  const status = el('p', { class: 'status', role: 'status', 'aria-live': 'polite', hidden: true });
  const who = el('input', { type: 'text', name: 'destination', autocomplete: 'email', required: true,
    placeholder: 'you@example.com or +919876543210', 'aria-describedby': 'signin-hint' });
  const step1 = el('form', { class: 'stack', id: 'signin-form', novalidate: true },
    field('Email or mobile number', who),
    el('small', { id: 'signin-hint', class: 'hint', text: 'We will send you a 6-digit code. No password needed.' }),
    el('button', { type: 'submit', class: 'primary', text: 'Send code' }));

  const code = el('input', { type: 'text', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code',
    pattern: '[0-9]{6}', maxlength: '6', required: true });
  const devBox = el('p', { class: 'dev-code', hidden: true });
  const sentTo = el('p', { class: 'muted' });
  const resend = el('button', { type: 'button', class: 'link', text: 'Send a new code' });
  const back = el('button', { type: 'button', class: 'link', text: 'Use another email or number' });
  const step2 = el('form', { class: 'stack', id: 'verify-form', hidden: true, novalidate: true },
    sentTo, devBox, field('Code', code),
    el('button', { type: 'submit', class: 'primary', text: 'Sign in' }),
    el('div', { class: 'row' }, resend, back));

  mount(container,
    el('section', { class: 'card signin', 'aria-labelledby': 'signin-title' },
      el('h2', { id: 'signin-title', text: opts.title || 'Sign in' }),
      opts.intro ? el('p', { class: 'muted', text: opts.intro }) : null,
      step1, step2, status));

  let target = null;

  async function send(button) {
    say(status, '');
    await busy(button, status, async () => {
      const answer = await post('/api/auth/send-otp', target);
      sentTo.textContent = `We sent a code to ${target.email ?? target.phone}. It is valid for 5 minutes.`;
      if (answer?.dev_code) {
        // Development servers return the code so you can sign in without a mailbox.
        mount(devBox, 'Development code: ', el('strong', { id: 'dev-code', text: answer.dev_code }), ' ',
          el('button', { type: 'button', class: 'link', text: 'Fill in',
            on: { click: () => { code.value = answer.dev_code; code.focus(); } } }));
        devBox.hidden = false;
      } else {
        devBox.hidden = true;
      }
      step1.hidden = true;
      step2.hidden = false;
      code.value = '';
      code.focus();
    });
  }

  step1.addEventListener('submit', (e) => {
    e.preventDefault();
    target = destination(who.value);
    if (!target) {
      say(status, 'Enter an email address, or a mobile number with its country code (e.g. +91…).', 'error');
      who.focus();
      return;
    }
    send(step1.querySelector('button[type=submit]'));
  });
  resend.addEventListener('click', () => send(resend));
  back.addEventListener('click', () => {
    step2.hidden = true;
    step1.hidden = false;
    say(status, '');
    who.focus();
  });
  step2.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!/^\d{6}$/.test(code.value.trim())) {
      say(status, 'The code has 6 digits.', 'error');
      code.focus();
      return;
    }
    busy(step2.querySelector('button[type=submit]'), status, async () => {
      const answer = await post('/api/auth/verify-otp', { ...target, code: code.value.trim() });
      setSession(answer);
      const user = currentUser();
      if (opts.roles && !opts.roles.includes(user?.role)) {
        await signOut();
        throw new Error(`This is a ${user?.role ?? 'different'} account; this page is for ${opts.roles.join(' or ')} accounts.`);
      }
      opts.onSignedIn(user);
    });
  });
  who.focus();
}

/** Restore a session for one of `roles` if this browser has one. */
export async function resumeFor(roles) {
  const user = await resume();
  if (user && roles.includes(user.role)) return user;
  if (user) forget();  // signed in elsewhere as another role: this page starts signed out
  return null;
}

/** A "signed in as … / Sign out" bar in the header. */
export function renderAccount(container, user, onSignedOut) {
  if (!user) {
    mount(container);
    return;
  }
  mount(container,
    el('span', { class: 'muted', text: user.name || user.email || user.phone || 'Signed in' }),
    el('button', { type: 'button', class: 'link', text: 'Sign out', on: { click: async () => {
      await signOut();
      onSignedOut?.();
    } } }));
}
