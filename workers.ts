/**
 * `serve --workers N`: N server threads on one port. Each worker thread has its own V8 isolate
 * and event loop, and its own listener on the shared port (`SO_REUSEPORT`), so the kernel spreads
 * connections across them and each can use a core. This module is the supervisor's side; the
 * thread's side is `serve_worker.ts`.
 *
 * @module
 */

import type { LogFormat, Logger } from "./log.ts";
import { DEFAULT_HOSTNAME, type ServeOptions, type ServerStats } from "./server.ts";

/** What a worker needs to start: everything but the logger, which it builds itself. */
export type WorkerServeOptions =
  & Omit<ServeOptions, "handler" | "logger" | "reusePort" | "trustedProxies" | "previousSecret">
  & {
    secret: Uint8Array;
    previousSecret?: Uint8Array;
    /** As `--trusted-proxies` gives it: a class instance would not survive the message. */
    trustedProxies?: string;
  };

/** Messages from the supervisor to a worker. */
export type ToWorker =
  | {
    type: "start";
    id: number;
    options: WorkerServeOptions;
    log: { format: LogFormat; quiet: boolean };
  }
  | { type: "stats"; request: number }
  | { type: "close"; gracePeriodMs: number };

/** Messages from a worker to the supervisor. */
export type FromWorker =
  | { type: "listening"; port: number }
  | { type: "failed"; name: string; message: string }
  | { type: "stats"; request: number; stats: ServerStats }
  | { type: "closed"; stats: ServerStats };

/** A worker did not start: its listener failed (port in use, say). */
export class WorkerStartError extends Error {
  /** Wraps what the worker reported, keeping its error's name for the caller to act on. */
  constructor(readonly causeName: string, message: string) {
    super(message);
    this.name = "WorkerStartError";
  }
}

/** The running workers, as one server. */
export interface WorkerPool {
  /** The port they share (the real one when 0 was asked for). */
  port: number;
  /** The workers' counters, added up. */
  stats(): Promise<ServerStats>;
  /** Closes every worker as `Server.close` does and resolves with their stats added up. */
  close(gracePeriodMs: number): Promise<ServerStats>;
}

/**
 * Starts `count` workers on one port. The first binds (so port 0 resolves to a real port), the
 * others then join it.
 *
 * @throws {Deno.errors.AddrInUse} if the port is taken, even by listeners that share ports.
 * @throws {WorkerStartError} if a worker cannot listen; the ones already started are stopped.
 */
export async function startWorkers(
  count: number,
  options: WorkerServeOptions,
  log: { format: LogFormat; quiet: boolean },
  logger: Logger,
): Promise<WorkerPool> {
  const workers: Worker[] = [];
  /** Workers that died: their listener is gone with them, and they will answer nothing more. */
  const dead = new Set<Worker>();
  let port = options.port ?? 0;
  if (port !== 0) {
    // SO_REUSEPORT would let a second instance started by mistake join this port silently. A
    // plain listener fails on a port that is taken, whoever holds it: probe with one first.
    Deno.listen({ hostname: options.hostname ?? DEFAULT_HOSTNAME, port }).close();
  }
  try {
    for (let id = 1; id <= count; id++) {
      const worker = new Worker(new URL("./serve_worker.ts", import.meta.url).href, {
        type: "module",
      });
      workers.push(worker);
      // A worker that dies later is a bug, not an outage to hide: say so, loudly.
      worker.addEventListener("error", (event) => {
        event.preventDefault();
        dead.add(worker);
        logger.log("error", "worker-failed", { worker: id, error: event.message });
      });
      const reply = nextMessage(worker, (message) => message.type !== "stats");
      post(worker, { type: "start", id, options: { ...options, port }, log });
      const message = await reply;
      if (message.type === "failed") throw new WorkerStartError(message.name, message.message);
      if (message.type === "listening") port = message.port;
    }
  } catch (error) {
    for (const worker of workers) worker.terminate();
    throw error;
  }
  let requests = 0;
  return {
    port,
    async stats() {
      const request = ++requests;
      const all = await Promise.all(workers.map(async (worker) => {
        if (dead.has(worker)) return undefined;
        const reply = nextMessage(worker, (m) => m.type === "stats" && m.request === request);
        post(worker, { type: "stats", request });
        const message = await reply.catch(() => undefined);
        return message?.type === "stats" ? message.stats : undefined;
      }));
      return addStats(all.filter((stats) => stats !== undefined));
    },
    async close(gracePeriodMs) {
      const all = await Promise.all(workers.map(async (worker) => {
        if (dead.has(worker)) return undefined;
        const reply = nextMessage(worker, (message) => message.type === "closed");
        post(worker, { type: "close", gracePeriodMs });
        const message = await reply.catch(() => undefined); // died while closing: nothing to add
        worker.terminate();
        return message?.type === "closed" ? message.stats : undefined;
      }));
      return addStats(all.filter((stats) => stats !== undefined));
    },
  };
}

function post(worker: Worker, message: ToWorker): void {
  worker.postMessage(message);
}

/**
 * The worker's next message that `match`es; a worker that dies first rejects it, so nothing
 * waits forever.
 */
function nextMessage(worker: Worker, match: (message: FromWorker) => boolean): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    const onMessage = (event: MessageEvent) => {
      if (!match(event.data as FromWorker)) return;
      worker.removeEventListener("message", onMessage);
      worker.removeEventListener("error", onError);
      resolve(event.data as FromWorker);
    };
    const onError = (event: ErrorEvent) => {
      worker.removeEventListener("message", onMessage);
      reject(new WorkerStartError("WorkerFailed", event.message));
    };
    worker.addEventListener("message", onMessage);
    worker.addEventListener("error", onError, { once: true });
  });
}

function addStats(all: ServerStats[]): ServerStats {
  const sum: ServerStats = {
    accepted: 0,
    refused: {},
    authenticated: 0,
    authenticatedWithPrevious: 0,
    authenticatedLegacy: 0,
    authenticatedV2: 0,
    rejected: {},
    frameErrors: {},
    idleClosed: 0,
    throttled: 0,
    active: 0,
    bytesIn: 0,
    bytesOut: 0,
    handshakeSeconds: { bounds: [], counts: [], sum: 0, count: 0 },
  };
  for (const stats of all) {
    sum.accepted += stats.accepted;
    sum.authenticated += stats.authenticated;
    sum.authenticatedWithPrevious += stats.authenticatedWithPrevious;
    sum.authenticatedLegacy += stats.authenticatedLegacy;
    sum.authenticatedV2 += stats.authenticatedV2;
    sum.idleClosed += stats.idleClosed;
    sum.throttled += stats.throttled;
    sum.active += stats.active;
    sum.bytesIn += stats.bytesIn;
    sum.bytesOut += stats.bytesOut;
    const histogram = stats.handshakeSeconds;
    sum.handshakeSeconds.bounds = histogram.bounds; // the same in every worker
    histogram.counts.forEach((n, i) => {
      sum.handshakeSeconds.counts[i] = (sum.handshakeSeconds.counts[i] ?? 0) + n;
    });
    sum.handshakeSeconds.sum += histogram.sum;
    sum.handshakeSeconds.count += histogram.count;
    for (const [reason, n] of Object.entries(stats.rejected)) {
      sum.rejected[reason] = (sum.rejected[reason] ?? 0) + n;
    }
    for (const [reason, n] of Object.entries(stats.frameErrors)) {
      sum.frameErrors[reason] = (sum.frameErrors[reason] ?? 0) + n;
    }
    for (
      const [reason, n] of Object.entries(stats.refused) as [keyof ServerStats["refused"], number][]
    ) {
      sum.refused[reason] = (sum.refused[reason] ?? 0) + n;
    }
  }
  return sum;
}
