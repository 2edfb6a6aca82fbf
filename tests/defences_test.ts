/** Each defence against hostile clients, proved with real sockets on loopback. */

import assert from "node:assert/strict";
import { formatAddr, writeAll } from "../_io.ts";
import { type Client, connect, exchange, HandshakeRejectedError } from "../client/client.ts";
import { authenticateClient } from "../protocol/handshake.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { computeAnswer } from "../protocol/v1.ts";
import type { RunningServer } from "../server/server.ts";
import type { ServerStats } from "../server/stats.ts";
import {
  answerWith,
  concat,
  decoder,
  encoder,
  holdFrom,
  openAuthenticated,
  openRaw,
  readToEnd,
  SECRET,
  sessionFrom,
  startServer,
  startWorkers,
  withTimeout,
} from "./_helpers.ts";
import { startTarget } from "./_forward.ts";
import { freshEnv, httpGet, ROOT, ServerProcess, startServeTask, taskArgs } from "./_process.ts";

const WRONG = encoder.encode("not the secret");

Deno.test("the idle timeout closes an authenticated client that moves no bytes", async () => {
  await using started = await startServer({ idleTimeoutMs: 200 });
  const { server, logger, port } = started;
  const idle = await openAuthenticated(port);
  try {
    assert.equal((await readToEnd(idle.conn)).length, 0);
  } finally {
    idle.conn.close();
  }
  await logger.waitFor("idle-timeout");
  assert.equal((await server.stats()).idleClosed, 1);
});

Deno.test("the idle timeout spares a client that keeps talking", async () => {
  await using started = await startServer({ idleTimeoutMs: 300 });
  const { server, logger, port } = started;
  const client = await connect({ secret: SECRET, port });
  try {
    // One byte every 50 ms for 1.2 s: four idle timeouts long, never idle for one.
    const buffer = new Uint8Array(8);
    const startedAt = performance.now();
    while (performance.now() - startedAt < 1_200) {
      await writeAll(client, encoder.encode("a"));
      assert.equal(await client.read(buffer), 1);
      assert.equal(buffer[0], "A".charCodeAt(0));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(logger.find("idle-timeout").length, 0);
    assert.equal((await server.stats()).idleClosed, 0);
  } finally {
    client.close();
  }
});

Deno.test("the per-address cap refuses one address's extra connections, not another's", async () => {
  await using started = await startServer({ maxConnectionsPerAddress: 2 });
  const { server, logger, port } = started;
  const held = [await openRaw(port), await openRaw(port)];
  try {
    // A third from 127.0.0.1 is closed at once, without a challenge.
    assert.equal((await sessionFrom("127.0.0.1", port)).length, 0);
    const refused = await logger.waitFor("refused");
    assert.equal(refused.fields.reason, "address-limit");
    // Another address is served.
    const other = await sessionFrom("127.0.0.2", port, answerWith(SECRET));
    assert.equal(other.length, 32, "127.0.0.2 got its challenge");
    assert.deepEqual((await server.stats()).refused, { "address-limit": 1 });
  } finally {
    for (const raw of held) raw.conn.close();
  }
});

Deno.test("with workers: 2 the per-address cap counts one address's connections on every thread", async () => {
  await using started = await startWorkers(2, { maxConnectionsPerAddress: 3 });
  const { server, port } = started;
  // Twelve from 127.0.0.7, one after another: the kernel spreads them over both threads, yet
  // only three are admitted in all (counted per thread, up to six would be).
  const held = [];
  try {
    for (let i = 0; i < 12; i++) held.push(await holdFrom("127.0.0.7", port));
    assert.equal(held.filter((connection) => connection.admitted).length, 3);
    // Another address is served.
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("other") });
    assert.equal(decoder.decode(reply), "OTHER");
    assert.deepEqual((await server.stats()).refused, { "address-limit": 9 });
  } finally {
    await Promise.all(held.map((connection) => connection.close()));
  }
});

Deno.test("with workers: 2 the connection cap counts every thread's connections", async () => {
  // An odd cap: split evenly, two threads would admit 2 + 2, whichever thread the kernel picks.
  await using started = await startWorkers(2, { maxConnections: 5 });
  const { server, port } = started;
  const held = [];
  try {
    for (let i = 0; i < 5; i++) held.push(await holdFrom("127.0.0.1", port));
    assert.deepEqual(held.map((connection) => connection.admitted), [true, true, true, true, true]);
    const sixth = await holdFrom("127.0.0.1", port);
    held.push(sixth);
    assert.equal(sixth.admitted, false);
    const stats = await server.stats();
    assert.deepEqual(stats.refused, { "connection-limit": 1 });
    assert.equal(stats.active, 5);
  } finally {
    await Promise.all(held.map((connection) => connection.close()));
  }
});

Deno.test("connections closed without a byte do not count towards the throttle", async () => {
  await using started = await startServer({ throttle: { maxFailures: 2 } });
  const { server, logger, port } = started;
  for (let i = 0; i < 5; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    await logger.waitFor("closed", { remote: `127.0.0.1:${conn.localAddr.port}` });
  }
  // Five silent hang-ups, yet the address is not throttled: it guessed nothing.
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("ok") });
  assert.equal(decoder.decode(reply), "OK");
  assert.equal((await server.stats()).throttled, 0);
});

Deno.test("failed handshakes put an address in a cool-down; other addresses are served", async () => {
  await using started = await startServer({
    throttle: { maxFailures: 3, windowMs: 60_000, cooldownMs: 60_000 },
  });
  const { server, logger, port } = started;
  for (let i = 0; i < 3; i++) {
    const sent = await sessionFrom("127.0.0.3", port, answerWith(WRONG));
    assert.equal(sent.length, 32, "each failure still got its challenge");
  }
  const throttling = await logger.waitFor("throttling");
  assert.equal(throttling.fields.address, "127.0.0.3");
  assert.equal(throttling.fields.cooldownMs, 60_000);

  // Now even the right secret from that address is turned away at once, with no challenge.
  assert.equal((await sessionFrom("127.0.0.3", port, answerWith(SECRET))).length, 0);
  const refused = await logger.waitFor("refused", { reason: "throttled" });
  assert.ok(Number(refused.fields.retryInMs) > 50_000);

  // Honest clients elsewhere do not notice.
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("fine") });
  assert.equal(decoder.decode(reply), "FINE");
  const stats = await server.stats();
  assert.equal(stats.throttled, 1);
  assert.deepEqual(stats.refused, { throttled: 1 });
});

Deno.test("guesses sent in parallel from one address: no more verdicts than one at a time gets", async () => {
  const maxFailures = 3;
  await using started = await startServer({
    throttle: { maxFailures, windowMs: 60_000, cooldownMs: 60_000 },
    maxConnectionsPerAddress: 1_000,
  });
  const { server, logger, port } = started;
  // 60 wrong v1 answers and 60 wrong v2 proofs, all in flight at once from 127.0.0.5 and
  // 127.0.0.1: every one is checked, but a verdict reaches the client only while its address is
  // not cooling down (PROTOCOL.md §3).
  const v1Guesses = Array.from(
    { length: 60 },
    () => sessionFrom("127.0.0.5", port, answerWith(WRONG)),
  );
  const v2Guesses = Array.from(
    { length: 60 },
    () =>
      connect({ secret: WRONG, port, protocol: 2 }).then(
        (client) => {
          client.close();
          throw new Error("a wrong secret was accepted");
        },
        (error: Error) => error,
      ),
  );
  await Promise.all([...v1Guesses, ...v2Guesses]);
  await logger.waitForCount(["closed", "refused"], 120);
  const stats = await server.stats();
  // Told "wrong": maxFailures − 1 per address, however many arrived at once. Exactly that many:
  // one thread checks them one at a time, the first maxFailures − 1 are told, and the one that
  // reaches the threshold begins the cool-down before its own verdict is decided.
  assert.equal(stats.rejected["wrong-digest"], maxFailures - 1, "v1 wrong verdicts revealed");
  assert.equal(stats.rejected["wrong-proof"], maxFailures - 1, "v2 wrong verdicts revealed");
  // Every other guess was turned away at accept, or its verdict withheld.
  const unchecked = (stats.rejected.throttled ?? 0) + (stats.refused.throttled ?? 0);
  const checked = (stats.rejected["wrong-digest"] ?? 0) + (stats.rejected["wrong-proof"] ?? 0);
  assert.equal(checked + unchecked, 120);
  assert.equal(stats.throttled, 2, "both addresses began a cool-down");
});

Deno.test("with workers: 2 guesses sent in parallel learn no more verdicts than one thread allows", async () => {
  const maxFailures = 3;
  await using started = await startWorkers(2, {
    throttle: { maxFailures, windowMs: 60_000, cooldownMs: 60_000 },
  });
  const { server, port } = started;
  // 60 wrong answers at once from 127.0.0.8, spread by the kernel over both threads.
  await Promise.all(
    Array.from({ length: 60 }, () => sessionFrom("127.0.0.8", port, answerWith(WRONG))),
  );
  let stats = await server.stats();
  // Told "wrong": under the threshold for the server as a whole; the rest withheld or refused.
  const checked = stats.rejected["wrong-digest"] ?? 0;
  assert.ok(checked < maxFailures, `wrong verdicts revealed: ${checked}`);
  const unchecked = (stats.rejected.throttled ?? 0) + (stats.refused.throttled ?? 0);
  assert.equal(checked + unchecked, 60);
  assert.equal(stats.throttled, 1, "one cool-down for the server, not one per thread");

  // The cool-down holds on every thread: even the right secret is turned away at once.
  for (let i = 0; i < 4; i++) {
    assert.equal((await sessionFrom("127.0.0.8", port, answerWith(SECRET))).length, 0);
  }
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("fine") });
  assert.equal(decoder.decode(reply), "FINE");
  stats = await server.stats();
  assert.equal(stats.authenticated, 1);
  assert.equal(stats.rejected["wrong-digest"] ?? 0, checked, "no more verdicts were revealed");
});

/** One address's wrong guesses as the server counted them. */
interface Verdicts {
  /** Told "wrong": `wrong-digest` (v1) and `wrong-proof` (v2). */
  revealed: number;
  /** Checked, but closed as `throttled` without a verdict. */
  withheld: number;
  /** Turned away at accept, unchecked. */
  refused: number;
}

function verdictsIn(stats: ServerStats): Verdicts {
  return {
    revealed: (stats.rejected["wrong-digest"] ?? 0) + (stats.rejected["wrong-proof"] ?? 0),
    withheld: stats.rejected.throttled ?? 0,
    refused: stats.refused.throttled ?? 0,
  };
}

function total(verdicts: Verdicts): number {
  return verdicts.revealed + verdicts.withheld + verdicts.refused;
}

/** A wrong guess from 127.0.0.1, v1 for even `i` and v2 for odd; resolves once the client is done. */
function wrongGuess(i: number, port: number): Promise<unknown> {
  if (i % 2 === 0) return sessionFrom("127.0.0.1", port, answerWith(WRONG));
  return connect({ secret: WRONG, port, protocol: 2 }).then(
    (client) => {
      client.close();
      throw new Error("a wrong secret was accepted");
    },
    (error: Error) => error,
  );
}

/**
 * Honest v1 sessions from `address`, one after another, until one is served: the event that says
 * its cool-down is over (the throttle keeps no timer to wait on). Each turned-away try is a refusal
 * at accept, which counts towards nothing.
 */
async function servedAgain(address: string, port: number): Promise<void> {
  const keys = await SecretKeys.import(SECRET);
  const answer = (challenge: Uint8Array) =>
    Promise.resolve(concat([computeAnswer(keys, challenge), encoder.encode("ping")]));
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    const reply = await sessionFrom(address, port, answer);
    if (reply.length === 0) continue; // refused at accept: still cooling down
    assert.equal(decoder.decode(reply.subarray(32)), "PING", "an honest try was served");
    return;
  }
  throw new Error(`${address} was still turned away after 20 s`);
}

/**
 * Waves of `size` wrong guesses sent at once from 127.0.0.1 (v1 and v2 mixed), one wave per
 * cool-down cycle: each wave is sent once the last cool-down is over, and begins the next one. Each
 * cycle is a step named with its numbers, in which `check` holds its verdicts to the bound.
 * `settled(n)` resolves once the server has finished with `n` rejected or refused connections in
 * all.
 */
async function guessInWaves(
  t: Deno.TestContext,
  server: RunningServer,
  port: number,
  options: {
    waves: number;
    size: number;
    cooldownMs: number;
    settled: (connections: number) => Promise<void>;
    check: (cycle: Verdicts) => void;
  },
): Promise<void> {
  for (let wave = 1; wave <= options.waves; wave++) {
    const before = verdictsIn(await server.stats());
    const sentAt = performance.now();
    await Promise.all(Array.from({ length: options.size }, (_, i) => wrongGuess(i, port)));
    await options.settled(total(before) + options.size);
    const stats = await server.stats();
    const after = verdictsIn(stats);
    const cycle = {
      revealed: after.revealed - before.revealed,
      withheld: after.withheld - before.withheld,
      refused: after.refused - before.refused,
    };
    // Each cool-down doubles the last (server/throttle.ts) and cannot end early. The last one is
    // not waited out.
    const cooldownMs = options.cooldownMs * 2 ** (wave - 1);
    const last = wave === options.waves;
    if (!last) await servedAgain("127.0.0.1", port);
    const waited = performance.now() - sentAt;
    const name = `cycle ${wave}: ${cycle.revealed} of ${options.size} told "wrong", ` +
      `${cycle.withheld} withheld, ${cycle.refused} refused; a ${cooldownMs} ms cool-down` +
      (last ? "" : `, served again ${Math.round(waited)} ms after the wave`);
    const held = await t.step(name, () => {
      assert.equal(total(cycle), options.size, "every guess accounted for");
      assert.equal(stats.throttled, wave, "each wave began one cool-down");
      options.check(cycle);
      // A millisecond's slack: the pool's threads each read their own clock.
      if (!last) assert.ok(waited >= cooldownMs - 1, `served again after ${waited} ms`);
    });
    if (!held) return;
  }
}

Deno.test("waves of parallel guesses: each cool-down cycle reveals maxFailures − 1 verdicts", async (t) => {
  const maxFailures = 3;
  const cooldownMs = 300;
  await using started = await startServer({
    throttle: { maxFailures, windowMs: 60_000, cooldownMs },
  });
  const { server, logger, port } = started;
  // Four waves of 24 (12 v1, 12 v2): four cycles, three of whose cool-downs (300, 600 and
  // 1 200 ms) are waited out before the next wave.
  await guessInWaves(t, server, port, {
    waves: 4,
    size: 24,
    cooldownMs,
    settled: (connections) => logger.waitForCount(["rejected", "refused"], connections),
    // One thread checks the answers one at a time: each cycle's first maxFailures − 1 are told
    // "wrong", its maxFailures-th begins the cool-down unanswered, and every later one is withheld.
    check: (cycle) => assert.equal(cycle.revealed, maxFailures - 1),
  });
  assert.deepEqual(
    logger.find("throttling").map((entry) => entry.fields.cooldownMs),
    [300, 600, 1_200, 2_400],
  );
});

Deno.test("with workers: 2 waves of parallel guesses reveal under maxFailures verdicts a cycle", async (t) => {
  const maxFailures = 3;
  const cooldownMs = 300;
  await using started = await startWorkers(2, {
    throttle: { maxFailures, windowMs: 60_000, cooldownMs },
  });
  const { server, port } = started;
  await guessInWaves(t, server, port, {
    waves: 4,
    size: 24,
    cooldownMs,
    // No logger crosses threads: the pool's stats, asked of each thread in turn, are the event.
    settled: async (connections) => {
      const deadline = performance.now() + 20_000;
      while (total(verdictsIn(await server.stats())) < connections) {
        if (performance.now() > deadline) throw new Error(`${connections} connections unsettled`);
      }
    },
    // Two threads check at once: a count on one can be overtaken by the other's cool-down before
    // its verdict is decided (only one count can be pending so), so a cycle may reveal one fewer,
    // never more.
    check: (cycle) => {
      assert.ok(cycle.revealed <= maxFailures - 1, `${cycle.revealed} revealed`);
      assert.ok(cycle.revealed >= maxFailures - 2, `${cycle.revealed} revealed`);
    },
  });
});

Deno.test("honest configuration mismatches do not count towards the throttle", async () => {
  await using started = await startServer({
    require: "integrity",
    digests: ["sha256"],
    throttle: { maxFailures: 2, windowMs: 60_000, cooldownMs: 60_000 },
  });
  const { server, port } = started;
  const mismatches = [
    { protocol: 1 as const }, // v1-refused
    { protocol: 2 as const, digest: "sha512" as const }, // unsupported-digest
    { protocol: 2 as const, mode: "plain" as const }, // mode-refused
  ];
  for (let round = 0; round < 2; round++) {
    for (const options of mismatches) {
      await assert.rejects(
        exchange({ secret: SECRET, port, message: encoder.encode("x"), ...options }),
      );
    }
  }
  // Six honest mistakes, threshold two: the right settings still get in at once.
  const reply = await exchange({
    secret: SECRET,
    port,
    message: encoder.encode("in"),
    mode: "integrity",
  });
  assert.equal(decoder.decode(reply), "IN");
  const stats = await server.stats();
  assert.equal(stats.throttled, 0);
  assert.deepEqual(stats.rejected, { "v1-refused": 2, "unsupported-digest": 2, "mode-refused": 2 });
});

Deno.test("a client that writes without reading makes the server stop reading it", async () => {
  await using started = await startServer();
  const { server, port } = started;
  const client = await connect({ secret: SECRET, port });
  try {
    const total = 256 * 1024 * 1024;
    const chunk = new Uint8Array(1024 * 1024).fill("a".charCodeAt(0));
    let written = 0;
    let lastProgress = performance.now();
    const writing = (async () => {
      while (written < total) {
        await writeAll(client, chunk);
        written += chunk.length;
        lastProgress = performance.now();
      }
      await client.closeWrite();
    })();

    // The writer stalls once the echo fills the kernel buffers (the server no longer reads).
    // Progress is checked, not slept on: without backpressure the writer simply finishes.
    const stalled = await withTimeout(
      (async () => {
        while (written < total) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          if (performance.now() - lastProgress > 500) return true;
        }
        return false;
      })(),
      "the writer to stall or finish",
    );
    assert.equal(stalled, true, "all 256 MiB went in without the client reading a byte");
    const readByServer = (await server.stats()).bytesIn;
    assert.ok(
      readByServer < 64 * 1024 * 1024,
      `the server read ${readByServer} bytes from a client that reads nothing`,
    );

    // Nothing is lost: drain the echo and check every byte.
    const buffer = new Uint8Array(1024 * 1024);
    let received = 0;
    for (let n; (n = await client.read(buffer)) !== null;) {
      for (let i = 0; i < n; i++) {
        if (buffer[i] !== 0x41) throw new Error(`byte ${received + i} is ${buffer[i]}, not "A"`);
      }
      received += n;
    }
    await writing;
    assert.equal(received, total);
  } finally {
    client.close();
  }
});

Deno.test("the idle timeout also frees a client that never reads its replies", async () => {
  await using started = await startServer({ idleTimeoutMs: 300 });
  const { server, logger, port } = started;
  const raw = await openAuthenticated(port);
  try {
    // Push until the server's write blocks: no byte moves either way from then on.
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    const pushing = (async () => {
      try {
        while (true) await writeAll(raw.conn, chunk);
      } catch {
        // the server closed the connection: that is the point
      }
    })();
    await logger.waitFor("idle-timeout", { remote: raw.remote });
    await pushing;
    assert.equal((await server.stats()).idleClosed, 1);
  } finally {
    raw.conn.close();
  }
});

Deno.test("a reset during the handshake counts as an incomplete answer (PROTOCOL.md §3)", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  const { default: net } = await import("node:net");
  const socket = net.connect({ host: "127.0.0.1", port });
  await new Promise((resolve) => socket.once("data", resolve)); // the challenge
  socket.write("abc");
  socket.resetAndDestroy();
  await new Promise((resolve) => socket.once("close", resolve));
  const rejected = await logger.waitFor("rejected");
  assert.equal(rejected.fields.reason, "incomplete-answer");
  const { accepted, authenticated, rejected: byReason, refused } = await server.stats();
  assert.equal(
    accepted,
    authenticated + Object.values(byReason).reduce((a, b) => a + b, 0) +
      Object.values(refused).reduce((a, b) => a + (b ?? 0), 0),
  );
});

Deno.test("before authentication the server reads only the answer, whatever is sent", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const raw = await openRaw(port);
  try {
    // 1 MiB of garbage: the server must decide on the first 40 bytes and hang up.
    await writeAll(raw.conn, new Uint8Array(1024 * 1024).fill(0x7a)).catch(() => {});
    assert.equal((await readToEnd(raw.conn)).length, 0);
  } finally {
    raw.conn.close();
  }
  const closed = await logger.waitFor("closed", { remote: raw.remote });
  assert.equal(closed.fields.bytesIn, 40);
  assert.equal((await logger.waitFor("rejected")).fields.reason, "malformed-answer");
});

Deno.test("authenticateClient() over random input never throws and never reads past the answer or the hello", async () => {
  const keys = await SecretKeys.import(SECRET);
  // The longest hello: a 8-byte tag, version, mode, 32-byte challenge, 64-byte proof (PROTOCOL.md §9).
  const MAX_HELLO = 8 + 2 + 32 + 64;
  const prefixes = [
    "0123456789abcdef".repeat(3), // hex-looking v1 answers
    "{sha512}\x02\x02", // v2 hellos with valid headers and random challenges and proofs
    "{sha1}\x02\x01",
    "{", // v2 hellos with random headers
  ];
  for (let round = 0; round < 2_000; round++) {
    const input = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 160)));
    // Sometimes a valid prefix, so each parser gets past its first checks too.
    if (round % 2 === 0) {
      const prefix = encoder.encode(prefixes[(round / 2) % prefixes.length]);
      input.set(prefix.subarray(0, input.length));
    }
    let offset = 0;
    const stream = {
      read(buffer: Uint8Array) {
        if (offset >= input.length) return Promise.resolve(null);
        const n = Math.min(
          buffer.length,
          input.length - offset,
          1 + Math.floor(Math.random() * 16),
        );
        buffer.set(input.subarray(offset, offset + n));
        offset += n;
        return Promise.resolve(n);
      },
      write: (data: Uint8Array) => Promise.resolve(data.length),
    };
    const outcome = await authenticateClient(stream, { keys });
    assert.equal(outcome.authenticated, false);
    if (input[0] === 0x7b) {
      assert.ok(offset <= MAX_HELLO, `read ${offset} bytes of a hello`);
    } else {
      assert.equal(offset, Math.min(40, input.length));
    }
  }
});

Deno.test("accept errors (out of file descriptors) end neither the server nor its /healthz", async () => {
  // A library server with no connection cap, in a process allowed 256 descriptors.
  const fixture = new URL("./fixtures/uncapped_server.ts", import.meta.url).pathname;
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const server = ServerProcess.start(
    "bash",
    [
      "-c",
      `ulimit -n 256 && exec "${Deno.execPath()}" run --allow-net --allow-env=HMAC_ECHO_SECRET "${fixture}"`,
    ],
    { env: fresh.env },
  );
  const flood: Deno.TcpConn[] = [];
  try {
    const port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    for (let i = 0; i < 400; i++) flood.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await server.waitForLine(/ accept-failed .*Too many open files/);
    // The health check, now: Deno's HTTP server cannot accept it, and stops listening for good.
    // Its answer, if any, is awaited only once the flood is gone, so it cannot hang the test.
    const probe = httpGet(metrics, "/healthz").catch(() => {});
    await server.waitForLine(/ metrics-failed .*Too many open files/);
    for (const conn of flood.splice(0)) conn.close();
    await probe;
    // Descriptors freed: the same process serves again, and its endpoint listens again.
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("survived") });
    assert.equal(decoder.decode(reply), "SURVIVED");
    await server.waitForLine(/ metrics-restarted$/);
    assert.deepEqual(await httpGet(metrics, "/healthz"), { status: 200, body: "ok\n" });
    const { body } = await httpGet(metrics, "/metrics");
    const failures = Number(
      body.match(/^hmac_echo_accept_failures_total\{reason="EMFILE"\} (\d+)$/m)?.[1],
    );
    assert.ok(failures >= 1, `accept failures are counted:\n${body}`);
  } finally {
    for (const conn of flood) conn.close();
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.lines.slice(-20).join("\n"));
  }
});

Deno.test("under ulimit -n 1024 a flood of connections cannot take the server or /healthz down", async () => {
  // As shipped: the serve task's permissions (no /proc), the common limit of 1 024 descriptors,
  // and the default --max-connections of 10 000, which the server must lower by itself.
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const server = startServeTask(
    ["--port", "0", "--quiet", "--metrics-port", "0", "--max-connections-per-address", "0"],
    fresh.env,
    { openFiles: 1024 },
  );
  const flood: Deno.TcpConn[] = [];
  try {
    const lowered = await server.waitForLine(/ max-connections-lowered /);
    const cap = Number(lowered.match(/ to=(\d+)/)![1]);
    assert.ok(cap < 1024 - 32 && cap > 500, lowered);
    const port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    // More connections than the process has descriptors, all held open at once.
    const opened = await Promise.all(
      Array.from({ length: 1_200 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    flood.push(...opened);
    const firstBytes = await Promise.all(flood.map(async (conn) => {
      const byte = new Uint8Array(1);
      return await conn.read(byte); // 1: its challenge began; null: refused at the cap
    }));
    assert.equal(firstBytes.filter((n) => n === 1).length, cap, "the cap, not the kernel, says no");
    // The balancer's health check still gets its answer, and the metrics count the refusals.
    assert.deepEqual(await httpGet(metrics, "/healthz"), { status: 200, body: "ok\n" });
    const text = (await httpGet(metrics, "/metrics")).body;
    assert.match(
      text,
      new RegExp(`hmac_echo_refused_total\\{reason="connection-limit"\\} ${1_200 - cap}\n`),
    );
    assert.doesNotMatch(text, /accept_failures_total\{reason="EMFILE"\}/);
    for (const conn of flood.splice(0)) conn.close();
    // Once the flood is gone, an honest client is served.
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("after") });
    assert.equal(decoder.decode(reply), "AFTER");
  } finally {
    for (const conn of flood) conn.close();
    assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
  }
});

Deno.test("when its free descriptors cannot be counted, serve says so and assumes the common limit", async () => {
  // Read access that does not reach Deno's executable (as a compiled binary may be built): the
  // count cannot be made. Then the default cap must not be 10 000.
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const args = taskArgs("serve").map((arg) =>
    arg === "--allow-read" ? `--allow-read=${fresh.home}` : arg
  );
  assert.ok(args.includes(`--allow-read=${fresh.home}`), "the task's read permission was narrowed");
  for (
    const [flags, expected] of [
      [
        [],
        / max-connections-lowered from=10000 to=960 reason="could not count free file descriptors/,
      ],
      [["--forward", "127.0.0.1:9"], / max-connections-lowered from=10000 to=480 /],
      [["--max-connections", "2000"], / open-file-limit-unknown maxConnections=2000 /],
    ] as const
  ) {
    const server = ServerProcess.start(Deno.execPath(), [...args, "--port", "0", ...flags], {
      env: fresh.env,
      cwd: ROOT,
    });
    try {
      await server.port();
      assert.ok(server.lines.some((line) => expected.test(line)), server.lines.join("\n"));
    } finally {
      assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
    }
  }
});

Deno.test("with --forward under ulimit -n 256, the cap counts two descriptors a session", async () => {
  // A forwarded session holds the client's connection and the target's: a cap that counted one
  // would let the sessions take every descriptor, and the health check with them.
  await using target = startTarget(async (conn) => {
    const buffer = new Uint8Array(1024);
    for (let n; (n = await conn.read(buffer)) !== null;) {
      await writeAll(conn, buffer.subarray(0, n));
    }
  });
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const forward = `127.0.0.1:${(target.listener.addr as Deno.NetAddr).port}`;
  const server = startServeTask(
    ["--port", "0", "--metrics-port", "0", "--max-connections-per-address", "0"]
      .concat(["--forward", forward]),
    fresh.env,
    { openFiles: 256 },
  );
  const sessions: Client[] = [];
  try {
    const lowered = await server.waitForLine(/ max-connections-lowered /);
    const cap = Number(lowered.match(/ to=(\d+)/)![1]);
    const free = Number(lowered.match(/only (\d+) more files/)![1]);
    assert.equal(cap, Math.floor((free - 64) / 2), lowered);
    const port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    // More sessions than the cap, at once; each that opens goes through to the target and back.
    const attempts = await Promise.allSettled(
      Array.from({ length: cap + 40 }, async () => {
        const client = await connect({ secret: SECRET, port });
        sessions.push(client);
        await writeAll(client, encoder.encode("x"));
        assert.equal(await client.read(new Uint8Array(1)), 1);
      }),
    );
    assert.equal(attempts.filter((a) => a.status === "fulfilled").length, cap);
    assert.deepEqual(await httpGet(metrics, "/healthz"), { status: 200, body: "ok\n" });
    // Each session closed, and seen closed by the server: the cap has room again.
    const closed = sessions.splice(0).map((client) => {
      client.close();
      return new RegExp(` closed id=\\d+ remote=${formatAddr(client.localAddr)} `);
    });
    for (const line of closed) await server.waitForLine(line);
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("after") });
    assert.equal(
      decoder.decode(reply),
      "after",
      "forwarded to the echoing target, not upper-cased",
    );
    assert.ok(!server.lines.some((line) => / (metrics-failed|accept-failed) /.test(line)));
  } finally {
    for (const client of sessions) client.close();
    assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
  }
});

Deno.test("a reconnect storm: 10 000 clients at once are all challenged and served", async () => {
  // The server runs in its own process, as in production, so each side has its own descriptors.
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const server = startServeTask(
    ["--port", "0", "--quiet", "--max-connections-per-address", "0"],
    fresh.env,
  );
  try {
    const port = await server.port();
    const clients = 10_000;
    const keys = await SecretKeys.import(SECRET);
    const message = encoder.encode("storm");
    const results = await withTimeout(
      Promise.all(Array.from({ length: clients }, async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          const challenge = new Uint8Array(32);
          for (let got = 0; got < 32;) got += (await conn.read(challenge.subarray(got)))!;
          await writeAll(conn, computeAnswer(keys, challenge));
          await writeAll(conn, message);
          await conn.closeWrite();
          return decoder.decode(await readToEnd(conn));
        } finally {
          conn.close();
        }
      })),
      `${clients} storming clients`,
    );
    assert.equal(results.filter((reply) => reply === "STORM").length, clients);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
  const stopped = server.lines.find((line) => / stopped /.test(line))!;
  assert.match(stopped, / authenticated=10000 /);
  assert.match(stopped, / refused=0 /);
});

Deno.test("a log pipe whose reader is gone cannot take the server down", async (t) => {
  // `serve 2>&1 | head -n 1` as a process: read the first lines, then close the pipe's read end.
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const child = new Deno.Command(Deno.execPath(), {
    args: [...taskArgs("serve"), "--port", "0", "--metrics-port", "0", "--quiet"],
    cwd: ROOT,
    env: fresh.env,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  while (!/ listening address=/.test(text)) {
    const { value, done } = await lines.read();
    assert.ok(!done, `serve exited early:\n${text}`);
    text += value;
  }
  await lines.cancel(); // from now on every log write fails with EPIPE
  const port = Number(text.match(/ listening address=127\.0\.0\.1:(\d+)/)![1]);
  const metrics = text.match(/ metrics address=(\S+)/)![1];
  try {
    await t.step("a wrong answer is logged into the broken pipe: the line is dropped", async () => {
      // v1: the server logs the rejection before it closes, so the close means the write was tried.
      await assert.rejects(
        exchange({ secret: WRONG, port, protocol: 1, message: encoder.encode("x") }),
        HandshakeRejectedError,
      );
      const body = await (await fetch(`http://${metrics}/metrics`)).text();
      const dropped = Number(body.match(/^hmac_echo_log_lines_dropped_total (\d+)$/m)![1]);
      assert.ok(dropped >= 1, body);
    });
    await t.step("and everyone else is still served", async () => {
      const reply = await exchange({ secret: SECRET, port, message: encoder.encode("alive") });
      assert.equal(decoder.decode(reply), "ALIVE");
    });
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, "a clean exit, though its last lines are lost");
  }
});
