// A new offer is announced with a short beep (WebAudio) and a buzz (navigator.vibrate), unless
// the partner muted them. Browsers let a page make sound only after a tap on it, so `unlock()` is
// called from taps (going on duty, the sound toggle); until then an alert is silent but harmless.

const MUTED = 'pp-offer-alerts-muted';
const BUZZ_MS = [200, 100, 200];
const BEEPS = [0, 0.25];       // start of each beep, seconds
const BEEP_S = 0.15;
const BEEP_HZ = 880;

let audio = null;
let mutedNow = isMuted();

export function isMuted() {
  try { return localStorage.getItem(MUTED) === '1'; } catch { return false; }
}

export function setMuted(muted) {
  try {
    if (muted) localStorage.setItem(MUTED, '1');
    else localStorage.removeItem(MUTED);
  } catch { /* no storage: the choice lasts for this page only */ }
  mutedNow = muted;
}

/** Make sound possible from now on (call from a tap). */
export function unlock() {
  const Context = window.AudioContext ?? window.webkitAudioContext;
  if (!Context) return;
  try {
    audio ??= new Context();
    if (audio.state === 'suspended') audio.resume().catch(() => {});
  } catch {
    audio = null;
  }
}

function beep() {
  if (!audio || audio.state !== 'running') return false;
  const start = audio.currentTime + 0.02;
  for (const at of BEEPS) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = 'sine';
    osc.frequency.value = BEEP_HZ;
    // A quick fade in and out: a hard edge clicks.
    gain.gain.setValueAtTime(0.0001, start + at);
    gain.gain.exponentialRampToValueAtTime(0.4, start + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + at + BEEP_S);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + at);
    osc.stop(start + at + BEEP_S + 0.02);
  }
  return true;
}

/** Announce a new offer. Returns what was done: {sound, vibration} (both false when muted). */
export function alertOffer() {
  if (mutedNow) return { sound: false, vibration: false };
  let vibration = false;
  try {
    vibration = typeof navigator.vibrate === 'function' && navigator.vibrate(BUZZ_MS);
  } catch { /* not allowed here */ }
  return { sound: beep(), vibration: Boolean(vibration) };
}

/** A single short beep to confirm sound is on (the tap that turned it on also unlocks audio). */
export function testSound() {
  unlock();
  // resume() is asynchronous: give it a moment.
  setTimeout(() => { if (!mutedNow) beep(); }, 60);
}
