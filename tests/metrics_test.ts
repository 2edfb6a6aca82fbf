/** /metrics and /healthz: the library endpoint, and `serve --metrics-port` as a process. */

import assert from "node:assert/strict";
import { exchange, HandshakeRejectedError } from "../client/client.ts";
import { serveMetrics } from "../server/metrics.ts";
import { decoder, encoder, openAuthenticated, SECRET, startServer } from "./_helpers.ts";
import { freshEnv, startServeTask } from "./_process.ts";

/** `name{labels} value` lines as a map, for exact lookups. */
function parse(text: string): Map<string, number> {
  return new Map(
    text.split("\n").filter((line) => line && !line.startsWith("#")).map((line) => {
      const at = line.lastIndexOf(" ");
      return [line.slice(0, at), Number(line.slice(at + 1))];
    }),
  );
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.text() };
}

Deno.test("serveMetrics exposes the server's counters in Prometheus text format", async () => {
  await using started = await startServer();
  const { server, port } = started;
  let draining = false;
  const http = serveMetrics({ port: 0, stats: () => server.stats(), draining: () => draining });
  const base = `http://127.0.0.1:${http.addr.port}`;
  try {
    // Plain v2, so the byte counts below are the hellos' and the message's alone.
    await exchange({ secret: SECRET, port, mode: "plain", message: encoder.encode("one") });
    await assert.rejects(
      exchange({
        secret: encoder.encode("wrong"),
        port,
        mode: "plain",
        message: encoder.encode("x"),
      }),
      HandshakeRejectedError,
    );
    const { status, body } = await get(`${base}/metrics`);
    assert.equal(status, 200);
    assert.match(body, /^# HELP hmac_echo_connections_open /m);
    const samples = parse(body);
    assert.equal(samples.get("hmac_echo_connections_total"), 2);
    assert.equal(samples.get("hmac_echo_authenticated_total"), 1);
    assert.equal(samples.get('hmac_echo_rejected_total{reason="wrong-proof"}'), 1);
    assert.equal(samples.get("hmac_echo_handshake_duration_seconds_count"), 1);
    assert.equal(samples.get('hmac_echo_handshake_duration_seconds_bucket{le="+Inf"}'), 1);
    // Buckets are cumulative: never decreasing, ending at the count.
    const buckets = [...samples].filter(([name]) =>
      name.startsWith("hmac_echo_handshake_duration_seconds_bucket{")
    ).map(([, n]) => n);
    assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b));
    // Two v2 SHA-256 hellos of 74 bytes (PROTOCOL.md §9) and one message; the rejected client's
    // message byte is never read: the server decides on the hello.
    assert.equal(samples.get("hmac_echo_received_bytes_total"), 74 + 3 + 74);
    assert.equal(samples.get("hmac_echo_authenticated_v2_total"), 1);

    assert.deepEqual(await get(`${base}/healthz`), { status: 200, body: "ok\n" });
    draining = true;
    assert.deepEqual(await get(`${base}/healthz`), { status: 503, body: "draining\n" });
    assert.equal((await get(`${base}/nope`)).status, 404);
  } finally {
    await http.shutdown();
  }
});

Deno.test("serve --metrics-port sums the workers, and /healthz drains on SIGTERM", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const server = startServeTask([
    "--port",
    "0",
    "--workers",
    "2",
    "--metrics-port",
    "0",
    "--digest",
    "sha1-prefix", // each worker must get the option, and the counts are summed
  ], fresh.env);
  let held: Awaited<ReturnType<typeof openAuthenticated>> | undefined;
  try {
    const port = await server.port();
    const metricsAt = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    const variants = [
      { protocol: 1, digest: "sha1-prefix" },
      { protocol: 1 },
      { protocol: 2, mode: "integrity" },
      { protocol: 2, mode: "encrypt" },
      { protocol: 2 },
    ] as const;
    for (let i = 0; i < 10; i++) {
      const variant = variants[i % variants.length];
      await exchange({ secret: SECRET, port, message: encoder.encode("m"), ...variant });
    }
    const samples = parse((await get(`http://${metricsAt}/metrics`)).body);
    assert.equal(samples.get("hmac_echo_authenticated_total"), 10, "both workers' counts added");
    assert.equal(samples.get("hmac_echo_authenticated_v2_total"), 6);
    assert.equal(samples.get("hmac_echo_authenticated_legacy_total"), 2);
    assert.equal(samples.get("hmac_echo_handshake_duration_seconds_count"), 10);
    assert.deepEqual(await get(`http://${metricsAt}/healthz`), { status: 200, body: "ok\n" });

    // A session still open holds the server in its grace period: the check must say draining.
    held = await openAuthenticated(port);
    await server.waitForLine(new RegExp(` authenticated id=\\d+ remote=${held.remote} `));
    server.kill("SIGTERM");
    await server.waitForLine(/ shutting-down /);
    assert.deepEqual(await get(`http://${metricsAt}/healthz`), { status: 503, body: "draining\n" });
    held.conn.close();
    held = undefined;
    assert.equal((await server.exited()).code, 0, server.lines.join("\n"));
  } finally {
    held?.conn.close();
    await server.stop();
  }
});
