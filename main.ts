/**
 * The hmac-echo command: `hmac-echo serve` or `hmac-echo connect`; `--help` lists every option.
 *
 * This module is the package's `./cli` export. Run as the main module, it runs the command with
 * the program's arguments and exits with its status; imported, it does nothing.
 *
 * @example
 * ```sh
 * deno run --allow-net --allow-env=HMAC_ECHO_SECRET,XDG_CONFIG_HOME,HOME --allow-read \
 *   jsr:@hmac-echo/hmac-echo/cli connect --message hi
 * ```
 *
 * @module
 */

import { runCli } from "./cli/cli.ts";

if (import.meta.main) Deno.exit(await runCli(Deno.args));
