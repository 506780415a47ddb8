// Interactive terminals: a container's exec shell and the serial console of any instance,
// xterm.js over a WebSocket of frames, reconnecting after a dropped connection.

import { Terminal } from './vendor/xterm/xterm.js';
import { FitAddon } from './vendor/xterm/addon-fit.js';
import { h, openDialog, append } from './dom.js';
import { enc, readyToConnect, wsUrl, wsProtocols } from './api.js';
import { Kind, encodeFrame, resizeFrame, i32Frame, FrameReader, readI32 } from './frames.js';

const SIGHUP = 1;

const utf8 = new TextEncoder();
const textOf = new TextDecoder();

// kind: 'exec' or 'console'. statusEl shows the connection state; onFatal(message) is called
// when the instance cannot be reached any more (it was deleted, the session ended).
export class TermSession {
  constructor({ mount, statusEl, toolbar, instance, kind, onFatal }) {
    this.mount = mount;
    this.statusEl = statusEl;
    this.instance = instance;
    this.kind = kind;
    this.onFatal = onFatal || (() => {});
    this.ws = null;
    this.timer = null;
    this.backoff = 1000;
    this.disposed = false;
    this.ended = false; // the process exited or the server sent an Error frame

    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
      allowProposedApi: false,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(mount);
    // For tests and tools: the terminal's text, line by line.
    mount.readTerminal = () => {
      const b = this.term.buffer.active;
      const lines = [];
      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
      return lines;
    };
    // For tests: drop the connection as a network failure would (the session reconnects).
    mount.dropConnection = () => {
      if (!this.ws) return;
      this.closeSocket();
      this.retry();
    };
    this.fitSoon();
    this.resizeObs = new ResizeObserver(() => this.fitSoon());
    this.resizeObs.observe(mount);
    this.term.onData((d) => this.send(encodeFrame(Kind.Stdin, utf8.encode(d))));
    this.term.onBinary((d) => {
      const bytes = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 0xff;
      this.send(encodeFrame(Kind.Stdin, bytes));
    });
    this.term.onResize(({ cols, rows }) => this.send(resizeFrame(cols, rows)));
    // A reload or a closed tab ends the session too (see dispose).
    this.onPageHide = () => this.dispose();
    window.addEventListener('pagehide', this.onPageHide);

    this.reconnectBtn = h('button', { type: 'button', class: 'btn btn-small', hidden: true, onclick: () => this.restart() },
      kind === 'exec' ? 'New session' : 'Reconnect');
    if (toolbar) {
      append(toolbar, [
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.copy() }, 'Copy'),
        h('button', { type: 'button', class: 'btn btn-small', testid: 'paste', onclick: () => this.pasteClipboard() }, 'Paste'),
        this.reconnectBtn,
      ]);
    }
  }

  fitSoon() {
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame(() => {
      if (this.disposed || !this.mount.clientWidth) return;
      try {
        this.fit.fit();
      } catch {
        // not laid out yet
      }
    });
  }

  status(text, kind = 'info') {
    this.statusEl.textContent = text;
    this.statusEl.dataset.state = kind;
  }

  send(bytes) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  start() {
    this.connect(true);
  }

  restart() {
    this.ended = false;
    this.reconnectBtn.hidden = true;
    this.term.write('\r\n');
    this.connect(true);
  }

  async connect(first) {
    if (this.disposed) return;
    clearTimeout(this.timer);
    if (!(await readyToConnect(this, first))) return;
    this.open(first);
  }

  open(first) {
    const path = `/1.0/instances/${enc(this.instance)}/${this.kind}/websocket`;
    let ws;
    try {
      ws = new WebSocket(wsUrl(path), wsProtocols());
    } catch (e) {
      this.status(`Cannot connect: ${e.message}`, 'error');
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    const reader = new FrameReader();
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff = 1000;
      this.fitSoon();
      const { cols, rows } = this.term;
      if (this.kind === 'exec') {
        ws.send(JSON.stringify({
          command: ['/bin/sh'], tty: true, width: cols, height: rows,
          environment: { TERM: 'xterm-256color' },
        }));
      }
      ws.send(resizeFrame(cols, rows));
      if (!first) this.term.write('\r\n\x1b[2m[reconnected]\x1b[0m\r\n');
      this.status('Connected', 'ok');
      this.term.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        this.term.write(m.data);
        return;
      }
      for (const f of reader.push(m.data)) this.frame(f);
    };
    ws.onerror = () => {};
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.disposed || this.ended) return;
      if (!opened && first) this.status('Connecting failed — retrying…', 'warn');
      this.retry();
    };
  }

  retry() {
    if (this.disposed) return;
    this.status('Connection lost — reconnecting…', 'warn');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(false), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }

  frame({ kind, payload }) {
    switch (kind) {
      case Kind.Stdout:
      case Kind.Stderr:
        this.term.write(payload);
        break;
      case Kind.Exit: {
        const code = readI32(payload);
        this.ended = true;
        this.term.write(`\r\n\x1b[2m[exited with code ${code}]\x1b[0m\r\n`);
        this.status(`Session ended (exit code ${code})`, 'info');
        this.reconnectBtn.hidden = false;
        this.closeSocket();
        break;
      }
      case Kind.Error: {
        const msg = textOf.decode(payload);
        this.ended = true;
        this.term.write(`\r\n\x1b[31m${msg}\x1b[0m\r\n`);
        this.status(`Error: ${msg}`, 'error');
        this.reconnectBtn.hidden = false;
        this.closeSocket();
        break;
      }
      default:
        break;
    }
  }

  closeSocket() {
    if (!this.ws) return;
    const ws = this.ws;
    this.ws = null;
    ws.onclose = null;
    ws.close();
  }

  async copy() {
    const text = this.term.getSelection();
    if (!text) {
      this.term.focus();
      return;
    }
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard refused (permissions): select-and-Ctrl+Shift+C still works.
    }
    this.term.focus();
  }

  async pasteClipboard() {
    let text = null;
    try {
      if (navigator.clipboard && navigator.clipboard.readText) text = await navigator.clipboard.readText();
    } catch {
      text = null;
    }
    if (text) {
      this.term.paste(text);
      this.term.focus();
      return;
    }
    // No clipboard access: let the user paste into a text box.
    const d = openDialog('Paste into the terminal');
    const area = h('textarea', { rows: 6, class: 'paste-area', 'aria-label': 'Text to send', testid: 'paste-text' });
    append(d.body, [
      h('p', null, 'Paste the text here (Ctrl+V), then Send.'),
      area,
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => d.close() }, 'Cancel'),
        h('button', {
          type: 'button', class: 'btn btn-primary', testid: 'paste-send',
          onclick: () => {
            this.term.paste(area.value);
            d.close();
            this.term.focus();
          },
        }, 'Send')),
    ]);
    area.focus();
  }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    window.removeEventListener('pagehide', this.onPageHide);
    clearTimeout(this.timer);
    cancelAnimationFrame(this.raf);
    this.resizeObs.disconnect();
    // Leaving the page ends the shell as closing a terminal window would: a hangup, then
    // the end of its input.
    if (this.kind === 'exec' && !this.ended) {
      this.send(i32Frame(Kind.Signal, SIGHUP));
      this.send(encodeFrame(Kind.CloseStdin));
    }
    this.closeSocket();
    this.term.dispose();
  }
}
