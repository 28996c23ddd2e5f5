// Time-series charts for the console, drawn by uPlot (vendored, MIT; web/vendor/uplot/).
// A chart sizes itself to its container and follows it when the window changes; its
// legend always shows values (the newest point, or the one under the cursor); a chart
// with nothing to show says so in words instead of drawing empty axes.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";
import { lang, t } from "./i18n.js";

const HEIGHT = 190;
export const COLORS = ["#2457d6", "#c0342b", "#17804a", "#b26b00"];
const AXIS = { stroke: "#667085", grid: { stroke: "#e3e6eb", width: 1 }, ticks: { stroke: "#e3e6eb", width: 1 } };
const DAY = 86400;

export function formatNumber(value, digits = 0) {
  return new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(value);
}

// Axis labels in the viewer's time zone and language: days for long ranges, clock times
// for short ones.
function timeTicks(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  const format = new Intl.DateTimeFormat(lang, span > 2 * DAY
    ? { month: "short", day: "numeric" }
    : { hour: "2-digit", minute: "2-digit" });
  return splits.map((s) => format.format(new Date(s * 1000)));
}

function pointTime(seconds, daily) {
  return new Intl.DateTimeFormat(lang, daily
    ? { weekday: "short", month: "short", day: "numeric" }
    : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }).format(new Date(seconds * 1000));
}

function lonely(values, from, to) {
  for (let i = from; i <= to; i += 1) {
    if (values[i] != null && values[i - 1] == null && values[i + 1] == null) return true;
  }
  return false;
}

// One chart: `times` in Unix seconds, each series {label, values}; `unit` goes on the
// y axis and after every legend value. `hasData` decides between chart and empty text.
export function chart({ title, unit, times, series, empty, bars = false, daily = false, digits = 0, name,
  hasData = (s) => s.values.some((v) => v !== null && v !== undefined) }) {
  const figure = h("figure", { class: "card chart", dataset: { chart: name } }, h("figcaption", {}, title));
  if (!times.length || !series.some(hasData)) {
    figure.dataset.empty = "true";
    figure.append(h("p", { class: "chart-empty muted" }, empty));
    return figure;
  }
  const holder = h("div", { class: "chart-plot" });
  figure.append(holder);
  // The newest point with a value: the current minute has no sample until it ends.
  let newest = times.length - 1;
  while (newest > 0 && series.every((s) => s.values[newest] == null)) newest -= 1;
  const pad = bars && times.length > 1 ? (times[1] - times[0]) / 2 : 0;
  const options = (width) => ({
    width, height: HEIGHT,
    scales: {
      // Bars get half a step of room at both ends, so the first and last are whole.
      x: { time: true, range: (u, min, max) => [min - pad, max + pad] },
      y: { range: (u, min, max) => [0, Math.max(max, 1) * 1.15] },
    },
    axes: [{ ...AXIS, values: timeTicks, space: 80 }, { ...AXIS, label: unit, size: 60 }],
    series: [
      { label: t("chartTime"), value: (u, v) => (v == null ? "—" : pointTime(v, daily)) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i],
        width: bars ? 1 : 2,
        fill: COLORS[i] + (bars ? "b0" : "18"),
        // Lone points (a first sample, a gap on each side) have no line: show them as dots.
        points: { show: (u, si, i0, i1) => lonely(u.data[si], i0, i1), size: 6, fill: COLORS[i] },
        paths: bars ? uPlot.paths.bars({ size: [0.85, 60] }) : undefined,
        value: (u, v) => (v == null ? "—" : `${formatNumber(v, digits)} ${unit}`),
      })),
    ],
    // Off the chart the legend shows the newest point rather than dashes.
    hooks: { setCursor: [(u) => { if (u.cursor.idx == null) u.setLegend({ idx: newest }); }] },
  });
  let plot = null;
  let frame = 0;
  // Resized on the next frame: resizing inside the observer's callback loops.
  new ResizeObserver(([entry]) => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      const width = Math.floor(entry.contentRect.width);
      if (width <= 0) return;
      if (plot) { plot.setSize({ width, height: HEIGHT }); return; }
      plot = new uPlot(options(width), [times, ...series.map((s) => s.values)], holder);
      plot.setLegend({ idx: newest });
      figure.dataset.drawn = "true";
    });
  }).observe(holder);
  return figure;
}
