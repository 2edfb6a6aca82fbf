/**
 * The forwarding service (`serve --forward`): each authenticated session gets a fresh connection
 * to the target, a TCP address or a Unix socket, and the two are joined both ways until both are
 * done. A peer of the upper-case echo behind the same {@linkcode ServiceHandler} contract; the
 * server picks it when its configuration names a target.
 *
 * @module
 */

import { closeQuietly, formatAddr, isDisconnect } from "../_io.ts";
import { pipeBoth } from "../_pipe.ts";
import type { Logger } from "../log.ts";
import type { ForwardTarget, ResolvedConfig } from "./config.ts";
import type { ServiceHandler, ServiceSession, ServiceStream } from "./service.ts";
import { ServiceError } from "./service.ts";
import { increment, observe, type ServerStats } from "./stats.ts";

/** What the forwarder needs from its server: where to log, and the counters to keep. */
export interface ForwardHooks {
  logger: Logger;
  /** The server's own counters, updated as bytes move, so `stats()` is live. */
  stats: ServerStats;
}

/**
 * Why a forwarded session's target failed: it could not be reached (the first six), or it reset
 * the connection mid-stream.
 */
export type TargetErrorReason =
  | "refused"
  | "timeout"
  | "unreachable"
  | "not-found"
  | "denied"
  | "failed"
  | "reset";

/**
 * The configured service: the forwarder when the configuration names a target, else undefined
 * (the server's default, the upper-case echo).
 */
export function configuredService(
  config: Pick<ResolvedConfig, "forward" | "targetTimeoutMs" | "keepAlive">,
  hooks: ForwardHooks,
): ServiceHandler | undefined {
  if (config.forward === undefined) return undefined;
  return forwardTo({
    target: config.forward,
    targetTimeoutMs: config.targetTimeoutMs,
    keepAlive: config.keepAlive,
  }, hooks);
}

/** Options for {@linkcode forwardTo}. */
export interface ForwardOptions {
  target: ForwardTarget;
  /** How long the target has to accept a connection. */
  targetTimeoutMs: number;
  /** TCP keepalive probes on the target's connection (TCP targets only). */
  keepAlive: boolean;
}

/**
 * A service that forwards each session to `options.target`. Each direction writes a chunk before
 * it reads the next, so a slow reader on either side holds the writer back instead of growing
 * memory; a half-close on one side becomes a half-close on the other (the client's end frame a FIN
 * to the target, the target's FIN the end frame); and a failure on either side closes both.
 *
 * A target that cannot be reached, or resets the connection, is logged (`target-failed`),
 * counted in `targetErrors`, and ends the session without an end frame: the client sees it cut
 * short. Every forwarded session ends with a `forwarded` line: bytes each way, duration.
 */
export function forwardTo(options: ForwardOptions, hooks: ForwardHooks): ServiceHandler {
  const target = describeTarget(options.target);
  const { logger, stats } = hooks;
  return async (conn: ServiceStream, session: ServiceSession) => {
    const { id, remote } = session;
    let upstream: Deno.Conn;
    try {
      upstream = await dial(options);
    } catch (error) {
      const reason = dialErrorReason(error);
      increment(stats.targetErrors, reason);
      logger.log("warn", "target-failed", { id, remote, target, reason, error: describe(error) });
      throw new ServiceError(reason, `Cannot forward to ${target}: ${describe(error)}`);
    }
    stats.forwarded++;
    const startedAt = performance.now();
    logger.log("info", "forwarding", { id, remote, target });
    const result = await pipeBoth(conn, upstream, {
      onChunk: (from, n) => {
        if (from === "a") stats.forwardedToTargetBytes += n;
        else stats.forwardedFromTargetBytes += n;
      },
      // A failure on either side closes both: a reset passes on as a close.
      abort: () => {
        closeQuietly(upstream);
        session.abort();
      },
    }).finally(() => closeQuietly(upstream));
    const seconds = (performance.now() - startedAt) / 1000;
    observe(stats.forwardSeconds, seconds);
    const { failure } = result;
    const targetFailed = failure?.side === "b";
    logger.log("info", "forwarded", {
      id,
      remote,
      target,
      toTarget: result.aToB,
      fromTarget: result.bToA,
      durationMs: Math.round(seconds * 1000),
      ended: failure === undefined ? "both-sides-done" : targetFailed ? "target" : "client",
    });
    if (failure === undefined) return;
    if (!targetFailed) throw failure.error; // the client's: the server logs it as it logs any
    const reason: TargetErrorReason = isDisconnect(failure.error) ? "reset" : "failed";
    increment(stats.targetErrors, reason);
    logger.log("warn", "target-failed", {
      id,
      remote,
      target,
      reason,
      error: describe(failure.error),
    });
    throw new ServiceError(reason, `${target} failed mid-stream: ${describe(failure.error)}`);
  };
}

/** Opens the target's connection, or fails within `targetTimeoutMs`. */
async function dial(options: ForwardOptions): Promise<Deno.Conn> {
  const { target, targetTimeoutMs } = options;
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), targetTimeoutMs);
  const timedOut = () =>
    new Deno.errors.TimedOut(`the target did not accept within ${targetTimeoutMs} ms`);
  try {
    if ("path" in target) {
      // Deno.connect takes no signal for a Unix socket: race it, and close a late connection.
      const connecting = Deno.connect({ transport: "unix", path: target.path });
      const expired = new Promise<never>((_, reject) => {
        deadline.signal.addEventListener("abort", () => reject(timedOut()), { once: true });
      });
      try {
        return await Promise.race([connecting, expired]);
      } catch (error) {
        connecting.then(closeQuietly, () => {});
        throw error;
      }
    }
    const conn = await Deno.connect({
      hostname: target.hostname,
      port: target.port,
      transport: "tcp",
      signal: deadline.signal,
    }).catch((error) => {
      throw deadline.signal.aborted ? timedOut() : error;
    });
    conn.setNoDelay(true);
    conn.setKeepAlive(options.keepAlive);
    return conn;
  } finally {
    clearTimeout(timer);
  }
}

/** The reason a target could not be reached, for the log and `targetErrors`. */
function dialErrorReason(error: unknown): TargetErrorReason {
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (error instanceof Deno.errors.TimedOut) return "timeout";
  if (error instanceof Deno.errors.NotFound) return "not-found";
  if (
    error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
  ) {
    return "denied";
  }
  if (
    error instanceof Deno.errors.NetworkUnreachable ||
    error instanceof Deno.errors.AddrNotAvailable ||
    // A name that does not resolve: Deno reports it as a plain Error.
    (error instanceof Error && /lookup address/.test(error.message))
  ) {
    return "unreachable";
  }
  return "failed";
}

/** The target as the log names it: `host:port`, or `unix:/path`. */
export function describeTarget(target: ForwardTarget): string {
  return "path" in target
    ? `unix:${target.path}`
    : formatAddr({ transport: "tcp", hostname: target.hostname, port: target.port });
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
