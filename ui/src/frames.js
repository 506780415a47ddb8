// Frames of the exec and console streams: 1 byte kind, u32 big-endian length, payload.

export const Kind = {
  Stdin: 0, Stdout: 1, Stderr: 2, Resize: 3, Exit: 4, CloseStdin: 5, Error: 6, Signal: 7,
};

export function encodeFrame(kind, payload = new Uint8Array(0)) {
  const out = new Uint8Array(5 + payload.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, payload.length, false);
  out.set(payload, 5);
  return out;
}

export function resizeFrame(cols, rows) {
  const p = new Uint8Array(4);
  const v = new DataView(p.buffer);
  v.setUint16(0, cols, false);
  v.setUint16(2, rows, false);
  return encodeFrame(Kind.Resize, p);
}

export function i32Frame(kind, n) {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setInt32(0, n, false);
  return encodeFrame(kind, p);
}

// Splits incoming bytes into frames; keeps a partial frame until the rest arrives.
export class FrameReader {
  constructor() {
    this.buf = new Uint8Array(0);
  }

  push(chunk) {
    const data = new Uint8Array(chunk);
    if (this.buf.length) {
      const joined = new Uint8Array(this.buf.length + data.length);
      joined.set(this.buf);
      joined.set(data, this.buf.length);
      this.buf = joined;
    } else {
      this.buf = data;
    }
    const frames = [];
    let off = 0;
    while (this.buf.length - off >= 5) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset + off + 1, 4).getUint32(0, false);
      if (this.buf.length - off < 5 + len) break;
      frames.push({ kind: this.buf[off], payload: this.buf.slice(off + 5, off + 5 + len) });
      off += 5 + len;
    }
    this.buf = this.buf.slice(off);
    return frames;
  }
}

export function readI32(p) {
  return p.length === 4 ? new DataView(p.buffer, p.byteOffset, 4).getInt32(0, false) : null;
}
