/**
 * The server's plug-in contract: what a service sees of an authenticated connection, and the
 * function that serves one. The upper-case echo is the default service; a caller's own handler
 * is its peer.
 *
 * @module
 */

import type { ByteStream } from "../_io.ts";

/**
 * Serves one authenticated connection: a plain TCP stream or, in a framed v2 session, the frame
 * layer's verified bytes. Read `null` when the client has half-closed; the server closes the
 * connection (and sends the end frame) when the returned promise settles.
 */
export type ServiceHandler = (conn: ByteStream) => Promise<void>;

/** Counters a service can keep up to date for the server's log, stats and idle timeout. */
export interface TrafficCounters {
  /** Bytes read from the client. */
  bytesIn: number;
  /** Bytes written to the client. */
  bytesOut: number;
  /** Bumped on every completed read or write: the idle timeout's sign of life. */
  activity: number;
}
