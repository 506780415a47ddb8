// Projects with what they use of their quotas.

import { h, clear, fmtBytes, usageBar } from '../dom.js';
import { api, enc, session } from '../api.js';

const LIMITS = [
  ['limits.instances', 'instances', 'Instances', String],
  ['limits.containers', 'containers', 'Containers', String],
  ['limits.virtual-machines', 'virtual_machines', 'VMs', String],
  ['limits.cpu', 'cpu', 'CPU (cores)', (v) => String(Math.round(v * 100) / 100)],
  ['limits.memory', 'memory', 'Memory', fmtBytes],
  ['limits.processes', 'processes', 'Processes', String],
  ['limits.disk', 'disk', 'Root disks', fmtBytes],
  ['limits.networks', 'networks', 'Networks', String],
];

// "8GiB", "100", "1.5" -> number
function limitValue(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?)?B?\s*$/i.exec(String(s));
  if (!m) return null;
  const pow = m[2] ? ' KMGTP'.indexOf(m[2][0].toUpperCase()) : 0;
  const base = m[2] && m[2].length === 1 && !/i/i.test(m[2]) ? 1000 : 1024;
  return Number(m[1]) * Math.pow(base, pow);
}

export function render(el, _p, ctx) {
  const list = h('div', { class: 'cards' }, h('p', { class: 'muted' }, 'Loading…'));
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Projects')), list);
  let disposed = false;
  async function load() {
    try {
      let projects = await api('GET', '/1.0/projects?recursion=1');
      if (projects.some((p) => !p.usage)) {
        projects = await Promise.all(projects.map((p) => (p.usage ? p : api('GET', `/1.0/projects/${enc(p.name)}`).catch(() => p))));
      }
      if (disposed) return;
      clear(list, projects.map((p) => {
        const cfg = p.config || {};
        const u = p.usage || {};
        const other = Object.entries(cfg).filter(([k]) => !LIMITS.some(([key]) => key === k));
        return h('section', { class: 'card project-card', testid: `project-${p.name}` },
          h('h2', null, p.name, p.name === session.project ? h('span', { class: 'muted' }, ' (current)') : null),
          p.description ? h('p', null, p.description) : null,
          h('dl', { class: 'kv' }, LIMITS.map(([key, ukey, label, fmt]) => [
            h('dt', null, label),
            h('dd', null, usageBar(u[ukey] ?? 0, cfg[key] !== undefined ? limitValue(cfg[key]) : null, fmt)),
          ])),
          other.length ? h('dl', { class: 'kv small' }, other.map(([k, v]) => [h('dt', { class: 'mono' }, k), h('dd', null, v)])) : null);
      }));
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }
  load();
  const t = setInterval(load, 10000);
  return () => {
    disposed = true;
    clearInterval(t);
  };
}
