/**
 * The command line: parses arguments, loads the secret, and wires the server or the client to the
 * terminal. The only module that talks to the user; `main.ts` and `bin/` only call {@linkcode runCli}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { writeAll } from "./_io.ts";
import { ChallengeError } from "./handshake.ts";
import {
  connect,
  HandshakeRejectedError,
  ProtocolMismatchError,
  relay,
  ServerAuthenticationError,
  ServerHungUpError,
} from "./client.ts";
import { type DigestName, DIGESTS, isDigestName } from "./keys.ts";
import { FrameError } from "./frames.ts";
import type { Requirement } from "./handshake.ts";
import { type Logger, StderrLogger } from "./log.ts";
import {
  loadPreviousSecret,
  loadSecret,
  PREVIOUS_SECRET_ENV_VAR,
  SECRET_ENV_VAR,
  SecretError,
} from "./secret.ts";
import {
  DEFAULT_BACKLOG,
  DEFAULT_GRACE_PERIOD_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_PORT,
  formatAddr,
  serve,
  type ServerStats,
} from "./server.ts";
import { startWorkers, WorkerStartError } from "./workers.ts";
import { serveMetrics } from "./metrics.ts";
import { TrustedProxies } from "./proxy_protocol.ts";
import {
  DEFAULT_THROTTLE_COOLDOWN_MS,
  DEFAULT_THROTTLE_FAILURES,
  DEFAULT_THROTTLE_WINDOW_MS,
} from "./throttle.ts";
import denoConfig from "./deno.json" with { type: "json" };

/** Exit status: success. */
const EXIT_OK = 0;
/** Exit status: the run failed (rejected, unreachable, port taken). */
const EXIT_FAILURE = 1;
/** Exit status: the command line or the configuration is wrong. */
const EXIT_USAGE = 2;

const ALL_DIGESTS = Object.keys(DIGESTS).join(",");

const USAGE = `hmac-echo ${denoConfig.version}: an upper-casing echo server behind an HMAC challenge

Usage:
  hmac-echo serve   [--host H] [--port P] [--secret-file F] [options below]
  hmac-echo connect [--host H] [--port P] [--secret-file F] [--message TEXT] [--retry N]
                    [--protocol 1|2] [--digest D] [--integrity | --encrypt]
  hmac-echo --help | --version

serve options:
  --host H                 address to listen on (default ${DEFAULT_HOSTNAME})
  --port P                 port to listen on, 0 for any free one (default ${DEFAULT_PORT})
  --secret-file F          file holding the shared secret (see "The secret" below)
  --previous-secret-file F a previous secret still accepted during a rotation (or ${PREVIOUS_SECRET_ENV_VAR})
  --handshake-timeout S    seconds a client has to answer the challenge (default ${
  DEFAULT_HANDSHAKE_TIMEOUT_MS / 1000
})
  --idle-timeout S         close an authenticated connection idle this long (default 0: never)
  --max-connections N      connections served at once; more are closed at once (default ${DEFAULT_MAX_CONNECTIONS})
  --max-connections-per-address N
                           the same, per client address; 0: no cap (default ${DEFAULT_MAX_CONNECTIONS_PER_ADDRESS})
  --throttle-after N       failed handshakes from one address that start a cool-down (default ${DEFAULT_THROTTLE_FAILURES}; 0: off)
  --throttle-window S      ... counted over this many seconds (default ${
  DEFAULT_THROTTLE_WINDOW_MS / 1000
})
  --throttle-cooldown S    first cool-down; it doubles with each repeat, up to an hour (default ${
  DEFAULT_THROTTLE_COOLDOWN_MS / 1000
})
  --backlog N              listen queue length, for reconnect storms (default ${DEFAULT_BACKLOG})
  --workers N              server threads sharing the port (SO_REUSEPORT); 0: one per core (default 1)
  --require-v2             refuse protocol v1 clients (v2 authenticates the server too)
  --integrity              require v2 with integrity frames (or encryption); implies --require-v2
  --encrypt                require v2 with encrypted frames (AES-256-GCM); implies --require-v2
  --digests LIST           digests a v2 client may use, comma-separated; leave sha1 out to
                           forbid it (default ${ALL_DIGESTS})
  --digest sha1-prefix     also accept the Python tutorial's sha1(secret + challenge) v1 answers,
                           to migrate its clients; weaker than HMAC, logged as a warning
  --proxy-protocol         read a PROXY protocol header (v1 or v2) from a load balancer first
  --trusted-proxies LIST   the balancers allowed to send one: IPs and CIDR blocks, comma-separated
  --metrics-port P         serve Prometheus /metrics and a /healthz check over HTTP (default: off)
  --metrics-host H         address for them (default 127.0.0.1)
  --log-format text|json   one line per event, for people (default) or for log shippers
  --quiet                  log only lifecycle lines, warnings and errors, not every connection

connect options:
  --host H, --port P       the server (default ${DEFAULT_HOSTNAME}:${DEFAULT_PORT})
  --secret-file F          file holding the shared secret
  --message TEXT           send TEXT, print the reply, exit
  --retry N                retry a failed connection N times, backing off (never a rejection)
  --protocol 1|2           2 (default) authenticates the server too; 1 only for old servers,
                           never chosen silently
  --digest D               v2: sha1, sha256 (default), sha384 or sha512;
                           v1: hmac-sha1 (default) or sha1-prefix (the tutorial's legacy answer)
  --integrity              v2: every frame carries a sequence number and a MAC
  --encrypt                v2: every frame is encrypted and authenticated (AES-256-GCM)
  Without --message: from a terminal, an interactive session (Ctrl-D ends it); from a pipe,
  stdin is streamed to the server and the replies to stdout.

The secret (never on the command line, where other users could see it in ps):
  1. the content of --secret-file F (one trailing newline ignored), if given; else
  2. the UTF-8 bytes of the ${SECRET_ENV_VAR} environment variable, if set; else
  3. the default file $XDG_CONFIG_HOME/hmac-echo/secret (or ~/.config/hmac-echo/secret),
     which "serve" creates with a random secret if it does not exist.

Exit status: 0 success, 1 failure (rejected, unreachable, port in use), 2 usage or secret error.
`;

/** Thrown for a command line that makes no sense; printed with a pointer to --help. */
class UsageError extends Error {
  override name = "UsageError";
}

/**
 * Runs the program with `args` (without the program name) and returns its exit status.
 *
 * @example
 * ```ts ignore
 * Deno.exit(await runCli(Deno.args));
 * ```
 */
export async function runCli(args: string[]): Promise<number> {
  try {
    const [command, ...rest] = args;
    switch (command) {
      case "serve":
        return await runServe(rest);
      case "connect":
        return await runConnect(rest);
      case "--help":
      case "-h":
      case "help":
        await writeOut(USAGE);
        return EXIT_OK;
      case "--version":
      case "-V":
        await writeOut(`hmac-echo ${denoConfig.version}\n`);
        return EXIT_OK;
      case undefined:
        throw new UsageError("Missing command: serve or connect");
      default:
        throw new UsageError(`Unknown command "${command}": use serve or connect`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      printError(`${error.message}. Run "hmac-echo --help" for usage.`);
      return EXIT_USAGE;
    }
    if (error instanceof SecretError) {
      printError(error.message);
      return EXIT_USAGE;
    }
    printError(`Unexpected error: ${error instanceof Error ? error.message : String(error)}`);
    return EXIT_FAILURE;
  }
}

const COMMON_OPTIONS = {
  host: { type: "string" },
  port: { type: "string" },
  "secret-file": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

function parse<const T extends Record<string, { type: "string" | "boolean"; short?: string }>>(
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    // node:util's messages span lines (the problem, then a hint); keep both, on one line.
    const message = error instanceof Error ? error.message.split("\n").join(" ") : String(error);
    throw new UsageError(message.replace(/\.$/, ""));
  }
}

async function runServe(args: string[]): Promise<number> {
  const values = parse(args, {
    ...COMMON_OPTIONS,
    "handshake-timeout": { type: "string" },
    "idle-timeout": { type: "string" },
    "max-connections": { type: "string" },
    "max-connections-per-address": { type: "string" },
    "throttle-after": { type: "string" },
    "throttle-window": { type: "string" },
    "throttle-cooldown": { type: "string" },
    backlog: { type: "string" },
    workers: { type: "string" },
    "previous-secret-file": { type: "string" },
    "proxy-protocol": { type: "boolean" },
    "trusted-proxies": { type: "string" },
    "metrics-port": { type: "string" },
    "metrics-host": { type: "string" },
    "log-format": { type: "string" },
    quiet: { type: "boolean" },
    "require-v2": { type: "boolean" },
    integrity: { type: "boolean" },
    encrypt: { type: "boolean" },
    digests: { type: "string" },
    digest: { type: "string" },
  });
  if (values.help) {
    await writeOut(USAGE);
    return EXIT_OK;
  }
  const hostname = values.host ?? DEFAULT_HOSTNAME;
  const port = parsePort(values.port);
  const seconds = (flag: keyof typeof values, fallbackMs: number, zero = false) =>
    1000 * parseNumber(`--${flag}`, values[flag] as string | undefined, {
      fallback: fallbackMs / 1000,
      integer: false,
      zero,
    });
  const count = (flag: keyof typeof values, fallback: number, zero = false) =>
    parseNumber(`--${flag}`, values[flag] as string | undefined, { fallback, integer: true, zero });
  const handshakeTimeoutMs = seconds("handshake-timeout", DEFAULT_HANDSHAKE_TIMEOUT_MS);
  const idleTimeoutMs = seconds("idle-timeout", 0, true);
  let maxConnections = count("max-connections", DEFAULT_MAX_CONNECTIONS);
  const maxConnectionsPerAddress = count(
    "max-connections-per-address",
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    true,
  );
  const throttle = {
    maxFailures: count("throttle-after", DEFAULT_THROTTLE_FAILURES, true),
    windowMs: seconds("throttle-window", DEFAULT_THROTTLE_WINDOW_MS),
    cooldownMs: seconds("throttle-cooldown", DEFAULT_THROTTLE_COOLDOWN_MS),
  };
  const backlog = count("backlog", DEFAULT_BACKLOG);
  const workers = count("workers", 1, true) || navigator.hardwareConcurrency;
  const trustedList = values["trusted-proxies"];
  if ((values["proxy-protocol"] ?? false) !== (trustedList !== undefined)) {
    throw new UsageError(
      "--proxy-protocol and --trusted-proxies go together: the PROXY protocol is accepted only " +
        "from the balancers listed",
    );
  }
  let trustedProxies: TrustedProxies | undefined;
  try {
    trustedProxies = trustedList === undefined ? undefined : new TrustedProxies(trustedList);
  } catch (error) {
    throw new UsageError(`--trusted-proxies: ${(error as Error).message}`);
  }
  const metricsPort = values["metrics-port"] === undefined
    ? undefined
    : parsePort(values["metrics-port"], "--metrics-port");
  const format = values["log-format"] ?? "text";
  if (format !== "text" && format !== "json") {
    throw new UsageError(`--log-format must be text or json, got "${format}"`);
  }
  const { require, digests, legacyDigest } = parseServePolicy(values);
  const logger = new StderrLogger({ quiet: values.quiet, format });

  const loaded = await loadSecret({
    secretFile: values["secret-file"],
    createDefault: true,
    getEnv: (name) => Deno.env.get(name),
  });
  if (loaded.created) {
    logger.log("notice", "secret-created", {
      path: loaded.source.replace(/^file /, ""),
      note: "a new random secret; clients on this machine find it there",
    });
  }
  for (const warning of loaded.warnings) logger.log("warn", "secret-warning", { warning });
  const previous = await loadPreviousSecret({
    secretFile: values["previous-secret-file"],
    getEnv: (name) => Deno.env.get(name),
  });
  if (previous) {
    logger.log("notice", "rotation", {
      previous: previous.source,
      note: "the previous secret is accepted too; remove it once no client uses it",
    });
    for (const warning of previous.warnings) logger.log("warn", "secret-warning", { warning });
  }

  // Running out of descriptors is worse than refusing: keep the cap below the process's limit.
  const fileLimit = await openFileLimit();
  if (fileLimit !== undefined && maxConnections > fileLimit - RESERVED_DESCRIPTORS) {
    const clamped = Math.max(1, fileLimit - RESERVED_DESCRIPTORS);
    logger.log("warn", "max-connections-lowered", {
      from: maxConnections,
      to: clamped,
      reason: `the open-file limit is ${fileLimit}; raise it (ulimit -n) to serve more`,
    });
    maxConnections = clamped;
  }

  if (legacyDigest) {
    logger.log("warn", "legacy-digest-enabled", {
      digest: "sha1-prefix",
      note: "sha1(secret + challenge) answers are accepted: not an HMAC, and open to length " +
        "extension; move those clients to HMAC and drop --digest sha1-prefix",
    });
  }

  const options = {
    secret: loaded.secret,
    previousSecret: previous?.secret,
    require,
    digests,
    legacyDigest,
    hostname,
    port,
    handshakeTimeoutMs,
    idleTimeoutMs,
    maxConnections,
    maxConnectionsPerAddress,
    throttle,
    backlog,
  };
  let running: {
    address: string;
    stats(): ServerStats | Promise<ServerStats>;
    close(gracePeriodMs: number): Promise<ServerStats>;
  };
  try {
    if (workers === 1) {
      const server = await serve({ ...options, trustedProxies, logger });
      running = {
        address: formatAddr(server.addr),
        stats: () => server.stats,
        close: async (gracePeriodMs) => (await server.close({ gracePeriodMs }), server.stats),
      };
    } else {
      // The threads share the process's descriptors, so they share its connection cap too.
      const perWorker = {
        ...options,
        trustedProxies: trustedList,
        maxConnections: Math.max(1, Math.floor(maxConnections / workers)),
      };
      const pool = await startWorkers(workers, perWorker, {
        format,
        quiet: values.quiet ?? false,
      }, logger);
      running = {
        address: formatAddr({ transport: "tcp", hostname, port: pool.port }),
        stats: pool.stats,
        close: pool.close,
      };
    }
  } catch (error) {
    printError(describeListenError(error, hostname, port));
    return EXIT_FAILURE;
  }
  let draining = false;
  let metrics: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (metricsPort !== undefined) {
    const metricsHost = values["metrics-host"] ?? DEFAULT_HOSTNAME;
    try {
      metrics = serveMetrics({
        hostname: metricsHost,
        port: metricsPort,
        stats: running.stats,
        draining: () => draining,
      });
    } catch (error) {
      await running.close(0);
      printError(
        describeListenError(error, metricsHost, metricsPort).replace("listen", "serve metrics"),
      );
      return EXIT_FAILURE;
    }
    logger.log("notice", "metrics", {
      address: formatAddr(metrics.addr),
      paths: "/metrics /healthz",
    });
  }
  // The secret is loaded and the port bound: a network-facing process needs no files or
  // environment from here on, so give those permissions back.
  for (const name of ["read", "write", "env"] as const) Deno.permissions.revokeSync({ name });

  // Handlers first: a signal sent as soon as "listening" appears must find them in place.
  const shutdownSignal = waitForShutdownSignal(logger);
  logger.log("notice", "listening", {
    address: running.address,
    secret: loaded.source,
    workers,
    protocols: require === undefined ? "1,2" : "2",
    require: require === undefined || require === "v2" ? undefined : require,
    digests: (digests ?? Object.keys(DIGESTS)).join(","),
    maxConnections,
    maxConnectionsPerAddress,
    handshakeTimeoutMs,
    idleTimeoutMs,
    throttleAfter: throttle.maxFailures,
  });
  await shutdownSignal;
  draining = true; // /healthz says 503 from now on, so a balancer stops sending new clients
  const stats = await running.close(DEFAULT_GRACE_PERIOD_MS);
  await metrics?.shutdown();
  const { accepted, authenticated, refused, rejected, throttled, idleClosed, frameErrors } = stats;
  logger.log("notice", "stopped", {
    accepted,
    authenticated,
    rejected: sum(rejected),
    refused: sum(refused),
    throttled,
    idleClosed,
    frameErrors: sum(frameErrors),
    ...prefixed("rejected-", rejected),
    ...prefixed("refused-", refused),
    ...prefixed("frame-", frameErrors),
  });
  logger.flush();
  return EXIT_OK;
}

/** Descriptors kept free of connections: stdio, the listener, Deno's own. */
const RESERVED_DESCRIPTORS = 64;

/** The soft limit on open files, from /proc on Linux; undefined where it cannot be read. */
async function openFileLimit(): Promise<number | undefined> {
  try {
    const limits = await Deno.readTextFile("/proc/self/limits");
    const soft = limits.match(/^Max open files\s+(\d+|unlimited)/m)?.[1];
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
  } catch {
    return undefined; // not Linux, or not allowed: nothing to clamp against
  }
}

/** `{ a: 1 }` as `{ "rejected-a": 1 }`: per-reason counts as flat log fields. */
function prefixed(prefix: string, counts: Record<string, number | undefined>) {
  return Object.fromEntries(Object.entries(counts).map(([key, n]) => [prefix + key, n]));
}

function sum(counts: Record<string, number | undefined>): number {
  return Object.values(counts).reduce((total: number, n) => total + (n ?? 0), 0);
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
function waitForShutdownSignal(logger: Logger): Promise<void> {
  const signals = ["SIGINT", "SIGTERM"] as const;
  return new Promise((resolve) => {
    let received = false;
    const onSignal = () => {
      if (received) {
        logger.log("warn", "forced-exit", { reason: "second signal during shutdown" });
        Deno.exit(EXIT_FAILURE);
      }
      received = true;
      logger.log("notice", "shutting-down", { gracePeriodMs: DEFAULT_GRACE_PERIOD_MS });
      resolve();
    };
    for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  });
}

async function runConnect(args: string[]): Promise<number> {
  const values = parse(args, {
    ...COMMON_OPTIONS,
    message: { type: "string" },
    retry: { type: "string" },
    protocol: { type: "string" },
    digest: { type: "string" },
    integrity: { type: "boolean" },
    encrypt: { type: "boolean" },
  });
  if (values.help) {
    await writeOut(USAGE);
    return EXIT_OK;
  }
  const hostname = values.host ?? DEFAULT_HOSTNAME;
  const port = parsePort(values.port);
  if (port === 0) throw new UsageError("--port must be 1-65535 for connect");
  const retries = parseNumber("--retry", values.retry, { fallback: 0, integer: true, zero: true });
  const handshake = parseHandshakeChoice(values);
  const { secret } = await loadSecret({
    secretFile: values["secret-file"],
    createDefault: false,
    getEnv: (name) => Deno.env.get(name),
  });

  try {
    const client = await connect({
      secret,
      hostname,
      port,
      retries,
      ...handshake,
      onRetry: ({ attempt, of, delayMs, error }) =>
        printError(
          `${
            describeConnectError(error, hostname, port)
          }; retry ${attempt} of ${of} in ${delayMs} ms`,
        ),
    });
    if (values.message !== undefined) {
      let last = 0x0a;
      await relay(
        client,
        ReadableStream.from([new TextEncoder().encode(values.message)]),
        (chunk) => {
          last = chunk[chunk.length - 1];
          return writeAll(Deno.stdout, chunk);
        },
      );
      // End the printed reply with a newline, as echo does, unless it has one.
      if (last !== 0x0a) await writeOut("\n");
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
    printError(describeConnectError(error, hostname, port));
    return EXIT_FAILURE;
  }
}

/** serve's --require-v2, --integrity, --encrypt, --digests and --digest, as serve() options. */
function parseServePolicy(values: {
  "require-v2"?: boolean;
  integrity?: boolean;
  encrypt?: boolean;
  digests?: string;
  digest?: string;
}): { require?: Requirement; digests?: DigestName[]; legacyDigest: boolean } {
  const require: Requirement | undefined = values.encrypt
    ? "encrypt"
    : values.integrity
    ? "integrity"
    : values["require-v2"]
    ? "v2"
    : undefined;
  if (values.digest !== undefined && values.digest !== "sha1-prefix") {
    throw new UsageError(
      `serve --digest takes only sha1-prefix (the legacy v1 answer), got "${values.digest}"; ` +
        "choose v2 digests with --digests",
    );
  }
  const legacyDigest = values.digest === "sha1-prefix";
  if (legacyDigest && require !== undefined) {
    throw new UsageError(
      "--digest sha1-prefix accepts v1 answers, which --require-v2, --integrity and --encrypt refuse",
    );
  }
  return { require, digests: parseDigestList(values.digests), legacyDigest };
}

/** The comma-separated `--digests` list, checked; undefined when the flag is absent. */
function parseDigestList(list: string | undefined): DigestName[] | undefined {
  if (list === undefined) return undefined;
  const names = list.split(",").map((name) => name.trim().toLowerCase()).filter((name) => name);
  if (names.length === 0) throw new UsageError("--digests needs at least one digest");
  for (const name of names) {
    if (!isDigestName(name)) {
      throw new UsageError(`--digests: unknown digest "${name}"; choose from ${ALL_DIGESTS}`);
    }
  }
  return names as DigestName[];
}

/** connect's --protocol, --digest, --integrity and --encrypt, as connect() options. */
function parseHandshakeChoice(values: {
  protocol?: string;
  digest?: string;
  integrity?: boolean;
  encrypt?: boolean;
}) {
  const { protocol = "2", digest } = values;
  if (protocol === "1") {
    if (values.integrity || values.encrypt) {
      throw new UsageError(
        "protocol 1 has no frames: --integrity and --encrypt need --protocol 2",
      );
    }
    if (digest !== undefined && digest !== "hmac-sha1" && digest !== "sha1-prefix") {
      throw new UsageError(
        `protocol 1 answers with hmac-sha1 or sha1-prefix, not "${digest}"; ` +
          "other digests need --protocol 2",
      );
    }
    if (digest === "sha1-prefix") {
      printError(
        "warning: --digest sha1-prefix sends the tutorial's sha1(secret + challenge), which is " +
          "weaker than HMAC; use it only while a server is being migrated",
      );
    }
    return { protocol: 1 as const, legacyDigest: digest === "sha1-prefix" };
  }
  if (protocol !== "2") throw new UsageError(`--protocol must be 1 or 2, got "${protocol}"`);
  if (digest !== undefined && !isDigestName(digest)) {
    throw new UsageError(
      `--digest for protocol 2 must be one of ${ALL_DIGESTS}, got "${digest}"` +
        (digest === "sha1-prefix" ? " (sha1-prefix is a protocol 1 answer: add --protocol 1)" : ""),
    );
  }
  const mode = values.encrypt
    ? "encrypt" as const
    : values.integrity
    ? "integrity" as const
    : "plain" as const;
  return { protocol: 2 as const, digest, mode };
}

function parsePort(value: string | undefined, flag = "--port"): number {
  if (value === undefined) return DEFAULT_PORT;
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) {
    throw new UsageError(`${flag} must be a whole number from 0 to 65535, got "${value}"`);
  }
  return port;
}

function parseNumber(
  flag: string,
  value: string | undefined,
  options: { fallback: number; integer: boolean; zero?: boolean },
): number {
  if (value === undefined) return options.fallback;
  const number = Number(value);
  const valid = value.trim() !== "" && Number.isFinite(number) &&
    (number > 0 || (options.zero === true && number === 0)) &&
    (!options.integer || Number.isInteger(number));
  if (!valid) {
    const kind = options.integer ? "whole number" : "number";
    const what = options.zero ? `a ${kind}, 0 or more` : `a positive ${kind}`;
    throw new UsageError(`${flag} must be ${what}, got "${value}"`);
  }
  return number;
}

function describeListenError(error: unknown, hostname: string, port: number): string {
  const where = `${hostname}:${port}`;
  // By name: a worker thread's error reaches the supervisor as a name and a message only.
  const name = error instanceof WorkerStartError
    ? error.causeName
    : error instanceof Error
    ? error.name
    : "";
  switch (name) {
    case "AddrInUse":
      return `Cannot listen on ${where}: the address is already in use. ` +
        `Stop the other server or choose another --port`;
    case "AddrNotAvailable":
      return `Cannot listen on ${where}: ${hostname} is not an address of this machine`;
    case "PermissionDenied":
      return `Cannot listen on ${where}: permission denied (ports below 1024 need privileges)`;
    case "WorkerFailed":
      return `Cannot start the server threads for ${where}: ${(error as Error).message}`;
  }
  return `Cannot listen on ${where}: ${error instanceof Error ? error.message : String(error)}`;
}

function describeConnectError(error: unknown, hostname: string, port: number): string {
  const where = `${hostname}:${port}`;
  if (
    error instanceof HandshakeRejectedError || error instanceof ChallengeError ||
    error instanceof ServerHungUpError || error instanceof ServerAuthenticationError ||
    error instanceof ProtocolMismatchError
  ) {
    return error.message;
  }
  if (error instanceof FrameError) return `Connection to ${where} closed: ${error.message}`;
  if (error instanceof Deno.errors.ConnectionRefused) {
    return `Cannot connect to ${where}: connection refused. Is the server running there?`;
  }
  if (error instanceof Deno.errors.TimedOut) {
    return `Cannot connect to ${where}: timed out. Check the host, the port and any firewall`;
  }
  return `Connection to ${where} failed: ${error instanceof Error ? error.message : String(error)}`;
}

const encoder = new TextEncoder();

function writeOut(text: string): Promise<void> {
  return writeAll(Deno.stdout, encoder.encode(text));
}

function writeErr(text: string): Promise<void> {
  return writeAll(Deno.stderr, encoder.encode(text));
}

function printError(message: string): void {
  console.error(`hmac-echo: ${message}`);
}
