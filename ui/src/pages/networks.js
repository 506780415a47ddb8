// Networks: list, and one network with its leases, forwards and load balancers.

import { h, clear, fmtTime, badge, table } from '../dom.js';
import { api, enc } from '../api.js';

const netState = (n) => h('span', { title: n.error || '' }, badge(n.status, n.status === 'ok' ? 'ok' : 'error'));

export function renderList(el, _p, ctx) {
  const list = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  clear(el, h('div', { class: 'page-head' }, h('h1', null, 'Networks')), list);
  let disposed = false;
  async function load() {
    try {
      const nets = await api('GET', '/1.0/networks');
      if (disposed) return;
      clear(list, table([
        { label: 'Name', cell: (n) => h('span', null, h('a', { href: `#/networks/${enc(n.name)}` }, n.name), n.default ? h('span', { class: 'muted' }, ' (default)') : null) },
        { label: 'Type', cell: (n) => n.type + (n.vni ? ` VNI ${n.vni}` : '') },
        { label: 'Subnet', cell: (n) => h('span', { class: 'mono' }, [n.subnet, n.ipv6].filter(Boolean).join(' ')) },
        { label: 'Gateway', cell: (n) => h('span', { class: 'mono' }, n.gateway) },
        { label: 'NICs', cell: (n) => String((n.leases || []).length) },
        { label: 'Forwards', cell: (n) => String((n.forwards || []).length) },
        { label: 'Balancers', cell: (n) => String((n.load_balancers || []).length) },
        { label: 'Status', cell: netState },
      ], nets, { empty: 'No networks.' }));
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

export function renderOne(el, params, ctx) {
  const name = params[0];
  const wrap = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  clear(el,
    h('p', { class: 'crumbs' }, h('a', { href: '#/networks' }, 'Networks'), ' / '),
    h('div', { class: 'page-head' }, h('h1', null, name)), wrap);
  let disposed = false;
  async function load() {
    try {
      const n = await api('GET', `/1.0/networks/${enc(name)}`);
      if (disposed) return;
      clear(wrap,
        h('dl', { class: 'kv' },
          h('dt', null, 'Status'), h('dd', null, netState(n), n.error ? h('span', { class: 'text-error' }, ' ' + n.error) : null),
          h('dt', null, 'Type'), h('dd', null, n.type + (n.vni ? ` (VNI ${n.vni}; peers ${(n.peers || []).join(', ') || 'none'})` : '')),
          h('dt', null, 'Subnet'), h('dd', { class: 'mono' }, n.subnet + (n.ipv6 ? ` and ${n.ipv6}` : '')),
          h('dt', null, 'Gateway'), h('dd', { class: 'mono' }, n.gateway + (n.gateway6 ? ` and ${n.gateway6}` : '')),
          h('dt', null, 'Bridge'), h('dd', { class: 'mono' }, `${n.bridge} (MTU ${n.mtu})`),
          h('dt', null, 'VLANs'), h('dd', null, (n.segments || []).map((s) => s.vlan).join(', ') || 'none'),
          h('dt', null, 'Isolated ports'), h('dd', null, n.isolated_ports ? 'yes' : 'no'),
          h('dt', null, 'Created'), h('dd', null, fmtTime(n.created_at))),
        h('h2', null, 'Leases'),
        table([
          { label: 'Instance', cell: (l) => h('a', { href: `#/instances/${enc(l.instance)}` }, l.instance) },
          { label: 'Interface', cell: (l) => l.interface },
          { label: 'IPv4', cell: (l) => h('span', { class: 'mono' }, l.ip) },
          { label: 'IPv6', cell: (l) => h('span', { class: 'mono' }, l.ipv6 || '—') },
          { label: 'MAC', cell: (l) => h('span', { class: 'mono' }, l.mac) },
          { label: 'Host side', cell: (l) => h('span', { class: 'mono' }, l.host_interface) },
          { label: 'VLAN', cell: (l) => (l.vlan ? String(l.vlan) : '—') },
          { label: 'Limits', cell: (l) => [l.ingress ? `in ${l.ingress}` : null, l.egress ? `out ${l.egress}` : null].filter(Boolean).join(', ') || '—' },
        ], n.leases || [], { empty: 'No NICs on this network.' }),
        h('h2', null, 'Port forwards'),
        table([
          { label: 'Protocol', cell: (f) => f.protocol },
          { label: 'Listen', cell: (f) => h('span', { class: 'mono' }, `${f.listen_address || '*'}:${f.listen_port}`) },
          { label: 'Target', cell: (f) => h('span', null, h('a', { href: `#/instances/${enc(f.instance)}` }, f.instance), `:${f.target_port}`) },
        ], n.forwards || [], { empty: 'No published ports.' }),
        h('h2', null, 'Load balancers'),
        (n.load_balancers || []).length
          ? (n.load_balancers || []).map((lb) => h('section', { class: 'card', testid: `lb-${lb.name}` },
            h('h3', null, `${lb.name} — ${lb.address}`),
            h('p', null, lb.ports.map((p) => `${p.protocol} ${p.listen_port} → ${p.target_port}`).join(', '),
              h('span', { class: 'muted' }, ` · health check every ${lb.health_check.interval_ms} ms`)),
            table([
              { label: 'Backend', cell: (b) => h('a', { href: `#/instances/${enc(b.instance)}` }, b.instance) },
              { label: 'Address', cell: (b) => h('span', { class: 'mono' }, b.address) },
              { label: 'Health', cell: (b) => badge(b.health, b.health === 'up' ? 'ok' : b.health === 'down' ? 'error' : 'warn') },
            ], lb.status && lb.status.length ? lb.status : lb.backends.map((b) => ({ instance: b, address: '—', health: 'unknown' })))))
          : h('p', { class: 'empty' }, 'No load balancers.'),
        n.acl ? [h('h2', null, 'ACL'), h('pre', { class: 'code' }, n.acl)] : null);
    } catch (e) {
      if (disposed) return;
      if (e.status === 404) clear(wrap, h('p', { class: 'page-error', role: 'alert' }, e.message));
      else ctx.report(e);
    }
  }
  load();
  const t = setInterval(load, 5000);
  return () => {
    disposed = true;
    clearInterval(t);
  };
}
