/**
 * hmac-echo: a TCP server that lets a client in only after it proves, with an HMAC over a fresh
 * challenge, that it knows a shared secret; then echoes its bytes upper-cased, forwards them to
 * another service (`forward`, with {@linkcode startTunnel} as the client's end), or runs your
 * own service. Protocol v2 adds mutual authentication, a digest choice and integrity or
 * encryption frames. The wire format is in docs/PROTOCOL.md; the map of the code in docs/ARCHITECTURE.md.
 *
 * A server with your own service handler, and a client for it (needs `--allow-net`):
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exchange, serve } from "./mod.ts";
 *
 * const secret = new TextEncoder().encode("a shared secret of at least 16 bytes");
 * await using server = await serve({
 *   secret,
 *   port: 0,
 *   async handler(conn) {
 *     const buffer = new Uint8Array(1024);
 *     for (let n; (n = await conn.read(buffer)) !== null;) {
 *       await conn.write(buffer.subarray(0, n).reverse());
 *     }
 *   },
 * });
 * const reply = await exchange({
 *   secret,
 *   port: server.addr.port,
 *   mode: "encrypt",
 *   message: new TextEncoder().encode("olleh"),
 * });
 * assert.ok(new TextDecoder().decode(reply) === "hello");
 * ```
 *
 * @module
 */

export { serve } from "./server/server.ts";
export type { RunningServer, Secrets } from "./server/server.ts";
export {
  DEFAULT_HOSTNAME,
  DEFAULT_PORT,
  type ForwardTarget,
  type ServeOptions,
  type ServerConfig,
  type ThrottleConfig,
} from "./server/config.ts";
export type { Histogram, RefusalReason, ServerStats } from "./server/stats.ts";
export {
  ServiceError,
  type ServiceHandler,
  type ServiceSession,
  type ServiceStream,
  type TrafficCounters,
} from "./server/service.ts";
export type { HelloRejectionReason } from "./protocol/v2.ts";
export { upperCaseEcho } from "./server/upper_case_echo.ts";
export { type MetricsOptions, type MetricsServer, serveMetrics } from "./server/metrics.ts";
export {
  Client,
  connect,
  type ConnectOptions,
  exchange,
  HandshakeRejectedError,
  ProtocolMismatchError,
  type RejectionReason,
  relay,
  ServerAuthenticationError,
  ServerHungUpError,
} from "./client/client.ts";
export {
  type ListenAddress,
  startTunnel,
  Tunnel,
  type TunnelOptions,
  type TunnelStats,
} from "./client/tunnel.ts";
export { ConfigError, HmacEchoError } from "./errors.ts";
export { ChallengeError } from "./protocol/challenge.ts";
export { FrameError, type FrameErrorReason, type FrameMode } from "./protocol/frames.ts";
export { type DigestName, SecretKeys } from "./protocol/keys.ts";
export type { Requirement } from "./protocol/outcome.ts";
export type { ByteStream } from "./_io.ts";
export {
  type LogFields,
  type LogFormat,
  type Logger,
  type LogLevel,
  StderrLogger,
  type StderrLoggerOptions,
} from "./log.ts";
