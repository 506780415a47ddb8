// One instance: overview with live graphs, actions, snapshots, backups, logs, devices and
// the consoles. Route: #/instances/NAME[/TAB].

import { h, clear, append, fmtBytes, fmtTime, badge, table, confirmDialog, openDialog, field, shortFp } from '../dom.js';
import { api, can, enc, ApiError } from '../api.js';
import { onEvent } from '../events.js';
import { track } from '../activity.js';
import { drawChart } from '../chart.js';
import { addresses, fmtCpu } from './instances.js';

const TABS = [
  ['overview', 'Overview'],
  ['snapshots', 'Snapshots'],
  ['backups', 'Backups'],
  ['logs', 'Logs', 'user'],
  ['devices', 'NICs & volumes'],
  ['exec', 'Terminal', 'user'],
  ['console', 'Serial console', 'user'],
  ['vnc', 'Graphical console', 'user'],
];

function tabsFor(inst) {
  return TABS.filter(([key, , role]) => {
    if (role && !can(role)) return false;
    if (key === 'exec') return inst.type !== 'vm' || (inst.vm ? inst.vm.agent : true);
    if (key === 'vnc') return inst.type === 'vm' && (!inst.vm || inst.vm.vnc);
    return true;
  });
}

export function render(el, params, ctx) {
  const name = params[0];
  let tab = params[1] || 'overview';
  let inst = null;
  let disposed = false;
  let tabCleanup = null;
  let tabUpdate = null;

  const statusEl = h('span', { testid: 'instance-status' });
  const actionsEl = h('div', { class: 'actions' });
  const tabsEl = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Instance sections' });
  const body = h('section', { class: 'tab-body', role: 'tabpanel' });
  const errorEl = h('div', { class: 'page-error', role: 'alert', testid: 'page-error', hidden: true });
  clear(el,
    h('p', { class: 'crumbs' }, h('a', { href: '#/instances' }, 'Instances'), ' / '),
    h('div', { class: 'page-head' }, h('h1', null, name, ' ', statusEl), actionsEl),
    errorEl, tabsEl, body);

  // ---- actions ----
  const buttons = {};
  if (can('user')) {
    buttons.start = h('button', { type: 'button', class: 'btn', testid: 'action-start', onclick: () => stateAction('start') }, 'Start');
    buttons.stop = h('button', { type: 'button', class: 'btn', testid: 'action-stop', onclick: () => stateAction('stop') }, 'Stop');
    buttons.restart = h('button', { type: 'button', class: 'btn', testid: 'action-restart', onclick: () => stateAction('restart') }, 'Restart');
  }
  if (can('operator')) {
    buttons.delete = h('button', { type: 'button', class: 'btn btn-danger', testid: 'action-delete', onclick: del }, 'Delete');
  }
  append(actionsEl, Object.values(buttons));

  function updateHeader() {
    clear(statusEl, badge(inst.status));
    const running = inst.status === 'running';
    const stopped = inst.status === 'stopped' || inst.status === 'error';
    if (buttons.start) buttons.start.disabled = !stopped;
    if (buttons.stop) buttons.stop.disabled = !(running || inst.status === 'frozen');
    if (buttons.restart) buttons.restart.disabled = !running;
    if (buttons.delete) buttons.delete.disabled = inst.status === 'creating';
    document.title = `${name} — Vessel`;
  }

  async function stateAction(action) {
    const label = { start: 'Starting', stop: 'Stopping', restart: 'Restarting' }[action];
    try {
      await track(`${label} ${name}`, api('PUT', `/1.0/instances/${enc(name)}/state`, { body: { action } }));
    } catch (e) {
      ctx.report(e);
    }
    refresh();
  }

  async function del() {
    const running = inst && inst.status !== 'stopped' && inst.status !== 'error';
    const ok = await confirmDialog(`Delete ${name}?`,
      `${name} and its files are deleted for good${running ? '; it is running and will be stopped first' : ''}.`,
      { ok: 'Delete', danger: true });
    if (!ok) return;
    try {
      await track(`Deleting ${name}`, api('DELETE', `/1.0/instances/${enc(name)}${running ? '?force=1' : ''}`));
      if (!disposed) ctx.navigate('#/instances');
    } catch (e) {
      ctx.report(e);
    }
  }

  // ---- tabs ----
  function renderTabs() {
    const tabs = tabsFor(inst);
    if (!tabs.some(([k]) => k === tab)) tab = 'overview';
    clear(tabsEl, tabs.map(([key, label]) => h('a', {
      href: `#/instances/${enc(name)}/${key}`, role: 'tab', class: 'tab', testid: `tab-${key}`,
      'aria-selected': String(key === tab), 'aria-current': key === tab ? 'page' : null,
    }, label)));
  }

  function showTab() {
    if (tabCleanup) tabCleanup();
    tabCleanup = null;
    tabUpdate = null;
    renderTabs();
    body.replaceChildren();
    const fn = TAB_RENDER[tab] || TAB_RENDER.overview;
    const r = fn(body, name, () => inst, ctx);
    if (r) {
      tabCleanup = r.cleanup || null;
      tabUpdate = r.update || null;
    }
  }

  async function refresh() {
    try {
      const fresh = await api('GET', `/1.0/instances/${enc(name)}`);
      if (disposed) return;
      const first = !inst;
      const tabsBefore = inst ? tabsFor(inst).map((t) => t[0]).join() : '';
      inst = fresh;
      errorEl.hidden = true;
      updateHeader();
      if (first) showTab();
      else {
        if (tabsFor(inst).map((t) => t[0]).join() !== tabsBefore) renderTabs();
        if (tabUpdate) tabUpdate(inst);
      }
    } catch (e) {
      if (disposed) return;
      if (!inst) {
        // Nothing to show: not found, or not ours to see.
        errorEl.textContent = e.message;
        errorEl.hidden = false;
        actionsEl.replaceChildren();
        if (e.status === 403) ctx.hideBanner();
      } else if (e.status === 404) {
        errorEl.textContent = `${name} no longer exists.`;
        errorEl.hidden = false;
        actionsEl.replaceChildren();
        if (tabCleanup) tabCleanup();
        tabCleanup = null;
        tabsEl.replaceChildren();
        body.replaceChildren();
      } else {
        ctx.report(e);
      }
    }
  }

  const off = onEvent((ev) => {
    const src = ev.source || '';
    const res = (ev.operation && ev.operation.resources) || [];
    if (ev.kind === 'resync' || src === `/1.0/instances/${name}` || src.startsWith(`/1.0/instances/${name}/`)
        || res.some((r) => r === `/1.0/instances/${name}` || r.startsWith(`/1.0/instances/${name}/`))) {
      refresh();
    }
  });
  const poll = setInterval(refresh, 5000);
  refresh();

  return {
    update(p) {
      if (p[0] !== name || !inst) return false;
      tab = p[1] || 'overview';
      showTab();
      return true;
    },
    cleanup() {
      disposed = true;
      off();
      clearInterval(poll);
      if (tabCleanup) tabCleanup();
    },
  };
}

// ---- overview ---------------------------------------------------------------------------

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v ?? '—')]));
}

function overview(body, name, getInst) {
  const info = h('div', { class: 'overview-info' });
  const cpuCanvas = h('canvas', { class: 'chart', role: 'img', 'aria-label': 'CPU use', testid: 'chart-cpu' });
  const memCanvas = h('canvas', { class: 'chart', role: 'img', 'aria-label': 'Memory use', testid: 'chart-memory' });
  append(body, [
    h('div', { class: 'charts' },
      h('figure', { class: 'chart-box' }, h('figcaption', null, 'CPU'), cpuCanvas),
      h('figure', { class: 'chart-box' }, h('figcaption', null, 'Memory'), memCanvas)),
    info,
  ]);
  let history = null; // {cpu: [[t, cores]], mem: [[t, bytes]]}
  let useState = false; // the history endpoint is missing: build the series from /state
  const local = { cpu: [], mem: [], last: null };
  let disposed = false;

  let imageName = null;
  api('GET', `/1.0/images/${enc(getInst().image)}`, { quiet: true })
    .then((img) => {
      imageName = (img.aliases && img.aliases[0]) || null;
      if (!disposed && imageName) drawInfo(getInst());
    })
    .catch(() => {});

  function drawInfo(inst) {
    const l = inst.limits || {};
    const st = inst.state;
    const vm = inst.vm;
    clear(info,
      h('div', { class: 'cards' },
        h('section', { class: 'card' }, h('h2', null, 'State'), kv([
          ['Status', badge(inst.status)],
          ['Type', inst.type === 'vm' ? 'virtual machine' : 'container'],
          vm ? ['VM profile', `${vm.profile} (${vm.accel})`] : null,
          ['Image', h('span', null, imageName ? `${imageName} ` : '', h('span', { class: 'mono muted' }, shortFp(inst.image)))],
          ['Created', fmtTime(inst.created_at)],
          ['Addresses', addresses(inst).join(', ') || '—'],
          st && st.pid ? ['PID', String(st.pid)] : null,
          st ? ['Memory', fmtBytes(st.memory_usage_bytes) + (st.memory_peak_bytes ? ` (peak ${fmtBytes(st.memory_peak_bytes)})` : '')] : null,
          st ? ['Processes', String(st.pids)] : null,
          st && st.disk_read_bytes !== undefined ? ['Disk I/O', `${fmtBytes(st.disk_read_bytes)} read, ${fmtBytes(st.disk_write_bytes)} written`] : null,
          st && st.oom_kills ? ['OOM kills', String(st.oom_kills)] : null,
          inst.last_exit_code !== undefined ? ['Last exit', `${inst.last_exit_code}${inst.last_exit_reason ? ' — ' + inst.last_exit_reason : ''}`] : null,
          inst.error ? ['Error', h('span', { class: 'text-error' }, inst.error)] : null,
        ])),
        h('section', { class: 'card' }, h('h2', null, 'Limits'), kv([
          ['CPU', l.cpu ? `${l.cpu} cores` : 'no limit'],
          l.cpuset ? ['CPU set', l.cpuset] : null,
          ['Memory', l.memory ? fmtBytes(l.memory) : 'no limit'],
          l.memory_swap !== undefined ? ['Swap', fmtBytes(l.memory_swap)] : null,
          ['Processes', l.pids ? String(l.pids) : 'no limit'],
          ['Root disk', inst.root_disk
            ? `${fmtBytes(inst.root_disk.used_bytes)} used of ${fmtBytes(inst.root_disk.size_bytes)} (${inst.root_disk.kind}${inst.root_disk.pool ? ', pool ' + inst.root_disk.pool : ''})`
            : (l.disk ? fmtBytes(l.disk) : 'not limited')],
          inst.storage ? ['Storage pool', inst.storage] : null,
          inst.profiles && inst.profiles.length ? ['Profiles', inst.profiles.join(', ')] : null,
        ]))));
  }

  function draw() {
    const s = useState ? local : history || { cpu: [], mem: [] };
    drawChart(cpuCanvas, s.cpu, { label: 'CPU', fmt: fmtCpu, minMax: 0.05, color: '#2563eb' });
    drawChart(memCanvas, s.mem, { label: 'Memory', fmt: fmtBytes, minMax: 1 << 20, color: '#16a34a' });
  }

  async function loadHistory() {
    if (useState) return;
    try {
      const r = await api('GET', `/1.0/instances/${enc(name)}/history`, { quiet: true });
      const pts = (r && r.points) || [];
      const cpu = [];
      for (let i = 1; i < pts.length; i++) {
        const dt = pts[i].time - pts[i - 1].time;
        const dc = pts[i].cpu_seconds - pts[i - 1].cpu_seconds;
        if (dt > 0 && dc >= 0) cpu.push([pts[i].time, dc / dt]);
      }
      history = { cpu, mem: pts.map((p) => [p.time, p.memory_bytes]) };
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) useState = true;
    }
  }

  function addState(inst) {
    const st = inst.state;
    const t = Date.now() / 1000;
    if (!st || inst.status !== 'running') return;
    if (local.last && t > local.last.t) {
      const rate = (st.cpu_usage_ns - local.last.ns) / 1e9 / (t - local.last.t);
      if (rate >= 0) local.cpu.push([t, rate]);
    }
    local.last = { t, ns: st.cpu_usage_ns };
    local.mem.push([t, st.memory_usage_bytes]);
    const cut = t - 600;
    for (const s of [local.cpu, local.mem]) while (s.length && s[0][0] < cut) s.shift();
  }

  const ro = new ResizeObserver(() => draw());
  ro.observe(cpuCanvas);
  const inst0 = getInst();
  drawInfo(inst0);
  addState(inst0);
  loadHistory().then(() => !disposed && draw());
  return {
    update(inst) {
      drawInfo(inst);
      addState(inst);
      loadHistory().then(() => !disposed && draw());
    },
    cleanup() {
      disposed = true;
      ro.disconnect();
    },
  };
}

// ---- snapshots ----------------------------------------------------------------------------

function snapshots(body, name, getInst, ctx) {
  const list = h('div');
  const err = h('div', { class: 'form-error', role: 'alert', hidden: true });
  let form = null;
  if (can('operator')) {
    const snapName = h('input', { type: 'text', placeholder: 'snapN (first free)', testid: 'snapshot-name' });
    const stateful = h('input', { type: 'checkbox', id: 'snap-stateful' });
    const f = field('New snapshot name', snapName);
    form = h('form', { class: 'inline-form' }, f.wrap,
      getInst().type === 'vm' ? h('div', { class: 'field field-check' }, stateful, h('label', { for: 'snap-stateful' }, 'With memory (stateful)')) : null,
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'snapshot-create' }, 'Take snapshot'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.hidden = true;
      const b = {};
      if (snapName.value.trim()) b.name = snapName.value.trim();
      if (stateful.checked) b.stateful = true;
      try {
        await track(`Snapshot of ${name}`, api('POST', `/1.0/instances/${enc(name)}/snapshots`, { body: b }));
        snapName.value = '';
      } catch (e2) {
        ctx.report(e2, err);
      }
      load();
    });
  }
  append(body, [h('h2', null, 'Snapshots'), form, err, list]);

  async function load() {
    try {
      const snaps = await api('GET', `/1.0/instances/${enc(name)}/snapshots`);
      clear(list, table([
        { label: 'Name', cell: (s) => s.name },
        { label: 'Taken', cell: (s) => fmtTime(s.created_at) },
        { label: 'Kind', cell: (s) => s.kind + (s.stateful ? ', stateful' : '') },
        { label: 'Volumes', cell: (s) => (s.volumes || []).join(', ') || '—' },
        { label: 'Expires', cell: (s) => fmtTime(s.expires_at) },
        can('operator') ? { label: 'Actions', cell: (s) => h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => restore(s) }, 'Restore'),
          h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => remove(s) }, 'Delete')) } : null,
      ].filter(Boolean), snaps, { empty: 'No snapshots.' }));
    } catch (e) {
      ctx.report(e, err);
    }
  }

  async function restore(s) {
    const running = getInst().status === 'running';
    const ok = await confirmDialog(`Restore ${s.name}?`,
      `${name} goes back to how it was at ${fmtTime(s.created_at)}${running ? '; it is running and will be stopped and started again' : ''}.`,
      { ok: 'Restore', danger: true });
    if (!ok) return;
    try {
      await track(`Restoring ${name} to ${s.name}`, api('POST',
        `/1.0/instances/${enc(name)}/snapshots/${enc(s.name)}/restore`, { body: { force: running } }));
    } catch (e) {
      ctx.report(e, err);
    }
    load();
  }

  async function remove(s) {
    if (!(await confirmDialog(`Delete snapshot ${s.name}?`, 'The snapshot is deleted for good.', { ok: 'Delete', danger: true }))) return;
    try {
      await track(`Deleting snapshot ${s.name}`, api('DELETE', `/1.0/instances/${enc(name)}/snapshots/${enc(s.name)}`));
    } catch (e) {
      ctx.report(e, err);
    }
    load();
  }

  load();
  return null;
}

// ---- backups ------------------------------------------------------------------------------

function backups(body, name, getInst, ctx) {
  const list = h('div');
  const err = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const create = can('operator')
    ? h('button', {
      type: 'button', class: 'btn btn-primary', testid: 'backup-create',
      onclick: async () => {
        try {
          await track(`Backing up ${name}`, api('POST', `/1.0/instances/${enc(name)}/backups`, { body: {} }));
        } catch (e) {
          ctx.report(e, err);
        }
        load();
      },
    }, 'Back up now')
    : null;
  append(body, [h('div', { class: 'section-head' }, h('h2', null, 'Backups'), create), err, list]);

  async function load() {
    try {
      const all = await api('GET', `/1.0/backups?instance=${enc(name)}`);
      clear(list, table([
        { label: 'Id', cell: (b) => h('span', { class: 'mono' }, b.id) },
        { label: 'Taken', cell: (b) => fmtTime(b.created_at) },
        { label: 'Size', cell: (b) => fmtBytes(b.size) },
        { label: 'Archives', cell: (b) => (b.archives || []).map((a) => a.name).join(', ') },
        { label: 'Health', cell: (b) => (b.damaged ? badge('damaged', 'error') : badge('ok')) },
        can('operator') ? { label: 'Actions', cell: (b) => h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => restore(b) }, 'Restore…'),
          h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => remove(b) }, 'Delete')) } : null,
      ].filter(Boolean), all, { empty: 'No backups.' }));
    } catch (e) {
      ctx.report(e, err);
    }
  }

  function restore(b) {
    const d = openDialog(`Restore backup ${b.id}`);
    const newName = field('New instance name', h('input', { type: 'text', value: `${name}-restored`, required: true }));
    const start = h('input', { type: 'checkbox', id: 'restore-start' });
    const ferr = h('div', { class: 'form-error', role: 'alert', hidden: true });
    const form = h('form', null, ferr, newName.wrap,
      h('div', { class: 'field field-check' }, start, h('label', { for: 'restore-start' }, 'Start it once restored')),
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Restore')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body2 = { start: start.checked };
      if (newName.input.value.trim()) body2.name = newName.input.value.trim();
      try {
        const op = api('POST', `/1.0/backups/${enc(b.instance)}/${enc(b.id)}/restore`, { body: body2 });
        d.close();
        await track(`Restoring ${b.id} as ${body2.name || b.instance}`, op);
      } catch (e2) {
        ctx.report(e2, err);
      }
    });
    append(d.body, [form]);
    newName.input.focus();
  }

  async function remove(b) {
    if (!(await confirmDialog(`Delete backup ${b.id}?`, 'Its chunks are freed at the next garbage collection.', { ok: 'Delete', danger: true }))) return;
    try {
      await api('DELETE', `/1.0/backups/${enc(b.instance)}/${enc(b.id)}`);
    } catch (e) {
      ctx.report(e, err);
    }
    load();
  }

  load();
  return null;
}

// ---- logs ---------------------------------------------------------------------------------

function logs(body, name, getInst, ctx) {
  const pre = h('pre', { class: 'logs', tabindex: '0', testid: 'logs', 'aria-label': 'Console output' }, 'Loading…');
  const live = h('input', { type: 'checkbox', id: 'logs-live', checked: true });
  const err = h('div', { class: 'form-error', role: 'alert', hidden: true });
  append(body, [
    h('div', { class: 'section-head' }, h('h2', null, 'Logs'),
      h('div', { class: 'actions' },
        h('div', { class: 'field-check' }, live, h('label', { for: 'logs-live' }, 'Follow')),
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => load() }, 'Refresh'))),
    err, pre,
  ]);
  async function load() {
    try {
      const text = await api('GET', `/1.0/instances/${enc(name)}/logs?tail=1000`);
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      // Terminal control sequences (colours, cursor queries) are not text: leave them out.
      const clean = typeof text === 'string'
        ? text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]|\r/g, '')
        : JSON.stringify(text, null, 2);
      pre.textContent = clean || '(no output yet)';
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      err.hidden = true;
    } catch (e) {
      ctx.report(e, err);
    }
  }
  const t = setInterval(() => live.checked && load(), 3000);
  load();
  return { cleanup: () => clearInterval(t) };
}

// ---- devices ------------------------------------------------------------------------------

function devices(body, name, getInst) {
  const wrap = h('div');
  append(body, [wrap]);
  function draw(inst) {
    clear(wrap,
      h('h2', null, 'Network interfaces'),
      table([
        { label: 'Interface', cell: (n) => n.interface },
        { label: 'Network', cell: (n) => h('a', { href: `#/networks/${enc(n.network)}` }, n.network) },
        { label: 'MAC', cell: (n) => h('span', { class: 'mono' }, n.mac) },
        { label: 'IPv4', cell: (n) => h('span', { class: 'mono' }, n.ipv4 || '—') },
        { label: 'IPv6', cell: (n) => h('span', { class: 'mono' }, n.ipv6 || '—') },
        { label: 'Gateway', cell: (n) => n.gateway || '—' },
        { label: 'VLAN', cell: (n) => (n.vlan ? String(n.vlan) : '—') },
      ], inst.nics || [], { empty: 'No network interfaces.' }),
      h('h2', null, 'Volumes'),
      table([
        { label: 'Pool', cell: (v) => h('a', { href: `#/storage/${enc(v.pool)}` }, v.pool) },
        { label: 'Volume', cell: (v) => v.volume },
        { label: 'Content', cell: (v) => v.content },
        { label: 'Mount point', cell: (v) => v.path || '(disk)' },
      ], inst.volumes || [], { empty: 'No volumes attached.' }));
  }
  draw(getInst());
  return { update: draw };
}

// ---- consoles -----------------------------------------------------------------------------

function consoleTab(kind) {
  return (body, name, getInst, ctx) => {
    const status = h('span', { class: 'conn-status', testid: 'conn-status', role: 'status' }, 'Loading…');
    const toolbar = h('div', { class: 'term-toolbar' }, status);
    const holder = h('div', { class: 'term-holder' });
    const title = kind === 'exec' ? 'Terminal' : kind === 'console' ? 'Serial console' : 'Graphical console';
    const hint = kind === 'exec'
      ? 'A shell inside the instance (/bin/sh). Copy: select text; paste: Ctrl+Shift+V or the Paste button.'
      : kind === 'console'
        ? 'The instance\'s console. Press Enter if the screen stays empty.'
        : 'The VM\'s display. Click into it to type.';
    append(body, [h('h2', { class: 'sr-only' }, title), toolbar, h('p', { class: 'hint' }, hint), holder]);
    let session = null;
    let disposed = false;
    const onFatal = (msg) => {
      if (session) session.dispose();
      session = null;
      holder.replaceChildren(h('p', { class: 'page-error', role: 'alert' }, msg));
    };
    const inst = getInst();
    if (kind === 'vnc' && inst.vm && !inst.vm.vnc) {
      status.textContent = 'This VM has no graphical console (para profile): use the serial console.';
      return null;
    }
    (async () => {
      try {
        if (kind === 'vnc') {
          const { VncSession } = await import('../vnc.js');
          if (disposed) return;
          const mount = h('div', { class: 'vnc-screen', testid: 'vnc-canvas' });
          holder.append(mount);
          session = new VncSession({ mount, statusEl: status, instance: name, onFatal });
          toolbar.append(
            h('button', { type: 'button', class: 'btn btn-small', testid: 'vnc-ctrl-alt-del', onclick: () => session && session.ctrlAltDel() }, 'Ctrl-Alt-Del'));
          session.start();
        } else {
          const { TermSession } = await import('../terminal.js');
          if (disposed) return;
          const mount = h('div', { class: 'terminal', testid: 'terminal' });
          holder.append(mount);
          session = new TermSession({ mount, statusEl: status, toolbar, instance: name, kind, onFatal });
          session.start();
        }
      } catch (e) {
        status.textContent = `The console could not be loaded: ${e.message}`;
        ctx.report(e);
      }
    })();
    return {
      cleanup() {
        disposed = true;
        if (session) session.dispose();
      },
    };
  };
}

const TAB_RENDER = {
  overview,
  snapshots,
  backups,
  logs,
  devices,
  exec: consoleTab('exec'),
  console: consoleTab('console'),
  vnc: consoleTab('vnc'),
};
