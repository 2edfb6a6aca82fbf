/**
 * `forward` and the tunnel, in one process with real sockets: a local program → `startTunnel` →
 * `serve({ forward })` → a target the test scripts. Bytes, half-closes, resets, backpressure, a
 * target that is down or slow, a wrong secret, an impostor server, Unix sockets at both ends.
 * tests/forward_redis_test.ts runs the commands themselves in front of a real Redis.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connect, HandshakeRejectedError } from "../client/client.ts";
import { startTunnel } from "../client/tunnel.ts";
import { closeQuietly, readFull, writeAll } from "../_io.ts";
import { ConfigError } from "../errors.ts";
import { resolveConfig } from "../server/config.ts";
import { renderMetrics } from "../server/metrics.ts";
import { serve } from "../server/server.ts";
import { decoder, encoder, RecordingLogger, SECRET, withTimeout } from "./_helpers.ts";
import { readAll, send, startTarget, startTunnelled } from "./_forward.ts";

/** Reads the target's side until EOF, hashing, while sending `size` random bytes and a FIN. */
async function exchangeRandom(
  conn: Deno.Conn,
  size: number,
): Promise<{ sent: string; received: string; receivedBytes: number }> {
  const sentHash = createHash("sha256");
  const receivedHash = createHash("sha256");
  let receivedBytes = 0;
  const writing = (async () => {
    const chunk = new Uint8Array(64 * 1024);
    for (let sent = 0; sent < size; sent += chunk.length) {
      crypto.getRandomValues(chunk);
      sentHash.update(chunk);
      await send(conn, chunk);
    }
    await conn.closeWrite();
  })();
  const buffer = new Uint8Array(64 * 1024);
  for (let n; (n = await conn.read(buffer)) !== null;) {
    receivedHash.update(buffer.subarray(0, n));
    receivedBytes += n;
  }
  await writing;
  return { sent: sentHash.digest("hex"), received: receivedHash.digest("hex"), receivedBytes };
}

const MiB = 1024 * 1024;

/** The kernel's largest TCP buffer of a kind, in bytes: the last of `net.ipv4.tcp_rmem`'s three. */
async function largestBuffer(name: "tcp_rmem" | "tcp_wmem"): Promise<number> {
  // Deno asks for --allow-all to read /proc/sys; cat needs only --allow-run.
  const { stdout } = await new Deno.Command("cat", { args: [`/proc/sys/net/ipv4/${name}`] })
    .output();
  return Number(decoder.decode(stdout).trim().split(/\s+/)[2]);
}

Deno.test("a forwarded session carries tens of MiB both ways at once, byte for byte", async () => {
  const upstream = 24 * MiB;
  const downstream = 20 * MiB;
  let atTarget: Awaited<ReturnType<typeof exchangeRandom>> | undefined;
  await using target = startTarget(async (conn) => {
    atTarget = await exchangeRandom(conn, downstream);
  });
  await using tunnelled = await startTunnelled(target.address);
  const local = await tunnelled.open();
  try {
    const atLocal = await exchangeRandom(local, upstream);
    await target.handled(0);
    assert.ok(atTarget);
    assert.equal(atTarget.receivedBytes, upstream);
    assert.equal(atTarget.received, atLocal.sent, "what the program sent, the target received");
    assert.equal(atLocal.receivedBytes, downstream);
    assert.equal(atLocal.received, atTarget.sent, "what the target sent, the program received");
  } finally {
    local.close();
  }
  const forwarded = await tunnelled.started.logger.waitFor("forwarded");
  assert.equal(forwarded.fields.toTarget, upstream);
  assert.equal(forwarded.fields.fromTarget, downstream);
  assert.equal(forwarded.fields.ended, "both-sides-done");
  assert.equal(typeof forwarded.fields.durationMs, "number");
  const stats = await tunnelled.started.server.stats();
  assert.equal(stats.forwarded, 1);
  assert.equal(stats.forwardedToTargetBytes, upstream);
  assert.equal(stats.forwardedFromTargetBytes, downstream);
  assert.equal(stats.forwardSeconds.count, 1);
  const metrics = renderMetrics(stats);
  assert.match(metrics, /^hmac_echo_forwarded_total 1$/m);
  assert.match(metrics, new RegExp(`^hmac_echo_forwarded_to_target_bytes_total ${upstream}$`, "m"));
  assert.match(metrics, /^hmac_echo_forward_duration_seconds_count 1$/m);
  const closed = await tunnelled.tunnelLog.waitFor("closed", { failure: undefined });
  assert.equal(closed.fields.toServer, upstream);
  assert.equal(closed.fields.fromServer, downstream);
});

Deno.test("a half-close from the program reaches the target, which can still answer", async () => {
  let targetSaw = "";
  await using target = startTarget(async (conn) => {
    targetSaw = decoder.decode((await readAll(conn)).bytes); // to the FIN the program sent
    await send(conn, encoder.encode(`got ${targetSaw.length} bytes, bye`));
    await conn.closeWrite();
  });
  await using tunnelled = await startTunnelled(target.address);
  const local = await tunnelled.open();
  try {
    await send(local, encoder.encode("hello"));
    await local.closeWrite();
    const { bytes, reset } = await withTimeout(readAll(local), "the target's answer and FIN");
    assert.equal(reset, false);
    assert.equal(decoder.decode(bytes), "got 5 bytes, bye");
    assert.equal(targetSaw, "hello");
  } finally {
    local.close();
  }
});

Deno.test("a half-close from the target reaches the program, which can still send", async () => {
  let targetGot = "";
  await using target = startTarget(async (conn) => {
    await send(conn, encoder.encode("greeting"));
    await conn.closeWrite();
    targetGot = decoder.decode((await readAll(conn)).bytes);
  });
  await using tunnelled = await startTunnelled(target.address);
  const local = await tunnelled.open();
  try {
    const { bytes } = await withTimeout(readAll(local), "the target's FIN");
    assert.equal(decoder.decode(bytes), "greeting");
    await send(local, encoder.encode("a late reply"));
    await local.closeWrite();
    await withTimeout(target.handled(0), "the program's FIN at the target");
    assert.equal(targetGot, "a late reply");
  } finally {
    local.close();
  }
});

Deno.test("a target that is down: logged, counted, the program's connection closed, the server goes on", async () => {
  const closedPort = (() => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    return port;
  })();
  await using tunnelled = await startTunnelled({ hostname: "127.0.0.1", port: closedPort });
  const { logger, server } = tunnelled.started;
  for (let i = 1; i <= 2; i++) {
    const local = await tunnelled.open();
    try {
      await send(local, encoder.encode("PING\r\n"));
      const { bytes } = await readAll(local);
      assert.equal(bytes.length, 0, "nothing comes back from a target that is down");
    } finally {
      local.close();
    }
    await logger.waitForCount(["target-failed"], i);
  }
  const failed = logger.find("target-failed");
  assert.equal(failed.length, 2);
  assert.equal(failed[0].fields.reason, "refused");
  assert.equal(failed[0].fields.target, `127.0.0.1:${closedPort}`);
  assert.match(String(failed[0].fields.error), /ConnectionRefused/);
  // No second line for the same failure: the server's own lines are the session's close.
  assert.equal(logger.find("session-failed").length, 0);
  const stats = await server.stats();
  assert.deepEqual(stats.targetErrors, { refused: 2 });
  assert.equal(stats.forwarded, 0);
  assert.match(
    renderMetrics(stats),
    /^hmac_echo_forward_target_errors_total\{reason="refused"\} 2$/m,
  );
  // The session was cut short, not ended: the tunnel says so for each.
  await tunnelled.tunnelLog.waitForCount(["closed"], 2);
  for (const closed of tunnelled.tunnelLog.find("closed")) {
    assert.match(
      String(closed.fields.failure),
      /^server: (truncated-stream|BrokenPipe|ConnectionReset)$/,
    );
  }
});

Deno.test("a target slower than targetTimeoutMs to accept: logged and counted as a timeout", async () => {
  // A listen queue of one that nobody accepts from: once two connections wait in it, the kernel
  // drops further SYNs, and a third connection neither succeeds nor fails.
  const full = Deno.listen({ hostname: "127.0.0.1", port: 0, tcpBacklog: 1 });
  const waiting = [
    await Deno.connect({ hostname: "127.0.0.1", port: full.addr.port }),
    await Deno.connect({ hostname: "127.0.0.1", port: full.addr.port }),
  ];
  try {
    await using tunnelled = await startTunnelled(
      { hostname: "127.0.0.1", port: full.addr.port },
      { server: { targetTimeoutMs: 300 } },
    );
    const local = await tunnelled.open();
    try {
      assert.equal((await readAll(local)).bytes.length, 0);
    } finally {
      local.close();
    }
    const failed = await tunnelled.started.logger.waitFor("target-failed");
    assert.equal(failed.fields.reason, "timeout");
    assert.match(String(failed.fields.error), /did not accept within 300 ms/);
    assert.deepEqual((await tunnelled.started.server.stats()).targetErrors, { timeout: 1 });
  } finally {
    for (const conn of waiting) conn.close();
    full.close();
  }
});

Deno.test("a target that never reads holds the program back: what it can write stays bounded", async () => {
  // The first target connection never reads; the later ones echo, so a second session can take
  // turns with the stuck one and show that the server still serves.
  const stuck = Promise.withResolvers<void>();
  await using target = startTarget(async (conn, index) => {
    if (index === 0) return await stuck.promise;
    const buffer = new Uint8Array(1024);
    for (let n; (n = await conn.read(buffer)) !== null;) await send(conn, buffer.subarray(0, n));
  });
  await using tunnelled = await startTunnelled(target.address);
  const { logger } = tunnelled.started;
  const pusher = await tunnelled.open();
  // The pusher's session first, so that it gets the target's first connection, the stuck one.
  await logger.waitForCount(["forwarding"], 1);
  const pinger = await tunnelled.open();
  try {
    // Every byte the program manages to write is in a kernel buffer on one of three loopback
    // connections, or in the 64 KiB the tunnel and the server each read at a time: nothing
    // else may hold it. Three connections' worth of the kernel's largest buffers bound it.
    const [rmem, wmem] = await Promise.all((["tcp_rmem", "tcp_wmem"] as const).map(largestBuffer));
    const bound = 3 * (rmem + wmem) + 4 * 64 * 1024;
    const total = bound + 64 * MiB; // more than could ever fit, were it buffered somewhere
    let written = 0;
    let pushEnded = false;
    const chunk = new Uint8Array(MiB);
    const pushing = (async () => {
      while (written < total) written += await pusher.write(chunk);
    })().catch(() => {}).finally(() => pushEnded = true); // ended by the close below
    // Turns, not time: round trips through the same tunnel and server until the pusher has
    // made no progress for 20 of them in a row.
    const heapBefore = Deno.memoryUsage();
    const probe = encoder.encode("ping");
    const reply = new Uint8Array(probe.length);
    let unchanged = 0;
    let rounds = 0;
    for (let last = -1; unchanged < 20 && written < total; rounds++) {
      await send(pinger, probe);
      assert.equal(await withTimeout(readFull(pinger, reply), "a round trip"), probe.length);
      unchanged = written === last ? unchanged + 1 : 0;
      last = written;
    }
    const heapAfter = Deno.memoryUsage();
    // Held back, not cut off: both sessions are still open, the pusher's write still waiting.
    assert.equal(pushEnded, false, "the pusher's connection is still open");
    assert.equal(logger.find("forwarded").length, 0, "both sessions still forwarding");
    assert.equal(tunnelled.tunnel.stats().active, 2);
    assert.ok(written > 0, "the pipeline took some bytes before it filled");
    assert.ok(
      written <= bound,
      `the program wrote ${written} bytes into a target that reads nothing; at most ${bound} ` +
        "fit in the kernel's buffers",
    );
    const grown = heapAfter.rss - heapBefore.rss;
    assert.ok(grown < 64 * MiB, `the process grew by ${grown} bytes while stuck`);
    console.log(
      `never-reading target: ${(written / MiB).toFixed(1)} MiB written before the program was ` +
        `held back (bound ${(bound / MiB).toFixed(0)} MiB), ${rounds} round trips meanwhile, ` +
        `rss ${grown >= 0 ? "+" : ""}${(grown / MiB).toFixed(1)} MiB`,
    );
    pusher.close();
    await pushing;
  } finally {
    stuck.resolve();
    closeQuietly(pusher);
    pinger.close();
  }
});

Deno.test("a target that resets mid-stream: counted as reset, and the program's connection ends", async () => {
  // node:net's resetAndDestroy() sends a reset (SO_LINGER 0), which Deno.Conn cannot.
  const { default: net } = await import("node:net");
  const resetSent = Promise.withResolvers<void>();
  const socketsClosed: Promise<void>[] = [];
  const target = net.createServer((socket) => {
    socketsClosed.push(new Promise((resolve) => socket.on("close", () => resolve())));
    let received = 0;
    socket.on("data", (chunk: Uint8Array) => {
      received += chunk.length;
      if (received >= 1000 && !socket.destroyed) {
        socket.resetAndDestroy();
        resetSent.resolve();
      }
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  const closeTarget = async () => {
    await new Promise<void>((resolve) => target.close(() => resolve()));
    await Promise.all(socketsClosed);
  };
  await using _target = { [Symbol.asyncDispose]: closeTarget };
  const port = (target.address() as { port: number }).port;
  await using tunnelled = await startTunnelled({ hostname: "127.0.0.1", port });
  const local = await tunnelled.open();
  try {
    const writing = (async () => {
      const chunk = new Uint8Array(64 * 1024);
      for (let i = 0; i < 1024; i++) await send(local, chunk); // 64 MiB: more than any buffer
    })().then(() => undefined, (error) => error); // settled by the close, long before the end
    const { bytes } = await readAll(local);
    assert.equal(bytes.length, 0);
    assert.ok(await writing instanceof Error, "the program's writes fail once the tunnel closed");
    await resetSent.promise;
  } finally {
    local.close();
  }
  const failed = await tunnelled.started.logger.waitFor("target-failed");
  assert.equal(failed.fields.reason, "reset");
  const forwarded = await tunnelled.started.logger.waitFor("forwarded");
  assert.equal(forwarded.fields.ended, "target");
  assert.deepEqual((await tunnelled.started.server.stats()).targetErrors, { reset: 1 });
  // Cut short: the tunnel sees the server's connection end without an end frame, or a write to
  // it fail, whichever comes first.
  const closed = await tunnelled.tunnelLog.waitFor("closed");
  assert.match(
    String(closed.fields.failure),
    /^server: (truncated-stream|BrokenPipe|ConnectionReset)$/,
  );
});

Deno.test("a wrong secret: each local connection is closed, the cause logged once", async () => {
  await using target = startTarget(() => Promise.resolve());
  await using tunnelled = await startTunnelled(target.address, {
    tunnel: { secret: encoder.encode("not the server's secret, though long enough") },
  });
  for (let i = 0; i < 3; i++) {
    const local = await tunnelled.open();
    try {
      await send(local, encoder.encode("GET / HTTP/1.0\r\n\r\n"));
      assert.equal((await readAll(local)).bytes.length, 0);
    } finally {
      local.close();
    }
  }
  await tunnelled.tunnelLog.waitForCount(["closed"], 3);
  const failed = tunnelled.tunnelLog.find("dial-failed");
  assert.equal(failed.length, 1, "one line for the cause, not one per connection");
  assert.equal(failed[0].fields.reason, "wrong-proof");
  assert.match(String(failed[0].fields.error), /Authentication rejected by .*: check the secret/);
  assert.deepEqual(tunnelled.tunnel.stats().dialFailures, { "wrong-proof": 3 });
  assert.equal(target.accepted, 0, "the target never saw a connection");
});

Deno.test("an impostor server: each local connection is closed, nothing sent to it, logged once", async () => {
  // Knows the protocol, not the secret: accepts every hello with a made-up proof.
  const heard: number[] = [];
  await using impostor = startTarget(async (conn) => {
    await send(conn, crypto.getRandomValues(new Uint8Array(32)));
    const hello = new Uint8Array(8 + 2 + 32 + 32 + 32); // {sha256} 03 mode Cc Pc proof
    assert.equal(await readFull(conn, hello), hello.length);
    await send(conn, Uint8Array.of(0, ...crypto.getRandomValues(new Uint8Array(64))));
    heard.push((await readAll(conn)).bytes.length);
  });
  const tunnelLog = new RecordingLogger();
  await using tunnel = await startTunnel({
    secret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    ...impostor.address,
    logger: tunnelLog,
  });
  for (let i = 0; i < 3; i++) {
    const local = await Deno.connect({ port: (tunnel.addr as Deno.NetAddr).port });
    try {
      await send(local, encoder.encode("AUTH hunter2\r\n"));
      assert.equal((await readAll(local)).bytes.length, 0);
    } finally {
      local.close();
    }
    await impostor.handled(i);
  }
  assert.deepEqual(heard, [0, 0, 0], "not a byte after the hello reached the impostor");
  const failed = tunnelLog.find("dial-failed");
  assert.equal(failed.length, 1);
  assert.equal(failed[0].fields.reason, "bad-server-proof");
  assert.match(String(failed[0].fields.error), /could not prove it knows the secret/);
  assert.deepEqual(tunnel.stats().dialFailures, { "bad-server-proof": 3 });
});

Deno.test("after a failure is fixed, the tunnel says so and would log the next one again", async () => {
  await using target = startTarget(async (conn) => {
    await send(conn, encoder.encode("hi"));
  });
  const started = await serve({ secret: SECRET, port: 0, forward: target.address });
  const port = started.addr.port;
  await started.close();
  const tunnelLog = new RecordingLogger();
  await using tunnel = await startTunnel({
    secret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    port,
    logger: tunnelLog,
  });
  const local = () => Deno.connect({ port: (tunnel.addr as Deno.NetAddr).port });
  for (let i = 0; i < 2; i++) {
    const conn = await local();
    assert.equal((await readAll(conn)).bytes.length, 0);
    conn.close();
  }
  await tunnelLog.waitForCount(["closed"], 2);
  assert.equal(tunnelLog.find("dial-failed").length, 1);
  assert.equal(tunnelLog.find("dial-failed")[0].fields.reason, "ConnectionRefused");
  await using again = await serve({ secret: SECRET, port, forward: target.address });
  const conn = await local();
  try {
    assert.equal(decoder.decode((await readAll(conn)).bytes), "hi");
  } finally {
    conn.close();
  }
  const recovered = await tunnelLog.waitFor("dial-recovered");
  assert.equal(recovered.fields.failures, 2);
  assert.ok(again.addr.port === port);
});

Deno.test("a forwarding server serves only encrypted, forward-secret sessions", async (t) => {
  await using target = startTarget(async (conn) => {
    await send(conn, encoder.encode("target"));
  });
  await using server = await serve({ secret: SECRET, port: 0, forward: target.address });
  const port = server.addr.port;
  for (
    const [what, options, reason] of [
      ["integrity frames", { mode: "integrity" }, "mode-refused"],
      ["plain v2", { mode: "plain" }, "mode-refused"],
      ["hello version 02", { forwardSecrecy: false }, "forward-secrecy-required"],
      ["protocol 1", { protocol: 1 }, "rejected"],
    ] as const
  ) {
    await t.step(`${what} is refused (${reason})`, async () => {
      const client = await connect({ secret: SECRET, port, ...options }).catch((error) => error);
      if (client instanceof HandshakeRejectedError) {
        assert.equal(client.reason, reason);
        return;
      }
      // v1 learns of its rejection only when the server closes instead of replying.
      assert.equal(reason, "rejected");
      try {
        await writeAll(client, encoder.encode("x"));
        await assert.rejects(client.read(new Uint8Array(10)), HandshakeRejectedError);
      } finally {
        client.close();
      }
    });
  }
  assert.equal(target.accepted, 0, "no refused client reached the target");
  await t.step("the default client gets through", async () => {
    const client = await connect({ secret: SECRET, port });
    try {
      const reply = new Uint8Array(6);
      assert.equal(await readFull(client, reply), 6);
      assert.equal(decoder.decode(reply), "target");
    } finally {
      client.close();
    }
  });
});

Deno.test("resolveConfig: forward raises the requirements and checks its target", () => {
  const secret = SECRET;
  const target = { hostname: "127.0.0.1", port: 6379 };
  for (const require of [undefined, "v2", "integrity", "encrypt"] as const) {
    const config = resolveConfig({ secret, forward: target, require });
    assert.equal(config.require, "encrypt");
    assert.equal(config.requireForwardSecrecy, true);
  }
  assert.equal(
    resolveConfig({ secret, forward: target, requireForwardSecrecy: false }).requireForwardSecrecy,
    true,
  );
  assert.equal(resolveConfig({ secret }).require, undefined, "no forward, no change");
  assert.equal(resolveConfig({ secret }).targetTimeoutMs, 5_000);
  assert.equal(resolveConfig({ secret }).keepAlive, true);
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ forward: target, sha1Prefix: true }, /sha1Prefix accepts v1 answers/],
    [{ forward: { hostname: "", port: 1 } }, /forward\.hostname must be a host name/],
    [{ forward: { hostname: "x", port: 0 } }, /forward\.port must be a whole number from 1/],
    [{ forward: { path: "" } }, /forward\.path must be a Unix socket's path/],
    [{ forward: { path: `/${"x".repeat(107)}` } }, /of 1 to 107 bytes/],
    [{ forward: "127.0.0.1:6379" }, /forward must be \{ hostname, port \} or \{ path \}/],
    [{ forward: target, targetTimeoutMs: 0 }, /targetTimeoutMs must be a positive number/],
    [{ keepAlive: "yes" }, /keepAlive must be true or false/],
  ];
  for (const [options, message] of refused) {
    assert.throws(() => resolveConfig({ secret, ...options }), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("serve() takes a handler or a forward target, not both", async () => {
  await assert.rejects(
    serve({
      secret: SECRET,
      port: 0,
      forward: { hostname: "127.0.0.1", port: 1 },
      handler: () => Promise.resolve(),
    }),
    /handler and forward are two services/,
  );
});

Deno.test("forwarding is plain configuration: it works with worker threads", async () => {
  await using target = startTarget(async (conn) => {
    const { bytes } = await readAll(conn);
    await send(conn, encoder.encode(decoder.decode(bytes).split("").reverse().join("")));
  });
  await using server = await serve({
    secret: SECRET,
    port: 0,
    workers: 2,
    forward: target.address,
  });
  await using tunnel = await startTunnel({
    secret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    port: server.addr.port,
  });
  for (const word of ["stressed", "drawer", "reward"]) {
    const local = await Deno.connect({ port: (tunnel.addr as Deno.NetAddr).port });
    try {
      await send(local, encoder.encode(word));
      await local.closeWrite();
      assert.equal(decoder.decode((await readAll(local)).bytes), word.split("").reverse().join(""));
    } finally {
      local.close();
    }
  }
  const stats = await server.stats();
  assert.equal(stats.forwarded, 3, "the workers' counts, added up");
  assert.equal(stats.forwardedToTargetBytes, "stresseddrawerreward".length);
});

Deno.test("Unix sockets at both ends: a private listener, replaced when stale, removed at the end", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "hmac-echo-forward-" });
  try {
    await using target = startTarget(async (conn) => {
      await send(conn, encoder.encode(`hello from ${conn.localAddr.transport}`));
    }, { path: `${dir}/target.sock` });
    const listen = { path: `${dir}/tunnel.sock` };
    // A stale socket: a listener that closed without removing its file.
    Deno.listen({ transport: "unix", path: listen.path }).close();
    await using tunnelled = await startTunnelled(target.address, { tunnel: { listen } });

    await t.step("the socket is the tunnel's, mode 0600, in place of the stale one", async () => {
      const info = await Deno.lstat(listen.path);
      assert.ok(info.isSocket);
      assert.equal(info.mode! & 0o777, 0o600);
      assert.deepEqual(tunnelled.tunnel.addr, { transport: "unix", path: listen.path });
      const leftovers = [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
      assert.deepEqual(leftovers, ["target.sock", "tunnel.sock"], "no private directory left");
    });

    await t.step("a session through it reaches the Unix target", async () => {
      const local = await Deno.connect({ transport: "unix", path: listen.path });
      try {
        assert.equal(decoder.decode((await readAll(local)).bytes), "hello from unix");
      } finally {
        local.close();
      }
    });

    await t.step("a live socket or another file at the path is refused", async () => {
      await assert.rejects(
        startTunnel({ secret: SECRET, listen, port: tunnelled.started.port }),
        Deno.errors.AddrInUse,
      );
      await Deno.writeTextFile(`${dir}/file`, "precious");
      await assert.rejects(
        startTunnel({ secret: SECRET, listen: { path: `${dir}/file` }, port: 1 }),
        Deno.errors.AlreadyExists,
      );
      assert.equal(await Deno.readTextFile(`${dir}/file`), "precious");
    });

    await t.step("closing the tunnel removes its socket", async () => {
      await tunnelled.tunnel.close();
      await assert.rejects(Deno.lstat(listen.path), Deno.errors.NotFound);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("when the server goes away, local connections end at once, not hang", async () => {
  await using target = startTarget(async (conn) => {
    const buffer = new Uint8Array(1024);
    for (let n; (n = await conn.read(buffer)) !== null;) await send(conn, buffer.subarray(0, n));
  });
  await using tunnelled = await startTunnelled(target.address);
  const locals = await Promise.all([1, 2, 3].map(() => tunnelled.open()));
  try {
    for (const local of locals) {
      await send(local, encoder.encode("ping"));
      assert.equal(await readFull(local, new Uint8Array(4)), 4);
    }
    await tunnelled.started.server.close({ gracePeriodMs: 0 });
    for (const local of locals) {
      const ended = await withTimeout(readAll(local), "the local connection's end");
      assert.equal(ended.bytes.length, 0);
    }
    const fresh = await tunnelled.open();
    try {
      assert.equal((await withTimeout(readAll(fresh), "a new connection's end")).bytes.length, 0);
    } finally {
      fresh.close();
    }
    const failed = await tunnelled.tunnelLog.waitFor("dial-failed");
    assert.equal(failed.fields.reason, "ConnectionRefused");
  } finally {
    for (const local of locals) local.close();
  }
});
