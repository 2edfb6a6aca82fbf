/**
 * The chaos suite: `deno task chaos [--quick]`.
 *
 * Starts `hmac-echo serve` as its own process, exactly as the `serve` task runs it, under a
 * descriptor limit. In each round it runs honest clients (every echoed byte checked) at the same
 * time as every hostile client of issues 4 and 15, then floods the server with more held
 * connections than it has descriptors while probing `/healthz`. Beside it, a second server started
 * the same way but left quiet holds idle honest sessions and measures what each costs it before
 * and after a 64 KiB burst. It prints what each did and what happened, and fails unless: no honest
 * session failed, the servers never died, an idle connection that has carried a burst costs at
 * most twice one that has not, the connection cap turned the flood away and `/healthz` answered
 * throughout, descriptors and memory came back near the baseline, and the server's own counters
 * match what the clients saw. Loopback only; every loop is bounded in count and time.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { linesOf, taskArgs } from "../tools/harness.ts";
import { concat } from "../_io.ts";
import { SecretKeys } from "../protocol/keys.ts";
import * as attack from "./attackers.ts";
import type { Tally } from "./attackers.ts";

const { values: flags } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean" } } });
const quick = flags.quick ?? false;

/** The two modes: full for the record, quick for CI (under a minute). */
const config = quick
  ? {
    handshakeTimeoutS: 2,
    idleTimeoutS: 1,
    slowlorisIntervalMs: 200,
    garbage: 600,
    oversized: 10,
    wrongDigests: 40,
    connectFlood: 600,
    resets: 20,
    halfOpen: 10,
    neverReadsBytes: 64 * 1024 * 1024,
    descriptorFlood: 1_500,
    tamperedFrames: 20,
    guessBursts: 2,
    honestWorkers: 8,
    idleHolders: 800,
  }
  : {
    handshakeTimeoutS: 5,
    idleTimeoutS: 5,
    slowlorisIntervalMs: 2_000,
    garbage: 5_000,
    oversized: 50,
    wrongDigests: 300,
    connectFlood: 5_000,
    resets: 200,
    halfOpen: 100,
    neverReadsBytes: 1024 * 1024 * 1024,
    descriptorFlood: 2_000,
    tamperedFrames: 200,
    guessBursts: 5,
    honestWorkers: 8,
    idleHolders: 800,
  };
const FD_LIMIT = 1_024;
const PER_ADDRESS = 50;
/** The server's default --throttle-after: fewer wrong verdicts than this per cool-down. */
const THROTTLE_AFTER = 5;
/** Issue 15: an idle connection that has carried a burst costs at most this times one that has not. */
const BURST_COST_RATIO = 2;
/**
 * And at most this, KiB, whatever an idle connection costs: less than the 64 KiB burst, so a
 * connection that keeps a burst-sized buffer exceeds it even when every connection keeps one from
 * the start (which the ratio alone would let through). docs/REFERENCE.md measured 8.7 KiB (plain)
 * and 19.6 KiB (encrypt) after a burst, at 5 000 connections.
 */
const BURST_COST_MAX_KIB = 48;
/** Holders bursting at once, as bench/memory_burst.ts has them (whose figures REFERENCE.md has). */
const BURST_CONCURRENCY = 32;
/**
 * V8 frees a burst's garbage only at its next full collections, which an idle server makes in
 * steps some 10-40 s later. The suite waits for RSS to come down to what a finished collection
 * leaves, at most this times the idle cost (docs/REFERENCE.md measured 1.3× plain, 1.5× encrypt),
 * or for `COLLECTION_WAIT_MS`, whichever comes first, and then checks against the target: waiting
 * only for the target would stop at the first step that crosses it.
 */
const COLLECTED_RATIO = 1.5;
const COLLECTION_WAIT_MS = 60_000;
/** The server's own --max-connections default, for a server that does not lower it. */
const DEFAULT_MAX_CONNECTIONS = 10_000;
const RUN_LIMIT_MS = quick ? 60_000 : 300_000;

const root = new URL("../", import.meta.url).pathname;
const secretText = Array.from(
  crypto.getRandomValues(new Uint8Array(32)),
  (b) => b.toString(16).padStart(2, "0"),
).join("");
const secret = new TextEncoder().encode(secretText);
const key = await SecretKeys.import(secret);
const home = await Deno.makeTempDir({ prefix: "hmac-echo-chaos-" });

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

/** `hmac-echo serve` in a process of its own, as the serve task starts it, and what it logs. */
class ServerUnderTest {
  readonly events: Record<string, unknown>[] = [];
  exited = false;
  #child: Deno.ChildProcess;
  #reading: Promise<void>;
  #onEvent?: (event: Record<string, unknown>) => void;
  port = 0;
  metricsPort = 0;
  /** The connection cap the server chose for itself under the descriptor limit. */
  cap = DEFAULT_MAX_CONNECTIONS;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    child.status.then(() => this.exited = true);
    this.#reading = this.#read();
  }

  /** Starts it under `ulimit -n FD_LIMIT`; resolves once it listens. */
  static async start(extraArgs: string[]): Promise<ServerUnderTest> {
    const args = [
      ...taskArgs("serve"),
      ...["--port", "0", "--metrics-port", "0", "--log-format", "json"],
      ...extraArgs,
    ];
    const server = new ServerUnderTest(
      new Deno.Command("bash", {
        args: ["-c", `ulimit -n ${FD_LIMIT} && exec "$0" "$@"`, Deno.execPath(), ...args],
        cwd: root, // where deno.json is, as for `deno task`
        env: { HMAC_ECHO_SECRET: secretText, XDG_CONFIG_HOME: home, HOME: home, NO_COLOR: "1" },
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn(),
    );
    const portOf = (event: Record<string, unknown>) =>
      Number(String(event.address).split(":").pop());
    server.port = portOf(await server.#waitForEvent("listening"));
    server.metricsPort = portOf(await server.#waitForEvent("metrics")); // logged before "listening"
    const lowered = server.events.find((event) => event.event === "max-connections-lowered");
    if (lowered) server.cap = Number(lowered.to);
    return server;
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #read(): Promise<void> {
    for await (const line of linesOf(this.#child.stderr)) {
      try {
        const event = JSON.parse(line);
        this.events.push(event);
        this.#onEvent?.(event);
      } catch {
        console.error(`server (not JSON): ${line}`);
      }
    }
  }

  #waitForEvent(name: string): Promise<Record<string, unknown>> {
    const seen = this.events.find((event) => event.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no "${name}" event from the server`)),
        30_000,
      );
      this.#onEvent = (event) => {
        if (event.event === name) {
          clearTimeout(timer);
          resolve(event);
        }
      };
    });
  }

  /** Open descriptors. (Deno wants --allow-all to read another /proc/PID itself.) */
  descriptors(): number {
    const { stdout } = new Deno.Command("ls", { args: ["-1", `/proc/${this.pid}/fd`] })
      .outputSync();
    return new TextDecoder().decode(stdout).split("\n").filter(Boolean).length;
  }

  memoryKiB(field: "VmRSS" | "VmHWM"): number {
    const { stdout } = new Deno.Command("cat", { args: [`/proc/${this.pid}/status`] }).outputSync();
    const status = new TextDecoder().decode(stdout);
    return Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"))![1]);
  }

  /**
   * RSS once it has stopped moving, as bench/memory_burst.ts reads it: samples 250 ms apart until
   * two agree within 0.5% (freed memory goes back to the system over some time), at most 5 s.
   */
  async settledRssKiB(): Promise<number> {
    let last = this.memoryKiB("VmRSS");
    for (let i = 0; i < 20; i++) {
      await delay(250);
      const now = this.memoryKiB("VmRSS");
      if (Math.abs(now - last) <= last * 0.005) return now;
      last = now;
    }
    return last;
  }

  /**
   * `GET path` from the metrics endpoint over a new connection, as a balancer's health check makes
   * it (a pooled fetch() would hide a listener that no longer accepts): the status, or why none
   * came within 2 s.
   */
  async httpGet(path: string): Promise<{ status: number | string; body: string }> {
    let conn: Deno.TcpConn | undefined;
    let timedOut = false;
    const close = () => {
      try {
        conn?.close();
      } catch { /* closed already */ }
      conn = undefined;
    };
    const timer = setTimeout(() => {
      timedOut = true;
      close();
    }, 2_000);
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: this.metricsPort });
      await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.0\r\nHost: chaos\r\n\r\n`));
      const chunks: Uint8Array[] = [];
      const buffer = new Uint8Array(16 * 1024);
      for (let n; (n = await conn.read(buffer)) !== null;) chunks.push(buffer.slice(0, n));
      const response = new TextDecoder().decode(concat(chunks));
      const [head, body = ""] = response.split("\r\n\r\n", 2);
      const status = head.match(/^HTTP\/1\.[01] (\d{3}) /)?.[1];
      return {
        status: status === undefined ? `no status line: "${head.slice(0, 40)}"` : +status,
        body,
      };
    } catch (error) {
      const why = timedOut ? "no answer within 2 s" : error instanceof Error ? error.name : error;
      return { status: String(why), body: "" };
    } finally {
      clearTimeout(timer);
      close();
    }
  }

  /** Polls /metrics until no connection is open: the server's own word that a phase is over. */
  async untilNoConnections(): Promise<boolean> {
    for (let tries = 0; tries < 300 && !this.exited; tries++) {
      const { body } = await this.httpGet("/metrics");
      if (/^hmac_echo_connections_open 0$/m.test(body)) return true;
      await delay(50);
    }
    return false;
  }

  /** SIGTERM; resolves with the exit status and the "stopped" line's counters. */
  async stop(): Promise<{ code: number; stopped: Record<string, unknown> }> {
    const alive = !this.exited;
    if (alive) this.#child.kill("SIGTERM");
    const { code } = await this.#child.status;
    await this.#reading;
    const stopped = this.events.find((event) => event.event === "stopped") ?? {};
    return { code: alive ? code : NaN, stopped };
  }
}

/** `count` addresses 127.0.`round`.`first`…, each carrying at most 3/4 of the per-address cap. */
function addresses(round: number, first: number, count: number): string[] {
  const needed = Math.ceil(count / Math.floor(PER_ADDRESS * 3 / 4));
  return Array.from({ length: needed }, (_, i) => `127.0.${round}.${first + i}`);
}

// --- the chaos server, with short deadlines so that stalled clients are ended quickly --------
const server = await ServerUnderTest.start([
  ...["--handshake-timeout", String(config.handshakeTimeoutS)],
  ...["--idle-timeout", String(config.idleTimeoutS)],
  ...["--max-connections-per-address", String(PER_ADDRESS)],
]);
// --- the quiet server, with the defaults: no idle timeout, no client but the holders ---------
const quiet = await ServerUnderTest.start([]);

/** The quiet server's RSS, KiB: before the holders, with them idle, and idle after their burst. */
interface HolderReading {
  count: number;
  before: number;
  idle: number;
  afterBurst: number;
  /** How long the server took to come within the bounds after the burst, s. */
  waitedS: number;
  /** Holders still open once measured. */
  open: number;
  tallies: Tally[];
}

/**
 * What an idle connection costs the quiet server, before and after it has carried a 64 KiB burst
 * (issue 15). Runs beside the chaos rounds: nothing else talks to this server, so its RSS moves
 * with the holders only.
 */
async function measureHolders(count: number): Promise<HolderReading> {
  const target = { port: quiet.port, key, secret, stop: new AbortController().signal };
  // Warm-up, so that the paths a burst takes are compiled before the baseline.
  const warm = await attack.IdleHolders.open(target, "127.0.0.1", 40);
  await warm.burst(BURST_CONCURRENCY);
  const warmTally = await warm.close();
  warmTally.name = "idle holders' warm-up";
  await quiet.untilNoConnections();
  const before = await quiet.settledRssKiB();
  const holders = await attack.IdleHolders.open(target, "127.0.0.1", count);
  const idle = await quiet.settledRssKiB();
  await holders.burst(BURST_CONCURRENCY);
  // The bursts' garbage goes only when V8 collects it: wait for the RSS a finished collection
  // leaves. A server whose connections keep their bursts' buffers never gets there, and fails below.
  const idleEach = (idle - before) / count;
  const collected = before + count * Math.min(COLLECTED_RATIO * idleEach, BURST_COST_MAX_KIB);
  const waiting = performance.now();
  for (let i = 0; i < COLLECTION_WAIT_MS / 250 && quiet.memoryKiB("VmRSS") > collected; i++) {
    await delay(250);
  }
  const waitedS = (performance.now() - waiting) / 1000;
  const afterBurst = await quiet.settledRssKiB();
  const open = holders.open;
  const tally = await holders.close();
  return { count, before, idle, afterBurst, waitedS, open, tallies: [warmTally, tally] };
}
const holderRun = measureHolders(config.idleHolders);

// --- warm-up and baseline ---------------------------------------------------------------------
const warmStop = new AbortController();
const warmTarget = { port: server.port, key, secret, stop: warmStop.signal };
setTimeout(() => warmStop.abort(), 1_000);
const warmup = await attack.honest(warmTarget, 4);
warmup.name = "honest warm-up";
await server.untilNoConnections();
const baseline = { fds: server.descriptors(), rssKiB: await server.settledRssKiB() };

// --- the attack, in rounds: memory that keeps growing round after round would be a leak -------
const rounds = quick ? 1 : 2;
const tallies: Tally[] = [warmup];
const rssAfterRound: number[] = [];
let peakFds = baseline.fds;
let attackSeconds = 0;
/** Per round: wrong verdicts the parallel guesser saw, and the cool-downs its address served. */
const revealedGuesses: { revealed: number; cooldowns: number }[] = [];
/** One /healthz probe during the flood: its answer, flood connections held, server descriptors. */
interface Probe {
  status: number | string;
  held: number;
  fds: number;
}
/** Per round: the flood, and /healthz during it and after it. */
const floods: {
  challenged: number;
  refused: number;
  probes: Probe[];
  afterStatus: number | string;
}[] = [];
for (let round = 1; round <= rounds; round++) {
  const stop = new AbortController();
  const target = { port: server.port, key, secret, stop: stop.signal };
  const roundTallies: Tally[] = [];
  const sampler = setInterval(() => {
    if (!server.exited) peakFds = Math.max(peakFds, server.descriptors());
  }, 100);

  // Every hostile client at once, beside honest ones.
  const started = performance.now();
  const runLimit = setTimeout(() => stop.abort(), RUN_LIMIT_MS);
  const honestRun = attack.honest(target, config.honestWorkers);
  // Each attacker has its own address: the throttle withholds every verdict from an address
  // that is cooling down, so an honest holder sharing the guesser's address would be starved.
  const guesser = `127.0.${round}.19`;
  const attackers = await Promise.all([
    attack.slowloris(target, `127.0.${round}.10`, config.slowlorisIntervalMs),
    attack.garbage(target, config.garbage, round),
    attack.oversized(target, `127.0.${round}.11`, config.oversized),
    attack.wrongDigests(target, `127.0.${round}.12`, config.wrongDigests),
    attack.connectFlood(target, `127.0.${round}.13`, config.connectFlood),
    attack.midStreamResets(target, `127.0.${round}.14`, config.resets),
    attack.halfOpen(target, `127.0.${round}.15`, config.halfOpen),
    attack.neverReads(target, `127.0.${round}.16`, config.neverReadsBytes),
    attack.tamperedFrames(target, config.tamperedFrames),
    attack.parallelGuesser(target, guesser, config.guessBursts, PER_ADDRESS),
  ]);
  revealedGuesses.push({
    revealed: (attackers.at(-1) as { revealed: number }).revealed,
    cooldowns: server.events.filter((e) => e.event === "throttling" && e.address === guesser)
      .length,
  });
  stop.abort();
  roundTallies.push(await honestRun, ...attackers);
  clearTimeout(runLimit);
  attackSeconds += (performance.now() - started) / 1000;
  await server.untilNoConnections();

  // More held connections than the server has descriptors, each address under its cap, beside
  // honest clients that retry when the full server turns them away. From the flood's first
  // connection until the handshake deadline has ended its last, /healthz is asked every 100 ms,
  // over a new connection each time.
  const floodStop = new AbortController();
  const floodTarget = { ...target, stop: floodStop.signal };
  const honestDuringFlood = attack.honest(floodTarget, config.honestWorkers, {
    name: "honest clients during the flood (retrying)",
    retryRefused: true,
  });
  const flood = attack.descriptorFlood(
    floodTarget,
    addresses(round, 100, config.descriptorFlood),
    config.descriptorFlood,
  );
  let floodOver = false;
  flood.done.then(() => floodOver = true);
  const probes: Probe[] = [];
  for (let i = 0; i < 1_000 && !floodOver; i++) {
    const held = flood.held();
    const fds = server.exited ? NaN : server.descriptors();
    probes.push({ held, fds, status: (await server.httpGet("/healthz")).status });
    await Promise.race([flood.done, delay(100)]);
  }
  const floodTally = await flood.done;
  const afterStatus = (await server.httpGet("/healthz")).status;
  // Once the flood is gone, an honest client is served (retrying only while slots come free).
  const afterFlood = await attack.honestOnce(
    { ...target, stop: new AbortController().signal },
    "honest client after the flood",
  );
  floodStop.abort();
  roundTallies.push(floodTally, await honestDuringFlood, afterFlood);
  floods.push({
    challenged: floodTally.connections - floodTally.refused,
    refused: floodTally.refused,
    probes,
    afterStatus,
  });
  clearInterval(sampler);

  await server.untilNoConnections();
  if (!server.exited) rssAfterRound.push(await server.settledRssKiB());
  if (rounds > 1) { for (const tally of roundTallies) tally.name += ` (round ${round})`; }
  tallies.push(...roundTallies);
}

// --- after: the server must come back to where it was ------------------------------------------
const after = server.exited ? { fds: NaN, rssKiB: NaN, peakRssKiB: NaN } : {
  fds: server.descriptors(),
  rssKiB: server.memoryKiB("VmRSS"),
  peakRssKiB: server.memoryKiB("VmHWM"),
};
/** The kernel's refusals, which the connection cap exists to prevent (NaN: no answer). */
const emfile = await (async () => {
  const { status, body } = await server.httpGet("/metrics");
  if (status !== 200) return NaN;
  return Number(
    body.match(/^hmac_echo_accept_failures_total\{reason="EMFILE"\} (\d+)$/m)?.[1] ?? 0,
  );
})();
const { code, stopped } = await server.stop();
const holders = await holderRun;
const { code: quietCode } = await quiet.stop();
await Deno.remove(home, { recursive: true });

// --- report -----------------------------------------------------------------------------------
const honestTallies = tallies.filter((tally) => tally.name.startsWith("honest"));
const attackers = tallies.filter((tally) => !tally.name.startsWith("honest"));
const total = (field: keyof Omit<Tally, "name" | "notes">) =>
  tallies.reduce((sum, tally) => sum + (tally[field] as number), 0);

console.log(
  `\nhmac-echo chaos suite (${quick ? "quick" : "full"} mode): ${
    attackSeconds.toFixed(1)
  } s of attack, server fd limit ${FD_LIMIT}\n`,
);
console.log(
  `${"client".padEnd(50)}  conns  authed  rejected  refused  failures  bad frames`,
);
for (const tally of [...tallies, ...holders.tallies]) {
  console.log(
    `${tally.name.padEnd(50)} ${String(tally.connections).padStart(6)} ${
      String(tally.authenticated).padStart(7)
    } ` +
      `${String(tally.rejected).padStart(9)} ${String(tally.refused).padStart(8)} ${
        String(tally.failures).padStart(9)
      } ${String(tally.frameErrors).padStart(11)}`,
  );
  for (const note of tally.notes.slice(0, 3)) console.log(`    ${note}`);
}
const reasons = Object.entries(stopped).filter(([name]) => /^(rejected|refused)-/.test(name));
console.log(
  `\nserver counters: ${
    JSON.stringify({
      accepted: stopped.accepted,
      authenticated: stopped.authenticated,
      rejected: stopped.rejected,
      refused: stopped.refused,
      throttled: stopped.throttled,
      idleClosed: stopped.idleClosed,
      frameErrors: stopped.frameErrors,
    })
  }`,
);
console.log(`  by reason: ${reasons.map(([name, n]) => `${name}=${n}`).join(" ")}`);
console.log(
  `descriptors: baseline ${baseline.fds}, peak ${peakFds}, after ${after.fds}; the server's own ` +
    `connection cap ${server.cap}`,
);
console.log(
  `memory (RSS): baseline ${mib(baseline.rssKiB)}, peak ${mib(after.peakRssKiB)}, ` +
    `after each round ${rssAfterRound.map(mib).join(", ")}`,
);
/** Probes made while the flood held the whole connection cap (but for the honest clients' slots). */
const capFull = (f: { probes: Probe[] }) =>
  f.probes.filter((p) => p.held >= server.cap - config.honestWorkers);
for (const [i, f] of floods.entries()) {
  const failed = f.probes.filter((p) => p.status !== 200);
  console.log(
    `flood, round ${i + 1}: ${f.challenged} held, ${f.refused} refused at once; at most ${
      Math.max(...f.probes.map((p) => p.held))
    } held at once and ${Math.max(...f.probes.map((p) => p.fds))} server descriptors open; ` +
      `/healthz answered 200 to ${f.probes.length - failed.length} of ${f.probes.length} probes ` +
      `during it (${capFull(f).length} with the cap full), ${f.afterStatus} after it` +
      (failed.length > 0
        ? `; failed: ${[...new Set(failed.map((p) => p.status))].join(", ")}`
        : ""),
  );
}
const idleEach = (holders.idle - holders.before) / holders.count;
const burstEach = (holders.afterBurst - holders.before) / holders.count;
console.log(
  `idle holders on the quiet server: ${holders.count} (v1, v2 plain, integrity, encrypt in ` +
    `turn); RSS ${mib(holders.before)} before, ${mib(holders.idle)} idle (+${
      idleEach.toFixed(1)
    } KiB each), ${mib(holders.afterBurst)} idle after a 64 KiB burst (+${
      burstEach.toFixed(1)
    } KiB each, ${(burstEach / idleEach).toFixed(2)}×, ${
      holders.waitedS.toFixed(1)
    } s after it); ${holders.open} still open when measured`,
);

const checks: [string, boolean][] = [
  [
    `zero honest failures (${
      honestTallies.reduce((s, t) => s + t.authenticated, 0)
    } honest sessions completed)`,
    total("failures") === 0 && honestTallies.every((tally) => tally.authenticated > 0) &&
    holders.tallies.every((tally) => tally.failures === 0),
  ],
  ["the servers never died, and exited 0 on SIGTERM", code === 0 && quietCode === 0],
  [
    "descriptors back to the baseline (within 2)",
    after.fds <= baseline.fds + 2,
  ],
  [
    "memory back near the baseline (within 50% + 32 MiB)",
    after.rssKiB <= baseline.rssKiB * 1.5 + 32 * 1024,
  ],
  [
    "no growth from one round to the next (within 10% + 8 MiB): no leak",
    rssAfterRound.every((rss, i) => i === 0 || rss <= rssAfterRound[i - 1] * 1.1 + 8 * 1024),
  ],
  [
    `an idle connection that has carried a 64 KiB burst costs at most ${BURST_COST_RATIO}× one ` +
    `that has not, and at most ${BURST_COST_MAX_KIB} KiB (+${burstEach.toFixed(1)} vs +${
      idleEach.toFixed(1)
    } KiB, ${holders.count} holders, all open when measured)`,
    holders.open === holders.count && holders.tallies[1].authenticated === holders.count &&
    idleEach > 0 && burstEach <= BURST_COST_RATIO * idleEach && burstEach <= BURST_COST_MAX_KIB,
  ],
  [
    `the flood outnumbered the descriptors, and the cap (${server.cap}), not the kernel, turned ` +
    `it away (${floods.map((f) => `${f.refused} refused`).join(", ")}; ${emfile} accept ` +
    `failures EMFILE)`,
    floods.length === rounds && emfile === 0 &&
    Number(stopped["refused-connection-limit"]) >= floods.reduce((n, f) => n + f.refused, 0) &&
    floods.every((f) =>
      f.challenged + f.refused > FD_LIMIT && f.refused > 0 &&
      f.challenged >= server.cap - config.honestWorkers && f.challenged <= server.cap
    ),
  ],
  [
    `/healthz answered 200 to every probe, a new connection each, during the flood (${
      floods.map((f) => `${f.probes.length} probes, ${capFull(f).length} with the cap full`)
        .join("; ")
    }) and after it`,
    floods.length === rounds &&
    floods.every((f) =>
      capFull(f).length > 0 &&
      f.probes.every((p) => p.status === 200) && f.afterStatus === 200
    ),
  ],
  [
    "the server accepted every connection the clients made",
    stopped.accepted === total("connections"),
  ],
  ["authenticated: server and clients agree", stopped.authenticated === total("authenticated")],
  ["rejected: server and clients agree", stopped.rejected === total("rejected")],
  ["refused: server and clients agree", stopped.refused === total("refused")],
  ["frames refused: server and clients agree", stopped.frameErrors === total("frameErrors")],
  [
    `parallel guesses: wrong verdicts revealed per round ${
      revealedGuesses.map((r) => `${r.revealed} in ${r.cooldowns} cool-down(s)`).join(", ")
    } (at most ${THROTTLE_AFTER - 1} per cool-down, and before the first or after the last)`,
    revealedGuesses.every((r) => r.revealed <= (THROTTLE_AFTER - 1) * (r.cooldowns + 1)),
  ],
  [
    "no hostile client got through",
    attackers.every((t) => !t.notes.some((n) => n.includes("accepted!"))),
  ],
];
console.log("");
for (const [name, ok] of checks) console.log(`${ok ? "PASS" : "FAIL"}  ${name}`);
const failed = checks.filter(([, ok]) => !ok).length;
console.log(`\nchaos: ${checks.length - failed} passed, ${failed} failed`);
Deno.exit(failed === 0 ? 0 : 1);
