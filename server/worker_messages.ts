/**
 * What the supervisor (`workers.ts`) and a worker thread (`serve_worker.ts`) say to each other:
 * plain data, as `postMessage` carries it.
 *
 * @module
 */

import type { ServerConfig } from "./config.ts";
import type { ServerStats } from "./stats.ts";

/** Messages from the supervisor to a worker. */
export type ToWorker =
  | {
    type: "start";
    /** This worker's number, from 1, and how many there are: its connection ids never repeat. */
    id: number;
    count: number;
    /** The pool's configuration as the caller gave it, with the port it found. */
    config: ServerConfig;
    /** The pool's `SharedLimits`, which every worker counts against. */
    limits: SharedArrayBuffer;
  }
  | { type: "stats"; request: number }
  | { type: "secrets"; request: number; secret: Uint8Array; previousSecret?: Uint8Array }
  | { type: "close"; gracePeriodMs: number };

/** Messages from a worker to the supervisor. */
export type FromWorker =
  | { type: "listening"; port: number }
  | { type: "failed"; name: string; message: string }
  | { type: "stats"; request: number; stats: ServerStats }
  /** The new secrets are in use; `error` says why not. */
  | { type: "secrets-replaced"; request: number; error?: string }
  | { type: "closed"; stats: ServerStats };
