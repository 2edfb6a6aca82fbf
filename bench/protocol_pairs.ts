/**
 * Session cost by protocol variant, measured in interleaved rounds: on a machine shared with other
 * work, back-to-back medians (bench.ts --protocol-only runs each variant's three runs together)
 * can land in different load, so their ratios swing; here each round runs every variant once, in
 * a rotated order, against one fresh server, and the ratios are taken within each round first.
 *
 * `deno run --allow-run --allow-read --allow-env bench/protocol_pairs.ts [--rounds N]
 *   [--seconds S] [--variants v1,v2-encrypt,v3-encrypt]`
 *
 * Server pinned to core 0 and the Node.js generator (bench/v2_loadgen.mjs, concurrency 10) to
 * core 1, as in bench.ts; the server runs as bench.ts runs hmac-echo. Prints, per variant, the
 * median sessions/s and server CPU per session, and the median of the per-round ratios against
 * the first variant and of each v3 variant against the v2 one of its mode. Nothing is written.
 */

import { parseArgs } from "node:util";
import { median } from "./report.ts";
import { hmacEchoCommand } from "./hmac_echo_command.ts";
import { cpuTicks, pinned, type RunningServer, startOnFreePort } from "./_process.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "8" },
    seconds: { type: "string", default: "2" },
    variants: { type: "string", default: "v1,v2-encrypt,v3-encrypt" },
  },
});
const ROUNDS = Number(flags.rounds);
const VARIANTS = flags.variants.split(",");
const ROOT = new URL("../", import.meta.url).pathname;
const SECRET = "benchmark secret, not for production";
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Starts hmac-echo as bench.ts does, pinned to core 0. */
function startServer(): Promise<RunningServer> {
  return startOnFreePort(
    "hmac-echo",
    (port) => pinned(0, hmacEchoCommand(port)),
    { HMAC_ECHO_SECRET: SECRET, NO_COLOR: "1" },
  );
}

/** One sessions run of `variant`: sessions/s and the server's CPU µs per session. */
async function sessions(variant: string, server: RunningServer) {
  const before = cpuTicks(server.child.pid);
  const [command, ...args] = pinned(1, [
    "node",
    `${ROOT}bench/v2_loadgen.mjs`,
    "sessions",
    "--concurrency",
    "10",
    "--duration",
    flags.seconds,
    "--port",
    String(server.port),
    "--variant",
    variant,
    "--secret",
    SECRET,
  ]);
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const ticks = cpuTicks(server.child.pid) - before;
  const text = decode(output.stdout).trim();
  if (!text.startsWith("{")) throw new Error(`generator failed: ${decode(output.stderr)}`);
  const result = JSON.parse(text);
  if (result.verifyFailures > 0 || result.errors > 0) throw new Error(`${variant}: ${text}`);
  return { perSecond: result.perSecond, cpuPerSession: ticks * 10_000 / result.completed };
}

/** Per round, each variant's sessions/s and CPU per session, for the ratios between any two. */
const perRound: Map<string, { perSecond: number; cpuPerSession: number }>[] = [];
const rows = new Map(VARIANTS.map((v) => [v, { perSecond: [] as number[], cpu: [] as number[] }]));
const ratios = new Map(
  VARIANTS.map((v) => [v, { perSecond: [] as number[], cpu: [] as number[] }]),
);
console.log(
  `${ROUNDS} rounds of ${VARIANTS.join(", ")}, ${flags.seconds} s each, ` +
    `${new Date().toISOString()}`,
);
for (let round = 0; round < ROUNDS; round++) {
  const server = await startServer();
  try {
    await sessions(VARIANTS[0], server); // warm-up: JIT, first allocations
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]);
    const measured = new Map<string, { perSecond: number; cpuPerSession: number }>();
    for (const variant of order) measured.set(variant, await sessions(variant, server));
    perRound.push(measured);
    const base = measured.get(VARIANTS[0])!;
    for (const [variant, r] of measured) {
      rows.get(variant)!.perSecond.push(r.perSecond);
      rows.get(variant)!.cpu.push(r.cpuPerSession);
      ratios.get(variant)!.perSecond.push(r.perSecond / base.perSecond);
      ratios.get(variant)!.cpu.push(r.cpuPerSession / base.cpuPerSession);
    }
    console.log(
      `round ${round + 1}: ` +
        [...measured].map(([v, r]) =>
          `${v} ${Math.round(r.perSecond)}/s ${Math.round(r.cpuPerSession)} µs`
        ).join(", "),
    );
  } finally {
    server.child.kill("SIGKILL");
    await server.child.status;
  }
}
console.log(
  `\nvariant        sessions/s  server CPU/session   per-round ratio to ${VARIANTS[0]}: ` +
    "sessions/s, CPU/session (min-max)",
);
const span = (values: number[]) =>
  `${median(values).toFixed(2)}× (${Math.min(...values).toFixed(2)}–` +
  `${Math.max(...values).toFixed(2)})`;
for (const variant of VARIANTS) {
  const row = rows.get(variant)!;
  const ratio = ratios.get(variant)!;
  console.log(
    `${variant.padEnd(14)} ${Math.round(median(row.perSecond)).toString().padStart(10)}  ` +
      `${Math.round(median(row.cpu)).toString().padStart(8)} µs          ` +
      `${span(ratio.perSecond)}, ${span(ratio.cpu)}`,
  );
}
// The forward-secret default against the same mode without the key exchange, round by round.
for (const variant of VARIANTS.filter((v) => v.startsWith("v3-"))) {
  const other = variant.replace(/^v3-/, "v2-");
  if (!VARIANTS.includes(other)) continue;
  const of = (key: "perSecond" | "cpuPerSession") =>
    perRound.map((round) => round.get(variant)![key] / round.get(other)![key]);
  console.log(
    `${variant} / ${other}: sessions/s ${span(of("perSecond"))}, ` +
      `server CPU per session ${span(of("cpuPerSession"))}`,
  );
}
