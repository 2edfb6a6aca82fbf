/**
 * The server's plug-in contract: what a service sees of an authenticated connection, and the
 * function that serves one. The upper-case echo is the default service, the forwarder
 * (`forward.ts`) its peer; a caller's own handler is another.
 *
 * @module
 */

import type { ByteStream } from "../_io.ts";
import { HmacEchoError } from "../errors.ts";

/**
 * An authenticated connection as a service sees it: a plain TCP stream or, in a framed v2
 * session, the frame layer's verified bytes. `read` returns `null` when the client has
 * half-closed.
 */
export interface ServiceStream extends ByteStream {
  /**
   * Says this side will send nothing more, while the client may still send: the end frame in a
   * framed session, a TCP FIN otherwise. The server sends it anyway when the service returns.
   */
  closeWrite(): Promise<void>;
}

/** Which session a service is serving, for its own log lines, and a way to cut it short. */
export interface ServiceSession {
  /** The connection's id, as the server's log lines give it. */
  readonly id: number;
  /** The client as `address:port` (the real client's, behind a trusted proxy). */
  readonly remote: string;
  /**
   * Closes the client's connection at once, without an end frame: a read or write still waiting
   * on it fails. For a service that has failed and must not wait for the client to speak.
   */
  abort(): void;
}

/**
 * Serves one authenticated connection. The server closes the connection (and sends the end frame)
 * when the returned promise resolves; when it rejects, the server closes the connection without
 * an end frame and logs why, unless the error is a {@linkcode ServiceError}.
 */
export type ServiceHandler = (conn: ServiceStream, session: ServiceSession) => Promise<void>;

/**
 * A service ended its session because of a failure of its own, which it has already logged and
 * counted (the forwarder's target could not be reached, say). The server closes the connection
 * without an end frame, so a framed client learns the session was cut short, and logs nothing
 * more about it than its `closed` line.
 */
export class ServiceError extends HmacEchoError {}

/** Counters a service can keep up to date for the server's log, stats and idle timeout. */
export interface TrafficCounters {
  /** Bytes read from the client. */
  bytesIn: number;
  /** Bytes written to the client. */
  bytesOut: number;
  /** Bumped on every completed read or write: the idle timeout's sign of life. */
  activity: number;
}
