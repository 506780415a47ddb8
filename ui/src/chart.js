// A line chart drawn on a <canvas>: time on x, one series, its own y scale.

export function drawChart(canvas, points, { fmt = String, color = '#2563eb', minMax = 1, label = '' } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300;
  const hgt = canvas.clientHeight || 120;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const style = getComputedStyle(canvas);
  const fg = style.color || '#222';
  const pad = { l: 8, r: 8, t: 18, b: 16 };
  const pw = w - pad.l - pad.r;
  const ph = hgt - pad.t - pad.b;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = fg;
  ctx.globalAlpha = 0.15;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    ctx.fillRect(pad.l, Math.round(y), pw, 1);
  }
  ctx.globalAlpha = 1;
  if (!points.length) {
    ctx.fillStyle = fg;
    ctx.fillText(`${label}: no data yet`, pad.l, pad.t - 5);
    canvas.setAttribute('aria-label', `${label}: no data yet`);
    return;
  }
  const t0 = points[0][0];
  const t1 = Math.max(points[points.length - 1][0], t0 + 1);
  const dataMax = Math.max(...points.map((p) => p[1]));
  const vmax = Math.max(minMax, dataMax) * 1.1;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * pw;
  const y = (v) => pad.t + ph - (v / vmax) * ph;
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(x(points[points.length - 1][0]), pad.t + ph);
  ctx.lineTo(x(t0), pad.t + ph);
  ctx.closePath();
  ctx.globalAlpha = 0.12;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
  const last = points[points.length - 1][1];
  ctx.fillStyle = fg;
  const text = `${label}: ${fmt(last)}  (max ${fmt(dataMax)})`;
  ctx.fillText(text, pad.l, pad.t - 5);
  const span = Math.round(t1 - t0);
  const spanText = span >= 120 ? `${Math.round(span / 60)} min` : `${span} s`;
  ctx.fillText(`last ${spanText}`, pad.l, hgt - 3);
  canvas.setAttribute('aria-label', text);
}
