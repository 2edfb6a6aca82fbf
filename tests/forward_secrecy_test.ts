/**
 * Hello version 03 (docs/PROTOCOL.md §12): §13's test vectors, the forward-secrecy property on a
 * recorded session, and the downgrades a man in the middle might try.
 */

import assert from "node:assert/strict";
import { writeAll } from "../_io.ts";
import { connect, exchange, HandshakeRejectedError } from "../client/client.ts";
import { ServerAuthenticationError } from "../client/client.ts";
import { createChallenge, readChallenge } from "../protocol/challenge.ts";
import { FramedConnection, type FrameKeys } from "../protocol/frames.ts";
import { keyShareFromPrivateBytes, sharedSecret } from "../protocol/key_exchange.ts";
import { type DigestName, SecretKeys } from "../protocol/keys.ts";
import {
  computeProof,
  deriveFrameKeys,
  encodeHelloHead,
  REJECTION_STATUS,
} from "../protocol/v2.ts";
import { upperCaseEcho } from "../server/upper_case_echo.ts";
import {
  concat,
  decoder,
  encoder,
  parseHello,
  readHello,
  readToEnd,
  SECRET,
  startServer,
  withTimeout,
} from "./_helpers.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const bytes = (text: string) => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));

/** §13's values, by vector: `name = hex` lines, with continuation lines of more hex. */
async function vectorsFromProtocolDoc(): Promise<Record<string, Record<string, string>>> {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const section = doc.slice(doc.indexOf("## 13. Test vectors"));
  const blocks: Record<string, Record<string, string>> = {};
  let current = "inputs";
  // Split at the fences, prose and code alternate: a heading in the prose names the next block.
  for (const [index, part] of section.split("```").entries()) {
    if (index % 2 === 0) {
      const heading = part.match(/### Vector (\w)/g)?.at(-1);
      if (heading) current = heading.slice(-1);
      continue;
    }
    const values: Record<string, string> = {};
    let name = "";
    for (const line of part.split("\n")) {
      const match = line.match(/^(\S.*?)\s+= ([0-9a-f]+)$/);
      if (match) values[name = match[1]] = match[2];
      else if (/^\s+[0-9a-f]+$/.test(line)) values[name] += line.trim();
    }
    blocks[current] = values;
  }
  return blocks;
}

/** The frames a FramedConnection sends, each as hex. */
async function framesSent(keys: FrameKeys, send: (framed: FramedConnection) => Promise<void>) {
  const wire: string[] = [];
  const stream = {
    read: () => Promise.resolve(null),
    write: (chunk: Uint8Array) => (wire.push(hex(chunk)), Promise.resolve(chunk.length)),
  };
  await send(new FramedConnection(stream, keys));
  return wire;
}

for (
  const [vector, digest, mode] of [
    ["A", "sha256", "encrypt"],
    ["B", "sha512", "integrity"],
  ] as const
) {
  Deno.test(`PROTOCOL.md §13 vector ${vector} (${digest}, ${mode}): every byte matches`, async () => {
    const all = await vectorsFromProtocolDoc();
    const inputs = all.inputs;
    const expected = all[vector];
    assert.ok(inputs && expected, "the vectors are in the document");
    const keys = await SecretKeys.import(bytes(inputs.secret));
    const [Cs, Cc] = [bytes(inputs.Cs), bytes(inputs.Cc)];
    const client = keyShareFromPrivateBytes(bytes(inputs["client private"]));
    const server = keyShareFromPrivateBytes(bytes(inputs["server private"]));
    assert.equal(hex(client.publicKey), expected.Pc);
    assert.equal(hex(server.publicKey), expected.Ps);

    const head = encodeHelloHead(digest as DigestName, mode, Cc, client.publicKey);
    assert.equal(hex(head), expected.head);
    const clientProof = computeProof(keys, digest, "client", Cs, head);
    assert.equal(hex(clientProof), expected.client_proof);
    assert.equal(hex(concat([head, clientProof])), expected.hello);

    const z = (sharedSecret(client, server.publicKey))!;
    assert.equal(hex(z), expected.Z);
    assert.equal(hex((sharedSecret(server, client.publicKey))!), expected.Z, "both sides");
    const serverProof = computeProof(keys, digest, "server", Cs, head, server.publicKey);
    assert.equal(hex(serverProof), expected.server_proof);
    assert.equal(hex(concat([Uint8Array.of(0), server.publicKey, serverProof])), expected.outcome);

    const exchange = { z, head, serverShare: server.publicKey };
    const clientKeys = deriveFrameKeys(keys, mode, Cs, Cc, "client", exchange);
    const serverKeys = deriveFrameKeys(keys, mode, Cs, Cc, "server", exchange);
    const fromClient = await framesSent(clientKeys, async (framed) => {
      await framed.write(encoder.encode("hello"));
      await framed.closeWrite();
    });
    assert.deepEqual(fromClient, [expected["c->s frame 0"], expected["c->s end frame 1"]]);
    const fromServer = await framesSent(serverKeys, async (framed) => {
      await framed.write(encoder.encode("HELLO"));
    });
    assert.deepEqual(fromServer, [expected["s->c frame 0"]]);
  });
}

/** A TCP relay on loopback that records both directions, as an eavesdropper on the path would. */
async function recordedSession(
  serverPort: number,
  run: (relayPort: number) => Promise<void>,
): Promise<{ toServer: Uint8Array; toClient: Uint8Array }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const recorded = { toServer: [] as Uint8Array[], toClient: [] as Uint8Array[] };
  const relayed = (async () => {
    const client = await listener.accept();
    const server = await Deno.connect({ hostname: "127.0.0.1", port: serverPort });
    const pump = async (from: Deno.TcpConn, to: Deno.TcpConn, into: Uint8Array[]) => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (let n; (n = await from.read(buffer)) !== null;) {
          into.push(buffer.slice(0, n));
          await writeAll(to, buffer.subarray(0, n));
        }
        await to.closeWrite();
      } catch {
        // a reset ends the recording of this direction
      }
    };
    await Promise.all([
      pump(client, server, recorded.toServer),
      pump(server, client, recorded.toClient),
    ]);
    client.close();
    server.close();
  })();
  try {
    await run(listener.addr.port);
  } finally {
    listener.close();
    await relayed;
  }
  return { toServer: concat(recorded.toServer), toClient: concat(recorded.toClient) };
}

/**
 * A recorded `encrypt` session taken apart by docs/PROTOCOL.md alone: Cs (§1), the hello (§9,
 * §12), Ps from the outcome (§10, §12), and the client's frames (§11), which must account for
 * every byte the client sent after the hello, ending with its end frame.
 */
function dissect(recording: { toServer: Uint8Array; toClient: Uint8Array }) {
  const hello = parseHello(recording.toServer);
  assert.equal(hello.mode, 2, "an encrypt session");
  const Cs = recording.toClient.subarray(0, 32);
  const outcome = recording.toClient.subarray(32);
  assert.equal(outcome[0], 0, "the server accepted the hello");
  const Ps = outcome.subarray(1, 1 + hello.keyShare.length);
  const clientFrames = recording.toServer.subarray(hello.bytes.length);
  const frameLengths: number[] = [];
  for (let at = 0, n = -1; n !== 0; at += 12 + n + 16) {
    assert.ok(at + 12 <= clientFrames.length, `a frame header at ${at} of the client's frames`);
    n = new DataView(clientFrames.buffer, clientFrames.byteOffset + at).getUint32(0);
    frameLengths.push(n);
    if (n === 0) {
      assert.equal(at + 12 + 16, clientFrames.length, "the client's end frame is its last byte");
    }
  }
  return { Cs, hello, Ps, clientFrames, frameLengths };
}

/** X25519 (RFC 7748 §5) through WebCrypto, not the product's node:crypto: Z from a raw private key. */
async function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Promise<Uint8Array> {
  const algorithm = { name: "X25519" };
  const pkcs8 = concat([bytes("302e020100300506032b656e04220420"), privateKey]); // RFC 8410 §7
  const own = await crypto.subtle.importKey("pkcs8", pkcs8, algorithm, false, ["deriveBits"]);
  const peer = await crypto.subtle.importKey("raw", publicKey.slice(), algorithm, false, []);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: peer }, own, 256));
}

/**
 * What an eavesdropper who holds the secret (and, with `z`, Z) reads in a recording: the first
 * client frame, opened with the client->server encrypt key derived exactly as the document says,
 * through WebCrypto and none of the product's code. Without `z`, §11's key from the secret alone;
 * with `z`, §12's from Z || secret, with the hello's head and Ps in the info. Throws if the key is
 * wrong. `secret` is the tests' own unless given.
 */
async function eavesdrop(
  recording: { toServer: Uint8Array; toClient: Uint8Array },
  z?: Uint8Array,
  secret: Uint8Array = SECRET,
): Promise<string> {
  const { Cs, hello, Ps, clientFrames } = dissect(recording);
  const info = z === undefined
    ? encoder.encode("hmac-echo v2 encrypt client->server")
    : concat([encoder.encode("hmac-echo v3 encrypt client->server"), hello.head, Ps]);
  const ikm = await crypto.subtle.importKey(
    "raw",
    z === undefined ? new Uint8Array(secret) : concat([z, secret]),
    "HKDF",
    false,
    ["deriveKey"],
  );
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: concat([Cs, hello.clientChallenge]), info },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  const n = new DataView(clientFrames.buffer, clientFrames.byteOffset).getUint32(0);
  const plaintext = await crypto.subtle.decrypt(
    {
      name: "AES-GCM",
      iv: concat([new Uint8Array(4), clientFrames.subarray(4, 12)]),
      additionalData: clientFrames.slice(0, 12),
    },
    key,
    clientFrames.slice(12, 12 + n + 16),
  );
  return decoder.decode(plaintext);
}

/** Z guessed as an attacker can: X25519 of a key pair of their own with Pc, and with Ps. */
async function guessedZs(recording: { toServer: Uint8Array; toClient: Uint8Array }) {
  const { hello, Ps } = dissect(recording);
  const own = crypto.getRandomValues(new Uint8Array(32));
  return [await x25519(own, hello.keyShare), await x25519(own, Ps)];
}

const MESSAGE = "the launch code is 0000";

Deno.test("forward secrecy: with the secret, a recorded 02 session decrypts and an 03 one does not", async () => {
  await using started = await startServer();
  const session = (forwardSecrecy: boolean) =>
    recordedSession(started.port, async (port) => {
      const reply = await exchange({
        secret: SECRET,
        port,
        forwardSecrecy,
        message: encoder.encode(MESSAGE),
      });
      assert.equal(decoder.decode(reply), MESSAGE.toUpperCase());
    });

  // Version 02: the keys come from the secret and the two public challenges alone.
  const old = await session(false);
  const oldHello = dissect(old).hello;
  assert.deepEqual([oldHello.version, oldHello.bytes.length], [2, 74], '"{sha256}" 02: 74 bytes');
  assert.equal(await eavesdrop(old), MESSAGE);

  // Version 03, the default: the hello carries Pc (106 bytes for sha256, §9 and §12), and the
  // client's frames follow it directly: one with the message, then the end frame.
  const recorded = await session(true);
  const { hello, frameLengths } = dissect(recorded);
  assert.deepEqual([hello.version, hello.bytes.length], [3, 106], '"{sha256}" 03: 106 bytes');
  assert.deepEqual(frameLengths, [MESSAGE.length, 0]);
  assert.ok(!decoder.decode(recorded.toServer).includes(MESSAGE), "encrypted on the wire");
  // The same attack, and §12's derivation with any Z the attacker can make, all fail: Z needed
  // a private key that never left either process and is gone with the connection. (The control
  // below shows this analysis does read such a recording once Z is known.)
  await assert.rejects(eavesdrop(recorded));
  for (const z of await guessedZs(recorded)) await assert.rejects(eavesdrop(recorded, z));
});

/**
 * A version 03 server whose ephemeral private key is fixed (§13's), so that Z can be computed from
 * a recording of its session: otherwise as the protocol says, serving one upper-case echo.
 */
function knownKeyServer(serverPrivate: Uint8Array): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      const keys = await SecretKeys.import(SECRET);
      const Cs = createChallenge();
      await writeAll(conn, Cs);
      const hello = await readHello(conn);
      assert.deepEqual([hello.digest, hello.version, hello.mode], ["sha256", 3, 2]);
      const share = keyShareFromPrivateBytes(serverPrivate);
      const proof = computeProof(keys, "sha256", "server", Cs, hello.head, share.publicKey);
      await writeAll(conn, concat([Uint8Array.of(0), share.publicKey, proof]));
      const z = sharedSecret(share, hello.keyShare)!;
      const exchange = { z, head: hello.head, serverShare: share.publicKey };
      const frameKeys = deriveFrameKeys(
        keys,
        "encrypt",
        Cs,
        hello.clientChallenge,
        "server",
        exchange,
      );
      const framed = new FramedConnection(conn, frameKeys);
      await upperCaseEcho(framed);
      await framed.closeWrite();
    } finally {
      conn.close();
    }
  })();
  done.catch(() => {}); // awaited by the test: an early failure is reported there, not as uncaught
  return { port: listener.addr.port, done };
}

Deno.test("forward secrecy, the control: the same analysis reads a recorded 03 session once Z is known", async (t) => {
  const vectors = await vectorsFromProtocolDoc();
  const serverPrivate = bytes(vectors.inputs["server private"]);

  await t.step("§13 vector A, as if recorded: decrypts to its frame's payload", async () => {
    const a = vectors.A;
    const recording = {
      toClient: concat([bytes(vectors.inputs.Cs), bytes(a.outcome)]),
      toServer: concat([bytes(a.hello), bytes(a["c->s frame 0"]), bytes(a["c->s end frame 1"])]),
    };
    const z = await x25519(serverPrivate, bytes(a.Pc));
    assert.equal(hex(z), a.Z);
    const secret = bytes(vectors.inputs.secret);
    assert.equal(await eavesdrop(recording, z, secret), "hello");
    await assert.rejects(eavesdrop(recording, undefined, secret));
  });

  await t.step("the client's own session with a server whose private key is known", async () => {
    const server = knownKeyServer(serverPrivate);
    try {
      const recording = await recordedSession(server.port, async (port) => {
        const reply = await exchange({ secret: SECRET, port, message: encoder.encode(MESSAGE) });
        assert.equal(decoder.decode(reply), MESSAGE.toUpperCase());
      });
      const { hello, Ps } = dissect(recording);
      assert.deepEqual([hello.version, hello.bytes.length], [3, 106]);
      // Z from the recording's Pc and the server's private key: the recording now reads.
      assert.equal(
        await eavesdrop(recording, await x25519(serverPrivate, hello.keyShare)),
        MESSAGE,
      );
      assert.equal(hex(Ps), vectors.A.Ps, "the server's share is the known key's");
      // And with the secret alone, as in the test above, it does not.
      await assert.rejects(eavesdrop(recording));
      for (const z of await guessedZs(recording)) await assert.rejects(eavesdrop(recording, z));
    } finally {
      await server.done;
    }
  });
});

Deno.test("every connection gets fresh key pairs: two recorded sessions share neither Pc nor Ps", async () => {
  await using started = await startServer();
  const session = () =>
    recordedSession(started.port, async (port) => {
      const reply = await exchange({ secret: SECRET, port, message: encoder.encode("k") });
      assert.equal(decoder.decode(reply), "K");
    });
  const [first, second] = [dissect(await session()), dissect(await session())];
  for (const { hello, Ps } of [first, second]) {
    assert.deepEqual([hello.version, hello.keyShare.length, Ps.length], [3, 32, 32]);
  }
  assert.notEqual(hex(second.hello.keyShare), hex(first.hello.keyShare), "the client's Pc");
  assert.notEqual(hex(second.Ps), hex(first.Ps), "the server's Ps");
  assert.notEqual(hex(first.Ps), hex(first.hello.keyShare), "each side its own pair");
});

/** A valid 03 hello for `challenge`, then `tamper` applied to it by a man in the middle. */
async function tamperedHello(
  challenge: Uint8Array,
  tamper: (hello: Uint8Array) => Uint8Array,
): Promise<Uint8Array> {
  const keys = await SecretKeys.import(SECRET);
  const share = keyShareFromPrivateBytes(crypto.getRandomValues(new Uint8Array(32)));
  const head = encodeHelloHead(
    "sha256",
    "encrypt",
    crypto.getRandomValues(new Uint8Array(32)),
    share.publicKey,
  );
  const proof = computeProof(keys, "sha256", "client", challenge, head);
  return tamper(concat([head, proof]));
}

Deno.test("downgrades in the hello are refused by the server: strip, swap, version, mode", async () => {
  await using started = await startServer({ throttle: false });
  const attacker = keyShareFromPrivateBytes(crypto.getRandomValues(new Uint8Array(32)));
  const cases: [string, (hello: Uint8Array) => Uint8Array, keyof typeof REJECTION_STATUS][] = [
    // Version 02 with the key share cut out: the proof covered version 03 and Pc.
    [
      "strip the key share",
      (h) => concat([h.subarray(0, 8), Uint8Array.of(2), h.subarray(9, 42), h.subarray(74)]),
      "wrong-proof",
    ],
    [
      "swap the key share",
      (h) => concat([h.subarray(0, 42), attacker.publicKey, h.subarray(74)]),
      "wrong-proof",
    ],
    [
      "encrypt rewritten to integrity",
      (h) => concat([h.subarray(0, 9), Uint8Array.of(1), h.subarray(10)]),
      "wrong-proof",
    ],
    [
      "encrypt rewritten to plain",
      (h) => concat([h.subarray(0, 9), Uint8Array.of(0), h.subarray(10)]),
      "malformed-hello",
    ],
  ];
  for (const [what, tamper, reason] of cases) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: started.port });
    try {
      const challenge = await readChallenge(conn);
      await writeAll(conn, await tamperedHello(challenge, tamper));
      const reply = await readToEnd(conn);
      assert.deepEqual([...reply], [REJECTION_STATUS[reason]], what);
    } finally {
      conn.close();
    }
  }
  assert.equal((await started.server.stats()).authenticated, 0);
});

Deno.test("a server key share replayed from another session is refused by the client", async () => {
  // A real session's outcome, recorded by a relay.
  await using started = await startServer();
  const recording = await recordedSession(started.port, async (port) => {
    await exchange({ secret: SECRET, port, message: encoder.encode("x") });
  });
  const replayed = recording.toClient.subarray(32, 32 + 1 + 32 + 32); // 00 || Ps || proof
  // A fake server that answers the hello, whatever its size (§9, §12), with it.
  const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await fake.accept();
    try {
      await writeAll(conn, crypto.getRandomValues(new Uint8Array(32)));
      const hello = await readHello(conn);
      assert.equal(hello.version, 3, "the client sent a key share");
      await writeAll(conn, replayed);
      return (await readToEnd(conn)).length;
    } finally {
      conn.close();
    }
  })();
  served.catch(() => {}); // awaited below: an early failure is reported there
  try {
    // A client that wrongly accepts is closed at once, so the fake ends and the test fails.
    const outcome = await withTimeout(
      connect({ secret: SECRET, port: fake.addr.port }).then(
        (client) => (client.close(), "accepted"),
        (error: unknown) => error,
      ),
      "the client's verdict",
    );
    assert.ok(outcome instanceof ServerAuthenticationError, `got ${outcome}`);
    assert.match(outcome.message, /proof does not verify/);
    assert.equal(
      await withTimeout(served, "the fake server"),
      0,
      "the client sent nothing after the forged outcome",
    );
  } finally {
    fake.close();
  }
});

Deno.test("--require-forward-secrecy refuses v1 and version 02 clients, serves version 03", async () => {
  await using started = await startServer({ requireForwardSecrecy: true });
  const { port, server } = started;
  await assert.rejects(
    exchange({ secret: SECRET, port, forwardSecrecy: false, message: encoder.encode("x") }),
    (error: unknown) =>
      error instanceof HandshakeRejectedError && error.reason === "forward-secrecy-required",
  );
  await assert.rejects(
    exchange({ secret: SECRET, port, protocol: 1, message: encoder.encode("x") }),
    HandshakeRejectedError,
  );
  for (const mode of ["integrity", "encrypt"] as const) {
    const client = await connect({ secret: SECRET, port, mode });
    try {
      assert.ok(client.forwardSecret);
    } finally {
      client.close();
    }
  }
  // The server counts a session once its keys are derived, which may be after the client has them.
  await started.logger.waitForCount(["authenticated"], 2);
  const stats = await server.stats();
  assert.deepEqual(stats.rejected, { "forward-secrecy-required": 1, "v1-refused": 1 });
  assert.equal(stats.authenticatedForwardSecret, 2);
  assert.equal(stats.throttled, 0, "mismatches, not guesses");
});
