/**
 * hmac-echo: a TCP server that lets a client in only after it proves, with an HMAC over a fresh
 * challenge, that it knows a shared secret; then echoes its bytes upper-cased. Protocol v2 adds
 * mutual authentication, a digest choice and integrity or encryption frames. The wire format is in
 * docs/PROTOCOL.md.
 *
 * Run an authenticated server with your own service handler:
 *
 * @example
 * ```ts ignore
 * import { serve } from "./mod.ts";
 *
 * const secret = new TextEncoder().encode(Deno.env.get("MY_SECRET"));
 * const server = await serve({
 *   secret,
 *   port: 0,
 *   async handler(conn) {
 *     const buffer = new Uint8Array(1024);
 *     for (let n; (n = await conn.read(buffer)) !== null;) {
 *       await conn.write(buffer.subarray(0, n).reverse());
 *     }
 *   },
 * });
 * ```
 *
 * @module
 */

export {
  DEFAULT_BACKLOG,
  DEFAULT_GRACE_PERIOD_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_PORT,
  formatAddr,
  type Histogram,
  type RefusalReason,
  serve,
  type ServeOptions,
  Server,
  type ServerStats,
} from "./server.ts";
export {
  Client,
  connect,
  type ConnectOptions,
  exchange,
  HandshakeRejectedError,
  ProtocolMismatchError,
  relay,
  ServerAuthenticationError,
  ServerHungUpError,
} from "./client.ts";
export {
  ANSWER_LENGTH,
  answerChallenge,
  authenticateClient,
  type AuthenticationPolicy,
  CHALLENGE_LENGTH,
  ChallengeError,
  computeAnswer,
  computeLegacyAnswer,
  createChallenge,
  decodeAnswer,
  type HandshakeOutcome,
  importSecretKey,
  readChallenge,
  type RejectionReason,
  type Requirement,
  verifyAnswer,
} from "./handshake.ts";
export { type DigestName, DIGESTS, isDigestName, SecretKeys, secretKeys } from "./keys.ts";
export {
  type FrameMode,
  type HelloRejectionReason,
  type HelloResult,
  REJECTION_STATUS,
  sendHello,
  type V2Session,
  verifyHello,
} from "./handshake_v2.ts";
export {
  FramedConnection,
  FrameError,
  type FrameErrorReason,
  type FrameKeys,
  MAX_FRAME_PAYLOAD,
} from "./frames.ts";
export {
  type ServiceConnection,
  type ServiceHandler,
  type TrafficCounters,
  upperCaseEcho,
  UpperCaseTransformer,
} from "./upper_case_echo.ts";
export {
  type LogFields,
  type LogFormat,
  type Logger,
  type LogLevel,
  silentLogger,
  StderrLogger,
  type StderrLoggerOptions,
} from "./log.ts";
export {
  AuthFailureThrottle,
  DEFAULT_THROTTLE_COOLDOWN_MS,
  DEFAULT_THROTTLE_ENTRIES,
  DEFAULT_THROTTLE_FAILURES,
  DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
  DEFAULT_THROTTLE_WINDOW_MS,
  type ThrottleOptions,
} from "./throttle.ts";
export type { ByteStream } from "./_io.ts";
export { type MetricsOptions, renderMetrics, serveMetrics } from "./metrics.ts";
export {
  looksLikeProxyHeader,
  type ProxyHeader,
  ProxyHeaderError,
  readProxyHeader,
  TrustedProxies,
} from "./proxy_protocol.ts";
