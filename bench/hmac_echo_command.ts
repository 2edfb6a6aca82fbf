/**
 * The one command line the benchmarks run hmac-echo's server with: the serve task's, permissions
 * and V8 flag included, quiet, and every limit that would refuse the generator's load switched
 * off. `bench.ts` and `protocol_pairs.ts` both use it, so their figures are of the same server.
 */

import { taskCommand } from "../tools/harness.ts";

/** As the serve task runs it: a 1 MiB young generation keeps idle connections small (README). */
export const SEMI_SPACE = "--v8-flags=--max-semi-space-size=1";

/** `deno run … main.ts serve` on `port`, as the serve task starts it, for a benchmark. */
export function hmacEchoCommand(port: number): string[] {
  return [
    ...taskCommand("serve"),
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
