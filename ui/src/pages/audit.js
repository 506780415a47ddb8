// The audit log: who changed what, newest first.

import { h, clear, fmtTime, badge, table } from '../dom.js';
import { api } from '../api.js';

export function render(el, _p, ctx) {
  const limit = h('select', { id: 'audit-limit' }, [100, 500, 1000].map((n) => h('option', { value: n }, `last ${n}`)));
  const q = h('input', { type: 'search', id: 'audit-q', placeholder: 'Filter: identity, action, path…' });
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  let entries = [];
  clear(el,
    h('div', { class: 'page-head' }, h('h1', null, 'Audit log'),
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Refresh'))),
    h('div', { class: 'toolbar' },
      h('label', { for: 'audit-limit', class: 'sr-only' }, 'How many'), limit,
      h('label', { for: 'audit-q', class: 'sr-only' }, 'Filter'), q),
    list);
  let disposed = false;
  function draw() {
    const s = q.value.trim().toLowerCase();
    const shown = entries.filter((e) => !s || [e.identity, e.action, e.target, e.project].some((x) => String(x).toLowerCase().includes(s)));
    clear(list, table([
      { label: '#', cell: (e) => String(e.seq) },
      { label: 'Time', cell: (e) => fmtTime(e.time) },
      { label: 'Identity', cell: (e) => e.identity },
      { label: 'Project', cell: (e) => e.project },
      { label: 'Action', cell: (e) => e.action },
      { label: 'Request', cell: (e) => h('span', { class: 'mono small' }, e.target) },
      { label: 'Status', cell: (e) => badge(String(e.status), e.status < 300 ? 'ok' : e.status < 500 ? 'warn' : 'error') },
    ], shown, { empty: 'No entries.' }));
  }
  async function load() {
    try {
      const r = await api('GET', `/1.0/audit?limit=${limit.value}`);
      if (disposed) return;
      entries = r.slice().reverse();
      draw();
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }
  limit.addEventListener('change', load);
  q.addEventListener('input', draw);
  load();
  return () => {
    disposed = true;
  };
}
