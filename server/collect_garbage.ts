/**
 * One full garbage collection once a wave of connections has closed and the server is quiet.
 *
 * V8 collects when the program allocates, and an idle server allocates nothing: the memory of
 * thousands of connections that have just closed stays resident until traffic comes back. Measured
 * (`deno task memory --connections 5000 --modes encrypt,plain`, connections that had each echoed 64
 * KiB, all closed, 30 s later): without this, the heap still held 61 MiB against 27 MiB at the
 * baseline and RSS was 2.29× the baseline (`encrypt`); with it, 1.44× (`plain`: 1.33×). The
 * collection runs once per wave, and only once most connections have gone. It is on when the
 * server's configuration says `collectAfterCloses` (the `serve` command's does): it sets a V8 flag
 * for the whole process, which is for the process's owner to choose.
 *
 * @module
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** How many connections must have closed since the peak (or the last collection). */
export const WAVE = 1_000;
/**
 * At most this share of the peak may still be open. A full collection stops everything for a time
 * that grows with what is still alive (13 ms with nothing left, 71 ms with 40 MiB live, measured on
 * this kind of machine): it is worth it only when most of the heap is the closed connections'.
 */
export const STILL_OPEN_AT_MOST = 1 / 4;
/** How long the number of open connections must have stayed the same: the wave is over. */
export const SETTLE_MS = 1_000;

/**
 * Watches the number of open connections, fed by the server's periodic sweep, and asks V8 for a
 * full collection after a wave of closes. Without a way to ask (a runtime that refuses the flag),
 * it does nothing.
 */
export class CollectAfterCloses {
  readonly #collect: (() => void) | undefined;
  #peak = 0;
  #last = 0;
  #changedAt = 0;

  /** `collect` runs one full collection; by default V8's own `gc()`. */
  constructor(collect: (() => void) | undefined = v8Collector()) {
    this.#collect = collect;
  }

  /** Told the number of open connections at `now` (milliseconds). */
  observe(open: number, now: number): void {
    if (open !== this.#last) {
      this.#last = open;
      this.#changedAt = now;
      this.#peak = Math.max(this.#peak, open);
      return;
    }
    const wave = this.#peak - open >= WAVE && open <= this.#peak * STILL_OPEN_AT_MOST;
    if (wave && now - this.#changedAt >= SETTLE_MS) {
      this.#peak = open;
      this.#collect?.();
    }
  }
}

let collector: (() => void) | null | undefined;

/** V8's `gc()`, exposed once for the whole process; undefined if the runtime will not. */
function v8Collector(): (() => void) | undefined {
  if (collector === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      // Exposed to contexts made from now on: a new one hands it over.
      const gc = runInNewContext("gc");
      collector = typeof gc === "function" ? gc : null;
    } catch {
      collector = null;
    }
  }
  return collector ?? undefined;
}
