/**
 * The command line: dispatches to `serve` or `connect` and turns their outcome into an exit
 * status. The only layer that talks to the user; `main.ts` and `bin/` only call
 * {@linkcode runCli}.
 *
 * @module
 */

import { CONNECT_OPTIONS, parseConnectArgs, runConnect, runTunnel } from "./connect.ts";
import type { LogFormat } from "../log.ts";
import { type InfoRequest, parseFlags, UsageError } from "./flags.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, printError, writeOut } from "./output.ts";
import { SecretError } from "./secret.ts";
import { parseServeArgs, runServe, SERVE_OPTIONS } from "./serve.ts";
import { CONNECT_USAGE, SERVE_USAGE, USAGE, VERSION } from "./usage.ts";

/**
 * Runs the program with `args` (without the program name) and returns its exit status.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runCli } from "./cli.ts";
 * assert.ok(await runCli(["no-such-command"]) === 2);
 * ```
 */
export async function runCli(args: string[]): Promise<number> {
  try {
    return await dispatch(args);
  } catch (error) {
    const format = errorFormat(args);
    if (error instanceof UsageError) {
      // Each command's options are in its own help; the overview lists none.
      const command = args[0] === "serve" || args[0] === "connect" ? `${args[0]} ` : "";
      printError(`${error.message}. Run "hmac-echo ${command}--help" for usage.`, format);
      return EXIT_USAGE;
    }
    if (error instanceof SecretError) {
      printError(error.message, format);
      return EXIT_USAGE;
    }
    printError(
      `Unexpected error: ${error instanceof Error ? error.message : String(error)}`,
      format,
    );
    return EXIT_FAILURE;
  }
}

/**
 * How to print a fatal error: as the log does when the flags of `serve` or `connect --listen` ask
 * for `--log-format json` and can be read at all; plain text otherwise (before the flags are
 * understood there is no format).
 */
function errorFormat(args: string[]): LogFormat {
  try {
    const [command, ...rest] = args;
    if (command === "serve") {
      return parseFlags(rest, SERVE_OPTIONS)["log-format"] === "json" ? "json" : "text";
    }
    if (command === "connect") {
      const values = parseFlags(rest, CONNECT_OPTIONS);
      return values.listen !== undefined && values["log-format"] === "json" ? "json" : "text";
    }
  } catch {
    // Flags that cannot be read: there is no format to follow.
  }
  return "text";
}

async function dispatch(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "serve": {
      const parsed = parseServeArgs(rest);
      return parsed.kind === "serve" ? await runServe(parsed) : await info(parsed, SERVE_USAGE);
    }
    case "connect": {
      const parsed = parseConnectArgs(rest);
      switch (parsed.kind) {
        case "connect":
          return await runConnect(parsed);
        case "tunnel":
          return await runTunnel(parsed);
        default:
          return await info(parsed, CONNECT_USAGE);
      }
    }
    case "--help":
    case "-h":
    case "help":
      return await info({ kind: "help" }, USAGE);
    case "--version":
    case "-V":
      return await info({ kind: "version" }, USAGE);
    case undefined:
      throw new UsageError("Missing command: serve or connect");
    default:
      throw new UsageError(`Unknown command "${command}": use serve or connect`);
  }
}

/** Prints `help` or the version, as asked. */
async function info(request: InfoRequest, help: string): Promise<number> {
  await writeOut(request.kind === "help" ? help : `hmac-echo ${VERSION}\n`);
  return EXIT_OK;
}
