/** The server end to end, over real sockets on 127.0.0.1 (docs/PROTOCOL.md §1-§4). */

import assert from "node:assert/strict";
import { writeAll } from "../_io.ts";
import { connect, exchange, HandshakeRejectedError, relay } from "../client/client.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { computeAnswer } from "../protocol/v1.ts";
import {
  answerRaw,
  concat,
  decoder,
  encoder,
  openAuthenticated,
  openRaw,
  readExactly,
  readToEnd,
  SECRET,
  startServer,
  upper,
  withTimeout,
} from "./_helpers.ts";

Deno.test("server echoes upper-cased text to a v1 client with the right secret", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  const reply = await exchange({
    secret: SECRET,
    port,
    protocol: 1,
    message: encoder.encode("hello, straße"),
  });
  assert.equal(decoder.decode(reply), "HELLO, STRASSE");
  const closed = await logger.waitFor("closed");
  assert.equal(closed.fields.bytesIn, 40 + encoder.encode("hello, straße").length);
  assert.equal(closed.fields.bytesOut, 32 + reply.length);
  assert.equal((await server.stats()).authenticated, 1);
});

for (const [protocol, reason] of [[1, "wrong-digest"], [2, "wrong-proof"]] as const) {
  Deno.test(`server rejects a wrong secret in protocol v${protocol}, and the client says so`, async () => {
    await using started = await startServer();
    const { server, logger, port } = started;
    await assert.rejects(
      exchange({
        secret: encoder.encode("wrong"),
        port,
        protocol,
        message: encoder.encode("hi"),
      }),
      (error: unknown) =>
        error instanceof HandshakeRejectedError &&
        error.message.startsWith(`Authentication rejected by 127.0.0.1:${port}`) &&
        error.message.includes("check the secret"),
    );
    const rejected = await logger.waitFor("rejected");
    assert.equal(rejected.fields.reason, reason);
    const stats = await server.stats();
    assert.deepEqual(stats.rejected, { [reason]: 1 });
    assert.equal(stats.authenticated, 0);
  });
}

Deno.test("server closes on a malformed answer without sending another byte (PROTOCOL.md §3)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const { reply, remote } = await answerRaw(port, () => encoder.encode("z".repeat(40)));
  assert.equal(reply.length, 0);
  const rejected = await logger.waitFor("rejected", { remote });
  assert.equal(rejected.fields.reason, "malformed-answer");
});

Deno.test("v1: an answer recorded in one session is refused in another (wrong-digest, §1)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const recorded = await openRaw(port);
  const answer = computeAnswer(await SecretKeys.import(SECRET), recorded.challenge);
  recorded.conn.close();
  const { reply, remote } = await answerRaw(port, () => answer);
  assert.equal(reply.length, 0);
  const rejected = await logger.waitFor("rejected", { remote });
  assert.equal(rejected.fields.reason, "wrong-digest");
});

Deno.test("server keeps service bytes sent right behind the answer (PROTOCOL.md §3)", async () => {
  await using started = await startServer();
  const { port } = started;
  const raw = await openRaw(port);
  try {
    const answer = computeAnswer(await SecretKeys.import(SECRET), raw.challenge);
    // One write carries the answer and the first service bytes.
    await writeAll(raw.conn, concat([answer, encoder.encode("pipelined")]));
    await raw.conn.closeWrite();
    assert.equal(decoder.decode(await readToEnd(raw.conn)), "PIPELINED");
  } finally {
    raw.conn.close();
  }
});

Deno.test("server gives 200 concurrent clients exactly their own bytes back", async () => {
  await using started = await startServer();
  const { server, port } = started;
  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const message = `client ${i}: ${crypto.randomUUID()} ß ${"x".repeat(i * 7)}`;
      const reply = await exchange({ secret: SECRET, port, message: encoder.encode(message) });
      return { expected: message.toUpperCase(), actual: decoder.decode(reply) };
    }),
  );
  for (const { expected, actual } of results) assert.equal(actual, expected);
  assert.equal((await server.stats()).authenticated, 200);
});

Deno.test("a client stalled mid-handshake does not delay another client's session", async () => {
  // A long deadline: if handshakes were served one at a time, the honest session below would
  // only run after the stalled one timed out, and the stalled one would no longer be open.
  await using started = await startServer({ handshakeTimeoutMs: 60_000 });
  const { server, logger, port } = started;
  const stalled = await openRaw(port);
  try {
    await writeAll(stalled.conn, encoder.encode("0123456789")); // 10 of the 40 answer bytes
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("not delayed") });
    assert.equal(decoder.decode(reply), "NOT DELAYED");
    await logger.waitFor("closed");
    // The stalled client is still open, still in its handshake.
    assert.equal(logger.find("closed", { remote: stalled.remote }).length, 0);
    const stats = await server.stats();
    assert.equal(stats.active, 1);
    assert.equal(stats.authenticated, 1);
  } finally {
    stalled.conn.close();
  }
});

Deno.test("the handshake deadline closes a silent client, and only it", async () => {
  await using started = await startServer({ handshakeTimeoutMs: 200 });
  const { server, logger, port } = started;
  const silent = await openRaw(port);
  try {
    const ended = await readToEnd(silent.conn);
    assert.equal(ended.length, 0);
  } finally {
    silent.conn.close();
  }
  const rejected = await logger.waitFor("rejected", { remote: silent.remote });
  assert.equal(rejected.fields.reason, "handshake-timeout");
  assert.deepEqual((await server.stats()).rejected, { "handshake-timeout": 1 });
  // The server goes on serving.
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("still here") });
  assert.equal(decoder.decode(reply), "STILL HERE");
});

Deno.test("a character split across TCP reads at every byte boundary comes back whole", async () => {
  await using started = await startServer();
  const { port } = started;
  const text = "xß€😀y";
  const bytes = encoder.encode(text);
  for (let split = 1; split < bytes.length; split++) {
    const client = await connect({ secret: SECRET, port });
    try {
      const first = bytes.subarray(0, split);
      await writeAll(client, first);
      // Wait for the echo of the whole characters in the first part: proof the server read the
      // first part on its own before the rest was even sent.
      const whole = new TextDecoder().decode(first, { stream: true });
      const echoed = await readExactly(client, upper(whole).length);
      await writeAll(client, bytes.subarray(split));
      await client.closeWrite();
      const rest = await readToEnd(client);
      assert.equal(decoder.decode(concat([echoed, rest])), text.toUpperCase(), `split ${split}`);
    } finally {
      client.close();
    }
  }
});

Deno.test("8 MiB comes back exactly while the client writes without waiting for replies", async () => {
  await using started = await startServer();
  const { port } = started;
  const pattern = encoder.encode("the quick brown fox ß € 😀 jumps over the lazy dog\n");
  const total = 8 * 1024 * 1024;
  const input = new Uint8Array(total);
  for (let at = 0; at < total; at += pattern.length) {
    input.set(pattern.subarray(0, total - at), at);
  }
  // The last copy of the pattern may stop mid-character: the server's final flush turns that
  // into U+FFFD, as decoding the whole input does.
  const text = decoder.decode(input);
  const expected = encoder.encode(text.toUpperCase());

  const client = await connect({ secret: SECRET, port });
  const chunks: Uint8Array[] = [];
  let received = 0;
  const source = ReadableStream.from((function* () {
    for (let at = 0; at < total; at += 64 * 1024) yield input.subarray(at, at + 64 * 1024);
  })());
  await relay(client, source, (chunk) => {
    chunks.push(chunk.slice());
    received += chunk.length;
  });
  assert.equal(received, expected.length);
  assert.deepEqual(concat(chunks), expected);
});

Deno.test("a client that vanishes mid-stream leaves the server healthy", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  const vanishing = await openAuthenticated(port);
  await writeAll(vanishing.conn, new Uint8Array(256 * 1024).fill(0x61));
  // Close without reading the echo: the kernel resets the connection under the server.
  vanishing.conn.close();
  await logger.waitFor("closed", { remote: vanishing.remote });
  assert.equal((await server.stats()).active, 0);
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("next") });
  assert.equal(decoder.decode(reply), "NEXT");
  assert.equal(logger.find("session-failed").length, 0, "a vanished client is no server error");
});

Deno.test("past maxConnections new connections are closed at once, counted and logged", async () => {
  await using started = await startServer({ maxConnections: 2 });
  const { server, logger, port } = started;
  const held = [await openAuthenticated(port), await openAuthenticated(port)];
  try {
    await logger.waitFor("authenticated", { remote: held[1].remote });
    const extra = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      // No challenge: the connection ends with zero bytes.
      assert.equal((await readToEnd(extra)).length, 0);
    } finally {
      extra.close();
    }
    const refused = await logger.waitFor("refused");
    assert.equal(refused.fields.reason, "connection-limit");
    assert.deepEqual((await server.stats()).refused, { "connection-limit": 1 });

    // A slot that frees up is served again.
    held.pop()!.conn.close();
    await logger.waitFor("closed");
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("room") });
    assert.equal(decoder.decode(reply), "ROOM");
  } finally {
    for (const raw of held) raw.conn.close();
  }
});

Deno.test("close() lets an in-flight session finish, and refuses new ones", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  const client = await connect({ secret: SECRET, port });
  try {
    await writeAll(client, encoder.encode("first half, "));
    const buffer = new Uint8Array(64);
    const n = await client.read(buffer);
    assert.equal(decoder.decode(buffer.subarray(0, n!)), "FIRST HALF, ");

    const closing = server.close({ gracePeriodMs: 30_000 });
    await logger.waitFor("draining");
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );

    await writeAll(client, encoder.encode("second half"));
    await client.closeWrite();
    assert.equal(decoder.decode(await readToEnd(client)), "SECOND HALF");
    await withTimeout(closing, "close() after the last session ended");
    assert.equal(logger.find("grace-period-over").length, 0);
  } finally {
    client.close();
  }
});

Deno.test("close() ends sessions still open when the grace period is over", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  const idle = await openAuthenticated(port);
  try {
    await logger.waitFor("authenticated", { remote: idle.remote });
    const closing = server.close({ gracePeriodMs: 100 });
    assert.equal((await readToEnd(idle.conn)).length, 0);
    await closing;
    assert.equal((await logger.waitFor("grace-period-over")).fields.closing, 1);
    assert.equal((await server.stats()).active, 0);
  } finally {
    idle.conn.close();
  }
});

Deno.test("a handler error is logged and the server goes on", async () => {
  let calls = 0;
  await using started = await startServer({
    handler: () => {
      calls++;
      if (calls === 1) return Promise.reject(new TypeError("handler bug"));
      return Promise.resolve();
    },
  });
  const { logger, port } = started;
  const first = await openAuthenticated(port);
  first.conn.close();
  const failed = await logger.waitFor("session-failed");
  assert.match(String(failed.fields.error), /TypeError: handler bug/);
  const second = await openAuthenticated(port);
  try {
    assert.equal((await readToEnd(second.conn)).length, 0);
  } finally {
    second.conn.close();
  }
  assert.equal(calls, 2);
});

Deno.test("during a rotation the server accepts the previous secret too, and says who uses it", async () => {
  const current = encoder.encode("the new secret");
  const previous = encoder.encode("the old secret");
  await using started = await startServer({ secret: current, previousSecret: previous });
  const { server, logger, port } = started;
  const message = encoder.encode("rotate");
  assert.equal(decoder.decode(await exchange({ secret: current, port, message })), "ROTATE");
  assert.equal(logger.find("previous-secret-used").length, 0);
  assert.equal(decoder.decode(await exchange({ secret: previous, port, message })), "ROTATE");
  await logger.waitFor("previous-secret-used");
  await assert.rejects(
    exchange({ secret: encoder.encode("neither"), port, message }),
    HandshakeRejectedError,
  );
  const stats = await server.stats();
  assert.equal(stats.authenticated, 2);
  assert.equal(stats.authenticatedWithPrevious, 1);
  assert.deepEqual(stats.rejected, { "wrong-proof": 1 });
});
