/**
 * One small logger for the whole program: events as single lines on stderr, as text for people
 * or as JSON for log shippers.
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
  /** Writes out what the logger holds back (counts of suppressed lines); called before exiting. */
  flush?(): void;
  /** Lines that could not be written (a broken log pipe); the server reports them in `/metrics`. */
  readonly droppedLines?: number;
}

/** A logger that drops everything: the default for library use. */
export const silentLogger: Logger = { log() {} };

/**
 * The logger a configuration's `log` option describes: stderr lines, or none when it is absent.
 * `fields` are added to every line (a worker thread's number, say).
 */
export function createLogger(
  options: { format?: LogFormat; quiet?: boolean } | undefined,
  fields: LogFields = {},
): Logger {
  if (options === undefined) return silentLogger;
  const stderr = new StderrLogger(options);
  if (Object.keys(fields).length === 0) return stderr;
  return {
    log: (level, event, more) => stderr.log(level, event, { ...more, ...fields }),
    flush: () => stderr.flush(),
    get droppedLines() {
      return stderr.droppedLines;
    },
  };
}

/** How {@linkcode StderrLogger} writes a line. */
export type LogFormat = "text" | "json";

/** Options for {@linkcode StderrLogger}. */
export interface StderrLoggerOptions {
  /** Drop `info` events (per-connection lines); lifecycle notices, warnings and errors still print. */
  quiet?: boolean;
  /** `text` (default): `time level event key=value …`; `json`: one JSON object per line. */
  format?: LogFormat;
  /**
   * Lines per second for any one event name; the rest are counted and reported in one
   * `log-suppressed` line. A flood of rejected connections must not make logging the bottleneck.
   * Default 200; 0 means no limit.
   */
  maxPerSecond?: number;
  /** Where lines go; default: stderr, written synchronously. A write that throws drops its line. */
  output?: (line: Uint8Array) => void;
}

/**
 * Writes each event as one line on stderr:
 * `2026-01-01T00:00:00.000Z info accepted id=1 remote=127.0.0.1:5000`, or, with `format: "json"`,
 * `{"time":"…","level":"info","event":"accepted","id":1,"remote":"127.0.0.1:5000"}`.
 *
 * Writes are synchronous so that lines from concurrent connections never interleave and the last
 * line before an exit is not lost.
 */
export class StderrLogger implements Logger {
  #quiet: boolean;
  #format: LogFormat;
  #maxPerSecond: number;
  #output: (line: Uint8Array) => void;
  #encoder = new TextEncoder();
  #second = 0;
  #counts = new Map<string, number>();
  #dropped = 0;

  /** Builds a logger; see {@linkcode StderrLoggerOptions}. */
  constructor(options: StderrLoggerOptions = {}) {
    this.#quiet = options.quiet ?? false;
    this.#format = options.format ?? "text";
    this.#maxPerSecond = options.maxPerSecond ?? 200;
    this.#output = options.output ?? writeToStderr;
  }

  /** Writes the event unless it is `info` and the logger is quiet, or its event is flooding. */
  log(level: LogLevel, event: string, fields: LogFields = {}): void {
    if (this.#quiet && level === "info") return;
    if (this.#maxPerSecond > 0 && !this.#withinRate(event)) return;
    this.#write(level, event, fields);
  }

  /**
   * Lines that could not be written (a closed stderr, a log pipe whose reader is gone): logging
   * never takes the program down, it drops the line and counts it here.
   */
  get droppedLines(): number {
    return this.#dropped;
  }

  /** Reports events suppressed so far; call before exiting so no count is lost. */
  flush(): void {
    for (const [event, count] of this.#counts) {
      if (count > this.#maxPerSecond) {
        this.#write("warn", "log-suppressed", { event, count: count - this.#maxPerSecond });
      }
    }
    this.#counts.clear();
  }

  #withinRate(event: string): boolean {
    const second = Math.floor(performance.now() / 1000);
    if (second !== this.#second) {
      this.flush();
      this.#second = second;
    }
    const count = (this.#counts.get(event) ?? 0) + 1;
    this.#counts.set(event, count);
    return count <= this.#maxPerSecond;
  }

  #write(level: LogLevel, event: string, fields: LogFields): void {
    const time = new Date().toISOString();
    const line = this.#format === "json"
      ? JSON.stringify({ time, level, event, ...fields }) + "\n"
      : `${time} ${level} ${event}${formatFields(fields)}\n`;
    try {
      this.#output(this.#encoder.encode(line));
    } catch {
      this.#dropped++; // a broken pipe or a closed stderr: nowhere to say so but the count
    }
  }
}

function writeToStderr(bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
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
