// Small DOM and formatting helpers shared by the pages.

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'indeterminate', 'open']);

// h('button', {class: 'x', testid: 'y', onclick: fn}, 'text', child, [more])
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + UNITS[i];
}

// "512MiB", "1.5 GiB", "2G", "1000" (bytes) -> bytes; '' -> undefined; bad -> NaN.
export function parseSize(s) {
  s = String(s || '').trim();
  if (!s) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)$/i.exec(s);
  if (!m) return NaN;
  const pow = ' kmgtp'.indexOf(m[2].toLowerCase() || ' ');
  const base = m[3].toLowerCase().startsWith('i') || m[2] ? 1024 : 1;
  const decimal = /^[kmgtp]b$/i.test(m[2] + m[3]);
  return Math.round(Number(m[1]) * Math.pow(decimal ? 1000 : base, pow));
}

export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return s;
  return d.toLocaleString();
}

export function fmtAgo(s) {
  const d = new Date(s).getTime();
  if (Number.isNaN(d)) return s || '—';
  const sec = Math.round((Date.now() - d) / 1000);
  if (sec < 60) return `${Math.max(sec, 0)} s ago`;
  if (sec < 3600) return `${Math.round(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.round(sec / 3600)} h ago`;
  return `${Math.round(sec / 86400)} d ago`;
}

export function shortFp(fp) {
  return fp ? String(fp).slice(0, 12) : '—';
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || text}` }, text);
}

export function progressBar(percent, label) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  return h('div', {
    class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(p), 'aria-label': label || 'progress',
  }, h('div', { class: 'progress-fill', style: { width: p + '%' } }));
}

// A bar of used against a limit; no limit: just the number.
export function usageBar(used, limit, fmt = String) {
  if (!limit) return h('span', null, fmt(used), h('span', { class: 'muted' }, ' (no limit)'));
  const pct = (used / limit) * 100;
  return h('div', { class: 'usage' + (pct >= 90 ? ' usage-high' : '') },
    progressBar(pct, `${fmt(used)} of ${fmt(limit)}`),
    h('span', { class: 'usage-text' }, `${fmt(used)} / ${fmt(limit)}`));
}

// A table that becomes a list of cards on narrow screens (each cell carries its label).
export function table(columns, rows, { empty = 'Nothing here yet.', caption } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table' },
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
      h('tbody', null, rows.map((r) => h('tr', r.attrs || null,
        columns.map((c) => h('td', { 'data-label': c.label, class: c.class || null }, c.cell(r.item ?? r))))))));
}

let dialogSeq = 0;

// A modal <dialog>: Escape and the Cancel button close it. Returns {dialog, body, close}.
export function openDialog(title, { wide = false, onclose } = {}) {
  const id = `dlg-title-${++dialogSeq}`;
  const body = h('div', { class: 'dialog-body' });
  const dialog = h('dialog', { class: 'dialog' + (wide ? ' dialog-wide' : ''), 'aria-labelledby': id },
    h('div', { class: 'dialog-head' },
      h('h2', { id }, title),
      h('button', { type: 'button', class: 'btn btn-ghost', 'aria-label': 'Close', testid: 'dialog-close', onclick: () => close() }, '✕')),
    body);
  let closed = false;
  function close() {
    if (closed) return;
    closed = true;
    if (dialog.open) dialog.close();
    dialog.remove();
    if (onclose) onclose();
  }
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    close();
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, body, close };
}

// Asks a yes/no question; resolves true or false.
export function confirmDialog(title, message, { ok = 'OK', danger = false } = {}) {
  return new Promise((resolve) => {
    let answer = false;
    const d = openDialog(title, { onclose: () => resolve(answer) });
    append(d.body, [
      h('p', null, message),
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
        h('button', {
          type: 'button', class: danger ? 'btn btn-danger' : 'btn btn-primary', testid: 'confirm-ok',
          onclick: () => { answer = true; d.close(); },
        }, ok)),
    ]);
    d.body.querySelector('[data-testid=confirm-ok]').focus();
  });
}

// A labelled form field. Returns {wrap, input, error}.
export function field(label, input, hint) {
  const id = input.id || `f-${++dialogSeq}`;
  input.id = id;
  const error = h('div', { class: 'field-error', id: id + '-err', role: 'status' });
  input.setAttribute('aria-describedby', id + '-err');
  const wrap = h('div', { class: 'field' },
    h('label', { for: id }, label), input,
    hint ? h('div', { class: 'hint' }, hint) : null, error);
  return { wrap, input, error };
}

export function option(value, label, selected) {
  return h('option', { value, selected: !!selected }, label);
}
