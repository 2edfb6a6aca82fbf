/**
 * `workers: N`: N server threads on one port. Each worker thread has its own V8 isolate and event
 * loop, and its own listener on the shared port (`SO_REUSEPORT`), so the kernel spreads
 * connections across them and each can use a core. This module is the supervisor's side, a
 * {@linkcode WorkerPool} shaped like a server; the thread's side is `serve_worker.ts`.
 *
 * @module
 */

import { HmacEchoError } from "../errors.ts";
import { createLogger, type Logger } from "../log.ts";
import { DEFAULT_GRACE_PERIOD_MS, type ResolvedConfig, type ServerConfig } from "./config.ts";
import { SharedLimits } from "./shared_limits.ts";
import { addStats, copyStats, emptyStats, type ServerStats } from "./stats.ts";
import type { RunningServer, Secrets } from "./running.ts";
import type { FromWorker, ToWorker } from "./worker_messages.ts";

/** A worker thread failed to start or died. Reason `worker-failed`. */
export class WorkerStartError extends HmacEchoError {
  /** Builds the error from what the worker reported. */
  constructor(message: string) {
    super("worker-failed", message);
  }
}

/**
 * Starts `config.workers` threads on one port. The first binds (so port 0 resolves to a real
 * port), the others then join it. A listener error in a worker is thrown here as the same
 * `Deno.errors` class a single server would throw.
 *
 * @throws {Deno.errors.AddrInUse} if the port is taken, even by listeners that share ports.
 * @throws {WorkerStartError} if a worker fails otherwise; the ones already started are stopped.
 */
export async function startWorkerPool(
  config: ServerConfig,
  resolved: ResolvedConfig,
): Promise<WorkerPool> {
  const count = resolved.workers;
  const logger = createLogger(resolved.log);
  const workers: Worker[] = [];
  let port = resolved.port;
  if (port !== 0) {
    // SO_REUSEPORT would let a second instance started by mistake join this port silently. A
    // plain listener fails on a port that is taken, whoever holds it: probe with one first.
    Deno.listen({ hostname: resolved.hostname, port }).close();
  }
  // One set of limits for all threads: the caps and the throttle hold for the server as a whole,
  // however unevenly the kernel spreads connections over the threads.
  const limits = new SharedLimits(resolved).buffer;
  const pool = new WorkerPool(workers, logger);
  try {
    for (let id = 1; id <= count; id++) {
      const worker = pool.add(id);
      const reply = nextMessage(worker, (message) => message.type !== "stats");
      post(worker, {
        type: "start",
        id,
        count,
        config: { ...config, port, workers: 1 },
        limits,
      });
      const message = await reply;
      if (message.type === "failed") throw listenError(message.name, message.message);
      if (message.type === "listening") port = message.port;
    }
  } catch (error) {
    for (const worker of workers) worker.terminate();
    throw error;
  }
  pool.addr = { transport: "tcp", hostname: resolved.hostname, port };
  return pool;
}

/** The error a worker reported, as the class a listener in this thread would have thrown. */
function listenError(name: string, message: string): Error {
  const errors = Deno.errors as unknown as Record<
    string,
    (new (message: string) => Error) | undefined
  >;
  const known = Object.hasOwn(errors, name) ? errors[name] : undefined;
  return known ? new known(message) : new WorkerStartError(`${name}: ${message}`);
}

/** The running workers, as one server. */
export class WorkerPool implements RunningServer {
  /** The address the workers share. */
  addr: Deno.NetAddr = { transport: "tcp", hostname: "", port: 0 };
  #workers: Worker[];
  /** Workers that died: their listener is gone with them, and they will answer nothing more. */
  #dead = new Set<Worker>();
  #logger: Logger;
  #requests = 0;
  #closed?: Promise<ServerStats>;

  /** An empty pool; {@linkcode startWorkerPool} fills it. */
  constructor(workers: Worker[], logger: Logger) {
    this.#workers = workers;
    this.#logger = logger;
  }

  /** Starts worker thread number `id`. */
  add(id: number): Worker {
    const worker = new Worker(new URL("./serve_worker.ts", import.meta.url).href, {
      type: "module",
    });
    this.#workers.push(worker);
    // A worker that dies later is a bug, not an outage to hide: say so, loudly.
    worker.addEventListener("error", (event) => {
      event.preventDefault();
      this.#dead.add(worker);
      this.#logger.log("error", "worker-failed", { worker: id, error: event.message });
    });
    return worker;
  }

  /** The workers' counters, added up; after `close()`, their final counts. */
  async stats(): Promise<ServerStats> {
    if (this.#closed) return copyStats(await this.#closed);
    const request = ++this.#requests;
    return this.#sum(
      (worker) => nextMessage(worker, (m) => m.type === "stats" && m.request === request),
      { type: "stats", request },
    );
  }

  /** Gives every worker the new secrets; resolves once all of them use them. */
  async replaceSecrets(secrets: Secrets): Promise<void> {
    const request = ++this.#requests;
    const answers = await Promise.all(
      this.#live().map((worker) => {
        const answer = nextMessage(
          worker,
          (m) => m.type === "secrets-replaced" && m.request === request,
        );
        post(worker, { type: "secrets", request, ...secrets });
        return answer;
      }),
    );
    for (const answer of answers) {
      if (answer.type === "secrets-replaced" && answer.error) {
        throw new WorkerStartError(`a worker could not take the new secrets: ${answer.error}`);
      }
    }
  }

  #live(): Worker[] {
    return this.#workers.filter((worker) => !this.#dead.has(worker));
  }

  /** Closes every worker as a server's `close()` does. */
  async close(options: { gracePeriodMs?: number } = {}): Promise<void> {
    const gracePeriodMs = options.gracePeriodMs ?? DEFAULT_GRACE_PERIOD_MS;
    this.#closed ??= this.#sum(
      (worker) => nextMessage(worker, (message) => message.type === "closed"),
      { type: "close", gracePeriodMs },
      (worker) => worker.terminate(),
    );
    await this.#closed;
  }

  /** Closes the pool as `close()` does, with the default grace period. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Asks every live worker, and adds up the stats they answer with. */
  async #sum(
    reply: (worker: Worker) => Promise<FromWorker>,
    message: ToWorker,
    after?: (worker: Worker) => void,
  ): Promise<ServerStats> {
    const all = await Promise.all(this.#workers.map(async (worker) => {
      if (this.#dead.has(worker)) return undefined;
      const answer = reply(worker);
      post(worker, message);
      const received = await answer.catch(() => undefined); // died meanwhile: nothing to add
      after?.(worker);
      return received && "stats" in received ? received.stats : undefined;
    }));
    const total = emptyStats();
    for (const stats of all) if (stats) addStats(total, stats);
    return total;
  }
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
      reject(new WorkerStartError(event.message));
    };
    worker.addEventListener("message", onMessage);
    worker.addEventListener("error", onError, { once: true });
  });
}
