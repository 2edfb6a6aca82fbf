/**
 * One small logger for the whole program: events as single lines on stderr.
 *
 * @module
 */

/** Values a log event can carry. Never put secret material in one. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/**
 * How important an event is. `info` is per connection; `notice` is the server's own lifecycle
 * (listening, stopping), which even a quiet logger keeps.
 */
export type LogLevel = "info" | "notice" | "warn" | "error";

/** Receives the server's and the command line's events. */
export interface Logger {
  /** Records one event, named in kebab-case (`accepted`, `rejected`, `closed`, …). */
  log(level: LogLevel, event: string, fields?: LogFields): void;
}

/** A logger that drops everything: the default for library use. */
export const silentLogger: Logger = { log() {} };

/** Options for {@linkcode StderrLogger}. */
export interface StderrLoggerOptions {
  /** Drop `info` events (per-connection lines); lifecycle notices, warnings and errors still print. */
  quiet?: boolean;
}

/**
 * Writes each event as one line on stderr: `2026-01-01T00:00:00.000Z info accepted id=1 …`.
 *
 * Writes are synchronous so that lines from concurrent connections never interleave and the last
 * line before an exit is not lost.
 */
export class StderrLogger implements Logger {
  #quiet: boolean;
  #encoder = new TextEncoder();

  /** Builds a logger; see {@linkcode StderrLoggerOptions}. */
  constructor(options: StderrLoggerOptions = {}) {
    this.#quiet = options.quiet ?? false;
  }

  /** Writes the event unless it is `info` and the logger is quiet. */
  log(level: LogLevel, event: string, fields: LogFields = {}): void {
    if (this.#quiet && level === "info") return;
    const line = `${new Date().toISOString()} ${level} ${event}${formatFields(fields)}\n`;
    const bytes = this.#encoder.encode(line);
    let written = 0;
    while (written < bytes.length) {
      written += Deno.stderr.writeSync(bytes.subarray(written));
    }
  }
}

/** `key=value` pairs; values with spaces or quotes are JSON-quoted so a line stays parseable. */
function formatFields(fields: LogFields): string {
  let out = "";
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = String(value);
    out += ` ${key}=${/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)}`;
  }
  return out;
}
