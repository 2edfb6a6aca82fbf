/**
 * The shape of a running server, whether it serves in this thread (`server.ts`) or as a pool of
 * worker threads (`workers.ts`).
 *
 * @module
 */

import type { ServerStats } from "./stats.ts";

/** A running server, in this thread or as a pool of worker threads: the shape `serve` returns. */
export interface RunningServer extends AsyncDisposable {
  /** The address the server listens on, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  /** A snapshot of the server's counters (a pool's, added up over its threads). */
  stats(): Promise<ServerStats>;
  /**
   * Stops accepting, gives active sessions `gracePeriodMs` (default 5 000) to finish, then closes
   * the rest. Resolves when every connection has ended; `stats()` still answers afterwards.
   */
  close(options?: { gracePeriodMs?: number }): Promise<void>;
  /**
   * Checks every handshake from now on against new secrets (a rotation's previous one included);
   * sessions already authenticated go on undisturbed.
   */
  replaceSecrets(secrets: Secrets): Promise<void>;
}

/** The secrets a server checks handshakes against. */
export interface Secrets {
  /** The shared secret. */
  secret: Uint8Array;
  /** A previous secret still accepted during a rotation. */
  previousSecret?: Uint8Array;
}
