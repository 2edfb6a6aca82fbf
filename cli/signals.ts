/**
 * How `serve` and `connect --listen` meet SIGINT and SIGTERM: the first drains and stops, a copy
 * of it is the same request, another signal forces the exit.
 *
 * @module
 */

import type { LogFields, Logger } from "../log.ts";
import { EXIT_FAILURE } from "./output.ts";

/**
 * The same signal again within this long is the same request: `deno task` forwards a Ctrl-C to
 * the server, which the terminal has already sent it (the whole process group gets it), and
 * `kill -TERM -PGID` reaches it twice the same way.
 */
export const REPEATED_SIGNAL_MS = 1_000;

/**
 * What each shutdown signal means: the first shuts down; a copy of it (the same signal within
 * {@linkcode REPEATED_SIGNAL_MS}) is the same request; any other forces the exit.
 */
export class ShutdownSignals {
  #first?: { signal: Deno.Signal; at: number };

  /** Decides what `signal`, arriving at `now` (milliseconds), asks for. */
  receive(signal: Deno.Signal, now: number): "shut-down" | "repeat" | "force" {
    if (this.#first === undefined) {
      this.#first = { signal, at: now };
      return "shut-down";
    }
    const copy = signal === this.#first.signal && now - this.#first.at < REPEATED_SIGNAL_MS;
    return copy ? "repeat" : "force";
  }
}

/**
 * Resolves on the first SIGINT or SIGTERM, logging `shutting-down` with `fields`; see
 * {@linkcode ShutdownSignals} for the signals after it.
 */
export function waitForShutdownSignal(
  logger: Logger,
  fields: LogFields = {},
): Promise<void> {
  const received = new ShutdownSignals();
  return new Promise((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => {
        switch (received.receive(signal, performance.now())) {
          case "shut-down":
            logger.log("notice", "shutting-down", { signal, ...fields });
            return resolve();
          case "repeat":
            return logger.log("info", "signal-repeated", { signal, note: "the same request" });
          case "force":
            logger.log("warn", "forced-exit", { reason: `${signal} during shutdown` });
            logger.flush?.();
            Deno.exit(EXIT_FAILURE);
        }
      });
    }
  });
}
