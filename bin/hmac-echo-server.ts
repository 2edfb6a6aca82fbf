/**
 * Entry point of the compiled server binary (`deno task compile`): `hmac-echo serve` with the
 * arguments given.
 *
 * @module
 */

import { runCli } from "../cli/cli.ts";

Deno.exit(await runCli(["serve", ...Deno.args]));
