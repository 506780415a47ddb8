// The create form: POST /1.0/instances, then follow the operation to its end.

import { h, append, field, openDialog, parseSize, progressBar, shortFp, fmtBytes } from '../dom.js';
import { api, waitOperation } from '../api.js';

// A VM image's profile: imported disks and ISOs boot from firmware (`full`); images built
// by Vessel boot its kernel directly (`para`).
export function vmProfileOf(img) {
  const s = String(img.source || '');
  return /^import (qcow2|raw|iso|disk|img)/i.test(s) ? 'full' : 'para';
}

function imageLabel(img) {
  const name = img.aliases && img.aliases.length ? img.aliases.join(', ') : shortFp(img.fingerprint);
  return `${name} (${img.source || img.kind}, ${fmtBytes(img.size_bytes)})`;
}

// Which field a server message is about, from the words it uses.
export function fieldOf(message) {
  const m = String(message).toLowerCase();
  if (/\bcpu/.test(m)) return 'cpu';
  if (/memory/.test(m)) return 'memory';
  if (/limits?\.disk|root disk|\bdisk\b.*limit|limit.*\bdisk\b/.test(m)) return 'disk';
  if (/network/.test(m)) return 'network';
  if (/\bpool\b|storage/.test(m)) return 'storage';
  if (/\bname\b|named/.test(m)) return 'name';
  if (/image/.test(m)) return 'image';
  return null;
}

export function openCreate({ onDone, report }) {
  const d = openDialog('Create an instance', { wide: true });
  const f = {
    name: field('Name', h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', testid: 'create-name', pattern: '[A-Za-z][A-Za-z0-9-]{0,62}' }),
      'Letters, digits and -, starting with a letter.'),
    type: field('Type', h('select', { testid: 'create-type' },
      h('option', { value: 'container' }, 'Container'), h('option', { value: 'vm' }, 'Virtual machine'))),
    profile: field('VM profile', h('select', { testid: 'create-profile' },
      h('option', { value: 'para' }, 'para — direct kernel boot, virtio'),
      h('option', { value: 'full' }, 'full — firmware boot, emulated devices, graphical console')),
    'Set by the image: Vessel-built VM images boot para, imported disks boot full.'),
    image: field('Image', h('select', { required: true, testid: 'create-image' }, h('option', { value: '' }, 'Loading…'))),
    cpu: field('CPU limit (cores)', h('input', { type: 'number', min: '0.01', step: '0.01', inputmode: 'decimal', testid: 'create-cpu', placeholder: 'no limit' })),
    memory: field('Memory limit', h('input', { type: 'text', testid: 'create-memory', placeholder: 'e.g. 512MiB' })),
    disk: field('Root disk size', h('input', { type: 'text', testid: 'create-disk', placeholder: 'e.g. 2GiB (containers)' })),
    network: field('Network', h('select', { testid: 'create-network' }, h('option', { value: '' }, 'Default network'))),
    storage: field('Storage pool', h('select', { testid: 'create-storage' }, h('option', { value: '' }, 'None (the instance\'s own directory)'))),
  };
  const start = h('input', { type: 'checkbox', id: 'create-start', checked: true, testid: 'create-start' });
  const formError = h('div', { class: 'form-error', role: 'alert', testid: 'create-error', hidden: true });
  const progress = h('div', { class: 'create-progress', hidden: true, testid: 'create-progress', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'create-submit' }, 'Create');
  const form = h('form', { class: 'form-grid', novalidate: true },
    formError,
    f.name.wrap, f.type.wrap, f.profile.wrap, f.image.wrap,
    h('fieldset', { class: 'fieldset' }, h('legend', null, 'Limits'), f.cpu.wrap, f.memory.wrap, f.disk.wrap),
    f.network.wrap, f.storage.wrap,
    h('div', { class: 'field field-check' }, start, h('label', { for: 'create-start' }, 'Start it once created')),
    progress,
    h('div', { class: 'form-actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'), submit));
  append(d.body, [form]);
  f.name.input.focus();

  let images = [];
  function fillImages() {
    const type = f.type.input.value;
    const profile = f.profile.input.value;
    f.profile.wrap.hidden = type !== 'vm';
    f.disk.wrap.hidden = type === 'vm';
    const fit = images.filter((i) => (i.kind || 'container') === type && (type !== 'vm' || vmProfileOf(i) === profile));
    const prev = f.image.input.value;
    f.image.input.replaceChildren(...(fit.length
      ? fit.map((i) => {
        const value = i.aliases && i.aliases.length ? i.aliases[0] : i.fingerprint;
        return h('option', { value, selected: value === prev }, imageLabel(i));
      })
      : [h('option', { value: '' }, type === 'vm' ? `No ${profile} VM image` : 'No container image')]));
  }
  f.type.input.addEventListener('change', fillImages);
  f.profile.input.addEventListener('change', fillImages);
  fillImages();

  Promise.all([
    api('GET', '/1.0/images').catch((e) => { report(e, f.image.error); return []; }),
    api('GET', '/1.0/networks').catch(() => []),
    api('GET', '/1.0/storage/pools').catch(() => []),
  ]).then(([imgs, nets, pools]) => {
    images = imgs;
    fillImages();
    for (const n of nets) {
      f.network.input.append(h('option', { value: n.name }, `${n.name} (${n.subnet})${n.default ? ' — default' : ''}`));
    }
    f.network.input.append(h('option', { value: '-' }, 'No network'));
    for (const p of pools) {
      f.storage.input.append(h('option', { value: p.name }, `${p.name} (${p.driver}, ${fmtBytes(p.size_bytes - p.used_bytes)} free)`));
    }
  });

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = '';
    for (const k of Object.keys(f)) {
      f[k].error.textContent = '';
      f[k].input.removeAttribute('aria-invalid');
    }
  }

  function fieldError(key, msg) {
    const target = f[key];
    if (target && !target.wrap.hidden) {
      target.error.textContent = msg;
      target.input.setAttribute('aria-invalid', 'true');
      target.input.focus();
    } else {
      formError.textContent = msg;
      formError.hidden = false;
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const name = f.name.input.value.trim();
    if (!name) return fieldError('name', 'Give the instance a name.');
    if (!f.image.input.value) return fieldError('image', 'Pick an image.');
    const type = f.type.input.value;
    const body = { name, image: f.image.input.value, type, start: start.checked, limits: {} };
    const cpu = f.cpu.input.value.trim();
    if (cpu) {
      const v = Number(cpu);
      if (!(v > 0)) return fieldError('cpu', 'Give a number of cores, e.g. 0.5.');
      body.limits.cpu = v;
    }
    const mem = parseSize(f.memory.input.value);
    if (Number.isNaN(mem)) return fieldError('memory', 'Give a size like 512MiB or 2GiB.');
    if (mem !== undefined) body.limits.memory = mem;
    if (type === 'container') {
      const disk = parseSize(f.disk.input.value);
      if (Number.isNaN(disk)) return fieldError('disk', 'Give a size like 2GiB.');
      if (disk !== undefined) body.limits.disk = disk;
    }
    const net = f.network.input.value;
    if (net === '-') body.no_network = true;
    else if (net) body.networks = [net];
    if (f.storage.input.value) body.storage = f.storage.input.value;

    submit.disabled = true;
    progress.hidden = false;
    progress.replaceChildren(h('span', null, 'Sending…'));
    let op;
    try {
      op = await api('POST', '/1.0/instances', { body });
    } catch (err) {
      submit.disabled = false;
      progress.hidden = true;
      if (err.handled) return;
      fieldError(err.status === 400 || err.status === 404 || err.status === 409 ? fieldOf(err.message) : null, err.message);
      return;
    }
    try {
      await waitOperation(op, (o) => {
        progress.replaceChildren(
          h('div', null, h('strong', null, o.description || 'Creating'), ' — ', o.stage || o.status),
          progressBar(o.progress ?? (o.status === 'success' ? 100 : 5), 'Creating the instance'));
      });
      d.close();
      if (onDone) onDone(name);
    } catch (err) {
      submit.disabled = false;
      if (!err.handled) {
        formError.textContent = `Creating ${name} failed: ${err.message}`;
        formError.hidden = false;
      }
      if (onDone) onDone(name);
    }
  });
}
