// Operations: live list with progress, stage and cancel.

import { h, clear, fmtAgo, badge, progressBar } from '../dom.js';
import { api, can, enc } from '../api.js';
import { onEvent } from '../events.js';

const FINAL = new Set(['success', 'failure', 'cancelled']);

export function render(el, _p, ctx) {
  const ops = new Map();
  const body = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Operations')), body);
  let disposed = false;

  function draw() {
    const list = [...ops.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    if (!list.length) {
      clear(body, h('p', { class: 'empty' }, 'No operations.'));
      return;
    }
    clear(body, h('ul', { class: 'op-list' }, list.map((o) => h('li', { class: 'card op', testid: `op-${o.id}` },
      h('div', { class: 'op-head' },
        h('strong', null, o.description),
        badge(o.status, o.status === 'success' ? 'ok' : o.status === 'failure' ? 'error' : o.status === 'cancelled' ? 'warn' : 'running'),
        h('span', { class: 'muted small' }, fmtAgo(o.created_at)),
        can('operator') && o.may_cancel && !FINAL.has(o.status)
          ? h('button', {
            type: 'button', class: 'btn btn-small', testid: `op-cancel-${o.id}`,
            onclick: async (e) => {
              e.currentTarget.disabled = true;
              try {
                ops.set(o.id, await api('DELETE', `/1.0/operations/${enc(o.id)}`));
              } catch (err) {
                ctx.report(err);
              }
              draw();
            },
          }, 'Cancel')
          : null),
      FINAL.has(o.status) ? null : progressBar(o.progress ?? 0, o.description),
      h('div', { class: 'small' },
        o.stage && !FINAL.has(o.status) ? h('span', null, o.stage, ' · ') : null,
        o.progress !== undefined && !FINAL.has(o.status) ? `${o.progress}% · ` : null,
        h('span', { class: 'muted mono' }, (o.resources || []).join(' '))),
      o.error ? h('div', { class: 'text-error small' }, o.error) : null))));
  }

  async function load() {
    try {
      const list = await api('GET', '/1.0/operations');
      if (disposed) return;
      ops.clear();
      for (const o of list) ops.set(o.id, o);
      draw();
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }
  const off = onEvent((ev) => {
    if (ev.kind === 'resync') load();
    else if (ev.kind === 'operation' && ev.operation) {
      ops.set(ev.operation.id, ev.operation);
      draw();
    }
  });
  load();
  const t = setInterval(load, 5000);
  return () => {
    disposed = true;
    off();
    clearInterval(t);
  };
}
