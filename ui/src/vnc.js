// A VM's graphical console: noVNC's RFB over /1.0/instances/NAME/vnc/websocket.

import { enc, readyToConnect, wsUrl, wsProtocols } from './api.js';

export class VncSession {
  constructor({ mount, statusEl, instance, onFatal }) {
    this.mount = mount;
    this.statusEl = statusEl;
    this.instance = instance;
    this.onFatal = onFatal || (() => {});
    this.rfb = null;
    this.RFB = null;
    this.timer = null;
    this.backoff = 1000;
    this.disposed = false;
  }

  status(text, kind = 'info') {
    this.statusEl.textContent = text;
    this.statusEl.dataset.state = kind;
  }

  async start() {
    this.status('Loading…');
    try {
      const [rfbMod, logMod] = await Promise.all([
        import('./vendor/novnc/core/rfb.js'),
        import('./vendor/novnc/core/util/logging.js'),
      ]);
      logMod.initLogging('none');
      this.RFB = rfbMod.default;
    } catch (e) {
      this.status(`The VNC client could not be loaded: ${e.message}`, 'error');
      return;
    }
    this.connect(true);
  }

  async connect(first) {
    if (this.disposed) return;
    clearTimeout(this.timer);
    if (!(await readyToConnect(this, first))) return;
    let rfb;
    try {
      rfb = new this.RFB(this.mount, wsUrl(`/1.0/instances/${enc(this.instance)}/vnc/websocket`), {
        wsProtocols: wsProtocols(),
        shared: true,
      });
    } catch (e) {
      this.status(`Cannot connect: ${e.message}`, 'error');
      return;
    }
    this.rfb = rfb;
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.focusOnClick = true;
    rfb.background = '#111';
    rfb.addEventListener('connect', () => {
      this.backoff = 1000;
      this.status('Connected', 'ok');
    });
    rfb.addEventListener('credentialsrequired', () => rfb.sendCredentials({ password: '' }));
    rfb.addEventListener('securityfailure', (e) => {
      this.status(`Refused by the VNC server: ${e.detail.reason || e.detail.status}`, 'error');
    });
    rfb.addEventListener('disconnect', () => {
      if (this.rfb !== rfb) return;
      this.rfb = null;
      if (this.disposed) return;
      this.retry();
    });
  }

  retry() {
    if (this.disposed) return;
    this.status('Connection lost — reconnecting…', 'warn');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(false), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  ctrlAltDel() {
    if (this.rfb) this.rfb.sendCtrlAltDel();
  }

  focus() {
    if (this.rfb) this.rfb.focus();
  }

  dispose() {
    this.disposed = true;
    clearTimeout(this.timer);
    if (this.rfb) {
      const r = this.rfb;
      this.rfb = null;
      try {
        r.disconnect();
      } catch {
        // already closed
      }
    }
  }
}
