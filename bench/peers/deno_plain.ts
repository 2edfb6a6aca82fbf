/**
 * Benchmark peer: hmac-echo with the handshake switched off, to isolate what authentication costs.
 * The same service handler, the same per-connection task, setNoDelay; no challenge, no HMAC.
 *
 * deno run --allow-net bench/peers/deno_plain.ts PORT
 */

import { upperCaseEcho } from "../../server/upper_case_echo.ts";

const listener = Deno.listen({
  hostname: "127.0.0.1",
  port: Number(Deno.args[0]),
  tcpBacklog: 4096,
});
console.error("listening");
for await (const conn of listener) {
  conn.setNoDelay(true);
  upperCaseEcho(conn).catch(() => {}).finally(() => {
    try {
      conn.close();
    } catch {
      // already closed
    }
  });
}
