// Vessel dashboard: login, the page frame (header, navigation, project, error banner) and
// the hash router. Pages live in pages/*.js and render into the main area.

import { h, clear } from './dom.js';
import { api, session, setToken, setProject, setHandlers, can, isAdmin } from './api.js';
import { startEvents, stopEvents, onEventsStatus } from './events.js';
import * as instances from './pages/instances.js';
import * as instance from './pages/instance.js';
import * as images from './pages/images.js';
import * as storage from './pages/storage.js';
import * as networks from './pages/networks.js';
import * as projects from './pages/projects.js';
import * as operations from './pages/operations.js';
import * as audit from './pages/audit.js';

const NO_AUTO = 'vessel.noauto';
const root = document.getElementById('app');

const ROUTES = [
  { re: /^\/instances$/, page: instances.render, nav: 'instances' },
  { re: /^\/instances\/([^/]+)(?:\/([a-z]+))?$/, page: instance.render, nav: 'instances' },
  { re: /^\/images$/, page: images.render, nav: 'images' },
  { re: /^\/storage$/, page: storage.renderPools, nav: 'storage' },
  { re: /^\/storage\/([^/]+)$/, page: storage.renderPool, nav: 'storage' },
  { re: /^\/volumes$/, page: storage.renderVolumes, nav: 'volumes' },
  { re: /^\/exports$/, page: storage.renderExports, nav: 'exports' },
  { re: /^\/networks$/, page: networks.renderList, nav: 'networks' },
  { re: /^\/networks\/([^/]+)$/, page: networks.renderOne, nav: 'networks' },
  { re: /^\/projects$/, page: projects.render, nav: 'projects' },
  { re: /^\/operations$/, page: operations.render, nav: 'operations' },
  { re: /^\/audit$/, page: audit.render, nav: 'audit', role: 'operator' },
];

const NAV = [
  ['instances', 'Instances'],
  ['images', 'Images'],
  ['storage', 'Storage pools'],
  ['volumes', 'Volumes'],
  ['exports', 'Exports'],
  ['networks', 'Networks'],
  ['projects', 'Projects'],
  ['operations', 'Operations'],
  ['audit', 'Audit log', 'operator'],
];

let frame = null; // the logged-in page frame
let current = null; // {route, match, handle}

// ---- errors -------------------------------------------------------------------------------

function showBanner(message) {
  if (!frame) return;
  frame.bannerText.textContent = message;
  frame.banner.hidden = false;
}

function hideBanner() {
  if (frame) frame.banner.hidden = true;
}

// Shows an error where it belongs: in `target` when given, else in the banner. Errors the
// global handlers took care of (401, 403) are not shown twice.
export function report(err, target) {
  if (!err || err.name === 'AbortError' || err.handled) return;
  const msg = err.message || String(err);
  if (target) {
    target.textContent = msg;
    target.hidden = false;
  } else {
    showBanner(msg);
  }
}

const ctx = { report, showBanner, hideBanner, navigate: (hash) => { location.hash = hash; } };

setHandlers({
  unauthorized: (err) => endSession(`Your session ended: ${String(err.message).replace(/[.\s]+$/, '')}. Log in again.`),
  forbidden: (err) => showBanner(err.message),
});

window.addEventListener('unhandledrejection', (e) => {
  // Every expected failure is handled where it happens; show anything else in the banner
  // instead of leaving it to the console.
  e.preventDefault();
  report(e.reason);
});

// ---- login ----------------------------------------------------------------------------------

function showLogin(message) {
  teardown();
  document.title = 'Log in — Vessel';
  const token = h('input', {
    id: 'login-token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    testid: 'login-token', placeholder: 'vessel_…', 'aria-describedby': 'login-error login-hint',
  });
  const error = h('div', { id: 'login-error', class: 'field-error', testid: 'login-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'login-submit' }, 'Log in');
  const certBtn = h('button', { type: 'button', class: 'btn btn-ghost', testid: 'login-certificate' }, 'Use my client certificate');
  const form = h('form', { class: 'login-card', novalidate: true },
    h('h1', null, h('img', { src: './favicon.svg', alt: '', width: 28, height: 28 }), 'Vessel'),
    message ? h('p', { class: 'notice', role: 'alert', testid: 'login-message' }, message) : null,
    h('label', { for: 'login-token' }, 'API token'),
    token,
    h('p', { class: 'hint', id: 'login-hint' }, 'Create one on the server with ', h('code', null, 'vessel auth token create'), '.'),
    error,
    h('div', { class: 'form-actions' }, certBtn, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = token.value.trim();
    error.textContent = '';
    if (!t) {
      error.textContent = 'Enter a token.';
      token.focus();
      return;
    }
    submit.disabled = true;
    try {
      const id = await api('GET', '/1.0/auth/self', { token: t, quiet: true });
      setToken(t);
      sessionStorage.removeItem(NO_AUTO);
      loggedIn(id);
    } catch (err) {
      error.textContent = err.message;
      token.focus();
      token.select();
    } finally {
      submit.disabled = false;
    }
  });
  certBtn.addEventListener('click', async () => {
    error.textContent = '';
    try {
      const id = await api('GET', '/1.0/auth/self', { token: null, quiet: true });
      sessionStorage.removeItem(NO_AUTO);
      loggedIn(id);
    } catch (err) {
      error.textContent = err.status === 401
        ? `No trusted client certificate: ${err.message}`
        : err.message;
    }
  });
  clear(root, h('main', { class: 'login', id: 'main' }, form));
  token.focus();
}

function endSession(message) {
  setToken(null);
  session.identity = null;
  showLogin(message);
}

function logout() {
  setToken(null);
  session.identity = null;
  sessionStorage.setItem(NO_AUTO, '1');
  showLogin('You have logged out.');
}

// ---- the frame ------------------------------------------------------------------------------

async function loggedIn(identity) {
  session.identity = identity;
  if (!isAdmin()) setProject(null);
  if (!isAdmin() || !session.project) session.project = identity.project || 'default';
  buildFrame();
  startEvents();
  route();
  if (isAdmin()) loadProjects();
}

function buildFrame() {
  teardown();
  const id = session.identity;
  const menuBtn = h('button', {
    type: 'button', class: 'btn btn-ghost menu-btn', 'aria-expanded': 'false', 'aria-controls': 'nav', testid: 'menu',
  }, '☰ Menu');
  const nav = h('nav', { id: 'nav', class: 'nav', 'aria-label': 'Sections' },
    h('ul', null, NAV.filter(([, , role]) => !role || can(role)).map(([key, label]) =>
      h('li', null, h('a', { href: `#/${key}`, dataset: { nav: key }, testid: `nav-${key}` }, label)))));
  menuBtn.addEventListener('click', () => {
    const open = !nav.classList.contains('open');
    nav.classList.toggle('open', open);
    menuBtn.setAttribute('aria-expanded', String(open));
  });
  nav.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && nav.classList.contains('open')) {
      nav.classList.remove('open');
      menuBtn.setAttribute('aria-expanded', 'false');
      menuBtn.focus();
    }
  });
  nav.addEventListener('click', (e) => {
    if (e.target.closest('a')) {
      nav.classList.remove('open');
      menuBtn.setAttribute('aria-expanded', 'false');
    }
  });
  let projectCtl;
  if (isAdmin()) {
    const sel = h('select', { id: 'project-select', testid: 'project-select' },
      h('option', { value: session.project }, session.project));
    sel.addEventListener('change', () => switchProject(sel.value));
    projectCtl = h('div', { class: 'project-ctl' }, h('label', { for: 'project-select' }, 'Project'), sel);
  } else {
    projectCtl = h('div', { class: 'project-ctl' }, 'Project ', h('strong', { testid: 'project-name' }, session.project));
  }
  const liveDot = h('span', { class: 'live-dot', testid: 'events-status', title: 'Event stream' });
  const bannerText = h('span', { class: 'banner-text' });
  const banner = h('div', { class: 'banner', role: 'alert', testid: 'error-banner', hidden: true },
    bannerText,
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', 'aria-label': 'Dismiss error', onclick: hideBanner }, '✕'));
  const page = h('div', { id: 'page' });
  const header = h('header', { class: 'topbar' },
    menuBtn,
    h('a', { class: 'brand', href: '#/instances' }, h('img', { src: './favicon.svg', alt: '', width: 22, height: 22 }), 'Vessel'),
    projectCtl,
    h('div', { class: 'who', testid: 'identity' },
      h('span', { testid: 'identity-name' }, id.name),
      h('span', { class: 'badge badge-role', testid: 'identity-role' }, id.role),
      h('span', { class: 'muted who-project' }, id.project)),
    liveDot,
    h('button', { type: 'button', class: 'btn btn-small', testid: 'logout', onclick: logout }, 'Log out'));
  clear(root,
    h('a', { class: 'skip', href: '#main', onclick: (e) => { e.preventDefault(); document.getElementById('main').focus(); } }, 'Skip to content'),
    header,
    h('div', { class: 'layout' }, nav, h('main', { id: 'main', tabindex: '-1' }, banner, page)));
  frame = { nav, page, banner, bannerText, liveDot, projectCtl };
  frame.offStatus = onEventsStatus((s) => {
    liveDot.dataset.state = s;
    liveDot.title = `Live updates: ${s}`;
    liveDot.setAttribute('aria-label', `Live updates: ${s}`);
  });
}

async function loadProjects() {
  try {
    const list = await api('GET', '/1.0/projects');
    const sel = frame && frame.projectCtl.querySelector('select');
    if (!sel) return;
    const names = list.map((p) => p.name);
    if (!names.includes(session.project)) names.unshift(session.project);
    clear(sel, names.map((n) => h('option', { value: n, selected: n === session.project }, n)));
  } catch (e) {
    report(e);
  }
}

function switchProject(name) {
  setProject(name);
  session.project = name;
  hideBanner();
  startEvents();
  // Instances, networks, ... are per project: leave a page about one of them.
  const path = location.hash.replace(/^#/, '');
  if (/^\/(instances|networks|storage)\/./.test(path)) location.hash = '#/' + path.split('/')[1];
  else route(true);
}

function teardown() {
  if (current && current.handle) {
    const c = typeof current.handle === 'function' ? current.handle : current.handle.cleanup;
    try {
      if (c) c();
    } catch {
      // a page that fails to clean up must not block the next one
    }
  }
  current = null;
  if (frame && frame.offStatus) frame.offStatus();
  if (!session.identity) stopEvents();
  for (const d of document.querySelectorAll('dialog')) d.remove();
  if (!session.identity) frame = null;
}

// ---- routing --------------------------------------------------------------------------------

function route(force = false) {
  if (!session.identity || !frame) return;
  const path = decodeURIComponent(location.hash.replace(/^#/, '')) || '/instances';
  let found = null;
  let match = null;
  for (const r of ROUTES) {
    match = r.re.exec(path);
    if (match) {
      found = r;
      break;
    }
  }
  if (!found) {
    location.replace('#/instances');
    return;
  }
  const params = match.slice(1);
  // The same page with other parameters (an instance's tab): let it update in place.
  if (!force && current && current.route === found && current.handle && current.handle.update
      && current.handle.update(params)) {
    return;
  }
  if (current && current.handle) {
    const c = typeof current.handle === 'function' ? current.handle : current.handle.cleanup;
    try {
      if (c) c();
    } catch {
      // ignore
    }
  }
  hideBanner();
  for (const a of frame.nav.querySelectorAll('a')) {
    if (a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const el = h('div', { class: 'page' });
  frame.page.replaceChildren(el);
  if (found.role && !can(found.role)) {
    el.append(h('p', { class: 'empty' }, `This page needs the ${found.role} role.`));
    current = { route: found, handle: null };
    return;
  }
  let handle = null;
  try {
    handle = found.page(el, params, ctx);
  } catch (e) {
    report(e);
  }
  current = { route: found, handle };
}

window.addEventListener('hashchange', () => route());

// ---- start ----------------------------------------------------------------------------------

async function boot() {
  if (session.token) {
    try {
      const id = await api('GET', '/1.0/auth/self', { quiet: true });
      loggedIn(id);
      return;
    } catch (e) {
      if (e.status === 401) {
        setToken(null);
        showLogin(`Your session ended: ${String(e.message).replace(/[.\s]+$/, '')}. Log in again.`);
      } else {
        showLogin(e.message);
      }
      return;
    }
  }
  if (!sessionStorage.getItem(NO_AUTO)) {
    // A browser with a trusted client certificate is logged in without a token.
    try {
      const id = await api('GET', '/1.0/auth/self', { token: null, quiet: true });
      loggedIn(id);
      return;
    } catch (e) {
      if (e.status !== 401) {
        showLogin(e.message);
        return;
      }
    }
  }
  showLogin();
}

boot();
