/**
 * Protocol v2's frame layer under attack, over real sockets (docs/PROTOCOL.md §11): an attacker
 * on the path alters, reorders, replays, cuts or inflates valid frames; each closes the
 * connection with its own logged reason, and the server goes on serving everyone else.
 */

import assert from "node:assert/strict";
import { connect, exchange } from "../client/client.ts";
import { authenticateClient } from "../protocol/handshake.ts";
import { deriveFrameKeys, sendHello } from "../protocol/v2.ts";
import {
  FramedConnection,
  FrameError,
  type FrameErrorReason,
  type FrameKeys,
  MAX_FRAME_PAYLOAD,
} from "../protocol/frames.ts";
import { createChallenge } from "../protocol/challenge.ts";
import { FRAME_KEY_LENGTH, FrameKey, HEADER_LENGTH } from "../protocol/frame_key.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { concat, writeAll } from "../_io.ts";
import { upperCaseEcho } from "../server/upper_case_echo.ts";
import {
  decoder,
  encoder,
  openRaw,
  readExactly,
  ReadRecorder,
  readToEnd,
  SECRET,
  startServer,
  tcpPair,
  withTimeout,
} from "./_helpers.ts";

const keys = await SecretKeys.import(SECRET);

/** Seals payloads into frames with `frameKeys`, without sending them: an attacker's raw material. */
function frameSealer(frameKeys: FrameKeys) {
  const sealed: Uint8Array[] = [];
  const framed = new FramedConnection({
    read: () => Promise.resolve(null),
    write: (data) => (sealed.push(data.slice()), Promise.resolve(data.length)),
  }, frameKeys);
  return {
    async frame(text: string): Promise<Uint8Array> {
      await framed.write(encoder.encode(text));
      return sealed.pop()!;
    },
    async end(): Promise<Uint8Array> {
      await framed.closeWrite();
      return sealed.pop()!;
    },
  };
}

/** A flipped bit at `index` (negative: from the end). */
function flipped(frame: Uint8Array, index: number): Uint8Array {
  const copy = frame.slice();
  copy[index < 0 ? copy.length + index : index] ^= 0x01;
  return copy;
}

type Attack = (frames: {
  f0: Uint8Array;
  f1: Uint8Array;
  end: Uint8Array;
}) => Uint8Array[];

const ATTACKS: [string, FrameErrorReason, Attack][] = [
  ["a bit flipped in the payload", "tampered-frame", ({ f0 }) => [flipped(f0, 12)]],
  ["a bit flipped in the sequence number", "tampered-frame", ({ f0 }) => [flipped(f0, 11)]],
  ["a bit flipped in the length", "tampered-frame", ({ f0 }) => [flipped(f0, 3)]],
  ["a bit flipped in the tag", "tampered-frame", ({ f0 }) => [flipped(f0, -1)]],
  ["two frames swapped", "out-of-order-frame", ({ f0, f1 }) => [f1, f0]],
  ["a frame skipped", "out-of-order-frame", ({ f1 }) => [f1]],
  ["a frame sent twice", "replayed-frame", ({ f0 }) => [f0, f0]],
  ["a frame cut short", "truncated-frame", ({ f0 }) => [f0.subarray(0, f0.length - 5)]],
  ["a cut at a frame boundary, no end frame", "truncated-stream", ({ f0 }) => [f0]],
  ["bytes after the end frame", "data-after-end", ({ f0, f1, end }) => [
    concat([f0, f1, end, encoder.encode("smuggled")]),
  ]],
  ["a header announcing 65 537 bytes", "oversized-frame", () => {
    const header = new Uint8Array(12);
    new DataView(header.buffer).setUint32(0, 65_537);
    return [header];
  }],
];

/** What the server echoed before the attack's bad frame: only the frames before it. */
const PASSED: Record<string, string[]> = {
  "a frame sent twice": ["ABC"],
  "a cut at a frame boundary, no end frame": ["ABC"],
  "bytes after the end frame": ["ABC", "DEF"],
};

for (const mode of ["integrity", "encrypt"] as const) {
  for (const [what, reason, attack] of ATTACKS) {
    Deno.test(`${mode} frames: ${what} closes the connection as ${reason} (§11)`, async () => {
      await using started = await startServer();
      const { server, logger, port } = started;
      const raw = await openRaw(port);
      const hello = await sendHello(raw.conn, keys, raw.challenge, { digest: "sha256", mode });
      assert.equal(hello.outcome, "accepted");
      const frameKeys = (hello as { session: { frameKeys: FrameKeys } }).session.frameKeys;
      const seal = frameSealer(frameKeys);
      const frames = {
        f0: await seal.frame("abc"),
        f1: await seal.frame("def"),
        end: await seal.end(),
      };
      await writeAll(raw.conn, concat(attack(frames)));
      await raw.conn.closeWrite();
      const reply = await readToEnd(raw.conn);
      raw.conn.close();

      const rejected = await logger.waitFor("frame-rejected", { remote: raw.remote });
      assert.equal(rejected.fields.reason, reason);
      assert.deepEqual((await server.stats()).frameErrors, { [reason]: 1 });
      // What came back decodes only to replies to frames that passed, and never ends cleanly.
      const client = new FramedConnection(
        { read: readerOf(reply), write: () => Promise.reject(new Error("read-only")) },
        { mode, send: frameKeys.send, receive: frameKeys.receive },
      );
      const received: string[] = [];
      const buffer = new Uint8Array(64);
      await assert.rejects(
        (async () => {
          for (let n; (n = await client.read(buffer)) !== null;) {
            received.push(decoder.decode(buffer.subarray(0, n)));
          }
        })(),
        (error: unknown) => error instanceof FrameError && error.reason === "truncated-stream",
      );
      assert.deepEqual(received, PASSED[what] ?? []);
      // Everyone else is still served.
      const honest = await exchange({
        secret: SECRET,
        port,
        mode,
        message: encoder.encode("ok"),
      });
      assert.equal(decoder.decode(honest), "OK");
    });
  }
}

/** A read function over fixed bytes. */
function readerOf(bytes: Uint8Array) {
  let offset = 0;
  return (buffer: Uint8Array) => {
    if (offset >= bytes.length) return Promise.resolve(null);
    const n = Math.min(buffer.length, bytes.length - offset);
    buffer.set(bytes.subarray(offset, offset + n));
    offset += n;
    return Promise.resolve(n);
  };
}

/** A server that authenticates properly, then sends what `send` makes of its frame keys. */
function tamperingServer(send: (seal: ReturnType<typeof frameSealer>) => Promise<Uint8Array[]>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      const outcome = await authenticateClient(conn, { keys });
      assert.ok(outcome.authenticated && outcome.protocol === 2 && outcome.frameKeys);
      await writeAll(conn, concat(await send(frameSealer(outcome.frameKeys))));
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, done };
}

Deno.test("the client refuses a tampered frame from the server, after the good ones (§11)", async () => {
  const server = tamperingServer(async (
    seal,
  ) => [await seal.frame("GOOD"), flipped(await seal.frame("EVIL"), 13)]);
  const client = await connect({ secret: SECRET, port: server.port, mode: "integrity" });
  try {
    const buffer = new Uint8Array(64);
    const n = await client.read(buffer);
    assert.equal(decoder.decode(buffer.subarray(0, n!)), "GOOD");
    await assert.rejects(
      client.read(buffer),
      (error: unknown) =>
        error instanceof FrameError && error.reason === "tampered-frame" &&
        /may have been altered/.test(error.message),
    );
  } finally {
    client.close();
    await server.done;
  }
});

Deno.test("the client treats a reply cut before the server's end frame as an error, not an end (§11)", async () => {
  const server = tamperingServer(async (seal) => [await seal.frame("PARTIAL")]);
  await assert.rejects(
    exchange({
      secret: SECRET,
      port: server.port,
      mode: "encrypt",
      message: encoder.encode("partial"),
    }),
    (error: unknown) => error instanceof FrameError && error.reason === "truncated-stream",
  );
  await server.done;
});

Deno.test("encrypt frames hide the payload on the wire; integrity frames carry it in clear (§11)", async () => {
  await using started = await startServer();
  const { port } = started;
  const secretText = "the launch code is 0000";
  for (const mode of ["integrity", "encrypt"] as const) {
    const raw = await openRaw(port);
    const hello = await sendHello(raw.conn, keys, raw.challenge, { digest: "sha256", mode });
    assert.equal(hello.outcome, "accepted");
    const frameKeys = (hello as { session: { frameKeys: FrameKeys } }).session.frameKeys;
    const seal = frameSealer(frameKeys);
    const frame = await seal.frame(secretText);
    const wire = decoder.decode(frame);
    assert.equal(wire.includes(secretText), mode === "integrity", mode);
    // And the reply, as it crosses the wire.
    await writeAll(raw.conn, concat([frame, await seal.end()]));
    await raw.conn.closeWrite();
    const reply = decoder.decode(await readToEnd(raw.conn));
    assert.equal(reply.includes(secretText.toUpperCase()), mode === "integrity", mode);
    raw.conn.close();
  }
});

Deno.test("an empty write sends no frame: only closeWrite() sends the end frame (§11)", async () => {
  const frameKeys = deriveFrameKeys(
    keys,
    "integrity",
    createChallenge(),
    createChallenge(),
    "client",
  );
  const sent: Uint8Array[] = [];
  const framed = new FramedConnection({
    read: () => Promise.resolve(null),
    write: (data) => (sent.push(data.slice()), Promise.resolve(data.length)),
  }, frameKeys);
  assert.equal(await framed.write(new Uint8Array(0)), 0);
  assert.equal(sent.length, 0);
  await framed.write(encoder.encode("x"));
  await framed.closeWrite();
  await framed.closeWrite(); // a second call sends nothing more
  assert.deepEqual(sent.map((frame) => new DataView(frame.buffer).getUint32(0)), [1, 0]);
  await assert.rejects(framed.write(encoder.encode("late")), Deno.errors.BrokenPipe);
});

Deno.test("a stream that ends before any frame says so, not 'after frame -1' (§11)", async () => {
  const frameKeys = deriveFrameKeys(
    keys,
    "encrypt",
    createChallenge(),
    createChallenge(),
    "server",
  );
  const empty = new FramedConnection({
    read: () => Promise.resolve(null),
    write: (data) => Promise.resolve(data.length),
  }, frameKeys);
  await assert.rejects(
    empty.read(new Uint8Array(16)),
    (error: unknown) =>
      error instanceof FrameError && error.reason === "truncated-stream" &&
      error.detail === "the connection ended before any frame arrived",
  );
});

/** Both sides' keys for one framed session, as the handshake derives them. */
function sessionKeys(mode: "integrity" | "encrypt") {
  const [serverChallenge, clientChallenge] = [createChallenge(), createChallenge()];
  return {
    client: deriveFrameKeys(keys, mode, serverChallenge, clientChallenge, "client"),
    server: deriveFrameKeys(keys, mode, serverChallenge, clientChallenge, "server"),
  };
}

/** The bytes `payload` bytes take on the wire when written at once: frames of up to 64 KiB. */
function wireLength(payload: number, mode: "integrity" | "encrypt"): number {
  const frames = Math.ceil(payload / MAX_FRAME_PAYLOAD);
  return payload + frames * (12 + (mode === "integrity" ? 32 : 16));
}

for (const mode of ["integrity", "encrypt"] as const) {
  Deno.test(`${mode} frames: once a burst is echoed, the read that waits has a 1 KiB buffer`, async () => {
    using pair = await tcpPair();
    const frameKeys = sessionKeys(mode);
    const recorder = new ReadRecorder(pair.server);
    const server = new FramedConnection(recorder, frameKeys.server);
    const client = new FramedConnection(pair.client, frameKeys.client);
    const echoing = upperCaseEcho(server);
    let wire = 0;
    for (const size of [64 * 1024, 1024 * 1024 + 5, 100]) {
      const burst = new Uint8Array(size).fill(0x62);
      const [, echoed] = await Promise.all([client.write(burst), readExactly(client, size)]);
      assert.ok(echoed.every((byte) => byte === 0x42), `the ${size}-byte burst came back`);
      wire += wireLength(size, mode);
      assert.equal(await recorder.readAfter(wire), 1024, `the read waiting after ${size} bytes`);
      assert.equal(server.heldBytes, 1024, `no payload or bulk buffer kept after ${size} bytes`);
    }
    assert.ok(recorder.reads.some((read) => read.size > 32 * 1024), "frames were read in bulk");
    await client.closeWrite();
    await echoing;
    await server.closeWrite();
    assert.equal(await client.read(new Uint8Array(1)), null);
  });

  Deno.test(`${mode} frames: read() lets go of a payload once all of it has been read`, async () => {
    using pair = await tcpPair();
    const frameKeys = sessionKeys(mode);
    const server = new FramedConnection(pair.server, frameKeys.server);
    const client = new FramedConnection(pair.client, frameKeys.client);
    await client.write(new Uint8Array(MAX_FRAME_PAYLOAD).fill(0x63));
    const buffer = new Uint8Array(40_000);
    assert.equal(await server.read(buffer), 40_000);
    assert.ok(server.heldBytes > 64 * 1024, "the frame is held while some of it is unread");
    assert.equal(await server.read(buffer), MAX_FRAME_PAYLOAD - 40_000);
    const waiting = server.read(buffer); // for the next frame, which the peer never sends
    assert.equal(server.heldBytes, 1024);
    await client.closeWrite();
    assert.equal(await waiting, null);
  });
}

Deno.test("framed echoes at the same time, sharing spare receive buffers, return every byte", async () => {
  await using started = await startServer();
  await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const mode = i % 2 === 0 ? "integrity" : "encrypt";
    const client = await connect({ secret: SECRET, port: started.port, mode });
    try {
      for (let round = 0; round < 3; round++) {
        // Each session its own letter, and a length that ends its frames at other boundaries.
        const size = 100_000 + i * 7_001 + round;
        const message = new Uint8Array(size).fill(0x61 + i);
        message[size - 1] = 0x30 + round; // a digit: stays as it is
        const [, echoed] = await Promise.all([
          writeAll(client, message),
          readExactly(client, size),
        ]);
        const wrong = echoed.findIndex((byte, at) =>
          byte !== (at === size - 1 ? 0x30 + round : 0x41 + i)
        );
        assert.equal(wrong, -1, `session ${i} (${mode}), round ${round}: byte ${wrong} is wrong`);
      }
      await client.closeWrite();
      assert.equal(await client.read(new Uint8Array(1)), null);
    } finally {
      client.close();
    }
  }));
});

Deno.test("writes that do not wait for each other still seal each frame under its own number", async () => {
  for (const size of [100, 40_000]) { // both engines: node:crypto below 16 KiB, WebCrypto above
    const { client } = sessionKeys("encrypt");
    const wire: Uint8Array[] = [];
    const framed = new FramedConnection({
      read: () => Promise.resolve(null),
      write: (data) => (wire.push(data.slice()), Promise.resolve(data.length)),
    }, client);
    const payload = new Uint8Array(size).fill(0x61);
    await Promise.all([framed.write(payload), framed.write(payload), framed.write(payload)]);
    // A sequence number sealed twice is a GCM nonce used twice (PROTOCOL.md §11).
    const numbers = wire.map((frame) => new DataView(frame.buffer).getUint32(8));
    assert.equal(new Set(numbers).size, 3, `${size} bytes: sequence numbers ${numbers}`);
  }
});

Deno.test("a direction carries at most 2^32 frames: the sender stops, the receiver refuses more (§11)", async () => {
  for (const mode of ["integrity", "encrypt"] as const) {
    const key = new FrameKey(mode, crypto.getRandomValues(new Uint8Array(FRAME_KEY_LENGTH)));
    const frameKeys: FrameKeys = { mode, send: key, receive: key };
    const last = 2 ** 32 - 1;
    // The sender: frame 2^32 - 1 is its last; the next write closes instead of reusing a nonce.
    const wire: Uint8Array[] = [];
    const sender = new FramedConnection(
      {
        read: () => Promise.resolve(null),
        write: (data) => (wire.push(data.slice()), Promise.resolve(data.length)),
      },
      frameKeys,
      { firstSequence: last },
    );
    await sender.write(encoder.encode("last"));
    await assert.rejects(
      sender.write(encoder.encode("one more")),
      (error) => error instanceof FrameError && error.reason === "sequence-exhausted",
    );
    assert.equal(wire.length, 1, `${mode}: nothing sent past the limit`);
    // The receiver, from a peer that ignores the limit: frame 2^32, sealed under the right key,
    // where 2^32 is due. Its tag verifies and its number is the expected one; it is refused all
    // the same, before any of it is delivered.
    const payload = encoder.encode("past the limit");
    const frame = new Uint8Array(HEADER_LENGTH + payload.length + key.tagLength);
    const header = new DataView(frame.buffer);
    header.setUint32(0, payload.length);
    header.setUint32(4, 1); // the upper half of 2^32
    header.setUint32(8, 0);
    await key.seal(frame, payload, 2 ** 32);
    let fed = false;
    const receiver = new FramedConnection(
      {
        read: (buffer) => {
          if (fed) return Promise.resolve(null);
          fed = true;
          buffer.set(frame);
          return Promise.resolve(frame.length);
        },
        write: (data) => Promise.resolve(data.length),
      },
      frameKeys,
      { firstSequence: 2 ** 32 },
    );
    await assert.rejects(
      receiver.read(new Uint8Array(64)),
      (error) => error instanceof FrameError && error.reason === "sequence-exhausted",
    );
  }
});

/**
 * The frame `seal` would send as number `seq`: a properly sealed frame, the kind an attacker (or a
 * peer that breaks the rules) might send after an end frame.
 */
async function frameNumbered(frameKeys: FrameKeys, seq: number, text: string): Promise<Uint8Array> {
  const seal = frameSealer(frameKeys);
  for (let i = 0; i < seq; i++) await seal.frame("-");
  return await seal.frame(text);
}

for (const mode of ["integrity", "encrypt"] as const) {
  Deno.test(`${mode} frames: bytes that arrive after the end frame, in a later read, never reach the service (§11)`, async () => {
    const endRead = Promise.withResolvers<void>();
    const lateSent = Promise.withResolvers<void>();
    const askedAgain = Promise.withResolvers<void>();
    const delivered: string[] = [];
    const readsAfterEnd: string[] = [];
    // A service that records every byte the frame layer gives it, and asks again once the end
    // frame has been read: only a read after the end could deliver what follows it.
    await using started = await startServer({
      handler: async (conn) => {
        const buffer = new Uint8Array(1024);
        for (let n; (n = await conn.read(buffer)) !== null;) {
          delivered.push(decoder.decode(buffer.subarray(0, n)));
        }
        endRead.resolve();
        await lateSent.promise;
        try {
          for (let i = 0; i < 2; i++) {
            const n = await conn.read(buffer);
            readsAfterEnd.push(n === null ? "end" : decoder.decode(buffer.subarray(0, n)));
          }
        } catch (error) {
          readsAfterEnd.push(String(error));
        } finally {
          askedAgain.resolve();
        }
        await conn.write(encoder.encode(delivered.join("").toUpperCase()));
      },
    });
    const { server, logger, port } = started;
    const raw = await openRaw(port);
    try {
      const hello = await sendHello(raw.conn, keys, raw.challenge, {
        digest: "sha256",
        mode,
        forwardSecrecy: true,
      });
      assert.equal(hello.outcome, "accepted");
      const frameKeys = (hello as { session: { frameKeys: FrameKeys } }).session.frameKeys;
      const seal = frameSealer(frameKeys);
      await writeAll(raw.conn, concat([await seal.frame("abc"), await seal.end()]));
      await withTimeout(endRead.promise, "the service to read the end frame");
      // Only now, so the server has read nothing past its end frame: the next frame, properly
      // sealed under the next number, and bytes that are no frame at all.
      const late = concat([
        await frameNumbered(frameKeys, 2, "smuggled"),
        encoder.encode("junk"),
      ]);
      await writeAll(raw.conn, late);
      await raw.conn.closeWrite();
      lateSent.resolve();
      await withTimeout(askedAgain.promise, "the service's reads after the end frame");
      assert.deepEqual(delivered, ["abc"]);
      assert.deepEqual(readsAfterEnd, ["end", "end"], "the service's reads after the end frame");
      // The session then ends as any other: the reply, and the server's end frame.
      const reply = new FramedConnection(raw.conn, frameKeys);
      assert.equal(decoder.decode(await readExactly(reply, 3)), "ABC");
      assert.equal(await reply.read(new Uint8Array(16)), null, "the server's end frame");
    } finally {
      lateSent.resolve();
      raw.conn.close();
    }
    await logger.waitFor("closed", { remote: raw.remote });
    // Discarded unread (§11): the receiver had stopped reading, so there was nothing to refuse.
    assert.deepEqual((await server.stats()).frameErrors, {});
  });

  Deno.test(`${mode} frames: a client reader never returns bytes the server sent after its end frame, in a later read (§11)`, async () => {
    const endRead = Promise.withResolvers<void>();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      listener.close();
      conn.setNoDelay(true);
      try {
        const outcome = await authenticateClient(conn, { keys });
        assert.ok(outcome.authenticated && outcome.protocol === 2 && outcome.frameKeys);
        const seal = frameSealer(outcome.frameKeys);
        await writeAll(conn, concat([await seal.frame("HI"), await seal.end()]));
        await endRead.promise;
        // The client has read the end frame: now the next frame, sealed as it should be, and junk.
        const late = await frameNumbered(outcome.frameKeys, 2, "SMUGGLED");
        await writeAll(conn, concat([late, encoder.encode("junk")]));
        await conn.closeWrite();
      } finally {
        conn.close();
      }
    })();
    served.catch(() => {}); // awaited below: an early failure is reported there
    const client = await connect({ secret: SECRET, port: listener.addr.port, mode });
    try {
      const buffer = new Uint8Array(64);
      const n = await client.read(buffer);
      assert.equal(decoder.decode(buffer.subarray(0, n!)), "HI");
      assert.equal(await client.read(buffer), null, "the server's end frame");
      endRead.resolve();
      await withTimeout(served, "the server to send its late bytes");
      assert.equal(await client.read(buffer), null, "a read after the late bytes were sent");
      assert.equal(client.bytesReceived, 2);
    } finally {
      endRead.resolve();
      client.close();
      await served.catch(() => {});
    }
  });
}
