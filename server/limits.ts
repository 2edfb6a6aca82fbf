/**
 * The limits a server enforces on new connections and on guesses at the secret: the connection
 * cap, the per-address cap and the failed-authentication throttle. {@linkcode ThreadLimits} counts
 * them for a server in one thread; a worker pool's threads share one `SharedLimits`
 * (`shared_limits.ts`), so each limit holds for the pool as a whole.
 *
 * @module
 */

import type { ResolvedConfig } from "./config.ts";
import type { RefusalReason } from "./stats.ts";
import { AuthFailureThrottle } from "./throttle.ts";

/** What the limits are made from: the resolved configuration's caps and throttle. */
export type LimitsConfig = Pick<
  ResolvedConfig,
  "maxConnections" | "maxConnectionsPerAddress" | "throttle"
>;

/** Why a connection from a known address may not start. */
export type AddressRefusal = Exclude<RefusalReason, "connection-limit">;

/** What the server asks of its limits, whichever thread keeps them. */
export interface Limits {
  /** Whether failed authentications are throttled at all. */
  readonly throttling: boolean;
  /**
   * Counts a new connection against the connection cap and, when its `address` is known (it is
   * not behind a trusted proxy), against that address's cap and cool-down.
   *
   * @returns why it may not start, with nothing counted; or undefined, counted.
   */
  connect(address: string | undefined): RefusalReason | undefined;
  /**
   * Counts an open connection's `address`, learnt from its PROXY header, as `connect` would have.
   *
   * @returns why it may not go on, with nothing counted; or undefined, counted.
   */
  identify(address: string): AddressRefusal | undefined;
  /**
   * Gives back a connection `connect` counted; with its `address` if that was counted too (by
   * `connect` or `identify`).
   */
  disconnect(address: string | undefined): void;
  /** Milliseconds `address` must still wait, or 0 if it may connect. */
  blockedFor(address: string): number;
  /** Counts a failed handshake; returns the cool-down it starts, or 0. */
  recordFailure(address: string): number;
}

/** The limits of a server in one thread: plain maps, nothing shared. */
export class ThreadLimits implements Limits {
  #maxConnections: number;
  #maxPerAddress: number;
  #connections = 0;
  #perAddress = new Map<string, number>();
  #throttle: AuthFailureThrottle;

  /** Limits as `config` sets them, all at zero. */
  constructor(config: LimitsConfig) {
    this.#maxConnections = config.maxConnections;
    this.#maxPerAddress = config.maxConnectionsPerAddress;
    this.#throttle = new AuthFailureThrottle(config.throttle);
  }

  get throttling(): boolean {
    return this.#throttle.enabled;
  }

  connect(address: string | undefined): RefusalReason | undefined {
    if (this.#connections >= this.#maxConnections) return "connection-limit";
    const refusal = address === undefined ? undefined : this.identify(address);
    if (refusal === undefined) this.#connections++;
    return refusal;
  }

  identify(address: string): AddressRefusal | undefined {
    if (this.#throttle.blockedFor(address) > 0) return "throttled";
    const count = this.#perAddress.get(address) ?? 0;
    if (this.#maxPerAddress > 0 && count >= this.#maxPerAddress) return "address-limit";
    this.#perAddress.set(address, count + 1);
    return undefined;
  }

  disconnect(address: string | undefined): void {
    this.#connections--;
    if (address === undefined) return;
    const count = (this.#perAddress.get(address) ?? 0) - 1;
    if (count === 0) this.#perAddress.delete(address);
    else this.#perAddress.set(address, count);
  }

  blockedFor(address: string): number {
    return this.#throttle.blockedFor(address);
  }

  recordFailure(address: string): number {
    return this.#throttle.recordFailure(address);
  }
}
