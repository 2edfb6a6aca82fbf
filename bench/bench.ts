/**
 * The benchmark: `deno task bench [--quick]`.
 *
 * Runs hmac-echo beside its peers (a C epoll reference, Node.js, the Python tutorial's design,
 * and hmac-echo's own echo with the handshake switched off), each as its own process pinned to
 * core 0, driven by a native load generator pinned to core 1 that verifies every handshake and
 * every echoed byte. Prints a table of medians with their spread, writes the raw results as JSON
 * and one SVG chart per metric under bench/results/. No timing is asserted anywhere: these are
 * measurements, compared as ratios within one run.
 */

import { parseArgs } from "node:util";
import { type BenchResult, drawCharts, median, type Metric } from "./report.ts";
import { benchTunnels, TUNNEL_METRICS } from "./tunnels.ts";
import { hmacEchoCommand, SEMI_SPACE } from "./hmac_echo_command.ts";
import { cpuTicks, PINNED, pinned as pinnedTo, startOnFreePort } from "./_process.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean" },
    only: { type: "string" },
    workers: { type: "boolean" },
    /** Only the cost of v2 against v1 (hmac-echo alone), into results/protocol.json. */
    "protocol-only": { type: "boolean" },
    /** Only Redis through hmac-echo's tunnel, spiped and stunnel, into results/tunnels.json. */
    "tunnels-only": { type: "boolean" },
  },
});
const quick = flags.quick ?? false;
const REPEATS = quick ? 1 : 3;
const SECONDS = quick ? 1 : 4;
const ROOT = new URL("../", import.meta.url).pathname;
const BUILD = `${ROOT}bench/.build`;
const RESULTS = `${ROOT}bench/results`;
const SECRET = "benchmark secret, not for production";

// --- the contenders ---------------------------------------------------------------------------
interface ServerSpec {
  name: string;
  /** Speaks the handshake; false for the plain echo the generator drives with --no-auth. */
  auth: boolean;
  /** For the protocol-cost metrics: the variant bench/v2_loadgen.mjs speaks (v1, v2-…). */
  variant?: string;
  command: (port: number) => string[];
}

const deno = Deno.execPath();
const SERVERS: ServerSpec[] = [
  {
    name: "C epoll",
    auth: true,
    command: (port: number) => [`${BUILD}/epoll_server`, String(port)],
  },
  {
    name: "hmac-echo",
    auth: true,
    command: hmacEchoCommand,
  },
  {
    name: "Deno plain echo",
    auth: false,
    command: (port: number) => [
      deno,
      "run",
      "--allow-net",
      SEMI_SPACE,
      `${ROOT}bench/peers/deno_plain.ts`,
      String(port),
    ],
  },
  {
    name: "Node.js",
    auth: true,
    command: (port: number) => ["node", `${ROOT}bench/peers/node_server.mjs`, String(port)],
  },
  {
    name: "Python threading",
    auth: true,
    command: (port: number) => ["python3", `${ROOT}bench/peers/python_threading.py`, String(port)],
  },
].filter((spec) => !flags.only || flags.only.split(",").includes(spec.name));

/** hmac-echo with N worker threads, for the unpinned 1-versus-2 comparison. */
function workersSpec(count: number): ServerSpec {
  const base = SERVERS.find((spec) => spec.name === "hmac-echo")!;
  return {
    name: `hmac-echo, ${count} worker${count > 1 ? "s" : ""}`,
    auth: true,
    command: (port) => [...base.command(port), "--workers", String(count)],
  };
}
const WORKER_METRICS: Metric[] = [
  {
    id: "workers-rtt-1000",
    title: "Unpinned: round trips/s, 1 000 connections × 32 B",
    unit: "round trips/s",
    higherIsBetter: true,
  },
  {
    id: "workers-sessions-c100",
    title: "Unpinned: sessions/s, concurrency 100",
    unit: "sessions/s",
    higherIsBetter: true,
  },
];

/** hmac-echo spoken to in each protocol variant, by the Node.js generator, for v2's and v3's cost. */
const PROTOCOL_VARIANTS = [
  "v1",
  "v2-plain",
  "v2-integrity",
  "v2-encrypt",
  "v3-integrity",
  "v3-encrypt",
];
function variantSpec(variant: string): ServerSpec {
  const base = SERVERS.find((spec) => spec.name === "hmac-echo")!;
  return { ...base, name: `hmac-echo ${variant}`, variant };
}
const PROTOCOL_METRICS: Metric[] = [
  {
    id: "protocol-sessions-c10",
    title: "By protocol: sessions/s, concurrency 10 (Node.js generator)",
    unit: "sessions/s",
    higherIsBetter: true,
  },
  {
    id: "protocol-bulk",
    title: "By protocol: bulk echo MB/s, 64 KiB writes (Node.js generator)",
    unit: "MB/s",
    higherIsBetter: true,
  },
  {
    id: "protocol-rss-per-idle-2000",
    title: "By protocol: RSS per idle authenticated connection, 2 000 held",
    unit: "KiB",
    higherIsBetter: false,
  },
];

// --- the metrics ------------------------------------------------------------------------------
const METRICS: Metric[] = [
  {
    id: "sessions-c1",
    title: "Sessions/s, concurrency 1",
    unit: "sessions/s",
    higherIsBetter: true,
  },
  {
    id: "sessions-c10",
    title: "Sessions/s, concurrency 10",
    unit: "sessions/s",
    higherIsBetter: true,
  },
  {
    id: "sessions-c100",
    title: "Sessions/s, concurrency 100",
    unit: "sessions/s",
    higherIsBetter: true,
  },
  {
    id: "rtt-100",
    title: "Round trips/s, 100 connections × 32 B",
    unit: "round trips/s",
    higherIsBetter: true,
  },
  {
    id: "rtt-1000",
    title: "Round trips/s, 1 000 connections × 32 B",
    unit: "round trips/s",
    higherIsBetter: true,
  },
  {
    id: "p99-half-load",
    title: "p99 latency at half the 100-connection maximum",
    unit: "ms",
    higherIsBetter: false,
  },
  {
    id: "bulk",
    title: "Bulk echo, one connection, 64 KiB writes",
    unit: "MB/s",
    higherIsBetter: true,
  },
  {
    id: "rss-per-idle-1000",
    title: "RSS per idle authenticated connection, 1 000 held",
    unit: "KiB",
    higherIsBetter: false,
  },
  {
    id: "rss-per-idle-10000",
    title: "RSS per idle authenticated connection, 10 000 held",
    unit: "KiB",
    higherIsBetter: false,
  },
  {
    id: "max-held",
    title: "Most authenticated connections held (fd limit caps it)",
    unit: "connections",
    higherIsBetter: true,
  },
];
const QUICK_METRICS = new Set(["sessions-c10", "rtt-100", "bulk", "rss-per-idle-1000"]);

// --- plumbing ---------------------------------------------------------------------------------
/** Set while measuring --workers, which is about using both cores: nothing is pinned then. */
let pinningOff = false;

function pinned(core: number, command: string[]): string[] {
  return pinningOff ? command : pinnedTo(core, command);
}

interface Running {
  child: Deno.ChildProcess;
  port: number;
  pid: number;
}

async function startServer(spec: ServerSpec): Promise<Running> {
  const server = await startOnFreePort(
    spec.name,
    (port) => pinned(0, spec.command(port)),
    { HMAC_ECHO_SECRET: SECRET, XDG_CONFIG_HOME: `${BUILD}/config`, NO_COLOR: "1" },
  );
  return { ...server, pid: server.child.pid };
}

async function stopServer(server: Running): Promise<void> {
  try {
    server.child.kill("SIGKILL");
  } catch {
    // already gone
  }
  await server.child.status;
}

function rssKiB(pid: number): number {
  const status = new TextDecoder().decode(
    new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).outputSync().stdout,
  );
  return Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? NaN);
}

interface LoadResult {
  perSecond?: number;
  p50ms?: number;
  p99ms?: number;
  mbPerSecond?: number;
  held?: number;
  errors: number;
  verifyFailures: number;
  serverCpu: number;
  generatorCpu: number;
}

/**
 * The load generator's command line for `spec`: the native one, or for a protocol variant the
 * Node.js one (bench/v2_loadgen.mjs), which speaks v2.
 */
function generator(spec: ServerSpec, args: string[], port: number): string[] {
  const target = ["--port", String(port)];
  if (spec.variant) {
    return [
      "node",
      `${ROOT}bench/v2_loadgen.mjs`,
      ...args,
      ...target,
      "--variant",
      spec.variant,
      "--secret",
      SECRET,
    ];
  }
  const auth = spec.auth ? ["--secret", SECRET] : ["--no-auth"];
  return [`${BUILD}/loadgen`, ...args, ...target, ...auth];
}

/** Runs the generator against `server` and measures both sides' CPU while it runs. */
async function load(spec: ServerSpec, server: Running, args: string[]): Promise<LoadResult> {
  const [command, ...rest] = pinned(1, generator(spec, args, server.port));
  const started = performance.now();
  const serverBefore = cpuTicks(server.pid);
  const child = new Deno.Command(command, { args: rest, stdout: "piped", stderr: "piped" }).spawn();
  const output = await child.output();
  const seconds = (performance.now() - started) / 1000;
  const text = new TextDecoder().decode(output.stdout).trim();
  if (!text.startsWith("{")) {
    throw new Error(
      `the generator for ${spec.name} failed (${output.code}): ` +
        new TextDecoder().decode(output.stderr),
    );
  }
  const result = JSON.parse(text);
  if (result.verifyFailures > 0) throw new Error(`${spec.name}: echo verification failed: ${text}`);
  return {
    ...result,
    // Both as a share of one core: 1.0 means that side was the bottleneck.
    serverCpu: (cpuTicks(server.pid) - serverBefore) / 100 / seconds,
    generatorCpu: result.generatorCpu,
  };
}

/** `hold` mode: opens N authenticated connections, reports, and holds them until told to stop. */
async function hold(
  spec: ServerSpec,
  server: Running,
  connections: number,
): Promise<{ held: number; rssKiB: number }> {
  const [command, ...rest] = pinned(
    1,
    generator(
      spec,
      ["hold", "--connections", String(connections), "--duration", "50"],
      server.port,
    ),
  );
  const child = new Deno.Command(command, {
    args: rest,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  })
    .spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) break;
    line += value;
  }
  const { held } = JSON.parse(line);
  // Let the server finish its bookkeeping for the last connections before measuring.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const rss = rssKiB(server.pid);
  await child.stdin.close();
  while (!(await reader.read()).done);
  await child.status;
  return { held, rssKiB: rss };
}

// --- one measurement per metric and server ------------------------------------------------------
const maxRtt100 = new Map<string, number>();

async function measure(
  metric: Metric,
  spec: ServerSpec,
): Promise<{ value: number; extra: Record<string, number> }> {
  const server = await startServer(spec);
  try {
    const duration = ["--duration", String(SECONDS)];
    switch (metric.id.replace(/^workers-/, "")) {
      case "protocol-sessions-c10":
      case "protocol-bulk": {
        const args = metric.id === "protocol-bulk" ? ["bulk"] : ["sessions", "--concurrency", "10"];
        const r = await load(spec, server, [...args, ...duration]);
        return {
          value: metric.id === "protocol-bulk" ? r.mbPerSecond! : r.perSecond!,
          extra: { serverCpu: r.serverCpu, generatorCpu: r.generatorCpu, errors: r.errors },
        };
      }
      case "sessions-c1":
      case "sessions-c10":
      case "sessions-c100": {
        const concurrency = metric.id.replace(/^workers-/, "").slice("sessions-c".length);
        const r = await load(spec, server, ["sessions", "--concurrency", concurrency, ...duration]);
        return {
          value: r.perSecond!,
          extra: { serverCpu: r.serverCpu, generatorCpu: r.generatorCpu, errors: r.errors },
        };
      }
      case "rtt-100":
      case "rtt-1000": {
        const connections = metric.id.replace(/^workers-/, "").slice("rtt-".length);
        const r = await load(spec, server, ["rtt", "--connections", connections, ...duration]);
        if (metric.id === "rtt-100") {
          maxRtt100.set(spec.name, Math.max(maxRtt100.get(spec.name) ?? 0, r.perSecond!));
        }
        return {
          value: r.perSecond!,
          extra: {
            p50ms: r.p50ms!,
            p99ms: r.p99ms!,
            serverCpu: r.serverCpu,
            generatorCpu: r.generatorCpu,
            errors: r.errors,
          },
        };
      }
      case "p99-half-load": {
        const rate = Math.round((maxRtt100.get(spec.name) ?? 10_000) / 2);
        const r = await load(spec, server, [
          "rtt",
          "--connections",
          "100",
          "--rate",
          String(rate),
          ...duration,
        ]);
        return {
          value: r.p99ms!,
          extra: { p50ms: r.p50ms!, offeredPerSecond: rate, achieved: r.perSecond! },
        };
      }
      case "bulk": {
        const r = await load(spec, server, ["bulk", ...duration]);
        return {
          value: r.mbPerSecond!,
          extra: { serverCpu: r.serverCpu, generatorCpu: r.generatorCpu, errors: r.errors },
        };
      }
      case "rss-per-idle-1000":
      case "rss-per-idle-10000":
      case "protocol-rss-per-idle-2000": {
        const connections = Number(metric.id.replace(/^.*rss-per-idle-/, ""));
        const before = rssKiB(server.pid);
        const { held, rssKiB: after } = await hold(spec, server, connections);
        return {
          value: (after - before) / Math.max(1, held),
          extra: { held, baselineKiB: before, rssKiB: after },
        };
      }
      case "max-held": {
        const { held, rssKiB: after } = await hold(spec, server, 19_000);
        return { value: held, extra: { rssKiB: after } };
      }
    }
    throw new Error(`unknown metric ${metric.id}`);
  } finally {
    await stopServer(server);
  }
}

// --- main ---------------------------------------------------------------------------------------
async function build(): Promise<void> {
  await Deno.mkdir(`${BUILD}/config`, { recursive: true });
  for (const name of ["loadgen", "epoll_server", "bulk"]) {
    const { code, stderr } = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-o", `${BUILD}/${name}`, `${ROOT}bench/native/${name}.c`, "-lcrypto"],
    }).output();
    if (code !== 0) throw new Error(`cc ${name}.c failed:\n${new TextDecoder().decode(stderr)}`);
  }
}

function machine(): Record<string, string | number> {
  const run = (cmd: string, args: string[]) => {
    try {
      return new TextDecoder().decode(new Deno.Command(cmd, { args }).outputSync().stdout).trim();
    } catch {
      return "unknown";
    }
  };
  const cpuinfo = run("cat", ["/proc/cpuinfo"]);
  return {
    cores: navigator.hardwareConcurrency,
    cpu: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown",
    kernel: run("uname", ["-r"]),
    deno: Deno.version.deno,
    node: run("node", ["--version"]),
    python: run("python3", ["--version"]),
    pinned: PINNED ? "server on core 0, generator on core 1 (taskset)" : "not pinned",
    date: new Date().toISOString(),
  };
}

await build();
const info = machine();
const protocolOnly = flags["protocol-only"] ?? false;
const tunnelsOnly = flags["tunnels-only"] ?? false;
const metrics = METRICS.filter((metric) =>
  !protocolOnly && !tunnelsOnly && (!quick || QUICK_METRICS.has(metric.id))
);
/** Which results files this run writes: quick, protocol-only, tunnels-only, or the full run's. */
const kind = quick ? "quick" : protocolOnly ? "protocol" : tunnelsOnly ? "tunnels" : "full";
console.log(
  `hmac-echo benchmark (${quick ? "quick" : "full"}): ${REPEATS} run(s) of ${SECONDS} s each`,
);
console.log(JSON.stringify(info));
const results: BenchResult[] = [];

/** Measures `metric` for `spec` REPEATS times, prints the median and spread, keeps the result. */
async function runMetric(metric: Metric, spec: ServerSpec): Promise<void> {
  const runs: { value: number; extra: Record<string, number> }[] = [];
  for (let i = 0; i < REPEATS; i++) runs.push(await measure(metric, spec));
  const values = runs.map((run) => run.value);
  const result: BenchResult = {
    metric: metric.id,
    server: spec.name,
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    runs,
  };
  results.push(result);
  console.log(
    `${metric.title.padEnd(58)} ${spec.name.padEnd(22)} ${format(result.median).padStart(10)} ` +
      `${metric.unit}  (${format(result.min)}–${format(result.max)})`,
  );
}

for (const metric of metrics) {
  for (const spec of SERVERS) await runMetric(metric, spec);
}

if (!tunnelsOnly && SERVERS.some((spec) => spec.name === "hmac-echo")) {
  for (const metric of PROTOCOL_METRICS) {
    for (const variant of PROTOCOL_VARIANTS) await runMetric(metric, variantSpec(variant));
  }
  metrics.push(...PROTOCOL_METRICS);
}

if (!quick && !protocolOnly && !tunnelsOnly && SERVERS.some((spec) => spec.name === "hmac-echo")) {
  pinningOff = true;
  for (const metric of WORKER_METRICS) {
    for (const spec of [workersSpec(1), workersSpec(2)]) await runMetric(metric, spec);
  }
  pinningOff = false;
  metrics.push(...WORKER_METRICS);
}

// Redis through the tunnels (issue 13): unpinned, both ends and Redis on the same cores.
const tunnelRatios: Record<string, number> = {};
if (!protocolOnly && (tunnelsOnly || !flags.only)) {
  const tunnels = await benchTunnels({
    quick,
    repeats: REPEATS,
    build: BUILD,
    log: (line) => console.log(line),
  });
  for (const reason of tunnels.skipped) console.log(`tunnels skipped: ${reason}`);
  for (const metric of TUNNEL_METRICS) {
    for (const result of tunnels.results.filter((r) => r.metric === metric.id)) {
      results.push(result);
      console.log(
        `${metric.title.padEnd(58)} ${result.server.padEnd(22)} ` +
          `${format(result.median).padStart(10)} ${metric.unit}  ` +
          `(${format(result.min)}–${format(result.max)})`,
      );
    }
  }
  if (tunnels.results.length > 0) metrics.push(...TUNNEL_METRICS);
  Object.assign(tunnelRatios, tunnels.ratios);
}

function format(value: number): string {
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
}

// Ratios against the targets of issue 3, from this run.
const get = (metric: string, server: string) =>
  results.find((r) => r.metric === metric && r.server === server)?.median ?? NaN;
const ratios: Record<string, number> = {};
for (const metric of ["rtt-100", "rtt-1000", "bulk"]) {
  ratios[`${metric} hmac-echo / C`] = get(metric, "hmac-echo") / get(metric, "C epoll");
  ratios[`${metric} hmac-echo / Node.js`] = get(metric, "hmac-echo") / get(metric, "Node.js");
  ratios[`${metric} hmac-echo / Python`] = get(metric, "hmac-echo") /
    get(metric, "Python threading");
}
for (const c of ["1", "10", "100"]) {
  ratios[`sessions-c${c} hmac-echo / Deno plain`] = get(`sessions-c${c}`, "hmac-echo") /
    get(`sessions-c${c}`, "Deno plain echo");
}
ratios["workers-rtt-1000 2 workers / 1"] = get("workers-rtt-1000", "hmac-echo, 2 workers") /
  get("workers-rtt-1000", "hmac-echo, 1 worker");
ratios["workers-sessions-c100 2 workers / 1"] =
  get("workers-sessions-c100", "hmac-echo, 2 workers") /
  get("workers-sessions-c100", "hmac-echo, 1 worker");
for (const metric of ["protocol-sessions-c10", "protocol-bulk", "protocol-rss-per-idle-2000"]) {
  for (const variant of PROTOCOL_VARIANTS.slice(1)) {
    ratios[`${metric} ${variant} / v1`] = get(metric, `hmac-echo ${variant}`) /
      get(metric, "hmac-echo v1");
  }
}
// The Node.js generator is near a full core in the session runs: the server's CPU per session
// (and per MB) is the cost measure that does not depend on which side was the bottleneck.
const serverCpuPer = (metric: string, server: string) => {
  const runs = results.find((r) => r.metric === metric && r.server === server)?.runs ?? [];
  return median(runs.map((run) => run.extra.serverCpu / run.value));
};
for (const metric of ["protocol-sessions-c10", "protocol-bulk"]) {
  for (const variant of PROTOCOL_VARIANTS.slice(1)) {
    ratios[`${metric} server CPU per unit, ${variant} / v1`] =
      serverCpuPer(metric, `hmac-echo ${variant}`) / serverCpuPer(metric, "hmac-echo v1");
  }
}
Object.assign(ratios, tunnelRatios);
console.log("\nratios (same run):");
for (const [name, ratio] of Object.entries(ratios)) {
  if (!Number.isNaN(ratio)) console.log(`  ${name.padEnd(60)} ${ratio.toFixed(2)}×`);
}

await Deno.mkdir(RESULTS, { recursive: true });
const report = { machine: info, quick, repeats: REPEATS, secondsPerRun: SECONDS, results, ratios };
const stamp = info.date.toString().replace(/[:.]/g, "-");
await Deno.writeTextFile(
  `${RESULTS}/${kind}-${stamp}.json`,
  JSON.stringify(report, null, 2),
);
await Deno.writeTextFile(
  `${RESULTS}/${kind === "full" ? "latest" : kind}.json`,
  JSON.stringify(report, null, 2),
);
const charts = await drawCharts(RESULTS, metrics, results, quick ? "quick-" : "");
console.log(`\nwrote ${RESULTS}/${kind === "full" ? "latest" : kind}.json and ${charts} charts`);
const failures = results.flatMap((r) => r.runs).filter((run) => (run.extra.errors ?? 0) > 0).length;
console.log(`bench: ${results.length} measured, ${failures} with generator errors`);
