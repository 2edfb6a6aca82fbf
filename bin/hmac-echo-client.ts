/**
 * Entry point of the compiled client binary (`deno task compile`): `hmac-echo connect` with the
 * arguments given.
 *
 * @module
 */

import { runCli } from "../cli/cli.ts";

Deno.exit(await runCli(["connect", ...Deno.args]));
