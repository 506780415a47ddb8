// Instances: a live list with filters, bulk start and stop, and the create form.

import { h, clear, fmtBytes, badge, debounce } from '../dom.js';
import { api, can, enc } from '../api.js';
import { onEvent, aboutInstances } from '../events.js';
import { track } from '../activity.js';
import { openCreate } from './create.js';

const STATUSES = ['running', 'stopped', 'creating', 'starting', 'stopping', 'frozen', 'error'];

export function addresses(inst) {
  const out = [];
  for (const n of inst.nics || []) {
    if (n.ipv4) out.push(n.ipv4.split('/')[0]);
    if (n.ipv6) out.push(n.ipv6.split('/')[0]);
  }
  return out;
}

export function fmtCpu(cores) {
  if (cores === undefined || cores === null) return '—';
  return (cores * 100).toFixed(cores < 0.1 ? 1 : 0) + '%';
}

export function render(el, _params, ctx) {
  const selected = new Set();
  const lastCpu = new Map(); // name -> {ns, t}
  const rates = new Map(); // name -> cores in use
  const rows = new Map(); // name -> {tr, cells}
  let items = [];
  let loaded = false;
  let disposed = false;

  const statusSel = h('select', { id: 'f-status', testid: 'filter-status' },
    h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s }, s)));
  const typeSel = h('select', { id: 'f-type', testid: 'filter-type' },
    h('option', { value: '' }, 'Any type'), h('option', { value: 'container' }, 'Containers'), h('option', { value: 'vm' }, 'VMs'));
  const search = h('input', { id: 'f-search', type: 'search', placeholder: 'Name, address, image…', testid: 'filter-search' });
  for (const c of [statusSel, typeSel]) c.addEventListener('change', renderRows);
  search.addEventListener('input', renderRows);

  const canAct = can('user');
  const startBtn = canAct ? h('button', { type: 'button', class: 'btn', testid: 'action-start', onclick: () => bulk('start') }, 'Start') : null;
  const stopBtn = canAct ? h('button', { type: 'button', class: 'btn', testid: 'action-stop', onclick: () => bulk('stop') }, 'Stop') : null;
  const createBtn = can('operator')
    ? h('button', { type: 'button', class: 'btn btn-primary', testid: 'create-open', onclick: () => openCreate({ onDone: load, report: ctx.report }) }, 'Create instance')
    : null;
  const selectAll = canAct ? h('input', { type: 'checkbox', 'aria-label': 'Select all shown instances', testid: 'select-all' }) : null;
  if (selectAll) {
    selectAll.addEventListener('change', () => {
      for (const inst of visible()) {
        if (selectAll.checked) selected.add(inst.name);
        else selected.delete(inst.name);
      }
      renderRows();
    });
  }
  const count = h('span', { class: 'muted', 'aria-live': 'polite' });
  const tbody = h('tbody', { testid: 'instances-body' });
  const empty = h('p', { class: 'empty', hidden: true });
  const cols = ['Name', 'Status', 'Type', 'Addresses', 'CPU', 'Memory', 'Disk'];

  clear(el,
    h('div', { class: 'page-head' },
      h('h1', null, 'Instances'),
      h('div', { class: 'actions' }, startBtn, stopBtn, createBtn)),
    h('div', { class: 'toolbar', role: 'search' },
      h('label', { for: 'f-status', class: 'sr-only' }, 'Status'), statusSel,
      h('label', { for: 'f-type', class: 'sr-only' }, 'Type'), typeSel,
      h('label', { for: 'f-search', class: 'sr-only' }, 'Search'), search,
      count),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'table', testid: 'instances-table' },
        h('thead', null, h('tr', null,
          canAct ? h('th', { scope: 'col', class: 'col-check' }, selectAll) : null,
          cols.map((c) => h('th', { scope: 'col' }, c)))),
        tbody)),
    empty);

  function visible() {
    const q = search.value.trim().toLowerCase();
    return items.filter((i) => (!statusSel.value || i.status === statusSel.value)
      && (!typeSel.value || i.type === typeSel.value)
      && (!q || [i.name, i.image, ...addresses(i)].some((s) => String(s || '').toLowerCase().includes(q))));
  }

  function makeRow(name) {
    const check = canAct ? h('input', { type: 'checkbox', 'aria-label': `Select ${name}`, testid: `select-${name}` }) : null;
    if (check) {
      check.addEventListener('change', () => {
        if (check.checked) selected.add(name);
        else selected.delete(name);
        updateBulk();
      });
    }
    const cells = {
      check,
      name: h('td', { 'data-label': 'Name', class: 'cell-name' }, h('a', { href: `#/instances/${enc(name)}` }, name)),
      status: h('td', { 'data-label': 'Status', testid: `instance-status-${name}` }),
      type: h('td', { 'data-label': 'Type' }),
      addr: h('td', { 'data-label': 'Addresses', class: 'mono' }),
      cpu: h('td', { 'data-label': 'CPU', class: 'num' }),
      mem: h('td', { 'data-label': 'Memory', class: 'num' }),
      disk: h('td', { 'data-label': 'Disk', class: 'num' }),
    };
    const tr = h('tr', { testid: `instance-row-${name}` },
      check ? h('td', { class: 'col-check', 'data-label': 'Select' }, check) : null,
      cells.name, cells.status, cells.type, cells.addr, cells.cpu, cells.mem, cells.disk);
    return { tr, cells };
  }

  function setText(el2, text) {
    if (el2.textContent !== text) el2.textContent = text;
  }

  function renderRows() {
    const list = visible();
    const names = new Set(list.map((i) => i.name));
    for (const [name, row] of rows) {
      if (!names.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    list.forEach((inst, idx) => {
      let row = rows.get(inst.name);
      if (!row) {
        row = makeRow(inst.name);
        rows.set(inst.name, row);
      }
      const c = row.cells;
      if (c.status.textContent !== inst.status) {
        clear(c.status, badge(inst.status));
        c.status.title = inst.error || inst.last_exit_reason || '';
      }
      setText(c.type, inst.type === 'vm' ? 'VM' : 'container');
      setText(c.addr, addresses(inst).join(' ') || '—');
      const st = inst.state;
      const cpu = inst.status === 'running' ? rates.get(inst.name) : undefined;
      setText(c.cpu, fmtCpu(cpu) + (inst.limits && inst.limits.cpu ? ` / ${inst.limits.cpu} cores` : ''));
      setText(c.mem, st && inst.status === 'running'
        ? fmtBytes(st.memory_usage_bytes) + (inst.limits && inst.limits.memory ? ` / ${fmtBytes(inst.limits.memory)}` : '')
        : (inst.limits && inst.limits.memory ? `limit ${fmtBytes(inst.limits.memory)}` : '—'));
      const root = inst.root_disk
        ? `${fmtBytes(inst.root_disk.used_bytes)} / ${fmtBytes(inst.root_disk.size_bytes)}`
        : (inst.limits && inst.limits.disk ? fmtBytes(inst.limits.disk) : '');
      const io = st && inst.status === 'running' && st.disk_read_bytes !== undefined
        ? `read ${fmtBytes(st.disk_read_bytes)}, written ${fmtBytes(st.disk_write_bytes)}` : '';
      setText(c.disk, [root, io].filter(Boolean).join(' · ') || '—');
      if (c.check) c.check.checked = selected.has(inst.name);
      if (tbody.children[idx] !== row.tr) tbody.insertBefore(row.tr, tbody.children[idx] || null);
    });
    count.textContent = loaded ? `${list.length} of ${items.length}` : 'Loading…';
    empty.hidden = !loaded || list.length > 0;
    empty.textContent = items.length ? 'No instance matches the filter.' : 'No instances yet.';
    updateBulk();
  }

  function updateBulk() {
    for (const n of [...selected]) if (!items.some((i) => i.name === n)) selected.delete(n);
    const sel = items.filter((i) => selected.has(i.name));
    if (startBtn) {
      startBtn.disabled = !sel.some((i) => i.status === 'stopped' || i.status === 'error');
      startBtn.textContent = sel.length ? `Start (${sel.length})` : 'Start';
    }
    if (stopBtn) {
      stopBtn.disabled = !sel.some((i) => i.status === 'running' || i.status === 'frozen');
      stopBtn.textContent = sel.length ? `Stop (${sel.length})` : 'Stop';
    }
    if (selectAll) {
      const vis = visible();
      selectAll.checked = vis.length > 0 && vis.every((i) => selected.has(i.name));
      selectAll.indeterminate = !selectAll.checked && vis.some((i) => selected.has(i.name));
    }
  }

  async function bulk(action) {
    const want = action === 'start' ? ['stopped', 'error'] : ['running', 'frozen'];
    const targets = items.filter((i) => selected.has(i.name) && want.includes(i.status)).map((i) => i.name);
    await Promise.all(targets.map((name) => track(`${action === 'start' ? 'Starting' : 'Stopping'} ${name}`,
      api('PUT', `/1.0/instances/${enc(name)}/state`, { body: { action } })).catch((e) => ctx.report(e))));
    load();
  }

  let loading = null;
  async function load() {
    if (loading) return loading;
    loading = (async () => {
      try {
        const list = await api('GET', '/1.0/instances?recursion=1');
        if (disposed) return;
        const now = performance.now();
        for (const inst of list) {
          const ns = inst.state ? inst.state.cpu_usage_ns : undefined;
          const prev = lastCpu.get(inst.name);
          if (ns !== undefined) {
            if (prev && now - prev.t > 500 && ns >= prev.ns) rates.set(inst.name, (ns - prev.ns) / ((now - prev.t) * 1e6));
            if (!prev || now - prev.t > 500) lastCpu.set(inst.name, { ns, t: now });
          } else {
            lastCpu.delete(inst.name);
            rates.delete(inst.name);
          }
        }
        items = list.sort((a, b) => a.name.localeCompare(b.name));
        loaded = true;
        renderRows();
      } catch (e) {
        if (!disposed) ctx.report(e);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  const reload = debounce(load, 200);
  const off = onEvent((ev) => {
    if (aboutInstances(ev)) reload();
  });
  const poll = setInterval(load, 5000);
  renderRows();
  load();
  return () => {
    disposed = true;
    off();
    clearInterval(poll);
  };
}
