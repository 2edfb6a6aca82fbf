/**
 * `hmac-echo connect`: {@linkcode parseConnectArgs} turns the flags into a checked command
 * without touching the system; {@linkcode runConnect} runs it.
 *
 * @module
 */

import { formatAddr, writeAll } from "../_io.ts";
import { HmacEchoError } from "../errors.ts";
import { type LogFormat, StderrLogger } from "../log.ts";
import { connect, type ConnectOptions, relay } from "../client/client.ts";
import {
  DEFAULT_TUNNEL_MAX_CONNECTIONS,
  startTunnel,
  type Tunnel,
  type TunnelOptions,
} from "../client/tunnel.ts";
import { DIGESTS, isDigestName } from "../protocol/keys.ts";
import { FrameError } from "../protocol/frames.ts";
import { DEFAULT_HOSTNAME, DEFAULT_PORT } from "../server/config.ts";
import {
  COMMON_OPTIONS,
  frameFlag,
  type InfoRequest,
  infoRequest,
  numberFrom,
  parseEndpoint,
  parseFlags,
  parsePort,
  UsageError,
} from "./flags.ts";
import { EXIT_FAILURE, EXIT_OK, printError, writeErr, writeOut } from "./output.ts";
import { checkSecretStrength, loadSecret } from "./secret.ts";
import { waitForShutdownSignal } from "./signals.ts";

/** connect's flags; each is in the help's groups too (cli/usage.ts), which a test checks. */
export const CONNECT_OPTIONS = {
  ...COMMON_OPTIONS,
  message: { type: "string" },
  retry: { type: "string" },
  protocol: { type: "string" },
  digest: { type: "string" },
  plain: { type: "boolean" },
  integrity: { type: "boolean" },
  encrypt: { type: "boolean" },
  "no-forward-secrecy": { type: "boolean" },
  "allow-weak-secret": { type: "boolean" },
  listen: { type: "string" },
  "max-connections": { type: "string" },
  "no-keepalive": { type: "boolean" },
  "log-format": { type: "string" },
  quiet: { type: "boolean" },
} as const;

/**
 * What connect asks for when a flag does not say: passed to connect() explicitly, so the help,
 * which shows these, is what the command does.
 */
export const CONNECT_DEFAULTS = {
  hostname: DEFAULT_HOSTNAME,
  port: DEFAULT_PORT,
  retries: 0,
  protocol: "2",
  digest: "sha256",
  mode: "encrypt",
  maxConnections: DEFAULT_TUNNEL_MAX_CONNECTIONS,
  logFormat: "text",
} as const;

/** The client's options without its secret: what the flags say, checked. */
export type ConnectSettings = Omit<ConnectOptions, "secret" | "onRetry"> & {
  hostname: string;
  port: number;
};

/** The tunnel's options without its secret: what the flags say, checked. */
export type TunnelSettings = Omit<TunnelOptions, "secret" | "logger"> & {
  hostname: string;
  port: number;
};

/** What `connect`'s flags ask for. */
export type ConnectCommand =
  | InfoRequest
  | {
    /** `--listen`: a local listener whose every connection is a session to the server. */
    kind: "tunnel";
    options: TunnelSettings;
    secretFile?: string;
    warnings: string[];
    allowWeakSecret: boolean;
    log: { format: LogFormat; quiet: boolean };
  }
  | {
    kind: "connect";
    options: ConnectSettings;
    secretFile?: string;
    /** `--message`: send it, print the reply, exit. Otherwise stdin is relayed. */
    message?: string;
    /** Said on stderr before connecting (a weak digest asked for, say). */
    warnings: string[];
    /** `--allow-weak-secret`: accept a secret under 16 bytes, with a warning. */
    allowWeakSecret: boolean;
  };

const ALL_DIGESTS = Object.keys(DIGESTS).join(",");

/**
 * Parses `connect`'s flags into a command. Pure: no file, network or environment is touched.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConnectArgs } from "./connect.ts";
 * const command = parseConnectArgs(["--port", "4444", "--encrypt"]);
 * assert.ok(command.kind === "connect" && command.options.mode === "encrypt");
 * ```
 * @throws {UsageError} naming the flag that is wrong.
 */
export function parseConnectArgs(args: string[]): ConnectCommand {
  const values = parseFlags(args, CONNECT_OPTIONS);
  const info = infoRequest(values);
  if (info) return info;
  const retries = numberFrom(values.retry) ?? CONNECT_DEFAULTS.retries;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new UsageError(`--retry must be a whole number, 0 or more, got "${values.retry}"`);
  }
  const warnings: string[] = [];
  const port = values.port === undefined ? CONNECT_DEFAULTS.port : parsePort("--port", values.port);
  if (port === 0) throw new UsageError("--port must be 1-65535 for connect");
  if (values.listen !== undefined) return tunnelFrom(values, port, retries, warnings);
  for (const flag of ["max-connections", "no-keepalive", "log-format", "quiet"] as const) {
    if (values[flag] !== undefined) {
      throw new UsageError(`--${flag} goes with --listen: it is about the local listener`);
    }
  }
  const options: ConnectSettings = {
    hostname: values.host ?? CONNECT_DEFAULTS.hostname,
    port,
    retries,
    ...handshakeFrom(values, warnings),
  };
  return {
    kind: "connect",
    options,
    secretFile: values["secret-file"],
    message: values.message,
    warnings,
    allowWeakSecret: values["allow-weak-secret"] ?? false,
  };
}

/** `connect --listen`: the tunnel's command. Everything that would weaken its sessions is refused. */
function tunnelFrom(
  values: ReturnType<typeof parseFlags<typeof CONNECT_OPTIONS>>,
  port: number,
  retries: number,
  warnings: string[],
): ConnectCommand {
  if (values.message !== undefined) {
    throw new UsageError("--listen and --message are either/or: a tunnel relays programs' bytes");
  }
  const weaker = values.plain
    ? "--plain"
    : values.integrity
    ? "--integrity"
    : values["no-forward-secrecy"]
    ? "--no-forward-secrecy"
    : values.protocol !== undefined && values.protocol !== "2"
    ? `--protocol ${values.protocol}`
    : undefined;
  if (weaker !== undefined) {
    throw new UsageError(
      `--listen opens only encrypted, forward-secret protocol 2 sessions: drop ${weaker}`,
    );
  }
  const digest = values.digest ?? CONNECT_DEFAULTS.digest;
  if (!isDigestName(digest)) {
    throw new UsageError(`--digest must be one of ${ALL_DIGESTS}, got "${digest}"`);
  }
  const maxConnections = numberFrom(values["max-connections"]) ?? CONNECT_DEFAULTS.maxConnections;
  if (!Number.isInteger(maxConnections) || maxConnections < 1) {
    throw new UsageError(
      `--max-connections must be a positive whole number, got "${values["max-connections"]}"`,
    );
  }
  const format = values["log-format"] ?? CONNECT_DEFAULTS.logFormat;
  if (format !== "text" && format !== "json") {
    throw new UsageError(`--log-format must be text or json, got "${format}"`);
  }
  return {
    kind: "tunnel",
    options: {
      listen: parseEndpoint("--listen", values.listen!, true),
      hostname: values.host ?? CONNECT_DEFAULTS.hostname,
      port,
      retries,
      digest,
      maxConnections,
      keepAlive: !values["no-keepalive"],
    },
    secretFile: values["secret-file"],
    warnings,
    allowWeakSecret: values["allow-weak-secret"] ?? false,
    log: { format, quiet: values.quiet ?? false },
  };
}

/** connect's --protocol, --digest, the mode flags and --no-forward-secrecy, as connect() options. */
function handshakeFrom(
  values: {
    protocol?: string;
    digest?: string;
    plain?: boolean;
    integrity?: boolean;
    encrypt?: boolean;
    "no-forward-secrecy"?: boolean;
  },
  warnings: string[],
): Pick<ConnectOptions, "protocol" | "digest" | "mode" | "forwardSecrecy"> {
  const { protocol = CONNECT_DEFAULTS.protocol, digest } = values;
  const framed = frameFlag(values);
  if (values.plain && framed !== undefined) {
    throw new UsageError(`--plain and --${framed} are either/or: choose one`);
  }
  const noForwardSecrecy = values["no-forward-secrecy"] ?? false;
  if (protocol === "1") {
    if (framed !== undefined) {
      throw new UsageError("protocol 1 has no frames: --integrity and --encrypt need --protocol 2");
    }
    if (noForwardSecrecy) {
      throw new UsageError("protocol 1 has no key exchange: drop --no-forward-secrecy");
    }
    if (digest !== undefined && digest !== "hmac-sha1" && digest !== "sha1-prefix") {
      throw new UsageError(
        `protocol 1 answers with hmac-sha1 or sha1-prefix, not "${digest}"; ` +
          "other digests need --protocol 2",
      );
    }
    if (digest === "sha1-prefix") {
      warnings.push(
        "warning: --digest sha1-prefix sends the tutorial's sha1(secret + challenge), which is " +
          "weaker than HMAC; use it only while a server is being migrated",
      );
    }
    return { protocol: 1, digest: digest === "sha1-prefix" ? digest : undefined };
  }
  if (protocol !== "2") throw new UsageError(`--protocol must be 1 or 2, got "${protocol}"`);
  if (digest !== undefined && !isDigestName(digest)) {
    throw new UsageError(
      `--digest for protocol 2 must be one of ${ALL_DIGESTS}, got "${digest}"` +
        (digest === "sha1-prefix" ? " (sha1-prefix is a protocol 1 answer: add --protocol 1)" : ""),
    );
  }
  const mode = values.plain ? "plain" : framed ?? CONNECT_DEFAULTS.mode;
  if (mode === "plain" && noForwardSecrecy) {
    throw new UsageError("--plain has no key exchange: drop --no-forward-secrecy");
  }
  if (noForwardSecrecy) {
    warnings.push(
      "warning: --no-forward-secrecy: whoever records this session and later obtains the secret " +
        "can read it; use it only for a server older than forward secrecy",
    );
  }
  return {
    protocol: 2,
    digest: digest ?? CONNECT_DEFAULTS.digest,
    mode,
    forwardSecrecy: mode !== "plain" && !noForwardSecrecy,
  };
}

/** Runs a parsed `connect` command; returns the exit status. */
export async function runConnect(
  command: Extract<ConnectCommand, { kind: "connect" }>,
): Promise<number> {
  for (const warning of command.warnings) printError(warning);
  // Only a tunnel's Unix socket needs to write (the task grants it for that): give it back.
  Deno.permissions.revokeSync({ name: "write" });
  const { hostname, port } = command.options;
  const loaded = await loadSecret({
    secretFile: command.secretFile,
    createDefault: false,
    getEnv: (name) => Deno.env.get(name),
  });
  for (const warning of loaded.warnings) printError(`warning: ${warning}`);
  const weak = checkSecretStrength(loaded, command.allowWeakSecret);
  if (weak !== undefined) printError(`warning: ${weak}`);
  const { secret } = loaded;
  try {
    const client = await connect({
      ...command.options,
      secret,
      onRetry: ({ attempt, of, delayMs, error }) =>
        printError(
          `${
            describeConnectError(error, hostname, port, { requested: command.options, hint: false })
          }; retry ${attempt} of ${of} in ${delayMs} ms`,
        ),
    });
    if (command.message !== undefined) {
      await sendMessage(client, command.message);
    } else if (Deno.stdin.isTerminal()) {
      printError(`Connected to ${client.server}. Type lines; Ctrl-D ends the session.`);
      await writeErr("> ");
      await relay(client, Deno.stdin.readable, async (chunk) => {
        await writeAll(Deno.stdout, chunk);
        if (chunk[chunk.length - 1] === 0x0a) await writeErr("> ");
      });
      await writeErr("\n"); // end the last prompt's line
    } else {
      await relay(client, Deno.stdin.readable, (chunk) => writeAll(Deno.stdout, chunk));
    }
    return EXIT_OK;
  } catch (error) {
    printError(describeConnectError(error, hostname, port, { requested: command.options }));
    return EXIT_FAILURE;
  }
}

/**
 * Runs `connect --listen` until SIGINT or SIGTERM: the tunnel, its events on stderr as lines.
 * Returns the exit status.
 */
export async function runTunnel(
  command: Extract<ConnectCommand, { kind: "tunnel" }>,
): Promise<number> {
  const logger = new StderrLogger(command.log);
  for (const warning of command.warnings) logger.log("warn", "warning", { warning });
  const loaded = await loadSecret({
    secretFile: command.secretFile,
    createDefault: false,
    getEnv: (name) => Deno.env.get(name),
  });
  for (const warning of loaded.warnings) logger.log("warn", "secret-warning", { warning });
  const weak = checkSecretStrength(loaded, command.allowWeakSecret);
  if (weak !== undefined) logger.log("warn", "weak-secret", { warning: weak });
  const { options } = command;
  const where = "path" in options.listen
    ? `unix:${options.listen.path}`
    : formatAddr({ transport: "tcp", ...options.listen });
  let tunnel: Tunnel;
  try {
    tunnel = await startTunnel({ ...options, secret: loaded.secret, logger });
  } catch (error) {
    printError(describeListenError(error, where), command.log.format);
    return EXIT_FAILURE;
  }
  // A Unix socket is created, and removed at the end; a TCP listener writes no file.
  if (!("path" in options.listen)) Deno.permissions.revokeSync({ name: "write" });
  const stopped = waitForShutdownSignal(logger);
  logger.log("notice", "listening", {
    address: "path" in tunnel.addr ? `unix:${tunnel.addr.path}` : formatAddr(tunnel.addr),
    server: formatAddr({ transport: "tcp", hostname: options.hostname, port: options.port }),
    secret: loaded.source,
    maxConnections: options.maxConnections,
    keepAlive: options.keepAlive,
    note: "each local connection is its own encrypted, forward-secret session to the server",
  });
  await stopped;
  await tunnel.close();
  const stats = tunnel.stats();
  logger.log("notice", "stopped", {
    accepted: stats.accepted,
    authenticated: stats.authenticated,
    refused: stats.refused,
    dialFailures: Object.values(stats.dialFailures).reduce((sum, n) => sum + n, 0),
    toServer: stats.bytesToServer,
    fromServer: stats.bytesFromServer,
  });
  logger.flush();
  return EXIT_OK;
}

/** Why the tunnel could not listen, for people. */
function describeListenError(error: unknown, where: string): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof Deno.errors.AddrInUse) {
    return `Cannot listen on ${where}: already in use (${message}). Choose another --listen`;
  }
  return `Cannot listen on ${where}: ${message}`;
}

/** `--message`: sends it, prints the reply, and ends it with a newline as echo does. */
async function sendMessage(client: Parameters<typeof relay>[0], message: string): Promise<void> {
  let last = 0x0a;
  await relay(client, ReadableStream.from([new TextEncoder().encode(message)]), (chunk) => {
    last = chunk[chunk.length - 1];
    return writeAll(Deno.stdout, chunk);
  });
  if (last !== 0x0a) await writeOut("\n");
}

/** What this client asked the server for: the advice after a rejection depends on it. */
type Requested = Pick<ConnectSettings, "mode" | "forwardSecrecy">;

/**
 * The command line's advice after a library error, by error reason. A rejection or a close is not
 * authenticated (anyone on the path could have sent it), so the advice never offers a weaker
 * protocol, digest or mode: it asks for a stronger one, or says where to look.
 */
function hintFor(reason: string, requested: Requested): string {
  const forged = ": this answer was forged, or the server misbehaves; see its log";
  switch (reason) {
    case "unsupported-digest":
      return ": ask its operator which digests it accepts (serve --digests)";
    case "mode-refused":
      // Every hmac-echo server accepts encrypt (serve --integrity requires at least integrity).
      return requested.mode === "encrypt"
        ? `. Every hmac-echo server accepts --encrypt${forged}`
        : ": ask for --encrypt";
    case "forward-secrecy-required":
      if (requested.mode === "plain") {
        return ": ask for --encrypt (plain sessions exchange no keys)";
      }
      return requested.forwardSecrecy === false
        ? ": drop --no-forward-secrecy"
        : `. This client asked for forward secrecy${forged}`;
    case "unsupported-version":
      return ": ask its operator which version it runs before changing anything here";
    case "no-challenge":
      return ". A throttled address is refused for the whole cool-down (30 s at first, " +
        "doubling), so --retry does not wait it out: fix the cause, then try again later";
    default:
      return "";
  }
}

/**
 * Why the connection failed, for people; without `hint` (a line per retry), no advice: that is
 * given once, with the last failure.
 */
function describeConnectError(
  error: unknown,
  hostname: string,
  port: number,
  { requested, hint = true }: { requested: Requested; hint?: boolean },
): string {
  const where = `${hostname}:${port}`;
  if (error instanceof FrameError) return `Connection to ${where} closed: ${error.message}`;
  if (error instanceof HmacEchoError) {
    return error.message + (hint ? hintFor(error.reason, requested) : "");
  }
  if (error instanceof Deno.errors.ConnectionRefused) {
    return `Cannot connect to ${where}: connection refused. Is the server running there?`;
  }
  if (error instanceof Deno.errors.TimedOut) {
    return `Cannot connect to ${where}: timed out. Check the host, the port and any firewall`;
  }
  return `Connection to ${where} failed: ${error instanceof Error ? error.message : String(error)}`;
}
