/**
 * The one command line the benchmarks run hmac-echo's server with: the serve task's V8 flag, quiet,
 * and every limit that would refuse the generator's load switched off. `bench.ts` and
 * `protocol_pairs.ts` both use it, so their figures are of the same server.
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** As the serve task runs it: a 1 MiB young generation keeps idle connections small (README). */
export const SEMI_SPACE = "--v8-flags=--max-semi-space-size=1";

/** `deno run … main.ts serve` on `port`, for a benchmark. */
export function hmacEchoCommand(port: number): string[] {
  return [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-write",
    SEMI_SPACE,
    `${ROOT}main.ts`,
    "serve",
    "--port",
    String(port),
    "--quiet",
    "--max-connections",
    "100000",
    "--max-connections-per-address",
    "0",
    "--throttle-after",
    "0",
  ];
}
