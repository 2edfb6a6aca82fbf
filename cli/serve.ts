/**
 * `hmac-echo serve`: {@linkcode parseServeArgs} turns the flags into a checked command without
 * touching the system; {@linkcode runServe} runs it, one step per function.
 *
 * @module
 */

import { formatAddr } from "../_io.ts";
import { ConfigError } from "../errors.ts";
import { type LogFormat, type Logger, StderrLogger } from "../log.ts";
import type { DigestName } from "../protocol/keys.ts";
import type { Requirement } from "../protocol/outcome.ts";
import {
  DEFAULT_GRACE_PERIOD_MS,
  DEFAULT_HOSTNAME,
  DEFAULT_PORT,
  type ResolvedSettings,
  resolveSettings,
  type ServerConfig,
} from "../server/config.ts";
import { describeTarget } from "../server/forward.ts";
import { type MetricsServer, serveMetrics } from "../server/metrics.ts";
import { type RunningServer, serve } from "../server/server.ts";
import type { ServerStats } from "../server/stats.ts";
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
  usageErrorFor,
} from "./flags.ts";
import { EXIT_FAILURE, EXIT_OK, printError } from "./output.ts";
import { waitForShutdownSignal } from "./signals.ts";
import {
  checkSecretStrength,
  loadPreviousSecret,
  loadSecret,
  PREVIOUS_SECRET_ENV_VAR,
  SECRET_ENV_VAR,
} from "./secret.ts";

/** serve's flags; each is in the help's groups too (cli/usage.ts), which a test checks. */
export const SERVE_OPTIONS = {
  ...COMMON_OPTIONS,
  "handshake-timeout": { type: "string" },
  "idle-timeout": { type: "string" },
  "grace-period": { type: "string" },
  "drain-delay": { type: "string" },
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
  "require-forward-secrecy": { type: "boolean" },
  "allow-weak-secret": { type: "boolean" },
  integrity: { type: "boolean" },
  encrypt: { type: "boolean" },
  digests: { type: "string" },
  digest: { type: "string" },
  forward: { type: "string" },
  "target-timeout": { type: "string" },
  "no-keepalive": { type: "boolean" },
} as const;

/** The server's settings without its secrets: what the flags say, checked. */
export type ServeSettings = Omit<ServerConfig, "secret" | "previousSecret">;

/** What `serve`'s flags ask for. */
export type ServeCommand =
  | InfoRequest
  | {
    kind: "serve";
    /** The server's configuration, checked by the server's own validator. */
    settings: ServeSettings;
    secretFile?: string;
    previousSecretFile?: string;
    /** Where to serve `/metrics` and `/healthz`, if anywhere. */
    metrics?: { hostname: string; port: number };
    /** How a SIGTERM or SIGINT ends it. */
    shutdown: ShutdownSettings;
    /** `--allow-weak-secret`: accept a secret under 16 bytes, with a warning at every start. */
    allowWeakSecret: boolean;
  };

/** What happens between the first SIGTERM (or SIGINT) and the exit. */
export interface ShutdownSettings {
  /** How long `/healthz` says 503 while the server still accepts, so balancers stop sending. */
  drainDelayMs: number;
  /** How long sessions then get to finish before they are closed. */
  gracePeriodMs: number;
}

/** Default `--drain-delay`: none, so Ctrl-C at a terminal is prompt; behind a balancer, set one. */
export const DEFAULT_DRAIN_DELAY_MS = 0;

/**
 * Parses `serve`'s flags into a command, checked with the server's own validator. Pure: no file,
 * network or environment is touched.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseServeArgs } from "./serve.ts";
 * const command = parseServeArgs(["--port", "0", "--encrypt"]);
 * assert.ok(command.kind === "serve" && command.settings.require === "encrypt");
 * ```
 * @throws {UsageError} naming the flag that is wrong.
 */
export function parseServeArgs(args: string[]): ServeCommand {
  const values = parseFlags(args, SERVE_OPTIONS);
  const info = infoRequest(values);
  if (info) return info;
  const workers = numberFrom(values.workers);
  if (workers !== undefined && !(Number.isInteger(workers) && workers >= 0)) {
    throw new UsageError(
      `--workers must be a whole number, 0 (one per core) or more, got "${values.workers}"`,
    );
  }
  const trustedList = values["trusted-proxies"];
  if ((values["proxy-protocol"] ?? false) !== (trustedList !== undefined)) {
    throw new UsageError(
      "--proxy-protocol and --trusted-proxies go together: the PROXY protocol is accepted only " +
        "from the balancers listed",
    );
  }
  if (values.digest !== undefined && values.digest !== "sha1-prefix") {
    throw new UsageError(
      `serve --digest takes only sha1-prefix (the legacy v1 answer), got "${values.digest}"; ` +
        "choose v2 digests with --digests",
    );
  }
  if (values["target-timeout"] !== undefined && values.forward === undefined) {
    throw new UsageError(
      "--target-timeout goes with --forward: it is how long the target may take",
    );
  }
  const settings: ServeSettings = {
    hostname: values.host,
    port: values.port === undefined ? undefined : parsePort("--port", values.port),
    handshakeTimeoutMs: numberFrom(values["handshake-timeout"], 1000),
    idleTimeoutMs: numberFrom(values["idle-timeout"], 1000),
    maxConnections: numberFrom(values["max-connections"]),
    maxConnectionsPerAddress: numberFrom(values["max-connections-per-address"]),
    throttle: {
      maxFailures: numberFrom(values["throttle-after"]),
      windowMs: numberFrom(values["throttle-window"], 1000),
      cooldownMs: numberFrom(values["throttle-cooldown"], 1000),
    },
    backlog: numberFrom(values.backlog),
    // 0: one thread per core.
    workers: workers === 0 ? navigator.hardwareConcurrency : workers,
    require: requirementFrom(values),
    // Unchecked names: resolveSettings() below refuses any that is not a digest.
    digests: values.digests?.split(",").map((name) => name.trim().toLowerCase())
      .filter((name) => name) as DigestName[] | undefined,
    sha1Prefix: values.digest === "sha1-prefix",
    requireForwardSecrecy: values["require-forward-secrecy"] ?? false,
    trustedProxies: trustedList?.split(","),
    log: { format: values["log-format"] as "text" | "json" | undefined, quiet: values.quiet },
    forward: values.forward === undefined ? undefined : parseEndpoint("--forward", values.forward),
    targetTimeoutMs: numberFrom(values["target-timeout"], 1000),
    keepAlive: values["no-keepalive"] ? false : undefined,
  };
  try {
    resolveSettings(settings);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw usageErrorFor(error, flagsOf(values));
  }
  return {
    kind: "serve",
    settings,
    secretFile: values["secret-file"],
    previousSecretFile: values["previous-secret-file"],
    metrics: values["metrics-port"] === undefined ? undefined : {
      hostname: values["metrics-host"] ?? DEFAULT_HOSTNAME,
      port: parsePort("--metrics-port", values["metrics-port"]),
    },
    allowWeakSecret: values["allow-weak-secret"] ?? false,
    shutdown: {
      drainDelayMs: parseSeconds("--drain-delay", values["drain-delay"]) ?? DEFAULT_DRAIN_DELAY_MS,
      gracePeriodMs: parseSeconds("--grace-period", values["grace-period"]) ??
        DEFAULT_GRACE_PERIOD_MS,
    },
  };
}

/** A number of seconds, 0 or more, as milliseconds. */
function parseSeconds(flag: string, text: string | undefined): number | undefined {
  const ms = numberFrom(text, 1000);
  if (ms === undefined) return undefined;
  if (!(ms >= 0 && Number.isFinite(ms))) {
    throw new UsageError(`${flag} must be a number of seconds, 0 or more, got "${text}"`);
  }
  return ms;
}

/** serve's --require-v2, --integrity and --encrypt as the server's `require`. */
function requirementFrom(
  values: { "require-v2"?: boolean; integrity?: boolean; encrypt?: boolean },
): Requirement | undefined {
  return frameFlag(values) ?? (values["require-v2"] ? "v2" : undefined);
}

/** Which flag set each server option, and to what text, for the messages of a `ConfigError`. */
function flagsOf(values: Record<string, string | boolean | undefined>) {
  const flag = (name: string) => ({ flag: `--${name}`, text: values[name] as string | undefined });
  return {
    port: flag("port"),
    backlog: flag("backlog"),
    workers: flag("workers"),
    handshakeTimeoutMs: flag("handshake-timeout"),
    idleTimeoutMs: flag("idle-timeout"),
    maxConnections: flag("max-connections"),
    maxConnectionsPerAddress: flag("max-connections-per-address"),
    "throttle.maxFailures": flag("throttle-after"),
    "throttle.windowMs": flag("throttle-window"),
    "throttle.cooldownMs": flag("throttle-cooldown"),
    digests: flag("digests"),
    trustedProxies: flag("trusted-proxies"),
    "log.format": flag("log-format"),
    sha1Prefix: { flag: "--digest sha1-prefix" },
    requireForwardSecrecy: { flag: "--require-forward-secrecy" },
    targetTimeoutMs: flag("target-timeout"),
    "forward.path": flag("forward"),
    "forward.hostname": flag("forward"),
    "forward.port": flag("forward"),
  };
}

/** Runs a parsed `serve` command until SIGINT or SIGTERM; returns the exit status. */
export async function runServe(command: Extract<ServeCommand, { kind: "serve" }>): Promise<number> {
  const { settings } = command;
  const logger = new StderrLogger(settings.log);
  // The environment as it was at start: SIGHUP re-reads files, not variables, which cannot change.
  const env = Object.fromEntries(
    ENV_NAMES.flatMap((name) => {
      const value = Deno.env.get(name);
      return value === undefined ? [] : [[name, value]];
    }),
  );
  const secrets = await loadSecrets({ ...command, env }, logger, { createDefault: true });
  const reloads: ReloadCounts = { reloads: 0, failures: 0 };
  const config = {
    ...settings,
    secret: secrets.secret,
    previousSecret: secrets.previousSecret,
    ...clampToOpenFiles(settings, logger),
    // The process is the server's alone: it may give back the memory of a wave of closes.
    collectAfterCloses: true,
  };
  if (config.sha1Prefix) {
    logger.log("warn", "legacy-digest-enabled", {
      digest: "sha1-prefix",
      note: "sha1(secret + challenge) answers are accepted: not an HMAC, and open to length " +
        "extension; move those clients to HMAC and drop --digest sha1-prefix",
    });
  }
  let server: RunningServer;
  try {
    server = await serve(config);
  } catch (error) {
    printError(
      describeListenError(error, config.hostname ?? DEFAULT_HOSTNAME, config.port),
      settings.log?.format,
    );
    return EXIT_FAILURE;
  }
  let draining = false;
  let metrics: MetricsServer | undefined;
  if (command.metrics) {
    const stats = async () => {
      const snapshot = await server.stats();
      snapshot.logLinesDropped += logger.droppedLines;
      snapshot.secretReloads = reloads.reloads;
      snapshot.secretReloadFailures = reloads.failures;
      return snapshot;
    };
    metrics = startMetrics(command.metrics, stats, () => draining, logger, settings.log?.format);
    if (!metrics) {
      await server.close({ gracePeriodMs: 0 });
      return EXIT_FAILURE;
    }
  }
  // The port is bound: a network-facing process needs no environment and writes no files from
  // here on, so give those permissions back. Reading stays: SIGHUP re-reads the secret files.
  // Deno 2.9 asks for write access to connect to a Unix socket, so a Unix target keeps it.
  const unixTarget = settings.forward !== undefined && "path" in settings.forward;
  for (const name of unixTarget ? ["env"] as const : ["write", "env"] as const) {
    Deno.permissions.revokeSync({ name });
  }

  // Handlers first: a signal sent as soon as "listening" appears must find them in place.
  const stopReloading = reloadSecretsOnHangUp({ ...command, env }, server, logger, reloads);
  // A copy: LogFields wants an index signature, which ShutdownSettings does not declare.
  const shutdownSignal = waitForShutdownSignal(logger, { ...command.shutdown });
  logListening(logger, server, config, secrets.source);
  await shutdownSignal;
  stopReloading();
  draining = true; // /healthz says 503 from now on, so a balancer stops sending new clients
  if (command.shutdown.drainDelayMs > 0) {
    logger.log("notice", "draining", { drainDelayMs: command.shutdown.drainDelayMs });
    await new Promise((resolve) => setTimeout(resolve, command.shutdown.drainDelayMs));
  }
  await server.close({ gracePeriodMs: command.shutdown.gracePeriodMs });
  await metrics?.shutdown();
  logStopped(logger, await server.stats());
  logger.flush();
  return EXIT_OK;
}

/** Counts of SIGHUP reloads, for `/metrics`. */
interface ReloadCounts {
  reloads: number;
  failures: number;
}

/**
 * On SIGHUP, reads the secret files again and hands the secrets to the server; a file that
 * cannot be read or is empty keeps the old secrets, and the log says why.
 *
 * @returns a function that stops listening for SIGHUP.
 */
function reloadSecretsOnHangUp(
  command: {
    secretFile?: string;
    previousSecretFile?: string;
    env: Record<string, string>;
    allowWeakSecret: boolean;
  },
  server: RunningServer,
  logger: Logger,
  counts: ReloadCounts,
): () => void {
  let reloading = Promise.resolve();
  const onHangUp = () => {
    // One reload at a time, in order: the last SIGHUP's files win.
    reloading = reloading.then(async () => {
      try {
        const secrets = await loadSecrets(command, logger, { createDefault: false });
        await server.replaceSecrets(secrets);
        counts.reloads++;
        logger.log("notice", "secrets-reloaded", {
          secret: secrets.source,
          previous: secrets.previousSource ?? "none",
        });
      } catch (error) {
        counts.failures++;
        logger.log("error", "reload-failed", {
          error: error instanceof Error ? error.message : String(error),
          note: "the secrets in use are unchanged",
        });
      }
    });
  };
  Deno.addSignalListener("SIGHUP", onHangUp);
  return () => Deno.removeSignalListener("SIGHUP", onHangUp);
}

/** The environment variables serve reads: the secrets, and where the default file is. */
const ENV_NAMES = [SECRET_ENV_VAR, PREVIOUS_SECRET_ENV_VAR, "XDG_CONFIG_HOME", "HOME"];

/**
 * Loads the secret (creating the default file on first run) and a rotation's previous one, and
 * refuses a short one unless `allowWeakSecret` (then it logs a warning): at start and on SIGHUP.
 */
async function loadSecrets(
  command: {
    secretFile?: string;
    previousSecretFile?: string;
    env: Record<string, string>;
    allowWeakSecret: boolean;
  },
  logger: Logger,
  options: { createDefault: boolean },
): Promise<
  { secret: Uint8Array; previousSecret?: Uint8Array; source: string; previousSource?: string }
> {
  const getEnv = (name: string): string | undefined => command.env[name];
  const loaded = await loadSecret({
    secretFile: command.secretFile,
    createDefault: options.createDefault,
    getEnv,
  });
  if (loaded.created) {
    logger.log("notice", "secret-created", {
      path: loaded.source.replace(/^file /, ""),
      note: "a new random secret; clients on this machine find it there",
    });
  }
  for (const warning of loaded.warnings) logger.log("warn", "secret-warning", { warning });
  const previous = await loadPreviousSecret({ secretFile: command.previousSecretFile, getEnv });
  if (previous) {
    logger.log("notice", "rotation", {
      previous: previous.source,
      note: "the previous secret is accepted too; remove it once no client uses it",
    });
    for (const warning of previous.warnings) logger.log("warn", "secret-warning", { warning });
  }
  for (const secret of [loaded, previous]) {
    if (secret === undefined) continue;
    const warning = checkSecretStrength(secret, command.allowWeakSecret);
    if (warning !== undefined) logger.log("warn", "weak-secret", { warning });
  }
  return {
    secret: loaded.secret,
    previousSecret: previous?.secret,
    source: loaded.source,
    previousSource: previous?.source,
  };
}

/**
 * Descriptors kept free of client connections: the listeners, the metrics endpoint and its
 * scrapes and health checks, worker threads, Deno's own.
 */
const RESERVED_DESCRIPTORS = 64;

/**
 * When the free descriptors cannot be counted: the soft limit most machines give a process, and
 * so the largest cap that is safe without knowing more.
 */
const COMMON_OPEN_FILE_LIMIT = 1024;

/**
 * `maxConnections`, lowered below the descriptors this process can still open: running out of
 * descriptors is worse than refusing, because it also stops the metrics endpoint. A forwarded
 * session holds two: the client's connection and the target's.
 */
function clampToOpenFiles(settings: ServeSettings, logger: Logger): { maxConnections?: number } {
  const wanted = resolveSettings(settings).maxConnections;
  const perConnection = settings.forward === undefined ? 1 : 2;
  const free = freeDescriptors(wanted * perConnection + RESERVED_DESCRIPTORS);
  if (free === undefined) {
    const safe = Math.floor((COMMON_OPEN_FILE_LIMIT - RESERVED_DESCRIPTORS) / perConnection);
    if (settings.maxConnections !== undefined || wanted <= safe) {
      logger.log("warn", "open-file-limit-unknown", {
        maxConnections: wanted,
        note: "could not count free file descriptors; keep --max-connections below ulimit -n" +
          (perConnection === 2 ? ", at two per forwarded session" : ""),
      });
      return {};
    }
    logger.log("warn", "max-connections-lowered", {
      from: wanted,
      to: safe,
      reason: `could not count free file descriptors, so the common limit of ` +
        `${COMMON_OPEN_FILE_LIMIT} is assumed; set --max-connections to serve more`,
    });
    return { maxConnections: safe };
  }
  const fits = Math.max(1, Math.floor((free - RESERVED_DESCRIPTORS) / perConnection));
  if (wanted <= fits) return {};
  logger.log("warn", "max-connections-lowered", {
    from: wanted,
    to: fits,
    reason: `only ${free} more files can be open (ulimit -n)` +
      (perConnection === 2 ? ", two per forwarded session" : "") +
      "; raise the limit to serve more",
  });
  return { maxConnections: fits };
}

/**
 * How many more files this process can open, counted up to `enough`; undefined if it cannot tell.
 * Deno 2.9 has no getrlimit and refuses /proc/self/limits without --allow-all, so this opens
 * Deno's own executable (readable under --allow-read) until the kernel says EMFILE, then closes
 * them all: ~30 µs a file, 0.3 s for the default cap.
 */
function freeDescriptors(enough: number): number | undefined {
  const files: Deno.FsFile[] = [];
  try {
    while (files.length < enough) files.push(Deno.openSync(Deno.execPath()));
    return files.length;
  } catch (error) {
    const code = (error as { code?: string }).code;
    return code === "EMFILE" || code === "ENFILE" ? files.length : undefined;
  } finally {
    for (const file of files) file.close();
  }
}

/** Serves /metrics and /healthz; undefined (and the reason printed) if it cannot listen. */
function startMetrics(
  where: { hostname: string; port: number },
  stats: () => Promise<ServerStats>,
  draining: () => boolean,
  logger: Logger,
  format?: LogFormat,
): MetricsServer | undefined {
  let metrics: MetricsServer;
  try {
    metrics = serveMetrics({
      ...where,
      stats,
      draining,
      onError: (error) =>
        logger.log("error", "metrics-failed", {
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        }),
      onRestart: () =>
        logger.log("notice", "metrics-restarted", { address: formatAddr(metrics.addr) }),
    });
  } catch (error) {
    printError(
      describeListenError(error, where.hostname, where.port, "--metrics-port")
        .replace("listen", "serve metrics"),
      format,
    );
    return undefined;
  }
  logger.log("notice", "metrics", {
    address: formatAddr(metrics.addr),
    paths: "/metrics /healthz",
  });
  return metrics;
}

function logListening(
  logger: Logger,
  server: RunningServer,
  config: ServerConfig,
  secretSource: string,
): void {
  // What the server runs with, defaults included: the same resolution serve() made.
  const settings = resolveSettings(config);
  const { require } = settings;
  const forwardSecrecy = settings.requireForwardSecrecy;
  logger.log("notice", "listening", {
    address: formatAddr(server.addr),
    forward: settings.forward && describeTarget(settings.forward),
    secret: secretSource,
    workers: settings.workers,
    protocols: v1Accepted(settings) ? "1,2" : "2",
    require: require === undefined || require === "v2" ? undefined : require,
    forwardSecrecy: forwardSecrecy ? "required" : "offered",
    digests: settings.digests.join(","),
    maxConnections: settings.maxConnections,
    maxConnectionsPerAddress: settings.maxConnectionsPerAddress,
    handshakeTimeoutMs: settings.handshakeTimeoutMs,
    idleTimeoutMs: settings.idleTimeoutMs,
    throttleAfter: settings.throttle.maxFailures,
  });
  if (settings.forward !== undefined) {
    logger.log("notice", "forwarding", {
      target: describeTarget(settings.forward),
      targetTimeoutMs: settings.targetTimeoutMs,
      keepAlive: settings.keepAlive,
      note: "every authenticated session is forwarded to the target; only encrypted, " +
        "forward-secret sessions are served (v1, plain, integrity and version 02 clients are " +
        "refused)" + ("path" in settings.forward
          ? "; write permission is kept, as Deno needs " +
            "it to connect to a Unix socket"
          : ""),
    });
  }
  if (!forwardSecrecy) {
    logger.log("notice", "accepting", {
      note: "older clients are served too: " +
        `${v1Accepted(settings) ? "v1 answers and " : ""}v2 sessions without forward secrecy; ` +
        "--require-forward-secrecy refuses them",
    });
  }
}

/** Whether the server takes v1 answers (docs/PROTOCOL.md §8): nothing refuses them. */
function v1Accepted(settings: ResolvedSettings): boolean {
  return settings.require === undefined && !settings.requireForwardSecrecy &&
    settings.digests.includes("sha1");
}

function logStopped(logger: Logger, stats: ServerStats): void {
  const { accepted, authenticated, refused, rejected, throttled, idleClosed, frameErrors } = stats;
  const { forwarded, targetErrors } = stats;
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
    ...(forwarded > 0 || sum(targetErrors) > 0
      ? { forwarded, targetErrors: sum(targetErrors), ...prefixed("target-", targetErrors) }
      : {}),
  });
}

/** `{ a: 1 }` as `{ "rejected-a": 1 }`: per-reason counts as flat log fields. */
function prefixed(prefix: string, counts: Record<string, number | undefined>) {
  return Object.fromEntries(Object.entries(counts).map(([key, n]) => [prefix + key, n]));
}

function sum(counts: Record<string, number | undefined>): number {
  return Object.values(counts).reduce((total: number, n) => total + (n ?? 0), 0);
}

/** Why the server could not listen, for people; `portFlag` is the flag that chose the port. */
function describeListenError(
  error: unknown,
  hostname: string,
  port: number | undefined,
  portFlag = "--port",
): string {
  const where = `${hostname}:${port ?? DEFAULT_PORT}`;
  const name = error instanceof Error ? error.name : "";
  switch (name) {
    case "AddrInUse":
      return `Cannot listen on ${where}: the address is already in use. ` +
        `Stop the other server or choose another ${portFlag}`;
    case "AddrNotAvailable":
      return `Cannot listen on ${where}: ${hostname} is not an address of this machine`;
    case "PermissionDenied":
      return `Cannot listen on ${where}: permission denied (ports below 1024 need privileges)`;
    case "WorkerStartError":
      return `Cannot start the server threads for ${where}: ${(error as Error).message}`;
  }
  return `Cannot listen on ${where}: ${error instanceof Error ? error.message : String(error)}`;
}
