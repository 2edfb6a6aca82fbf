/**
 * Hello version 03 (docs/PROTOCOL.md §12): §13's test vectors, the forward-secrecy property on a
 * recorded session, and the downgrades a man in the middle might try.
 */

import assert from "node:assert/strict";
import { readFull, writeAll } from "../_io.ts";
import { connect, exchange, HandshakeRejectedError } from "../client/client.ts";
import { ServerAuthenticationError } from "../client/client.ts";
import { readChallenge } from "../protocol/challenge.ts";
import { FramedConnection, type FrameKeys } from "../protocol/frames.ts";
import type { FrameKey } from "../protocol/frame_key.ts";
import { keyShareFromPrivateBytes, sharedSecret } from "../protocol/key_exchange.ts";
import { type DigestName, SecretKeys } from "../protocol/keys.ts";
import {
  computeProof,
  deriveFrameKeys,
  encodeHelloHead,
  REJECTION_STATUS,
} from "../protocol/v2.ts";
import { concat, decoder, encoder, readToEnd, SECRET, startServer } from "./_helpers.ts";

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

/** The payload of the first client frame, decrypted with keys derived as §11 says (no exchange). */
async function decryptFirstFrameWithSecretOnly(
  recording: { toServer: Uint8Array; toClient: Uint8Array },
  helloLength: number,
): Promise<string> {
  const Cs = recording.toClient.subarray(0, 32);
  const Cc = recording.toServer.subarray(8 + 2, 8 + 2 + 32); // after "{sha256}", version, mode
  const keys = deriveFrameKeys(await SecretKeys.import(SECRET), "encrypt", Cs, Cc, "server");
  return await openFirstFrame(keys.receive, recording.toServer.subarray(helloLength));
}

/**
 * Decrypts the first encrypt frame (§11) of `frames` with `key`, through WebCrypto (not the
 * synchronous path that sealed it); throws if the key is wrong.
 */
async function openFirstFrame(key: FrameKey, frames: Uint8Array): Promise<string> {
  const n = new DataView(frames.buffer, frames.byteOffset).getUint32(0);
  const plaintext = await crypto.subtle.decrypt(
    {
      name: "AES-GCM",
      iv: new Uint8Array([0, 0, 0, 0, ...frames.subarray(4, 12)]),
      additionalData: new Uint8Array(frames.subarray(0, 12)),
    },
    await key.webCryptoKey(),
    new Uint8Array(frames.subarray(12, 12 + n + 16)),
  );
  return decoder.decode(plaintext);
}

Deno.test("forward secrecy: with the secret, a recorded 02 session decrypts and an 03 one does not", async () => {
  await using started = await startServer();
  const message = "the launch code is 0000";
  const session = (forwardSecrecy: boolean) =>
    recordedSession(started.port, async (port) => {
      const reply = await exchange({
        secret: SECRET,
        port,
        forwardSecrecy,
        message: encoder.encode(message),
      });
      assert.equal(decoder.decode(reply), message.toUpperCase());
    });

  // Version 02: the keys come from the secret and the two public challenges alone.
  const old = await session(false);
  assert.equal(await decryptFirstFrameWithSecretOnly(old, 74), message);

  // Version 03: the same attack, and one with a made-up Z, both fail: Z needed a private key
  // that never left either process and is gone with the connection.
  const recorded = await session(true);
  assert.ok(!decoder.decode(recorded.toServer).includes(message), "encrypted on the wire");
  await assert.rejects(decryptFirstFrameWithSecretOnly(recorded, 106));
  // The 03 hello's head is 74 bytes: "{sha256}", version, mode, Cc (10-42), Pc (42-74).
  const head = recorded.toServer.subarray(0, 74);
  const Ps = recorded.toClient.subarray(33, 65); // after Cs and the status byte
  const guess = keyShareFromPrivateBytes(crypto.getRandomValues(new Uint8Array(32)));
  const wrongZ = (sharedSecret(guess, head.subarray(42, 74)))!;
  const keys = deriveFrameKeys(
    await SecretKeys.import(SECRET),
    "encrypt",
    recorded.toClient.subarray(0, 32),
    head.subarray(10, 42),
    "server",
    { z: wrongZ, head, serverShare: Ps },
  );
  await assert.rejects(openFirstFrame(keys.receive, recorded.toServer.subarray(106)));
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
  // A fake server that answers every hello with it.
  const fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await fake.accept();
    try {
      await writeAll(conn, crypto.getRandomValues(new Uint8Array(32)));
      await readFull(conn, new Uint8Array(106));
      await writeAll(conn, replayed);
      return (await readToEnd(conn)).length;
    } finally {
      conn.close();
    }
  })();
  try {
    await assert.rejects(
      connect({ secret: SECRET, port: fake.addr.port }),
      ServerAuthenticationError,
    );
    assert.equal(await served, 0, "the client sent nothing after the forged outcome");
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
