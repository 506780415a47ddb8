// Storage: pools (with raid health), one pool, volumes, exports.

import { h, clear, append, fmtBytes, fmtTime, badge, table, usageBar, progressBar, confirmDialog, openDialog, field, parseSize } from '../dom.js';
import { api, can, isAdmin, enc } from '../api.js';
import { track } from '../activity.js';

const poolState = (s) => badge(s, s === 'online' ? 'ok' : s === 'degraded' ? 'warn' : 'error');

export function renderPools(el, _p, ctx) {
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Storage pools')), list);
  let disposed = false;
  async function load() {
    try {
      const pools = await api('GET', '/1.0/storage/pools');
      if (disposed) return;
      clear(list, table([
        { label: 'Name', cell: (p) => h('a', { href: `#/storage/${enc(p.name)}` }, p.name) },
        { label: 'Driver', cell: (p) => p.driver + (p.level ? ` (${p.level})` : '') },
        { label: 'Status', cell: (p) => h('span', { title: p.error || '' }, poolState(p.status)) },
        { label: 'Used', cell: (p) => usageBar(p.used_bytes, p.size_bytes, fmtBytes) },
        { label: 'Sources', cell: (p) => h('span', { class: 'mono small' }, (p.sources || []).join(', ')) },
        { label: 'Description', cell: (p) => p.description || '—' },
      ], pools, { empty: 'No storage pools.' }));
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

export function renderPool(el, params, ctx) {
  const name = params[0];
  const info = h('div');
  const health = h('div');
  const vols = h('div');
  const err = h('div', { class: 'page-error', role: 'alert', hidden: true });
  const scrub = isAdmin() ? h('button', { type: 'button', class: 'btn', testid: 'pool-scrub', onclick: doScrub }, 'Scrub') : null;
  clear(el,
    h('p', { class: 'crumbs' }, h('a', { href: '#/storage' }, 'Storage pools'), ' / '),
    h('div', { class: 'page-head' }, h('h1', null, name), h('div', { class: 'actions' }, scrub)),
    err, info, health, h('h2', null, 'Volumes'), vols);
  let disposed = false;

  async function doScrub() {
    try {
      await track(`Scrubbing ${name}`, api('POST', `/1.0/storage/pools/${enc(name)}/repair`, { body: { action: 'scrub' } }));
    } catch (e) {
      ctx.report(e);
    }
    load();
  }

  async function load() {
    try {
      const [p, st] = await Promise.all([
        api('GET', `/1.0/storage/pools/${enc(name)}`),
        api('GET', `/1.0/storage/pools/${enc(name)}/status`).catch((e) => {
          if (e.handled) throw e;
          return null;
        }),
      ]);
      if (disposed) return;
      clear(info, h('dl', { class: 'kv' },
        h('dt', null, 'Driver'), h('dd', null, p.driver + (p.level ? ` (${p.level})` : '')),
        h('dt', null, 'Status'), h('dd', null, poolState(p.status), p.error ? h('span', { class: 'text-error' }, ' ' + p.error) : null),
        h('dt', null, 'Capacity'), h('dd', null, usageBar(p.used_bytes, p.size_bytes, fmtBytes)),
        h('dt', null, 'Sources'), h('dd', { class: 'mono small' }, (p.sources || []).join(', ')),
        h('dt', null, 'Created'), h('dd', null, fmtTime(p.created_at))));
      if (st) {
        const sc = st.last_scrub;
        clear(health,
          h('h2', null, p.driver === 'raid' ? 'Members' : 'Devices'),
          st.rebuild_percent !== undefined && st.rebuild_percent !== null
            ? h('div', { class: 'rebuild', testid: 'pool-rebuild' }, h('strong', null, `Rebuilding: ${st.rebuild_percent}%`), progressBar(st.rebuild_percent, 'Rebuild progress'))
            : null,
          table([
            { label: 'Slot', cell: (m) => String(m.index) },
            { label: 'Path', cell: (m) => h('span', { class: 'mono small' }, m.path) },
            { label: 'State', cell: (m) => badge(m.state, m.state === 'active' ? 'ok' : m.state === 'rebuilding' ? 'warn' : 'error') },
            { label: 'Checksum errors', cell: (m) => String(m.checksum_errors) },
          ], st.members || [], { empty: 'No members reported.' }),
          h('h2', null, 'Last scrub'),
          sc ? h('dl', { class: 'kv' },
            h('dt', null, 'Finished'), h('dd', null, fmtTime(sc.finished_at)),
            h('dt', null, 'Rows checked'), h('dd', null, String(sc.rows_checked)),
            h('dt', null, 'Mismatches'), h('dd', null, String(sc.mismatches)),
            h('dt', null, 'Repaired'), h('dd', null, String(sc.repaired)),
            h('dt', null, 'Bad members'), h('dd', null, (sc.bad_members || []).join(', ') || 'none'))
            : h('p', { class: 'muted' }, 'No scrub since the pool was opened.'));
      }
      const v = await api('GET', `/1.0/storage/pools/${enc(name)}/volumes`);
      if (disposed) return;
      clear(vols, volumesTable(v, load, ctx));
    } catch (e) {
      if (disposed) return;
      if (e.status === 404) {
        err.textContent = e.message;
        err.hidden = false;
      } else ctx.report(e);
    }
  }
  load();
  const t = setInterval(load, 5000);
  return () => {
    disposed = true;
    clearInterval(t);
  };
}

function volumesTable(vols, reload, ctx, withPool = false) {
  return table([
    withPool ? { label: 'Pool', cell: (v) => h('a', { href: `#/storage/${enc(v.pool)}` }, v.pool) } : null,
    { label: 'Name', cell: (v) => v.name },
    { label: 'Content', cell: (v) => v.content },
    { label: 'Size', cell: (v) => (v.size_bytes ? fmtBytes(v.size_bytes) : 'no quota') },
    { label: 'Used', cell: (v) => fmtBytes(v.used_bytes) },
    { label: 'Snapshots', cell: (v) => (v.snapshots || []).join(', ') || '—' },
    { label: 'Attached to', cell: (v) => (v.attached_to || []).map((a) => a.instance + (a.path ? ':' + a.path : '')).join(', ') || '—' },
    can('operator') ? { label: 'Actions', cell: (v) => h('button', {
      type: 'button', class: 'btn btn-small btn-danger',
      onclick: async () => {
        if (!(await confirmDialog(`Delete volume ${v.name}?`, 'The volume and its snapshots are deleted for good.', { ok: 'Delete', danger: true }))) return;
        try {
          await api('DELETE', `/1.0/storage/pools/${enc(v.pool)}/volumes/${enc(v.name)}`);
        } catch (e) {
          ctx.report(e);
        }
        reload();
      },
    }, 'Delete') } : null,
  ].filter(Boolean), vols, { empty: 'No volumes.' });
}

export function renderVolumes(el, _p, ctx) {
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const createBtn = can('operator') ? h('button', { type: 'button', class: 'btn btn-primary', onclick: openCreate }, 'Create volume') : null;
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Volumes'), h('div', { class: 'actions' }, createBtn)), list);
  let disposed = false;
  let pools = [];
  async function load() {
    try {
      pools = await api('GET', '/1.0/storage/pools');
      const all = (await Promise.all(pools.map((p) => api('GET', `/1.0/storage/pools/${enc(p.name)}/volumes`)
        .catch((e) => {
          if (e.handled) throw e;
          return [];
        })))).flat();
      if (disposed) return;
      clear(list, volumesTable(all, load, ctx, true));
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }
  function openCreate() {
    const d = openDialog('Create a volume');
    const name = field('Name', h('input', { type: 'text', required: true }));
    const pool = field('Pool', h('select', null, pools.map((p) => h('option', { value: p.name }, `${p.name} (${p.driver})`))));
    const content = field('Content', h('select', null, h('option', { value: 'filesystem' }, 'filesystem'), h('option', { value: 'block' }, 'block')));
    const size = field('Size', h('input', { type: 'text', placeholder: 'e.g. 1GiB (required for block)' }));
    const err = h('div', { class: 'form-error', role: 'alert', hidden: true });
    const form = h('form', null, err, name.wrap, pool.wrap, content.wrap, size.wrap,
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { name: name.input.value.trim(), content: content.input.value };
      const s = parseSize(size.input.value);
      if (Number.isNaN(s)) {
        size.error.textContent = 'Give a size like 1GiB.';
        return;
      }
      if (s !== undefined) body.size = s;
      let op;
      try {
        op = await api('POST', `/1.0/storage/pools/${enc(pool.input.value)}/volumes`, { body });
      } catch (e2) {
        ctx.report(e2, err);
        return;
      }
      d.close();
      try {
        await track(`Creating volume ${body.name}`, op);
      } catch (e3) {
        ctx.report(e3);
      }
      load();
    });
    append(d.body, [form]);
    name.input.focus();
  }
  load();
  return () => {
    disposed = true;
  };
}

// Changes the client networks an export on TCP admits (empty: every client).
function editNetworks(x, ctx, reload) {
  const d = openDialog(`Client networks of ${x.name}`);
  const nets = field('Networks', h('input', { type: 'text', value: (x.allow || []).join(', '), placeholder: 'e.g. 10.0.5.0/24, 192.0.2.7', testid: 'networks-input' }),
    'Addresses or ADDRESS/PREFIX, separated by commas; empty: every client that reaches the address. ' +
    (x.protocol === 'nfs' ? 'A client left out loses access at its next request.' : 'A client left out is disconnected.'));
  const err = h('div', { class: 'form-error', role: 'alert', hidden: true, testid: 'networks-error' });
  const form = h('form', null, err, nets.wrap,
    h('div', { class: 'form-actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'networks-save' }, 'Save')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const allow = nets.input.value.split(',').map((s) => s.trim()).filter(Boolean);
    // Empty is every client, as the field's help says: said so to the server.
    const body = allow.length ? { allow } : { allow_all: true };
    try {
      await api('PATCH', `/1.0/storage/exports/${enc(x.name)}`, { body });
    } catch (e2) {
      ctx.report(e2, err);
      return;
    }
    d.close();
    reload();
  });
  append(d.body, [form]);
  nets.input.focus();
}

// The credentials of a new client of a TLS export: the three files libnbd and QEMU read
// from one directory, to download (the key is shown this once), and how to use them.
function showCredentials(c) {
  const urls = [];
  const d = openDialog(`A new client of ${c.export}`, { wide: true, onclose: () => urls.forEach((u) => URL.revokeObjectURL(u)) });
  const file = (name, text) => {
    urls.push(URL.createObjectURL(new Blob([text], { type: 'application/x-pem-file' })));
    return h('li', null, h('a', { href: urls[urls.length - 1], download: name, testid: `credential-${name}` }, name));
  };
  // QEMU names the export as the server serves it (the URI's path: a project's export
  // under its qualified name), and takes an IPv6 address without brackets.
  const [addr, wire] = c.uri.replace(/^nbds:\/\//, '').split('/');
  const [host, port] = (addr || '').replace(/^\[(.*)\](:\d+)$/, '$1$2').split(/:(?=\d+$)/);
  append(d.body, [
    h('p', null, 'Save the three files into one directory, DIR. The key is shown only now; anyone holding the files can use the export.'),
    h('ul', null, file('ca-cert.pem', c.ca_cert), file('client-cert.pem', c.client_cert), file('client-key.pem', c.client_key)),
    h('p', { class: 'muted small' }, 'Certificate fingerprint: ', h('span', { class: 'mono', testid: 'credential-fingerprint' }, c.fingerprint)),
    h('p', null, 'With libnbd (nbdinfo, nbdcopy):'),
    h('pre', { class: 'mono small', style: { whiteSpace: 'pre-wrap', overflowWrap: 'anywhere' } }, `nbdinfo '${c.uri}?tls-certificates=DIR'`),
    h('p', null, 'With QEMU:'),
    h('pre', { class: 'mono small', style: { whiteSpace: 'pre-wrap', overflowWrap: 'anywhere' } }, `qemu-img info --object tls-creds-x509,id=tls0,dir=DIR,endpoint=client \\\n  --image-opts driver=nbd,server.type=inet,server.host=${host},server.port=${port},export=${wire},tls-creds=tls0`),
    h('div', { class: 'form-actions' }, h('button', { type: 'button', class: 'btn btn-primary', onclick: () => d.close() }, 'Done')),
  ]);
}

export function renderExports(el, _p, ctx) {
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Exports')), list);
  let disposed = false;
  async function load() {
    try {
      const ex = await api('GET', '/1.0/storage/exports');
      if (disposed) return;
      clear(list, table([
        { label: 'Name', cell: (x) => x.name },
        { label: 'Protocol', cell: (x) => x.protocol.toUpperCase() },
        { label: 'Volume', cell: (x) => `${x.pool}/${x.volume}` },
        { label: 'Listen', cell: (x) => h('span', { class: 'mono small' }, x.listen) },
        { label: 'URI', cell: (x) => h('span', { class: 'mono small' }, x.uri) },
        { label: 'Read-only', cell: (x) => (x.read_only ? 'yes' : 'no') },
        { label: 'TLS', cell: (x) => h('span', { testid: `export-tls-${x.name}` }, x.tls ? `yes, ${x.clients} client${x.clients === 1 ? '' : 's'}` : 'no') },
        { label: 'Clients from', cell: (x) => h('span', { class: 'mono small', testid: `export-allow-${x.name}` }, x.listen.startsWith('/') ? '—' : ((x.allow || []).join(', ') || 'anywhere')) },
        { label: 'Status', cell: (x) => h('span', { title: x.error || '' }, badge(x.status, x.status === 'serving' ? 'ok' : 'error')) },
        can('operator') ? { label: 'Actions', cell: (x) => h('div', { class: 'row-actions' },
          x.tls ? h('button', {
            type: 'button', class: 'btn btn-small', testid: `export-client-${x.name}`,
            title: 'Credentials for one more client: a certificate and key, with the authority to trust',
            onclick: async () => {
              try {
                showCredentials(await api('POST', `/1.0/storage/exports/${enc(x.name)}/credentials`));
              } catch (e) {
                ctx.report(e);
              }
              load();
            },
          }, 'New client') : null,
          x.tls && x.clients > 0 ? h('button', {
            type: 'button', class: 'btn btn-small btn-danger', testid: `export-revoke-${x.name}`,
            title: 'End every client credential of this export; connected clients are cut off',
            onclick: async () => {
              if (!(await confirmDialog(`Revoke the clients of ${x.name}?`, `All ${x.clients} client credential${x.clients === 1 ? '' : 's'} stop working, and connected clients are cut off. New clients need new credentials.`, { ok: 'Revoke', danger: true }))) return;
              try {
                await api('DELETE', `/1.0/storage/exports/${enc(x.name)}/credentials`);
              } catch (e) {
                ctx.report(e);
              }
              load();
            },
          }, 'Revoke clients') : null,
          x.listen.startsWith('/') ? null : h('button', {
            type: 'button', class: 'btn btn-small', testid: `export-networks-${x.name}`,
            title: 'Which client networks may use this export',
            onclick: () => editNetworks(x, ctx, load),
          }, 'Networks…'),
          h('button', {
            type: 'button', class: 'btn btn-small btn-danger',
            onclick: async () => {
              if (!(await confirmDialog(`Stop serving ${x.name}?`, 'Clients of this export lose it: connected ones are cut off.', { ok: 'Remove', danger: true }))) return;
              try {
                await api('DELETE', `/1.0/storage/exports/${enc(x.name)}`);
              } catch (e) {
                ctx.report(e);
              }
              load();
            },
          }, 'Remove')) } : null,
      ].filter(Boolean), ex, { empty: 'No exports.' }));
    } catch (e) {
      if (!disposed) ctx.report(e);
    }
  }
  load();
  return () => {
    disposed = true;
  };
}
