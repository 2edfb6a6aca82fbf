/**
 * What an idle connection costs before and after it has carried a burst (issue 15, finding 4):
 * `deno task memory [--connections N] [--modes v1,plain,integrity,encrypt] [--burst-kib K]
 * [--linger S]`.
 *
 * For each mode it starts the real server as its own process, with the serve task's permissions
 * and V8 flags, and reads its RSS (VmRSS) at: the baseline after a warm-up; N idle authenticated
 * connections; the same N once each has echoed K KiB and gone idle, at once and again S seconds
 * later (V8 frees the burst's garbage only at its next collections); and once all N are closed, at
 * once and again S seconds later (the server asks for one collection once such a wave has gone).
 * A second server, whose connections never carry a burst, gives the RSS that closing them alone
 * leaves. It prints numbers only, and asserts nothing: the targets (an idle connection that has
 * carried a burst costs at most 2× one that has not; RSS back within 2× the baseline once they
 * are closed) are for a person to read. Loopback only; at most 9 000 connections.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { linesOf, taskArgs } from "../tools/harness.ts";
import { writeAll } from "../_io.ts";
import { type Client, connect } from "../client/client.ts";
import type { FrameMode } from "../protocol/frames.ts";
import { SecretKeys } from "../protocol/keys.ts";

const MODES = {
  v1: { protocol: 1, serveFlags: [] },
  plain: { protocol: 2, mode: "plain", serveFlags: [] },
  integrity: { protocol: 2, mode: "integrity", serveFlags: ["--integrity"] },
  encrypt: { protocol: 2, mode: "encrypt", serveFlags: ["--encrypt"] },
} as const satisfies Record<string, { protocol: 1 | 2; mode?: FrameMode; serveFlags: string[] }>;
type ModeName = keyof typeof MODES;

/** This process holds every client end too: stay well under the container's 20 000 descriptors. */
const MAX_CONNECTIONS = 9_000;
/** Connections opened, or bursts carried, at once: enough to be quick, few enough to be gentle. */
const CONCURRENCY = 32;
/** Sessions before the baseline, so that the JIT-compiled paths are in it too. */
const WARM_UP_SESSIONS = 40;

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "2000" },
    modes: { type: "string", default: "plain,encrypt" },
    "burst-kib": { type: "string", default: "64" },
    linger: { type: "string", default: "30" },
  },
});
const connections = Number(flags.connections);
if (!Number.isInteger(connections) || connections < 1 || connections > MAX_CONNECTIONS) {
  throw new RangeError(`--connections must be 1 to ${MAX_CONNECTIONS}, got ${flags.connections}`);
}
const burstBytes = Number(flags["burst-kib"]) * 1024;
if (!Number.isInteger(burstBytes) || burstBytes < 1 || burstBytes > 16 * 1024 * 1024) {
  throw new RangeError(`--burst-kib must be 1 to 16384, got ${flags["burst-kib"]}`);
}
const lingerSeconds = Number(flags.linger);
if (!(lingerSeconds >= 0 && lingerSeconds <= 600)) {
  throw new RangeError(`--linger must be 0 to 600 seconds, got ${flags.linger}`);
}
const modes = flags.modes.split(",").map((name) => name.trim()) as ModeName[];
for (const name of modes) {
  if (!(name in MODES)) {
    throw new RangeError(`unknown mode "${name}": v1, plain, integrity, encrypt`);
  }
}

const ROOT = new URL("../", import.meta.url).pathname;
const secretText = Array.from(
  crypto.getRandomValues(new Uint8Array(32)),
  (b) => b.toString(16).padStart(2, "0"),
).join("");
const key = await SecretKeys.import(new TextEncoder().encode(secretText));
const burst = new Uint8Array(burstBytes).fill(0x61); // "a": ASCII, the echo's fast path

/** One server process, started as the serve task starts it, and what it says. */
interface ServerProcess {
  child: Deno.ChildProcess;
  port: number;
  metricsPort: number;
  /** Resolves when its stderr ends. */
  drained: Promise<void>;
}

/** Starts `serve` as the serve task does: its permissions and V8 flags, read from deno.json. */
async function startServer(extraFlags: readonly string[], home: string): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...taskArgs("serve"),
      "--port",
      "0",
      "--metrics-port",
      "0",
      "--log-format",
      "json",
      "--quiet",
      "--max-connections",
      String(connections + WARM_UP_SESSIONS + 100),
      "--max-connections-per-address",
      "0",
      ...extraFlags,
    ],
    cwd: ROOT, // where deno.json and main.ts are, as for `deno task`
    env: { HMAC_ECHO_SECRET: secretText, XDG_CONFIG_HOME: home, HOME: home, NO_COLOR: "1" },
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const addresses: Record<string, number> = {};
  const ready = Promise.withResolvers<void>();
  const drained = (async () => {
    for await (const line of linesOf(child.stderr)) {
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        console.error(`server: ${line}`);
        continue;
      }
      if (event.event === "listening" || event.event === "metrics") {
        addresses[event.event] = Number(String(event.address).split(":").pop());
        if ("listening" in addresses && "metrics" in addresses) ready.resolve();
      } else if (event.level !== "notice") {
        console.error(`server: ${line}`);
      }
    }
  })();
  const exited = child.status.then((status) => {
    throw new Error(`the server exited (${status.code}) before it was listening`);
  });
  await Promise.race([ready.promise, exited]);
  exited.catch(() => {}); // from here on, a later exit is the normal stop
  return { child, port: addresses.listening, metricsPort: addresses.metrics, drained };
}

/** The server's resident set, KiB. Deno wants --allow-all to read another /proc/PID itself. */
function rssKiB(pid: number): number {
  const { stdout } = new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).outputSync();
  return Number(new TextDecoder().decode(stdout).match(/^VmRSS:\s+(\d+) kB/m)![1]);
}

/** One number from the server's /metrics. */
async function metric(server: ServerProcess, name: string): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
  const text = await response.text();
  return Number(text.match(new RegExp(`^hmac_echo_${name} (\\S+)$`, "m"))![1]);
}

/** Polls /metrics until `check` holds: the server's own word that a phase has finished. */
async function untilMetric(
  server: ServerProcess,
  name: string,
  check: (value: number) => boolean,
): Promise<void> {
  for (let tries = 0; tries < 600; tries++) {
    if (check(await metric(server, name))) return;
    await delay(50);
  }
  throw new Error(`hmac_echo_${name} never reached the expected value`);
}

/**
 * RSS once it has stopped moving: samples 250 ms apart until two agree within 0.5% (freed memory
 * goes back to the system over some time), at most 5 s.
 */
async function settledRssKiB(pid: number): Promise<number> {
  let last = rssKiB(pid);
  for (let i = 0; i < 20; i++) {
    await delay(250);
    const now = rssKiB(pid);
    if (Math.abs(now - last) <= last * 0.005) return now;
    last = now;
  }
  return last;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `task` for 0..count-1, `CONCURRENCY` at a time. */
async function inParallel(count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, count) }, async () => {
    while (next < count) await task(next++);
  }));
}

/** Sends `data` and reads its echo whole, writing and reading at once as a real client would. */
async function echo(client: Client, data: Uint8Array): Promise<void> {
  const reply = new Uint8Array(Math.min(data.length, 64 * 1024));
  const sending = writeAll(client, data);
  let received = 0;
  while (received < data.length) {
    const n = await client.read(reply.subarray(0, Math.min(reply.length, data.length - received)));
    if (n === null) throw new Error(`the echo ended after ${received} of ${data.length} bytes`);
    received += n;
  }
  await sending;
}

/** Ends a session as an honest client does: half-close (the end frame), the server's end, close. */
async function hangUp(client: Client): Promise<void> {
  await client.closeWrite();
  while (await client.read(new Uint8Array(16)) !== null);
  client.close();
}

const ONE_BYTE = new Uint8Array([0x78]); // "x": proves the session, leaves the echo idle

/** RSS readings for one server, KiB. */
interface Readings {
  baseline: number;
  idle: number;
  /** Undefined when the connections carried no burst. */
  afterBurst?: number;
  afterLinger?: number;
  afterClose: number;
  afterCloseLinger?: number;
}

/** One server in mode `name`: N connections, with or without a burst each, then all closed. */
async function measure(name: ModeName, withBurst: boolean): Promise<Readings> {
  const { serveFlags, ...options } = MODES[name];
  const home = await Deno.makeTempDir({ prefix: "hmac-echo-memory-" });
  const server = await startServer(serveFlags, home);
  const { pid } = server.child;
  const dial = () => connect({ secret: key, port: server.port, ...options });
  try {
    await inParallel(WARM_UP_SESSIONS, async (i) => {
      const client = await dial();
      await echo(client, i % 2 === 0 ? ONE_BYTE : burst);
      await hangUp(client);
    });
    await untilMetric(server, "connections_open", (open) => open === 0);
    const baseline = await settledRssKiB(pid);

    const clients: Client[] = [];
    await inParallel(connections, async () => {
      const client = await dial();
      clients.push(client);
      await echo(client, ONE_BYTE);
    });
    const readings: Readings = { baseline, idle: await settledRssKiB(pid), afterClose: NaN };

    if (withBurst) {
      const sentBefore = await metric(server, "sent_bytes_total");
      await inParallel(connections, (i) => echo(clients[i], burst));
      // Every reply byte written: each session is back in its read, waiting.
      await untilMetric(
        server,
        "sent_bytes_total",
        (sent) => sent >= sentBefore + connections * burstBytes,
      );
      readings.afterBurst = await settledRssKiB(pid);
      if (lingerSeconds > 0) {
        await delay(lingerSeconds * 1000);
        readings.afterLinger = await settledRssKiB(pid);
      }
    }

    await inParallel(connections, (i) => hangUp(clients[i]));
    await untilMetric(server, "connections_open", (open) => open === 0);
    readings.afterClose = await settledRssKiB(pid);
    if (lingerSeconds > 0) {
      await delay(lingerSeconds * 1000);
      readings.afterCloseLinger = await settledRssKiB(pid);
    }
    return readings;
  } finally {
    server.child.kill("SIGTERM");
    await server.child.status;
    await server.drained;
    await Deno.remove(home, { recursive: true });
  }
}

const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`.padStart(10);
const each = (kib: number) => `+${(kib / connections).toFixed(1)} KiB`.padStart(11);
const times = (ratio: number, of: string) => `${ratio.toFixed(2)}× ${of}`;

console.log(
  `hmac-echo memory after a burst: ${connections} connections per server, a ${
    burstBytes / 1024
  } KiB echo each; server RSS\n`,
);
for (const name of modes) {
  const r = await measure(name, true);
  const control = await measure(name, false);
  const idleEach = r.idle - r.baseline;
  const line = (what: string, rss: number, rest = "") =>
    console.log(`  ${what.padEnd(30)}${mib(rss)}${rest}`);
  console.log(name);
  line("baseline", r.baseline);
  line("idle, authenticated", r.idle, each(idleEach));
  for (
    const [what, rss] of [
      ["idle after the burst", r.afterBurst!],
      [`the same, ${lingerSeconds} s later`, r.afterLinger],
    ] as const
  ) {
    if (rss === undefined) continue;
    line(what, rss, `${each(rss - r.baseline)}  ${times((rss - r.baseline) / idleEach, "idle")}`);
  }
  for (
    const [what, readings, rss, of] of [
      ["all closed", r, r.afterClose, "baseline"],
      [`the same, ${lingerSeconds} s later`, r, r.afterCloseLinger, "baseline"],
      ["all closed, never a burst", control, control.afterClose, "its baseline"],
      [`the same, ${lingerSeconds} s later`, control, control.afterCloseLinger, "its baseline"],
    ] as const
  ) {
    if (rss === undefined) continue;
    line(what, rss, `${"".padStart(13)}${times(rss / readings.baseline, of)}`);
  }
  console.log(
    JSON.stringify({
      mode: name,
      connections,
      burstKiB: burstBytes / 1024,
      lingerSeconds,
      ...r,
      control,
    }),
  );
}
