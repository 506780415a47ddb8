// Operations started from this page, shown with their progress until they end.

import { h, progressBar } from './dom.js';
import { api, can, enc, waitOperation } from './api.js';

let panel = null;

function ensurePanel() {
  if (panel && panel.isConnected) return panel;
  panel = h('section', { class: 'activity', 'aria-live': 'polite', 'aria-label': 'Operations in progress', testid: 'activity' });
  document.body.append(panel);
  return panel;
}

// Follows the operation `opPromise` resolves to. Resolves to the finished operation; rejects
// with the error (ApiError) after showing it in the item.
export async function track(label, opPromise) {
  const p = ensurePanel();
  const stage = h('span', { class: 'activity-stage' }, 'starting…');
  const bar = h('div', { class: 'activity-bar' }, progressBar(0, label));
  const cancel = h('button', { type: 'button', class: 'btn btn-small', hidden: true }, 'Cancel');
  const dismiss = h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Dismiss', hidden: true }, '✕');
  const item = h('div', { class: 'activity-item' },
    h('div', { class: 'activity-head' }, h('strong', null, label), cancel, dismiss), bar, stage);
  p.append(item);
  dismiss.addEventListener('click', () => item.remove());
  let current = null;
  cancel.addEventListener('click', () => {
    if (!current) return;
    cancel.disabled = true;
    api('DELETE', `/1.0/operations/${enc(current.id)}`).catch(() => {
      cancel.disabled = false;
    });
  });
  try {
    const op = await opPromise;
    const done = await waitOperation(op, (o) => {
      current = o;
      bar.replaceChildren(progressBar(o.progress ?? (o.status === 'success' ? 100 : 0), label));
      stage.textContent = o.stage || o.status;
      cancel.hidden = !(o.may_cancel && can('operator'));
    });
    stage.textContent = 'done';
    cancel.hidden = true;
    setTimeout(() => item.remove(), 2500);
    return done;
  } catch (e) {
    cancel.hidden = true;
    dismiss.hidden = false;
    item.classList.add('activity-failed');
    stage.textContent = e.handled ? 'refused' : e.message;
    if (e.handled) setTimeout(() => item.remove(), 2500);
    throw e;
  }
}
