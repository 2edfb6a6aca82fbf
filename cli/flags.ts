/**
 * Flag parsing shared by the commands: `node:util`'s parser with one-line messages, numbers and
 * ports from their text, and the translation of a library `ConfigError` into a flag's message.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ConfigError } from "../errors.ts";

/** A command line that makes no sense; printed with a pointer to --help, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The flags every command takes. */
export const COMMON_OPTIONS = {
  host: { type: "string" },
  port: { type: "string" },
  "secret-file": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** What `--help` or `--version` ask for, after either command as before it. */
export type InfoRequest = { kind: "help" } | { kind: "version" };

/** `--help` (it wins) or `--version` among the parsed flags; undefined for neither. */
export function infoRequest(
  values: { help?: boolean; version?: boolean },
): InfoRequest | undefined {
  return values.help ? { kind: "help" } : values.version ? { kind: "version" } : undefined;
}

/** Parses `args` strictly against `options`; a problem becomes a one-line {@linkcode UsageError}. */
export function parseFlags<
  const T extends Record<string, { type: "string" | "boolean"; short?: string }>,
>(args: string[], options: T) {
  try {
    return parseArgs({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    // node:util's messages span lines (the problem, then a hint); keep both, on one line.
    const message = error instanceof Error ? error.message.split("\n").join(" ") : String(error);
    throw new UsageError(message.replace(/\.$/, ""));
  }
}

/** A negative number, as a value: `-1`, `-0.5`, `-.5`. No flag of ours looks like one. */
const NEGATIVE_NUMBER = /^-\.?\d/;

/**
 * `--port -1` as `--port=-1`. node:util reads a value that starts with a dash as a possibly
 * forgotten value and refuses it as "ambiguous"; a negative number cannot be a flag here, so it
 * is the value, and the flag's own check says what is wrong with it.
 */
function joinNegativeValues(
  args: string[],
  options: Record<string, { type: "string" | "boolean" }>,
): string[] {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return [...joined, ...args.slice(i)];
    const name = arg.startsWith("--") ? arg.slice(2) : undefined;
    const next = args[i + 1];
    if (
      name !== undefined && Object.hasOwn(options, name) && options[name].type === "string" &&
      next !== undefined && NEGATIVE_NUMBER.test(next)
    ) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

/**
 * A flag's number, as the library option wants it; `NaN` for text that is not a plain decimal
 * number, which the option's own check then refuses.
 */
export function numberFrom(text: string | undefined, scale = 1): number | undefined {
  if (text === undefined) return undefined;
  return /^[+-]?(\d+\.?\d*|\.\d+)$/.test(text.trim()) ? Number(text) * scale : NaN;
}

/** The port in `--port`-like flags: a whole number from 0 (any free port) to 65535. */
export function parsePort(flag: string, text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    throw new UsageError(`${flag} must be a whole number from 0 to 65535, got "${text}"`);
  }
  return port;
}

/**
 * A library option error as a usage error about the flag that set it. `flags` maps option names
 * to flags and the text the user gave them.
 */
export function usageErrorFor(
  error: ConfigError,
  flags: Record<string, { flag: string; text?: string } | undefined>,
): UsageError {
  const source = flags[error.option];
  if (source === undefined) return new UsageError(error.message);
  if (error.message.startsWith(`${error.option} must be `)) {
    const got = source.text ?? JSON.stringify(error.value);
    return new UsageError(`${source.flag} must be ${error.expected}, got "${got}"`);
  }
  // A message of its own (`digests: unknown digest …`): name the flag where it names the option.
  return new UsageError(error.message.replace(error.option, source.flag));
}

/**
 * The frame flag given, if any. `--integrity` and `--encrypt` are either/or: taking the stronger
 * one silently would hide a mistake (which mode was meant?), so both together are refused.
 */
export function frameFlag(values: { integrity?: boolean; encrypt?: boolean }) {
  if (values.integrity && values.encrypt) {
    throw new UsageError(
      "--integrity and --encrypt are either/or: choose one (encrypted frames are authenticated " +
        "too)",
    );
  }
  return values.encrypt ? "encrypt" as const : values.integrity ? "integrity" as const : undefined;
}

/** A TCP address or a Unix socket's path, as `--forward` and `--listen` give them. */
export type Endpoint = { hostname: string; port: number } | { path: string };

/**
 * `--forward` and `--listen`'s value: `HOST:PORT`, `[IPv6]:PORT`, a bare `PORT` (on
 * 127.0.0.1), or `unix:/path`. Port 0 only where `portZero` allows it (a listener's any free
 * port).
 */
export function parseEndpoint(flag: string, text: string, portZero = false): Endpoint {
  const expected = `${flag} takes HOST:PORT, a PORT on 127.0.0.1, or unix:/path`;
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (path === "") throw new UsageError(`${expected}; the path is missing in "${text}"`);
    return { path };
  }
  const match = /^(?:(?:\[([^\]]+)\]|([^:\[\]]*)):)?(\d+)$/.exec(text);
  if (match === null) throw new UsageError(`${expected}, got "${text}"`);
  const hostname = match[1] ?? match[2] ?? "127.0.0.1";
  if (hostname === "") throw new UsageError(`${expected}; the host is missing in "${text}"`);
  const port = Number(match[3]);
  if (port > 65535 || (port === 0 && !portZero)) {
    throw new UsageError(
      `${flag}'s port must be a whole number from ${portZero ? 0 : 1} to 65535, got "${match[3]}"`,
    );
  }
  return { hostname, port };
}
