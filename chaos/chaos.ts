/**
 * The chaos suite: `deno task chaos [--quick]`.
 *
 * Starts `hmac-echo serve` as its own process under a descriptor limit, then runs honest clients
 * (every echoed byte checked) at the same time as every hostile client of issues 4 and 15. It
 * prints what each did and what happened, and fails unless: no honest session failed, the server
 * never died, its descriptors and memory came back near the baseline, and its own counters match
 * what the clients saw. Loopback only; every loop is bounded in count and time.
 */

import { parseArgs } from "node:util";
import { SecretKeys } from "../protocol/keys.ts";
import * as attack from "./attackers.ts";
import type { Tally } from "./attackers.ts";

const { values: flags } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean" } } });
const quick = flags.quick ?? false;

/** The two modes: full for the record, quick for CI (under a minute). */
const config = quick
  ? {
    handshakeTimeoutS: 1,
    idleTimeoutS: 1,
    slowlorisIntervalMs: 200,
    garbage: 600,
    oversized: 10,
    wrongDigests: 40,
    connectFlood: 600,
    resets: 20,
    halfOpen: 10,
    burstThenIdle: 20,
    neverReadsBytes: 64 * 1024 * 1024,
    descriptorFlood: 1_500,
    tamperedFrames: 20,
    guessBursts: 2,
    honestWorkers: 8,
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
    burstThenIdle: 40,
    neverReadsBytes: 1024 * 1024 * 1024,
    descriptorFlood: 1_500,
    tamperedFrames: 200,
    guessBursts: 5,
    honestWorkers: 8,
  };
const FD_LIMIT = 1_024;
const PER_ADDRESS = 50;
/** The server's default --throttle-after: fewer wrong verdicts than this per cool-down. */
const THROTTLE_AFTER = 5;
const RUN_LIMIT_MS = quick ? 60_000 : 300_000;

const root = new URL("../", import.meta.url).pathname;
const secretText = Array.from(
  crypto.getRandomValues(new Uint8Array(32)),
  (b) => b.toString(16).padStart(2, "0"),
).join("");
const secret = new TextEncoder().encode(secretText);
const home = await Deno.makeTempDir({ prefix: "hmac-echo-chaos-" });

// --- the server, as operators run it, in its own process with its own descriptor limit --------
const serveArgs = [
  "run",
  "--allow-net",
  "--allow-env=HMAC_ECHO_SECRET,HMAC_ECHO_PREVIOUS_SECRET,XDG_CONFIG_HOME,HOME",
  "--allow-read",
  "--allow-write",
  "--v8-flags=--max-semi-space-size=1", // as the serve task and the compiled server run
  `${root}main.ts`,
  "serve",
  "--port",
  "0",
  "--log-format",
  "json",
  "--handshake-timeout",
  String(config.handshakeTimeoutS),
  "--idle-timeout",
  String(config.idleTimeoutS),
  "--max-connections-per-address",
  String(PER_ADDRESS),
];
const child = new Deno.Command("bash", {
  args: ["-c", `ulimit -n ${FD_LIMIT} && exec "$0" "$@"`, Deno.execPath(), ...serveArgs],
  env: { HMAC_ECHO_SECRET: secretText, XDG_CONFIG_HOME: home, HOME: home, NO_COLOR: "1" },
  clearEnv: true,
  stdin: "null",
  stdout: "null",
  stderr: "piped",
}).spawn();

const events: Record<string, unknown>[] = [];
let onEvent: ((event: Record<string, unknown>) => void) | undefined;
const reading = (async () => {
  let pending = "";
  for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      try {
        const event = JSON.parse(line);
        events.push(event);
        onEvent?.(event);
      } catch {
        console.error(`server (not JSON): ${line}`);
      }
    }
  }
})();
let serverExited = false;
child.status.then(() => serverExited = true);

function waitForEvent(name: string): Promise<Record<string, unknown>> {
  const seen = events.find((event) => event.event === name);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${name}" event from the server`)), 30_000);
    onEvent = (event) => {
      if (event.event === name) {
        clearTimeout(timer);
        resolve(event);
      }
    };
  });
}

const listening = await waitForEvent("listening");
const port = Number(String(listening.address).split(":").pop());
const pid = child.pid;

/** Open descriptors of the server. (Deno wants --allow-all to read another /proc/PID itself.) */
function descriptors(): number {
  const { stdout } = new Deno.Command("ls", { args: ["-1", `/proc/${pid}/fd`] }).outputSync();
  return new TextDecoder().decode(stdout).split("\n").filter(Boolean).length;
}

function memoryKiB(field: "VmRSS" | "VmHWM"): number {
  const { stdout } = new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).outputSync();
  const status = new TextDecoder().decode(stdout);
  return Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"))![1]);
}

/** Polls until `check` holds or `ms` pass; for settling after the attack, not for timing tests. */
async function settle(check: () => boolean, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return check();
}

const key = await SecretKeys.import(secret);

// --- warm-up and baseline ---------------------------------------------------------------------
const warmStop = new AbortController();
const warmTarget = { port, key, secret, stop: warmStop.signal };
setTimeout(() => warmStop.abort(), 1_000);
const warmup = await attack.honest(warmTarget, 4);
warmup.name = "honest warm-up";
await settle(() => false, 300);
const baseline = { fds: descriptors(), rssKiB: memoryKiB("VmRSS") };

// --- the attack, in rounds: memory that keeps growing round after round would be a leak -------
const rounds = quick ? 1 : 2;
const tallies: Tally[] = [warmup];
const rssAfterRound: number[] = [];
let peakFds = baseline.fds;
let attackSeconds = 0;
/** Per round: wrong verdicts the parallel guesser saw, and the cool-downs its address served. */
const revealedGuesses: { revealed: number; cooldowns: number }[] = [];
for (let round = 1; round <= rounds; round++) {
  const stop = new AbortController();
  const target = { port, key, secret, stop: stop.signal };
  const started = performance.now();
  const sampler = setInterval(() => {
    if (!serverExited) peakFds = Math.max(peakFds, descriptors());
  }, 100);
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
    attack.burstThenIdle(target, `127.0.${round}.18`, config.burstThenIdle),
    attack.neverReads(target, `127.0.${round}.16`, config.neverReadsBytes),
    attack.descriptorFlood(target, `127.0.${round}.17`, config.descriptorFlood),
    attack.tamperedFrames(target, config.tamperedFrames),
    attack.parallelGuesser(target, guesser, config.guessBursts, PER_ADDRESS),
  ]);
  revealedGuesses.push({
    revealed: (attackers.at(-1) as { revealed: number }).revealed,
    cooldowns: events.filter((e) => e.event === "throttling" && e.address === guesser).length,
  });
  stop.abort();
  tallies.push(await honestRun, ...attackers);
  clearTimeout(runLimit);
  clearInterval(sampler);
  attackSeconds += (performance.now() - started) / 1000;
  await settle(() => serverExited || descriptors() <= baseline.fds + 2, 15_000);
  if (!serverExited) rssAfterRound.push(memoryKiB("VmRSS"));
  if (rounds > 1) {
    for (const tally of tallies.slice(-(attackers.length + 1))) tally.name += ` (round ${round})`;
  }
}

// --- after: the server must come back to where it was ------------------------------------------
const fdsSettled = serverExited ? false : descriptors() <= baseline.fds + 2;
const after = serverExited
  ? { fds: NaN, rssKiB: NaN, peakRssKiB: NaN }
  : { fds: descriptors(), rssKiB: memoryKiB("VmRSS"), peakRssKiB: memoryKiB("VmHWM") };
const aliveBeforeStop = !serverExited;
child.kill("SIGTERM");
const status = await child.status;
await reading;
await Deno.remove(home, { recursive: true });
const stopped = events.find((event) => event.event === "stopped") ?? {};

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
for (const tally of tallies) {
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
console.log(`descriptors: baseline ${baseline.fds}, peak ${peakFds}, after ${after.fds}`);
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
console.log(
  `memory (RSS): baseline ${mib(baseline.rssKiB)}, peak ${mib(after.peakRssKiB)}, ` +
    `after each round ${rssAfterRound.map(mib).join(", ")}`,
);

const checks: [string, boolean][] = [
  [
    `zero honest failures (${
      honestTallies.reduce((s, t) => s + t.authenticated, 0)
    } honest sessions completed)`,
    total("failures") === 0 && honestTallies.every((tally) => tally.authenticated > 0),
  ],
  ["the server never died, and exited 0 on SIGTERM", aliveBeforeStop && status.code === 0],
  ["descriptors back to the baseline (within 2)", fdsSettled && after.fds <= baseline.fds + 2],
  [
    "memory back near the baseline (within 50% + 32 MiB)",
    after.rssKiB <= baseline.rssKiB * 1.5 + 32 * 1024,
  ],
  [
    "no growth from one round to the next (within 10% + 8 MiB): no leak",
    rssAfterRound.every((rss, i) => i === 0 || rss <= rssAfterRound[i - 1] * 1.1 + 8 * 1024),
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
