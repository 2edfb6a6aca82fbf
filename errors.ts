/**
 * The one error family: every condition a caller of the library may catch and act on is an
 * {@linkcode HmacEchoError} with a `reason`, a stable kebab-case name. Messages say what happened
 * and name library options; the command line adds its own flag hints, keyed on the reason.
 * Options out of range are a {@linkcode ConfigError}, a `RangeError` that names the option.
 *
 * @module
 */

/**
 * The base of every hmac-echo error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HmacEchoError } from "./errors.ts";
 * const error = new HmacEchoError("example", "Something specific went wrong");
 * assert.ok(error instanceof Error && error.reason === "example");
 * ```
 */
export class HmacEchoError extends Error {
  /** What went wrong, as a stable name to branch on (`wrong-proof`, `tampered-frame`, …). */
  readonly reason: string;

  /** Builds the error; `message` is for people, `reason` for code. */
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.reason = reason;
  }
}

/**
 * An option out of range, or options that contradict each other. `option` names the offending
 * option (the command line turns it into its flag); `expected` says what would be valid.
 */
export class ConfigError extends RangeError {
  /** Builds the error for `option`, whose `value` is not `expected`. */
  constructor(
    readonly option: string,
    readonly expected: string,
    readonly value: unknown,
    message = `${option} must be ${expected}, got ${JSON.stringify(value)}`,
  ) {
    super(message);
    this.name = "ConfigError";
  }
}
