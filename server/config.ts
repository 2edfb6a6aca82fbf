/**
 * The server's configuration: one plain-data shape from the command line (or a library caller)
 * to the server and its worker threads, and the one function that validates it and fills in the
 * defaults, {@linkcode resolveConfig}.
 *
 * @module
 */

import { ConfigError } from "../errors.ts";
import { type DigestName, DIGESTS, isDigestName } from "../protocol/keys.ts";
import type { Requirement } from "../protocol/outcome.ts";
import { TrustedProxies } from "../protocol/proxy_protocol.ts";
import type { LogFormat, Logger } from "../log.ts";
import type { ServiceHandler } from "./service.ts";
import {
  DEFAULT_THROTTLE_COOLDOWN_MS,
  DEFAULT_THROTTLE_ENTRIES,
  DEFAULT_THROTTLE_FAILURES,
  DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
  DEFAULT_THROTTLE_WINDOW_MS,
} from "./throttle.ts";

/** Default TCP port, the tutorial's. */
export const DEFAULT_PORT = 4444;
/** Default listening address: loopback, so a first run exposes nothing. */
export const DEFAULT_HOSTNAME = "127.0.0.1";
/** Default time a client has to answer the challenge. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default cap on concurrent connections. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/** Default time active sessions get to finish when the server closes. */
export const DEFAULT_GRACE_PERIOD_MS = 5_000;
/** Default cap on concurrent connections from one address; generous for clients behind NAT. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1_000;
/**
 * Default listen queue. Deno's own default, 511, overflows when thousands of clients reconnect at
 * once after a restart; the kernel caps it at net.core.somaxconn (4096 on current Linux).
 */
export const DEFAULT_BACKLOG = 4_096;
/** Default time the forwarder gives its target to accept a connection. */
export const DEFAULT_TARGET_TIMEOUT_MS = 5_000;
/** The longest Unix socket path Linux takes (`sun_path` holds 108 bytes, the last one a NUL). */
const MAX_UNIX_PATH_BYTES = 107;

/**
 * Where `forward` sends each authenticated session: a TCP address (`hostname` may be a name, an
 * IPv4 or an IPv6 address) or a Unix socket's path.
 */
export type ForwardTarget = { hostname: string; port: number } | { path: string };

/** Failed-authentication throttling per address (see `throttle.ts`), as plain numbers. */
export interface ThrottleConfig {
  /** Failures within `windowMs` that put an address in cool-down; 0 turns throttling off. Default 5. */
  maxFailures?: number;
  /** How long failures are remembered towards `maxFailures`. Default 60 000 ms. */
  windowMs?: number;
  /** The first cool-down; each repeat offence doubles it, up to `maxCooldownMs`. Default 30 000 ms. */
  cooldownMs?: number;
  /** The longest cool-down. Default one hour. */
  maxCooldownMs?: number;
  /** Addresses remembered at most; the least recently seen go first. Default 10 000. */
  maxEntries?: number;
}

/**
 * Everything a server needs, as plain data: it survives `postMessage` to a worker thread
 * unchanged. Every field but `secret` is optional; {@linkcode resolveConfig} says the defaults.
 */
export interface ServerConfig {
  /** The shared secret's bytes. */
  secret: Uint8Array;
  /** A previous secret still accepted while clients move to the new one (a rotation). */
  previousSecret?: Uint8Array;
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (read it back from `server.addr`). Default 4444. */
  port?: number;
  /** Listen queue length (`tcpBacklog`). Default 4 096. */
  backlog?: number;
  /**
   * Server threads sharing the port (`SO_REUSEPORT`), each with its own event loop. Default 1: the
   * server runs in the calling thread. More needs `--unstable-net` and bytes for the secrets.
   */
  workers?: number;
  /** Time a client has to answer the challenge before it is closed. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Close an authenticated connection when no byte has moved either way for this long; 0: never (default). */
  idleTimeoutMs?: number;
  /** Connections beyond this many at once are closed at once. Default 10 000. */
  maxConnections?: number;
  /** Connections beyond this many at once from one address are closed at once; 0: no cap. Default 1 000. */
  maxConnectionsPerAddress?: number;
  /** Failed-authentication throttling per address; `false` turns it off. Default: on. */
  throttle?: ThrottleConfig | false;
  /**
   * Refuse v1 clients (`"v2"`), and v2 clients without integrity frames (`"integrity"`) or without
   * encryption (`"encrypt"`) (docs/PROTOCOL.md §8). Default: v1 and every v2 mode are served.
   */
  require?: Requirement;
  /**
   * Refuse sessions without an ephemeral key exchange (docs/PROTOCOL.md §12): v1 answers, and v2
   * hellos of version 02. Default false: the tutorial's clients and older v2 clients are served.
   */
  requireForwardSecrecy?: boolean;
  /**
   * The digests a v2 client may name; leave `"sha1"` out to forbid SHA-1, which also refuses v1
   * answers (HMAC-SHA1). Default: all four.
   */
  digests?: readonly DigestName[];
  /**
   * Also accept the tutorial's `sha1-prefix` v1 answers, `sha1(secret + challenge)`, for migrating
   * its clients (docs/PROTOCOL.md §3.1). Default false.
   */
  sha1Prefix?: boolean;
  /**
   * Accept a PROXY protocol header (v1 or v2) from these peers, a load balancer's addresses or
   * CIDR blocks: logs, per-address caps and throttling then see the real client. Default: none.
   */
  trustedProxies?: readonly string[];
  /** Log each event as a line on stderr, as text or JSON; `quiet` drops per-connection lines. Default: no log. */
  log?: { format?: LogFormat; quiet?: boolean };
  /**
   * Serve every authenticated session by forwarding it to this target, a fresh connection each,
   * both ways, instead of the upper-case echo. A forwarding server serves only encrypted,
   * forward-secret sessions: it raises `require` to `"encrypt"` and `requireForwardSecrecy` to
   * true. Default: none (the echo).
   */
  forward?: ForwardTarget;
  /** How long the forwarder waits for its target to accept a connection. Default 5 000 ms. */
  targetTimeoutMs?: number;
  /** TCP keepalive probes on client connections and on forward targets. Default true. */
  keepAlive?: boolean;
  /**
   * Ask V8 for one full collection once a wave of at least 1 000 connections has closed (see
   * `server/collect_garbage.ts`), so that an idle server gives their memory back. It sets V8's
   * `--expose-gc` for the whole process and pauses all of it for the collection, so it is the
   * command's choice (`serve` turns it on), not a library's. Counted per worker thread. Default
   * false.
   */
  collectAfterCloses?: boolean;
}

/**
 * Options for `serve`: the plain-data configuration, and what only works in the calling thread,
 * so never with more than one worker.
 */
export interface ServeOptions extends ServerConfig {
  /** Serves each authenticated connection. Default: the upper-case echo. */
  handler?: ServiceHandler;
  /** Receives the server's events, instead of the `log` option's stderr lines. */
  logger?: Logger;
}

/** A {@linkcode ServerConfig} with every default filled in, checked. */
export interface ResolvedConfig {
  secret: Uint8Array;
  previousSecret?: Uint8Array;
  hostname: string;
  port: number;
  backlog: number;
  workers: number;
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  throttle: Required<ThrottleConfig>;
  require?: Requirement;
  requireForwardSecrecy: boolean;
  digests: readonly DigestName[];
  sha1Prefix: boolean;
  trustedProxies?: TrustedProxies;
  log?: { format: LogFormat; quiet: boolean };
  forward?: ForwardTarget;
  targetTimeoutMs: number;
  keepAlive: boolean;
  collectAfterCloses: boolean;
}

/**
 * Checks `config` and fills in the defaults: the one place the server's options are validated.
 * The command line checks its flags with the same function before it loads the secret.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * const config = resolveConfig({ secret: new TextEncoder().encode("correct horse battery staple") });
 * assert.ok(config.port === 4444 && config.workers === 1);
 * ```
 * @throws {ConfigError} naming the first option that is out of range or contradicts another.
 */
export function resolveConfig(config: ServerConfig): ResolvedConfig {
  for (const option of ["secret", "previousSecret"] as const) {
    const value = config[option];
    if (!(value instanceof Uint8Array) && (option === "secret" || value !== undefined)) {
      throw new ConfigError(option, "the secret's bytes (a Uint8Array)", typeof value);
    }
  }
  return {
    ...resolveSettings(config),
    secret: config.secret,
    previousSecret: config.previousSecret,
  };
}

/** Everything of {@linkcode resolveConfig} but the secrets: checked, with the defaults filled in. */
export type ResolvedSettings = Omit<ResolvedConfig, "secret" | "previousSecret">;

/** {@linkcode resolveConfig} without the secrets, which the command line loads later. */
export function resolveSettings(
  config: Omit<ServerConfig, "secret" | "previousSecret">,
): ResolvedSettings {
  const throttle = config.throttle === false ? { maxFailures: 0 } : config.throttle ?? {};
  const forward = forwardTarget(config.forward);
  // Each requirement is a floor, and forwarding raises both: a tunnel must be encrypted and its
  // recordings must stay secret if the secret leaks (docs/PROTOCOL.md §12).
  const asked = requirement(config.require);
  const resolved: ResolvedSettings = {
    hostname: config.hostname ?? DEFAULT_HOSTNAME,
    port: port("port", config.port ?? DEFAULT_PORT),
    backlog: count("backlog", config.backlog ?? DEFAULT_BACKLOG),
    workers: count("workers", config.workers ?? 1),
    handshakeTimeoutMs: positive(
      "handshakeTimeoutMs",
      config.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    ),
    idleTimeoutMs: atLeastZero("idleTimeoutMs", config.idleTimeoutMs ?? 0),
    maxConnections: count("maxConnections", config.maxConnections ?? DEFAULT_MAX_CONNECTIONS),
    maxConnectionsPerAddress: count(
      "maxConnectionsPerAddress",
      config.maxConnectionsPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
      true,
    ),
    throttle: {
      maxFailures: count(
        "throttle.maxFailures",
        throttle.maxFailures ?? DEFAULT_THROTTLE_FAILURES,
        true,
      ),
      windowMs: positive("throttle.windowMs", throttle.windowMs ?? DEFAULT_THROTTLE_WINDOW_MS),
      cooldownMs: positive(
        "throttle.cooldownMs",
        throttle.cooldownMs ?? DEFAULT_THROTTLE_COOLDOWN_MS,
      ),
      maxCooldownMs: positive(
        "throttle.maxCooldownMs",
        throttle.maxCooldownMs ?? DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
      ),
      maxEntries: count("throttle.maxEntries", throttle.maxEntries ?? DEFAULT_THROTTLE_ENTRIES),
    },
    require: forward ? "encrypt" : asked,
    requireForwardSecrecy: forward !== undefined || (config.requireForwardSecrecy ?? false),
    digests: digestList(config.digests),
    sha1Prefix: config.sha1Prefix ?? false,
    trustedProxies: trustedProxies(config.trustedProxies),
    log: config.log && { format: logFormat(config.log.format), quiet: config.log.quiet ?? false },
    forward,
    targetTimeoutMs: positive(
      "targetTimeoutMs",
      config.targetTimeoutMs ?? DEFAULT_TARGET_TIMEOUT_MS,
    ),
    keepAlive: flag("keepAlive", config.keepAlive ?? true),
    collectAfterCloses: flag("collectAfterCloses", config.collectAfterCloses ?? false),
  };
  const v1Refused = resolved.require !== undefined
    ? `require: "${resolved.require}"`
    : resolved.requireForwardSecrecy
    ? "requireForwardSecrecy"
    : resolved.digests.includes("sha1")
    ? undefined
    : "digests without sha1";
  if (resolved.sha1Prefix && v1Refused !== undefined) {
    throw new ConfigError(
      "sha1Prefix",
      "false",
      true,
      `sha1Prefix accepts v1 answers, which ${v1Refused} refuses`,
    );
  }
  return resolved;
}

const ALL_DIGESTS = Object.keys(DIGESTS) as DigestName[];

function digestList(digests: readonly string[] | undefined): readonly DigestName[] {
  if (digests === undefined) return ALL_DIGESTS;
  if (digests.length === 0) {
    throw new ConfigError(
      "digests",
      "at least one digest",
      digests,
      "digests needs at least one digest",
    );
  }
  for (const name of digests) {
    if (!isDigestName(name)) {
      throw new ConfigError(
        "digests",
        `digests from ${ALL_DIGESTS.join(",")}`,
        name,
        `digests: unknown digest "${name}"; choose from ${ALL_DIGESTS.join(",")}`,
      );
    }
  }
  return digests as readonly DigestName[];
}

function requirement(value: string | undefined): Requirement | undefined {
  if (value === undefined || value === "v2" || value === "integrity" || value === "encrypt") {
    return value;
  }
  throw new ConfigError("require", `"v2", "integrity" or "encrypt"`, value);
}

function forwardTarget(target: ForwardTarget | undefined): ForwardTarget | undefined {
  if (target === undefined) return undefined;
  if (typeof target !== "object" || target === null) {
    throw new ConfigError("forward", "{ hostname, port } or { path }", target);
  }
  if ("path" in target) {
    const { path } = target;
    if (typeof path !== "string" || path === "" || pathBytes(path) > MAX_UNIX_PATH_BYTES) {
      throw new ConfigError(
        "forward.path",
        `a Unix socket's path of 1 to ${MAX_UNIX_PATH_BYTES} bytes`,
        path,
      );
    }
    return { path };
  }
  const { hostname, port } = target;
  if (typeof hostname !== "string" || hostname === "") {
    throw new ConfigError("forward.hostname", "a host name or an IP address", hostname);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError("forward.port", "a whole number from 1 to 65535", port);
  }
  return { hostname, port };
}

function pathBytes(path: string): number {
  return new TextEncoder().encode(path).length;
}

function flag(name: string, value: boolean): boolean {
  if (typeof value === "boolean") return value;
  throw new ConfigError(name, "true or false", value);
}

function logFormat(value: string | undefined): LogFormat {
  if (value === undefined || value === "text" || value === "json") return value ?? "text";
  throw new ConfigError("log.format", "text or json", value);
}

function trustedProxies(list: readonly string[] | undefined): TrustedProxies | undefined {
  if (list === undefined) return undefined;
  try {
    return new TrustedProxies(list);
  } catch (error) {
    throw new ConfigError(
      "trustedProxies",
      "IP addresses and CIDR blocks",
      list,
      `trustedProxies: ${(error as Error).message}`,
    );
  }
}

function port(name: string, value: number): number {
  if (Number.isInteger(value) && value >= 0 && value <= 65535) return value;
  throw new ConfigError(name, "a whole number from 0 to 65535", value);
}

function count(name: string, value: number, zero = false): number {
  if (Number.isInteger(value) && (value > 0 || (zero && value === 0))) return value;
  throw new ConfigError(
    name,
    zero ? "a whole number, 0 or more" : "a positive whole number",
    value,
  );
}

function positive(name: string, value: number): number {
  if (value > 0 && Number.isFinite(value)) return value;
  throw new ConfigError(name, "a positive number", value);
}

function atLeastZero(name: string, value: number): number {
  if (value >= 0 && Number.isFinite(value)) return value;
  throw new ConfigError(name, "a number, 0 or more", value);
}
