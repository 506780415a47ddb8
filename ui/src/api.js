// REST calls to the daemon: the bearer token, the project, errors as ApiError.

const TOKEN_KEY = 'vessel.token';
const PROJECT_KEY = 'vessel.project';

export const ROLES = ['viewer', 'user', 'operator', 'admin'];

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || null,
  identity: null, // Identity from GET /1.0/auth/self
  project: sessionStorage.getItem(PROJECT_KEY) || null,
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    // Set when a global handler (401: back to login, 403: the banner) has dealt with it.
    this.handled = false;
  }
}

const handlers = { unauthorized: () => {}, forbidden: () => {} };

export function setHandlers(h) {
  Object.assign(handlers, h);
}

export function setToken(token) {
  session.token = token || null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function setProject(project) {
  session.project = project || null;
  if (project) sessionStorage.setItem(PROJECT_KEY, project);
  else sessionStorage.removeItem(PROJECT_KEY);
}

export function can(role) {
  const mine = session.identity ? ROLES.indexOf(session.identity.role) : -1;
  return mine >= 0 && mine >= ROLES.indexOf(role);
}

export const isAdmin = () => can('admin');

// Endpoints about the server as a whole take no ?project=.
const SERVER_SCOPED = [
  /^\/1\.0$/,
  /^\/1\.0\/auth\//,
  /^\/1\.0\/config$/,
  /^\/1\.0\/projects(\/|$)/,
  /^\/1\.0\/storage\/pools(\/[^/]+(\/(status|repair))?)?$/,
  /^\/1\.0\/backups\/gc$/,
];

export function withProject(path) {
  const bare = path.split('?')[0];
  if (!session.project || !isAdmin() || SERVER_SCOPED.some((r) => r.test(bare))) return path;
  return path + (path.includes('?') ? '&' : '?') + 'project=' + encodeURIComponent(session.project);
}

export const enc = encodeURIComponent;

// One API call. Resolves to the decoded JSON (or text); rejects with ApiError.
// Options: body (JSON), quiet (no global 401/403 handling), signal.
export async function api(method, path, { body, quiet = false, signal, token } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token === undefined ? session.token : token;
  if (t) headers.Authorization = 'Bearer ' + t;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(withProject(path), {
      method, headers, body: payload, signal, cache: 'no-store', credentials: 'same-origin',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The server cannot be reached' + (e && e.message ? ': ' + e.message : ''));
  }
  if (!res.ok) {
    let msg = res.statusText || 'HTTP ' + res.status;
    try {
      const text = await res.text();
      try {
        const j = JSON.parse(text);
        if (j && typeof j.error === 'string') msg = j.error;
      } catch {
        if (text.trim()) msg = text.trim().slice(0, 300);
      }
    } catch {
      // body unreadable: keep the status text
    }
    const err = new ApiError(res.status, msg);
    if (!quiet && res.status === 401) {
      err.handled = true;
      handlers.unauthorized(err);
    } else if (!quiet && res.status === 403) {
      err.handled = true;
      handlers.forbidden(err);
    }
    throw err;
  }
  if (res.status === 204) return null;
  const ct = res.headers.get('content-type') || '';
  if (ct.includes('json')) return res.json();
  return res.text();
}

const FINAL = new Set(['success', 'failure', 'cancelled']);

// Follows an operation to its end, calling onUpdate with each state; rejects unless it succeeded.
export async function waitOperation(op, onUpdate, signal) {
  let cur = op;
  if (onUpdate) onUpdate(cur);
  while (cur && !FINAL.has(cur.status)) {
    if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
    cur = await api('GET', `/1.0/operations/${enc(cur.id)}/wait?timeout=1`, { signal });
    if (onUpdate) onUpdate(cur);
  }
  if (cur.status !== 'success') {
    throw new ApiError(0, cur.error || `The operation ended: ${cur.status}`);
  }
  return cur;
}

// URL of a WebSocket endpoint on this origin, with the project.
export function wsUrl(path) {
  let p = path;
  if (session.project && isAdmin()) p += (p.includes('?') ? '&' : '?') + 'project=' + enc(session.project);
  const u = new URL(p, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

// Browsers cannot set headers on a WebSocket: the token rides in a subprotocol.
export function wsProtocols() {
  return session.token ? ['vessel.v1', 'vessel.token.' + session.token] : ['vessel.v1'];
}

// Before a console connects: the instance asked for through the REST API (a refused
// WebSocket handshake cannot be read, the API's answer can), shown when it fails; a
// session of an instance that is not running waits for it. True when it may connect.
export async function readyToConnect(s, first) {
  s.status(first ? 'Connecting…' : 'Connection lost — reconnecting…', first ? 'info' : 'warn');
  let inst;
  try {
    inst = await api('GET', `/1.0/instances/${enc(s.instance)}`);
  } catch (e) {
    if (s.disposed) return false;
    if (e.status === 0) {
      s.retry();
      return false;
    }
    s.status(e.message, 'error');
    s.onFatal(e.message, e);
    return false;
  }
  if (s.disposed) return false;
  if (inst.status !== 'running') {
    s.status(`The instance is ${inst.status}; connecting when it runs…`, 'warn');
    s.timer = setTimeout(() => s.connect(first), 3000);
    return false;
  }
  return true;
}
