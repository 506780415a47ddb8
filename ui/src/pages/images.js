// Images: list, build, delete.

import { h, clear, append, fmtBytes, fmtTime, shortFp, table, confirmDialog, openDialog, field } from '../dom.js';
import { api, can, enc } from '../api.js';
import { onEvent } from '../events.js';
import { track } from '../activity.js';
import { vmProfileOf } from './create.js';

export function render(el, _p, ctx) {
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const build = can('operator') ? h('button', { type: 'button', class: 'btn btn-primary', testid: 'image-build-open', onclick: openBuild }, 'Build image') : null;
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Images'), h('div', { class: 'actions' }, build)), list);
  let disposed = false;

  async function load() {
    try {
      const imgs = await api('GET', '/1.0/images');
      if (disposed) return;
      clear(list, table([
        { label: 'Aliases', cell: (i) => (i.aliases || []).join(', ') || '—' },
        { label: 'Fingerprint', cell: (i) => h('span', { class: 'mono', title: i.fingerprint }, shortFp(i.fingerprint)) },
        { label: 'Kind', cell: (i) => (i.kind === 'vm' ? `VM (${vmProfileOf(i)})` : 'container') },
        { label: 'Source', cell: (i) => i.source },
        { label: 'Size', cell: (i) => fmtBytes(i.size_bytes) },
        { label: 'Created', cell: (i) => fmtTime(i.created_at) },
        can('operator') ? { label: 'Actions', cell: (i) => h('button', {
          type: 'button', class: 'btn btn-small btn-danger',
          onclick: async () => {
            const label = (i.aliases && i.aliases[0]) || shortFp(i.fingerprint);
            if (!(await confirmDialog(`Delete image ${label}?`, 'Only an image no instance uses can be deleted.', { ok: 'Delete', danger: true }))) return;
            try {
              await api('DELETE', `/1.0/images/${enc(i.fingerprint)}`);
            } catch (e) {
              ctx.report(e);
            }
            load();
          },
        }, 'Delete') } : null,
      ].filter(Boolean), imgs.map((item) => ({ item, attrs: { testid: `image-row-${(item.aliases && item.aliases[0]) || item.fingerprint}` } })),
      { empty: 'No images yet.' }));
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }

  function openBuild() {
    const d = openDialog('Build an image');
    const source = field('Source', h('select', null,
      h('option', { value: 'busybox' }, 'busybox — minimal container root'),
      h('option', { value: 'debian' }, 'debian — Debian minbase container'),
      h('option', { value: 'vm' }, 'vm — bootable VM image')));
    const alias = field('Alias', h('input', { type: 'text', placeholder: 'default: the source\'s name' }));
    const err = h('div', { class: 'form-error', role: 'alert', hidden: true });
    const form = h('form', null, err, source.wrap, alias.wrap,
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Build')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { source: source.input.value };
      if (alias.input.value.trim()) body.alias = alias.input.value.trim();
      let op;
      try {
        op = await api('POST', '/1.0/images', { body });
      } catch (e2) {
        ctx.report(e2, err);
        return;
      }
      d.close();
      try {
        await track(`Building ${body.alias || body.source}`, op);
      } catch (e3) {
        ctx.report(e3);
      }
      load();
    });
    append(d.body, [form]);
    source.input.focus();
  }

  const off = onEvent((ev) => {
    if (ev.kind === 'resync' || (ev.source || '').startsWith('/1.0/images')
      || ((ev.operation && ev.operation.resources) || []).some((r) => r.startsWith('/1.0/images'))) load();
  });
  load();
  return () => {
    disposed = true;
    off();
  };
}
