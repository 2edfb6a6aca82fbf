/** The command line's own output: stdout for results, stderr for messages. */

import { writeAll } from "../_io.ts";
import { type LogFormat, StderrLogger } from "../log.ts";

/** Exit status: success. */
export const EXIT_OK = 0;
/** Exit status: the run failed (rejected, unreachable, port taken). */
export const EXIT_FAILURE = 1;
/** Exit status: the command line or the configuration is wrong. */
export const EXIT_USAGE = 2;

const encoder = new TextEncoder();

/** Writes `text` to stdout. */
export function writeOut(text: string): Promise<void> {
  return writeAll(Deno.stdout, encoder.encode(text));
}

/** Writes `text` to stderr. */
export function writeErr(text: string): Promise<void> {
  return writeAll(Deno.stderr, encoder.encode(text));
}

/**
 * One `hmac-echo: …` line on stderr; with `format` "json" (serve's `--log-format json`), one line
 * of the log's own shape, `{"time":…,"level":"error","event":"fatal","message":…}`, so that a
 * log shipper can parse every line the server writes, its last one too.
 */
export function printError(message: string, format: LogFormat = "text"): void {
  if (format === "json") {
    new StderrLogger({ format, maxPerSecond: 0 }).log("error", "fatal", { message });
  } else {
    console.error(`hmac-echo: ${message}`);
  }
}
