/**
 * The operator's endpoint: Prometheus metrics at `/metrics` and a load-balancer health check at
 * `/healthz`, over HTTP on their own port (loopback by default).
 *
 * @module
 */

import type { Histogram, ServerStats } from "./stats.ts";

/** Options for {@linkcode serveMetrics}. */
export interface MetricsOptions {
  /** Address to listen on. Default `127.0.0.1`: metrics are for the operator, not the world. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** The server's counters, read at every scrape. */
  stats: () => Promise<ServerStats>;
  /** True once the server is shutting down: `/healthz` then answers 503. */
  draining: () => boolean;
  /**
   * Told when the endpoint fails: a request's handler throws, the HTTP server itself stops (out
   * of descriptors, say), or listening again fails. Such a failure never ends the process.
   * Default: ignored.
   */
  onError?: (error: unknown) => void;
  /** Told when the endpoint listens again after its HTTP server stopped. Default: ignored. */
  onRestart?: () => void;
}

/** The running endpoint that {@linkcode serveMetrics} returns. */
export interface MetricsServer extends AsyncDisposable {
  /** Where it listens; the same address after a restart. */
  readonly addr: Deno.NetAddr;
  /** Stops listening (and any restart still to come) and waits for requests in flight. */
  shutdown(): Promise<void>;
}

/** While listening again fails, the wait before the next try: from the first, doubling, to the last. */
const RETRY_FIRST_MS = 100;
const RETRY_LAST_MS = 5_000;

/**
 * Serves `/metrics` (Prometheus text format 0.0.4) and `/healthz` (200 `ok` while serving,
 * 503 `draining` during shutdown, so a balancer stops sending before connections are closed).
 *
 * Deno's HTTP server stops accepting for good after one "too many open files"; the endpoint
 * then listens again on the same port, at once, or while that fails every 100 ms doubling to 5 s:
 * a balancer's health check must not fail for longer than the descriptor shortage itself. If
 * another socket has taken the port meanwhile, it says so through `onError` and stops trying.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serveMetrics } from "./metrics.ts";
 * import { serve } from "./server.ts";
 * await using server = await serve({ secret: new TextEncoder().encode("a secret"), port: 0 });
 * await using http = serveMetrics({ port: 0, stats: () => server.stats(), draining: () => false });
 * const response = await fetch(`http://127.0.0.1:${http.addr.port}/healthz`);
 * assert.equal(await response.text(), "ok\n");
 * ```
 */
export function serveMetrics(options: MetricsOptions): MetricsServer {
  const onError = options.onError ?? (() => {});
  const handler = async (request: Request): Promise<Response> => {
    const { pathname } = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405 });
    }
    if (pathname === "/healthz") {
      return options.draining()
        ? new Response("draining\n", { status: 503 })
        : new Response("ok\n", { status: 200 });
    }
    if (pathname === "/metrics") {
      return new Response(renderMetrics(await options.stats()), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    }
    return new Response("not found: try /metrics or /healthz\n", { status: 404 });
  };
  const listen = (port: number) =>
    Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port,
      onListen: () => {}, // the caller logs where it listens, in its own format
      onError: (error) => {
        onError(error);
        return new Response("internal error\n", { status: 500 });
      },
    }, handler);

  let http = listen(options.port);
  const addr = http.addr;
  let stopped = false;
  let retry: ReturnType<typeof setTimeout> | undefined;
  const listenAgain = (waitMs: number) => {
    retry = setTimeout(() => {
      retry = undefined;
      if (stopped) return;
      try {
        http = listen(addr.port);
      } catch (error) {
        onError(error);
        // Another socket has taken the port while it was free: waiting will not give it back.
        if (error instanceof Deno.errors.AddrInUse) return;
        return listenAgain(Math.min(RETRY_LAST_MS, Math.max(RETRY_FIRST_MS, 2 * waitMs)));
      }
      watch(http);
      options.onRestart?.();
    }, waitMs);
  };
  // Unhandled, a failure of the HTTP server's own accept loop (EMFILE) would end the process.
  const watch = (server: Deno.HttpServer<Deno.NetAddr>) =>
    server.finished.catch((error) => {
      onError(error);
      server.shutdown().catch(() => {}); // let go of whatever it still holds
      if (!stopped) listenAgain(0);
    });
  watch(http);
  const shutdown = async () => {
    stopped = true;
    clearTimeout(retry);
    await http.shutdown().catch(() => {}); // one that stopped on its own is shut already
  };
  return { addr, shutdown, [Symbol.asyncDispose]: shutdown };
}

/** The counters in Prometheus text exposition format. */
export function renderMetrics(stats: ServerStats): string {
  const one = (value: number): [string, number][] => [["", value]];
  const byReason = (counts: Record<string, number | undefined>): [string, number][] =>
    Object.entries(counts).map(([reason, n]) => [`{reason="${reason}"}`, n ?? 0]);
  const families: [name: string, type: "gauge" | "counter", help: string, [string, number][]][] = [
    ["connections_open", "gauge", "Connections open now.", one(stats.active)],
    [
      "connections_total",
      "counter",
      "Connections accepted, refused ones included.",
      one(stats.accepted),
    ],
    [
      "authenticated_total",
      "counter",
      "Clients that passed the handshake.",
      one(stats.authenticated),
    ],
    [
      "authenticated_previous_secret_total",
      "counter",
      "Clients that passed with the previous secret of a rotation.",
      one(stats.authenticatedWithPrevious),
    ],
    [
      "authenticated_v2_total",
      "counter",
      "Clients that passed with protocol v2.",
      one(stats.authenticatedV2),
    ],
    [
      "authenticated_forward_secret_total",
      "counter",
      "Clients that passed with an ephemeral key exchange (forward secrecy).",
      one(stats.authenticatedForwardSecret),
    ],
    [
      "authenticated_legacy_total",
      "counter",
      "Clients that passed with the tutorial's sha1-prefix digest.",
      one(stats.authenticatedSha1Prefix),
    ],
    [
      "frames_rejected_total",
      "counter",
      "Protocol v2 connections closed for a frame that failed a check, by reason.",
      byReason(stats.frameErrors),
    ],
    [
      "rejected_total",
      "counter",
      "Clients that failed the handshake, by reason.",
      byReason(stats.rejected),
    ],
    [
      "refused_total",
      "counter",
      "Connections closed before any handshake, by reason.",
      byReason(stats.refused),
    ],
    [
      "throttled_total",
      "counter",
      "Addresses put into an authentication cool-down.",
      one(stats.throttled),
    ],
    [
      "idle_closed_total",
      "counter",
      "Authenticated connections closed for idling.",
      one(stats.idleClosed),
    ],
    [
      "accept_failures_total",
      "counter",
      "Accepts that failed, by error code (EMFILE: out of file descriptors).",
      byReason(stats.acceptFailures),
    ],
    [
      "log_lines_dropped_total",
      "counter",
      "Log lines that could not be written (a broken log pipe).",
      one(stats.logLinesDropped),
    ],
    [
      "secret_reloads_total",
      "counter",
      "Secrets reloaded on SIGHUP.",
      one(stats.secretReloads),
    ],
    [
      "secret_reload_failures_total",
      "counter",
      "SIGHUP reloads that failed and kept the secrets in use.",
      one(stats.secretReloadFailures),
    ],
    ["received_bytes_total", "counter", "Bytes received from clients.", one(stats.bytesIn)],
    ["sent_bytes_total", "counter", "Bytes sent to clients.", one(stats.bytesOut)],
    [
      "forwarded_total",
      "counter",
      "Sessions forwarded to the target (serve --forward).",
      one(stats.forwarded),
    ],
    [
      "forward_target_errors_total",
      "counter",
      "Forwarded sessions ended by the target: unreachable, refused, too slow, or reset, by reason.",
      byReason(stats.targetErrors),
    ],
    [
      "forwarded_to_target_bytes_total",
      "counter",
      "Bytes forwarded from clients to the target.",
      one(stats.forwardedToTargetBytes),
    ],
    [
      "forwarded_from_target_bytes_total",
      "counter",
      "Bytes forwarded from the target to clients.",
      one(stats.forwardedFromTargetBytes),
    ],
  ];
  const lines: string[] = [];
  for (const [name, type, help, samples] of families) {
    lines.push(`# HELP hmac_echo_${name} ${help}`, `# TYPE hmac_echo_${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`hmac_echo_${name}${labels} ${value}`);
  }
  histogram(
    lines,
    "handshake_duration_seconds",
    "Time from accept to a passed handshake.",
    stats.handshakeSeconds,
  );
  histogram(
    lines,
    "forward_duration_seconds",
    "How long forwarded sessions lasted, from the target's connection to its close.",
    stats.forwardSeconds,
  );
  return lines.join("\n") + "\n";
}

function histogram(lines: string[], name: string, help: string, h: Histogram): void {
  lines.push(`# HELP hmac_echo_${name} ${help}`, `# TYPE hmac_echo_${name} histogram`);
  let cumulative = 0;
  h.bounds.forEach((bound, i) => {
    cumulative += h.counts[i] ?? 0;
    lines.push(`hmac_echo_${name}_bucket{le="${bound}"} ${cumulative}`);
  });
  lines.push(`hmac_echo_${name}_bucket{le="+Inf"} ${h.count}`);
  lines.push(`hmac_echo_${name}_sum ${h.sum}`, `hmac_echo_${name}_count ${h.count}`);
}
