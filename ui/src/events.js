// The event stream (/1.0/events/websocket): one JSON event per text message.
// Pages subscribe; after a reconnect they get {kind: 'resync'} to fetch what they missed.

import { api, wsUrl, wsProtocols } from './api.js';

const listeners = new Set();
const statusListeners = new Set();
let ws = null;
let timer = null;
let running = false;
let backoff = 1000;
let status = 'off';

export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onEventsStatus(fn) {
  statusListeners.add(fn);
  fn(status);
  return () => statusListeners.delete(fn);
}

function setStatus(s) {
  status = s;
  for (const fn of statusListeners) fn(s);
}

function emit(ev) {
  for (const fn of [...listeners]) {
    try {
      fn(ev);
    } catch {
      // a listener's failure must not stop the others
    }
  }
}

export function startEvents() {
  stopEvents();
  running = true;
  connect();
}

export function stopEvents() {
  running = false;
  clearTimeout(timer);
  if (ws) {
    ws.onclose = null;
    ws.onerror = null;
    ws.onmessage = null;
    ws.close();
    ws = null;
  }
  setStatus('off');
}

function connect() {
  setStatus('connecting');
  let sock;
  try {
    sock = new WebSocket(wsUrl('/1.0/events/websocket'), wsProtocols());
  } catch {
    retry();
    return;
  }
  ws = sock;
  let opened = false;
  sock.onopen = () => {
    opened = true;
    backoff = 1000;
    setStatus('live');
    emit({ kind: 'resync' });
  };
  sock.onmessage = (m) => {
    if (typeof m.data !== 'string') return;
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch {
      return;
    }
    if (ev && !ev.kind && ev.type) ev.kind = ev.type;
    emit(ev);
  };
  sock.onerror = () => {};
  sock.onclose = () => {
    if (ws !== sock) return;
    ws = null;
    if (!running) return;
    if (opened) emit({ kind: 'resync' });
    retry();
  };
}

function retry() {
  setStatus('reconnecting');
  clearTimeout(timer);
  timer = setTimeout(async () => {
    // A refused handshake cannot be read: ask the API whether we are still welcome.
    try {
      await api('GET', '/1.0/auth/self');
    } catch (e) {
      if (e.status === 401) return; // the session has ended; the login page is shown
    }
    if (running) connect();
  }, backoff);
  backoff = Math.min(backoff * 2, 15000);
}

// Whether an event concerns instances (lifecycle of one, or an operation acting on one).
export function aboutInstances(ev) {
  if (!ev) return false;
  if (ev.kind === 'resync') return true;
  if (ev.source && ev.source.startsWith('/1.0/instances')) return true;
  if (ev.action && ev.action.startsWith('instance')) return true;
  const op = ev.operation;
  return !!(op && (op.resources || []).some((r) => r.startsWith('/1.0/instances')));
}
