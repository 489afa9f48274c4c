// Small SVG charts drawn in the page: lines over rounds and stacked bars. No library: the
// console ships in the binary and reaches nothing outside the hospital's network.

const NS = "http://www.w3.org/2000/svg";
const H = 260;
const PAD = { left: 52, right: 16, top: 14, bottom: 58 };
// Eight colours told apart with the common colour-vision deficiencies (Okabe and Ito, 2008).
export const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c6d1f"];

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function frame(label, W) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  svg.append(el("title", {}, label));
  return svg;
}

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
  return ticks;
}

function axes(svg, W, x, y, xs, ys, xLabel, yLabel) {
  const g = el("g");
  for (const t of ys) {
    g.append(el("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t) }));
    g.append(el("text", { x: PAD.left - 6, y: y(t) + 4, "text-anchor": "end" }, String(t)));
  }
  for (const t of xs) {
    g.append(el("text", { x: x(t), y: H - PAD.bottom + 16, "text-anchor": "middle" }, String(t)));
  }
  g.append(el("text", { x: (PAD.left + W - PAD.right) / 2, y: H - PAD.bottom + 32, "text-anchor": "middle" }, xLabel));
  g.append(el("text", { x: 12, y: PAD.top + (H - PAD.top - PAD.bottom) / 2, transform: `rotate(-90 12 ${PAD.top + (H - PAD.top - PAD.bottom) / 2})`, "text-anchor": "middle" }, yLabel));
  svg.append(g);
}

function legend(svg, names) {
  const g = el("g", { class: "legend" });
  let xPos = PAD.left;
  names.forEach((name, i) => {
    const row = H - 12;
    g.append(el("rect", { x: xPos, y: row - 9, width: 10, height: 10, fill: PALETTE[i % PALETTE.length] }));
    g.append(el("text", { x: xPos + 14, y: row }, name));
    xPos += 22 + name.length * 6.5;
  });
  svg.append(g);
}

/**
 * Lines over x: `series` is [{name, points: [[x, y], ...]}]; `limits` are dashed horizontal
 * lines [{name, value}] (a budget, say). An empty chart says so instead of drawing nothing.
 */
export function lineChart(container, { label, xLabel, yLabel, series, limits = [], yMin, yMax, width = 640 }) {
  const W = width;
  const points = series.flatMap((s) => s.points);
  container.replaceChildren();
  if (points.length === 0) {
    const p = document.createElement("p");
    p.textContent = "No data yet.";
    container.append(p);
    return;
  }
  const xsAll = points.map((p) => p[0]);
  const ysAll = points.map((p) => p[1]).concat(limits.map((l) => l.value));
  const x0 = Math.min(...xsAll);
  const x1 = Math.max(...xsAll, x0 + 1);
  const y0 = yMin ?? Math.min(...ysAll);
  const y1 = Math.max(yMax ?? Math.max(...ysAll), y0 + 1e-9);
  const x = (v) => PAD.left + ((v - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const svg = frame(label, W);
  axes(svg, W, x, y, niceTicks(x0, x1, 8).filter((t) => Number.isInteger(t)), niceTicks(y0, y1), xLabel, yLabel);
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    svg.append(el("path", { d, fill: "none", stroke: colour, "stroke-width": 2 }));
    if (s.points.length <= 60) {
      for (const p of s.points) svg.append(el("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: colour }));
    }
  });
  limits.forEach((l, i) => {
    const colour = PALETTE[(series.length + i) % PALETTE.length];
    svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(l.value), y2: y(l.value), stroke: colour, "stroke-dasharray": "6 4", "stroke-width": 1.5 }));
    svg.append(el("text", { x: W - PAD.right, y: y(l.value) - 4, "text-anchor": "end" }, l.name));
  });
  legend(svg, series.map((s) => s.name));
  container.append(svg);
}

/** Stacked bars: `bars` is [{x, parts: [[name, value], ...]}], parts named alike in order. */
export function stackedBars(container, { label, xLabel, yLabel, bars, width = 640 }) {
  const W = width;
  container.replaceChildren();
  if (bars.length === 0) {
    const p = document.createElement("p");
    p.textContent = "No data yet.";
    container.append(p);
    return;
  }
  const names = [...new Set(bars.flatMap((b) => b.parts.map((p) => p[0])))];
  const total = Math.max(...bars.map((b) => b.parts.reduce((n, p) => n + p[1], 0)), 1);
  const band = (W - PAD.left - PAD.right) / bars.length;
  const y = (v) => H - PAD.bottom - (v / total) * (H - PAD.top - PAD.bottom);
  const svg = frame(label, W);
  const xs = bars.map((b) => b.x);
  const every = Math.max(1, Math.ceil(bars.length / 10));
  const x = (v) => PAD.left + (xs.indexOf(v) + 0.5) * band;
  axes(svg, W, x, y, xs.filter((_, i) => i % every === 0), niceTicks(0, total), xLabel, yLabel);
  for (const b of bars) {
    let base = 0;
    for (const [name, value] of b.parts) {
      const colour = PALETTE[names.indexOf(name) % PALETTE.length];
      svg.append(el("rect", { x: x(b.x) - band * 0.4, width: Math.max(band * 0.8, 0.5), y: y(base + value), height: Math.max(y(base) - y(base + value), 0), fill: colour }));
      base += value;
    }
  }
  legend(svg, names);
  container.append(svg);
}
