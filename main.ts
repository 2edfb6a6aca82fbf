/**
 * The hmac-echo command: `deno run … main.ts serve` or `… main.ts connect`. See `--help`.
 *
 * @module
 */

import { runCli } from "./cli/cli.ts";

Deno.exit(await runCli(Deno.args));
