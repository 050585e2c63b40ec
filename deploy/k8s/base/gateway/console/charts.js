// Horizontal bar charts in inline SVG, drawn by hand: a few rectangles and labels do not justify a charting
// library, and the console loads nothing from elsewhere. Each chart carries its numbers as a table too, for
// screen readers and for copying.

import { h, s } from "./dom.js";

const WIDTH = 640;
const LABEL_WIDTH = 130;
const VALUE_WIDTH = 150;
const BAR_HEIGHT = 16;
const BAR_GAP = 4;
const GROUP_GAP = 14;

function format(value, unit) {
  if (value === null || value === undefined) return "—";
  const rounded = Math.abs(value) >= 100 || Number.isInteger(value) ? Math.round(value) : value.toFixed(1);
  return `${rounded}${unit}`;
}

/** A chart of `rows` ([{label, values: [one per series, null when there is none]}]) with a legend and a table. */
export function barChart(title, rows, { series, unit = "", max } = {}) {
  const largest = max ?? Math.max(1, ...rows.flatMap((r) => r.values.filter((v) => v !== null)));
  const groupHeight = series.length * (BAR_HEIGHT + BAR_GAP) - BAR_GAP;
  const height = rows.length * (groupHeight + GROUP_GAP) + 4;
  const span = WIDTH - LABEL_WIDTH - VALUE_WIDTH;
  const titleId = `chart-${Math.random().toString(36).slice(2, 10)}`;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${height}`, width: "100%", role: "img", "aria-labelledby": titleId, class: "chart" },
    s("title", { id: titleId }, title),
    rows.map((row, index) => {
      const top = index * (groupHeight + GROUP_GAP) + 2;
      return s(
        "g",
        {},
        s("text", { x: LABEL_WIDTH - 8, y: top + groupHeight / 2, class: "chart-label", "text-anchor": "end", "dominant-baseline": "middle" }, row.label),
        row.values.map((value, serie) => {
          const y = top + serie * (BAR_HEIGHT + BAR_GAP);
          const length = value === null ? 0 : Math.max(value > 0 ? 2 : 0, (value / largest) * span);
          return s(
            "g",
            {},
            s("rect", { x: LABEL_WIDTH, y, width: length.toFixed(1), height: BAR_HEIGHT, rx: 2, class: `bar bar-${serie}` }),
            s("text", { x: LABEL_WIDTH + length + 6, y: y + BAR_HEIGHT / 2, class: "chart-value", "dominant-baseline": "middle" }, `${series[serie]} ${format(value, unit)}`),
          );
        }),
      );
    }),
  );
  const legend = h(
    "ul",
    { class: "legend", "aria-hidden": "true" },
    series.map((name, serie) => h("li", {}, h("span", { class: `swatch bar-${serie}` }), name)),
  );
  const data = h(
    "table",
    { class: "visually-hidden" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), series.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, h("th", { scope: "row" }, row.label), row.values.map((v) => h("td", {}, format(v, unit)))))),
  );
  return h("figure", { class: "chart-figure" }, h("figcaption", {}, title), legend, svg, data);
}
