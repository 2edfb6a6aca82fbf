/** The benchmark's results: medians, and one SVG bar chart per metric, servers side by side. */

/** What is measured. */
export interface Metric {
  id: string;
  title: string;
  unit: string;
  higherIsBetter: boolean;
}

/** One metric for one server: the median of its runs, their spread, and the runs themselves. */
export interface BenchResult {
  metric: string;
  server: string;
  median: number;
  min: number;
  max: number;
  runs: { value: number; extra: Record<string, number> }[];
}

/** The middle value (the mean of the middle two for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const COLORS: Record<string, string> = {
  "hmac-echo": "#d9480f",
  "C epoll": "#495057",
  "Deno plain echo": "#f59f00",
  "Node.js": "#2b8a3e",
  "Python threading": "#1c7ed6",
  direct: "#495057",
  spiped: "#2b8a3e",
  stunnel: "#1c7ed6",
};

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function label(value: number): string {
  if (value >= 1_000_000) return `${(value / 1_000_000).toFixed(2)}M`;
  if (value >= 10_000) return `${(value / 1_000).toFixed(0)}k`;
  if (value >= 1_000) return `${(value / 1_000).toFixed(1)}k`;
  return value >= 100 ? value.toFixed(0) : value.toFixed(2);
}

/** A horizontal bar chart: one bar per server at its median, a whisker from min to max. */
export function chart(metric: Metric, results: BenchResult[]): string {
  const rowHeight = 34;
  const left = 150;
  const width = 640;
  const plot = width - left - 80;
  const top = 48;
  const height = top + results.length * rowHeight + 30;
  const scaleMax = Math.max(...results.map((r) => r.max), 1e-9);
  const x = (value: number) => left + (value / scaleMax) * plot;
  const rows = results.map((result, i) => {
    const y = top + i * rowHeight;
    const color = COLORS[result.server] ?? "#868e96";
    const weight = result.server === "hmac-echo" ? "bold" : "normal";
    return [
      `<text x="${left - 8}" y="${y + 17}" text-anchor="end" font-weight="${weight}">${
        escape(result.server)
      }</text>`,
      `<rect x="${left}" y="${y + 4}" width="${
        Math.max(1, x(result.median) - left)
      }" height="20" fill="${color}"/>`,
      `<line x1="${x(result.min)}" x2="${x(result.max)}" y1="${y + 14}" y2="${
        y + 14
      }" stroke="#212529"/>`,
      `<line x1="${x(result.min)}" x2="${x(result.min)}" y1="${y + 9}" y2="${
        y + 19
      }" stroke="#212529"/>`,
      `<line x1="${x(result.max)}" x2="${x(result.max)}" y1="${y + 9}" y2="${
        y + 19
      }" stroke="#212529"/>`,
      `<text x="${x(result.max) + 6}" y="${y + 18}">${label(result.median)}</text>`,
    ].join("\n  ");
  });
  const better = metric.higherIsBetter ? "higher is better" : "lower is better";
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="13">
  <rect width="100%" height="100%" fill="white"/>
  <text x="12" y="22" font-size="15" font-weight="bold">${escape(metric.title)}</text>
  <text x="12" y="40" fill="#495057">${
      escape(metric.unit)
    }, median of runs, whisker min–max; ${better}</text>
  ${rows.join("\n  ")}
</svg>
`;
}

/** Writes `<prefix><metric>.svg` for every metric with results; returns how many. */
export async function drawCharts(
  directory: string,
  metrics: Metric[],
  results: BenchResult[],
  prefix: string,
): Promise<number> {
  let written = 0;
  for (const metric of metrics) {
    const rows = results.filter((result) => result.metric === metric.id);
    if (rows.length === 0) continue;
    await Deno.writeTextFile(`${directory}/${prefix}${metric.id}.svg`, chart(metric, rows));
    written++;
  }
  return written;
}
