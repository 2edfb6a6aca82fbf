/**
 * The tunnel benchmark (issue 13), a part of `deno task bench` (`--tunnels-only` for it alone):
 * a real Redis reached directly, through hmac-echo's tunnel (`connect --listen` → `serve
 * --forward`), through spiped (an `-e`/`-d` pair, a 32-byte key file) and through stunnel (a PSK
 * pair). Everything runs on this machine's cores together, unpinned, as the figures were
 * measured: both ends of each tunnel, Redis and the load. The contenders take turns within each
 * repeat, so a noisy neighbour hurts them alike; compare them as ratios within one run.
 *
 * - requests/s and p50/p99: `redis-benchmark -t ping,set,get -c 50 --csv` (the mean of its four
 *   tests; each test's figures are kept in the results);
 * - new connections/s: the same with `-k 0` (a new connection per request), `-t ping`;
 * - bulk MB/s over one connection, each way: bench/native/bulk.c through the tunnel.
 */

import { taskCommand } from "../tools/harness.ts";
import type { BenchResult, Metric } from "./report.ts";
import { median } from "./report.ts";

export const TUNNEL_METRICS: Metric[] = [
  {
    id: "tunnel-rps",
    title: "Redis through a tunnel: requests/s, 50 clients",
    unit: "req/s",
    higherIsBetter: true,
  },
  {
    id: "tunnel-p50",
    title: "Redis through a tunnel: p50 latency, 50 clients",
    unit: "ms",
    higherIsBetter: false,
  },
  {
    id: "tunnel-p99",
    title: "Redis through a tunnel: p99 latency, 50 clients",
    unit: "ms",
    higherIsBetter: false,
  },
  {
    id: "tunnel-connections",
    title: "Redis through a tunnel: new connections/s (-k 0)",
    unit: "conn/s",
    higherIsBetter: true,
  },
  {
    id: "tunnel-bulk-up",
    title: "Bulk through a tunnel, one connection, client to target",
    unit: "MB/s",
    higherIsBetter: true,
  },
  {
    id: "tunnel-bulk-down",
    title: "Bulk through a tunnel, one connection, target to client",
    unit: "MB/s",
    higherIsBetter: true,
  },
];

/** One way to reach a target: its name, and how to put it in front of a target port. */
interface Contender {
  name: string;
  /** Why it cannot run here, if it cannot. */
  missing?: string;
  /** Starts it in front of 127.0.0.1:`target`; resolves once a connection gets through. */
  start(target: number, work: string): Promise<Front>;
}

/** A running contender: where the load connects, its processes, and how to stop them. */
interface Front {
  port: number;
  pids: number[];
  /** What its processes printed lately, for an error message. */
  output?: () => string;
  stop(): Promise<void>;
}

const SECRET = "tunnel benchmark secret, not for production";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

let nextPort = 40_000 + Math.floor(Math.random() * 5_000);
/** A port nobody listens on now, below the ephemeral range's busiest part. */
function freePort(): number {
  for (;;) {
    const port = nextPort++;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: the next one
    }
  }
}

function installed(command: string, args: string[] = ["-v"]): string | undefined {
  try {
    new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync();
    return undefined;
  } catch {
    return `${command} is not installed`;
  }
}

/** Spawns a long-running process whose output is drained so it never blocks. */
function spawn(command: string, args: string[], env: Record<string, string> = {}) {
  const child = new Deno.Command(command, {
    args,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      output = (output + chunk).slice(-20_000);
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  return {
    child,
    output: () => output,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      await drained;
    },
  };
}

/** A tunnel's two ends as one front: the load connects to `port`; the client end stops first. */
function tunnel(
  port: number,
  server: ReturnType<typeof spawn>,
  client: ReturnType<typeof spawn>,
): Front {
  return {
    port,
    pids: [server.child.pid, client.child.pid],
    output: () => server.output() + client.output(),
    stop: async () => {
      await client.stop();
      await server.stop();
    },
  };
}

/** Waits until a Redis PING through `port` answers, the way any contender proves it is up. */
async function waitForPong(port: number, what: string, output: () => string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(encoder.encode("PING\r\n"));
        const buffer = new Uint8Array(64);
        const n = await conn.read(buffer);
        if (n !== null && decoder.decode(buffer.subarray(0, n)).startsWith("+PONG")) return;
      } finally {
        conn.close();
      }
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} did not come up:\n${output()}`);
}

/** Waits until the bulk target answers a 1-byte upload through `port`. */
async function waitForBulk(port: number, bulk: string, what: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const { code } = await new Deno.Command(bulk, { args: ["up", String(port), "1"] }).output();
    if (code === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} did not pass a byte to the bulk target`);
}

function contenders(): Contender[] {
  const deno = Deno.execPath();
  return [
    {
      name: "direct",
      start: (target) => Promise.resolve({ port: target, pids: [], stop: () => Promise.resolve() }),
    },
    {
      name: "hmac-echo",
      start(target) {
        const serverPort = freePort();
        const localPort = freePort();
        const env = { HMAC_ECHO_SECRET: SECRET };
        const server = spawn(deno, [
          ...taskCommand("serve").slice(1),
          "--port",
          String(serverPort),
          "--forward",
          `127.0.0.1:${target}`,
          "--quiet",
          "--throttle-after",
          "0",
          "--max-connections-per-address",
          "0",
        ], env);
        const client = spawn(deno, [
          ...taskCommand("connect").slice(1),
          "--port",
          String(serverPort),
          "--listen",
          `127.0.0.1:${localPort}`,
          "--quiet",
          "--max-connections",
          "10000",
        ], env);
        return Promise.resolve(tunnel(localPort, server, client));
      },
    },
    {
      name: "spiped",
      missing: installed("spiped"),
      async start(target, work) {
        const key = `${work}/spiped.key`;
        await Deno.writeFile(key, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
        const serverPort = freePort();
        const localPort = freePort();
        // -F: in the foreground, so it can be stopped; -n 0: no cap on connections (the
        // default, 100, would refuse the -k 0 run's churn); forward secrecy on, as hmac-echo's.
        const server = spawn("spiped", [
          "-d",
          "-F",
          "-n",
          "0",
          "-s",
          `[127.0.0.1]:${serverPort}`,
          "-t",
          `[127.0.0.1]:${target}`,
          "-k",
          key,
        ]);
        const client = spawn("spiped", [
          "-e",
          "-F",
          "-n",
          "0",
          "-s",
          `[127.0.0.1]:${localPort}`,
          "-t",
          `[127.0.0.1]:${serverPort}`,
          "-k",
          key,
        ]);
        return tunnel(localPort, server, client);
      },
    },
    {
      name: "stunnel",
      missing: installed("stunnel4", ["-version"]),
      async start(target, work) {
        const psk = `${work}/psk-${target}.txt`;
        const hex = Array.from(
          crypto.getRandomValues(new Uint8Array(32)),
          (byte) => byte.toString(16).padStart(2, "0"),
        ).join("");
        await Deno.writeTextFile(psk, `bench:${hex}\n`, { mode: 0o600 });
        const serverPort = freePort();
        const localPort = freePort();
        const config = (name: string, lines: string[]) => {
          const path = `${work}/stunnel-${name}-${target}.conf`;
          Deno.writeTextFileSync(
            path,
            ["foreground = yes", "pid =", "debug = 3", "[tunnel]", ...lines, ""].join("\n"),
          );
          return path;
        };
        const common = [`PSKsecrets = ${psk}`, "ciphers = PSK"];
        const server = spawn("stunnel4", [
          config("server", [
            `accept = 127.0.0.1:${serverPort}`,
            `connect = 127.0.0.1:${target}`,
            ...common,
          ]),
        ]);
        const client = spawn("stunnel4", [
          config("client", [
            "client = yes",
            `accept = 127.0.0.1:${localPort}`,
            `connect = 127.0.0.1:${serverPort}`,
            ...common,
          ]),
        ]);
        return tunnel(localPort, server, client);
      },
    },
  ];
}

function cpuSeconds(pid: number): number {
  try {
    const stat = decoder.decode(
      new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).outputSync().stdout,
    );
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** redis-benchmark's CSV: one row per test, with rps and latency percentiles. */
async function redisBenchmark(port: number, args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command("redis-benchmark", {
    args: ["-h", "127.0.0.1", "-p", String(port), "--csv", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(stdout);
  if (code !== 0) throw new Error(`redis-benchmark failed: ${decoder.decode(stderr)}`);
  const rows = text.trim().split("\n").slice(1).map((line) => line.replaceAll('"', "").split(","));
  if (rows.length === 0) throw new Error(`redis-benchmark printed no results: ${text}`);
  return rows.map(([test, rps, , , p50, , p99]) => ({
    test,
    rps: Number(rps),
    p50: Number(p50),
    p99: Number(p99),
  }));
}

async function bulkRun(bulk: string, mode: "up" | "down", port: number, bytes: number) {
  const { code, stdout, stderr } = await new Deno.Command(bulk, {
    args: [mode, String(port), String(bytes)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`bulk ${mode} failed: ${decoder.decode(stderr)}`);
  return JSON.parse(decoder.decode(stdout)) as { mbPerSecond: number };
}

const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;

/** Options for {@linkcode benchTunnels}. */
export interface TunnelBenchOptions {
  quick: boolean;
  repeats: number;
  /** Where bench.ts built the native tools. */
  build: string;
  log: (line: string) => void;
}

/** Runs the tunnel benchmark; returns its results and its ratios against the targets. */
export async function benchTunnels(
  options: TunnelBenchOptions,
): Promise<{ results: BenchResult[]; ratios: Record<string, number>; skipped: string[] }> {
  const skipped: string[] = [];
  const needed = installed("redis-server") ?? installed("redis-benchmark", ["--version"]);
  if (needed) return { results: [], ratios: {}, skipped: [`all tunnels: ${needed}`] };
  const { quick, repeats, build, log } = options;
  const requests = quick ? 20_000 : 50_000;
  const churn = quick ? 2_000 : 5_000;
  const bulkBytes = (quick ? 64 : 256) * 1024 * 1024;
  const bulk = `${build}/bulk`;
  const work = await Deno.makeTempDir({ prefix: "hmac-echo-tunnel-bench-" });
  const redisPort = freePort();
  const bulkPort = freePort();
  const redis = spawn("redis-server", [
    "--port",
    String(redisPort),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxclients",
    "10000",
  ]);
  const bulkTarget = spawn(bulk, ["serve", String(bulkPort)]);
  const fronts: { name: string; redis: Front; bulk: Front }[] = [];
  const runs = new Map<string, { value: number; extra: Record<string, number> }[]>();
  const record = (metric: string, name: string, value: number, extra: Record<string, number>) => {
    const key = `${metric}\u0000${name}`;
    runs.set(key, [...runs.get(key) ?? [], { value, extra }]);
  };
  try {
    await waitForPong(redisPort, "redis-server", redis.output);
    await waitForBulk(bulkPort, bulk, "the bulk target");
    for (const contender of contenders()) {
      if (contender.missing) {
        skipped.push(`${contender.name}: ${contender.missing}`);
        continue;
      }
      const front = await contender.start(redisPort, work);
      const bulkFront = await contender.start(bulkPort, work);
      fronts.push({ name: contender.name, redis: front, bulk: bulkFront });
      await waitForPong(front.port, contender.name, front.output ?? (() => ""));
      await waitForBulk(bulkFront.port, bulk, contender.name);
    }
    for (let repeat = 1; repeat <= repeats; repeat++) {
      // Turns within each repeat: every contender meets the same neighbours.
      for (const { name, redis: front, bulk: bulkFront } of fronts) {
        const cpuBefore = front.pids.map(cpuSeconds);
        const started = performance.now();
        const rows = await redisBenchmark(front.port, [
          "-t",
          "ping,set,get",
          "-c",
          "50",
          "-n",
          String(requests),
        ]);
        const seconds = (performance.now() - started) / 1000;
        const cpu = front.pids.map((pid, i) => (cpuSeconds(pid) - cpuBefore[i]) / seconds);
        const perTest = Object.fromEntries(rows.flatMap((row) => [
          [`${row.test} rps`, row.rps],
          [`${row.test} p50ms`, row.p50],
          [`${row.test} p99ms`, row.p99],
        ]));
        const cpuShares = Object.fromEntries(
          cpu.map((share, i) => [`cpu ${i ? "client" : "server"} end`, share]),
        );
        record("tunnel-rps", name, mean(rows.map((row) => row.rps)), { ...perTest, ...cpuShares });
        record("tunnel-p50", name, mean(rows.map((row) => row.p50)), perTest);
        record("tunnel-p99", name, mean(rows.map((row) => row.p99)), perTest);
        const churned = await redisBenchmark(front.port, [
          "-t",
          "ping",
          "-c",
          "50",
          "-k",
          "0",
          "-n",
          String(churn),
        ]);
        record("tunnel-connections", name, mean(churned.map((row) => row.rps)), {
          p50ms: mean(churned.map((row) => row.p50)),
          p99ms: mean(churned.map((row) => row.p99)),
        });
        for (const mode of ["up", "down"] as const) {
          const { mbPerSecond } = await bulkRun(bulk, mode, bulkFront.port, bulkBytes);
          record(`tunnel-bulk-${mode}`, name, mbPerSecond, { bytes: bulkBytes });
        }
        log(`  tunnels, repeat ${repeat}/${repeats}: ${name} done`);
      }
    }
  } finally {
    for (const front of fronts) {
      await front.redis.stop();
      await front.bulk.stop();
    }
    await bulkTarget.stop();
    await redis.stop();
    await Deno.remove(work, { recursive: true });
  }

  const results: BenchResult[] = [];
  for (const metric of TUNNEL_METRICS) {
    for (const { name } of fronts) {
      const these = runs.get(`${metric.id}\u0000${name}`) ?? [];
      if (these.length === 0) continue;
      const values = these.map((run) => run.value);
      results.push({
        metric: metric.id,
        server: name,
        median: median(values),
        min: Math.min(...values),
        max: Math.max(...values),
        runs: these,
      });
    }
  }
  return { results, ratios: tunnelRatios(results), skipped };
}

/**
 * The targets as ratios, each against the better of spiped and stunnel on that figure:
 * requests/s ≥ 1.0×, bulk ≥ 1.0×, new connections/s ≥ 2×, p99 ≤ 1.0× (lower is better there).
 */
export function tunnelRatios(results: BenchResult[]): Record<string, number> {
  const get = (metric: string, server: string) =>
    results.find((r) => r.metric === metric && r.server === server)?.median ?? NaN;
  const ratios: Record<string, number> = {};
  for (const metric of TUNNEL_METRICS) {
    const ours = get(metric.id, "hmac-echo");
    const peers = ["spiped", "stunnel"].map((name) => get(metric.id, name))
      .filter((value) => !Number.isNaN(value));
    if (peers.length > 0) {
      const best = metric.higherIsBetter ? Math.max(...peers) : Math.min(...peers);
      ratios[`${metric.id} hmac-echo / best of spiped, stunnel`] = ours / best;
    }
    for (const name of ["spiped", "stunnel", "direct"]) {
      ratios[`${metric.id} hmac-echo / ${name}`] = ours / get(metric.id, name);
    }
  }
  return ratios;
}
