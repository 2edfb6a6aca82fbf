/**
 * Protocol v2 over real sockets: every digest and mode, the server's policy, and the attacks the
 * design must stop (docs/PROTOCOL.md §8-§10). Frame-layer attacks are in frames_test.ts.
 */

import assert from "node:assert/strict";
import {
  connect,
  exchange,
  HandshakeRejectedError,
  ServerAuthenticationError,
} from "../client/client.ts";
import { authenticateClient } from "../protocol/handshake.ts";
import { createChallenge, readChallenge } from "../protocol/challenge.ts";
import type { FrameMode } from "../protocol/frames.ts";
import { computeProof, encodeHelloHead, REJECTION_STATUS } from "../protocol/v2.ts";
import { createKeyShare } from "../protocol/key_exchange.ts";
import { type DigestName, DIGESTS, SecretKeys } from "../protocol/keys.ts";
import { concat, writeAll } from "../_io.ts";
import {
  answerRaw,
  decoder,
  encoder,
  openRaw,
  type ParsedHello,
  readExactly,
  readHello,
  readToEnd,
  SECRET,
  startServer,
  withTimeout,
} from "./_helpers.ts";

const keys = await SecretKeys.import(SECRET);
const DIGEST_NAMES = Object.keys(DIGESTS) as DigestName[];
const MODES: FrameMode[] = ["plain", "integrity", "encrypt"];

/** A complete, valid hello for `serverChallenge`, as an honest client would send it (§9). */
function helloFor(
  serverChallenge: Uint8Array,
  options: {
    digest?: DigestName;
    mode?: FrameMode;
    clientChallenge?: Uint8Array;
    with?: SecretKeys;
  } = {},
): Uint8Array {
  const digest = options.digest ?? "sha256";
  const head = encodeHelloHead(
    digest,
    options.mode ?? "plain",
    options.clientChallenge ?? createChallenge(),
  );
  return concat([
    head,
    computeProof(options.with ?? keys, digest, "client", serverChallenge, head),
  ]);
}

for (const digest of DIGEST_NAMES) {
  for (const mode of MODES) {
    Deno.test(`v2 with ${digest} in mode ${mode}: both sides authenticated, echo intact (§9-§11)`, async () => {
      await using started = await startServer();
      const { server, logger, port } = started;
      const text = "v2: grüße, ﬁne, 😀 ".repeat(50);
      const reply = await exchange({
        secret: SECRET,
        port,
        digest,
        mode,
        message: encoder.encode(text),
      });
      assert.equal(decoder.decode(reply), text.toUpperCase());
      const authenticated = await logger.waitFor("authenticated");
      assert.deepEqual(
        [authenticated.fields.protocol, authenticated.fields.digest, authenticated.fields.mode],
        [2, digest, mode],
      );
      assert.equal((await server.stats()).authenticatedV2, 1);
    });
  }
}

for (const mode of ["integrity", "encrypt"] as const) {
  Deno.test(`v2 ${mode}: 3 MiB in frames of at most 64 KiB comes back whole and in order`, async () => {
    await using started = await startServer();
    const { port } = started;
    const message = new Uint8Array(3 * 1024 * 1024 + 7);
    for (let i = 0; i < message.length; i++) message[i] = 0x61 + (i % 26);
    const reply = await exchange({ secret: SECRET, port, mode, message });
    assert.equal(reply.length, message.length);
    assert.ok(
      reply.every((byte, i) => byte === message[i] - 0x20),
      "every byte upper-cased, in order",
    );
  });
}

Deno.test("a server requiring v2 refuses a v1 answer (v1-refused, §8)", async () => {
  await using started = await startServer({ require: "v2" });
  const { logger, port } = started;
  await assert.rejects(
    exchange({ secret: SECRET, port, protocol: 1, message: encoder.encode("hi") }),
    HandshakeRejectedError,
  );
  assert.equal((await logger.waitFor("rejected")).fields.reason, "v1-refused");
  // A hang-up or garbage is not a v1 client: it keeps the reason v1 gives it (§3).
  for (
    const [bytes, reason] of [["", "incomplete-answer"], ["z".repeat(40), "malformed-answer"]]
  ) {
    const { reply, remote } = await answerRaw(port, () => encoder.encode(bytes));
    assert.equal(reply.length, 0);
    assert.equal((await logger.waitFor("rejected", { remote })).fields.reason, reason);
  }
});

Deno.test("a server whose digests leave out sha1 refuses v1 answers too (v1-refused, §8)", async () => {
  await using started = await startServer({ digests: ["sha256", "sha512"] });
  const { server, logger, port } = started;
  // A right answer under the right secret: only the digest list can refuse it.
  await assert.rejects(
    exchange({ secret: SECRET, port, protocol: 1, message: encoder.encode("hi") }),
    (error: unknown) => error instanceof HandshakeRejectedError && error.reason === "rejected",
  );
  const rejected = await logger.waitFor("rejected");
  assert.equal(rejected.fields.reason, "v1-refused");
  assert.match(String(rejected.fields.detail), /sha1/);
  // A v2 client naming an allowed digest is served as before.
  const reply = await exchange({ secret: SECRET, port, message: encoder.encode("ok") });
  assert.equal(decoder.decode(reply), "OK");
  const stats = await server.stats();
  assert.deepEqual([stats.rejected, stats.authenticated], [{ "v1-refused": 1 }, 1]);
});

for (
  const [require, refused, accepted] of [
    ["integrity", ["plain"], ["integrity", "encrypt"]],
    ["encrypt", ["plain", "integrity"], ["encrypt"]],
  ] as const
) {
  Deno.test(`a server requiring ${require} refuses weaker modes with mode-refused (§9)`, async () => {
    await using started = await startServer({ require });
    const { server, logger, port } = started;
    for (const mode of refused) {
      await assert.rejects(
        exchange({ secret: SECRET, port, mode, message: encoder.encode("x") }),
        (error: unknown) =>
          error instanceof HandshakeRejectedError && error.reason === "mode-refused" &&
          /refuses the frame mode this client asked for \(mode-refused, an unauthenticated answer\)/
            .test(error.message),
      );
    }
    for (const mode of accepted) {
      const reply = await exchange({ secret: SECRET, port, mode, message: encoder.encode("y") });
      assert.equal(decoder.decode(reply), "Y");
    }
    assert.deepEqual((await server.stats()).rejected, { "mode-refused": refused.length });
    assert.equal(logger.find("rejected", { reason: "mode-refused" }).length, refused.length);
  });
}

Deno.test("a server can forbid SHA-1: a v2 client naming it is refused with unsupported-digest", async () => {
  await using started = await startServer({ digests: ["sha256", "sha512"] });
  const { logger, port } = started;
  await assert.rejects(
    exchange({ secret: SECRET, port, digest: "sha1", message: encoder.encode("x") }),
    (error: unknown) =>
      error instanceof HandshakeRejectedError && error.reason === "unsupported-digest",
  );
  const rejected = await logger.waitFor("rejected");
  assert.equal(rejected.fields.reason, "unsupported-digest");
  assert.match(
    String(rejected.fields.detail),
    /"sha1" is not allowed here \(allowed: sha256, sha512\)/,
  );
  const reply = await exchange({
    secret: SECRET,
    port,
    digest: "sha512",
    message: encoder.encode("z"),
  });
  assert.equal(decoder.decode(reply), "Z");
});

Deno.test("malformed and unknown hellos get their status byte and reason, then the connection ends (§9)", async () => {
  const { server, logger, port } = await startServer({ throttle: false }); // many failures, one address
  const padded = (text: string, byteAt?: [number, number]) => {
    const bytes = new Uint8Array(120);
    bytes.set(encoder.encode(text));
    if (byteAt) bytes[byteAt[0]] = byteAt[1];
    return bytes;
  };
  const cases: [string, Uint8Array, keyof typeof REJECTION_STATUS][] = [
    ["unknown digest name", padded("{md5}\x02\x00"), "unsupported-digest"],
    ["digest name in the wrong case", padded("{SHA256}\x02\x00"), "unsupported-digest"],
    ["a name with control bytes", padded("{sha\x00256}\x02\x00"), "unsupported-digest"],
    ["no closing brace in 16 bytes", padded("{sha256sha256sha256"), "malformed-hello"],
    ["an empty name", padded("{}\x02\x00"), "unsupported-digest"],
    ["version 4", padded("{sha256}\x04\x01"), "unsupported-version"],
    [
      "version 3 in plain mode: no key exchange there (§12)",
      padded("{sha256}\x03\x00"),
      "malformed-hello",
    ],
    ["mode 7", padded("{sha256}\x02\x07"), "malformed-hello"],
  ];
  try {
    for (const [what, hello, reason] of cases) {
      const { reply: reply } = await answerRaw(port, () => hello);
      assert.deepEqual([...reply], [REJECTION_STATUS[reason]], what);
      const rejected = await logger.waitFor("rejected", { reason });
      assert.ok(rejected, what);
    }
    assert.equal((await server.stats()).authenticated, 0);
    // The name from the wire is logged escaped, never raw.
    assert.ok(
      logger.find("rejected").some((entry) =>
        String(entry.fields.detail).includes('"sha\\x00256"')
      ),
    );
  } finally {
    await server.close();
  }
});

Deno.test("truncated hellos are rejected as incomplete-hello, at every kind of cut (§9)", async () => {
  await using started = await startServer({ throttle: false });
  const { logger, port } = started;
  // 74 bytes in all for SHA-256: cut inside the first 40, just after them, and one byte short.
  for (const cut of [1, 8, 39, 40, 41, 73]) {
    const { reply, remote } = await answerRaw(
      port,
      (challenge) => helloFor(challenge).subarray(0, cut),
    );
    assert.equal(reply.length, 0, `no status byte after ${cut} bytes`);
    const rejected = await logger.waitFor("rejected", { remote });
    assert.equal(rejected.fields.reason, "incomplete-hello", `cut at ${cut}`);
  }
});

Deno.test("reflection: the server's own challenge sent back as the client's is refused (§9)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const { reply: reply } = await answerRaw(
    port,
    (challenge) => helloFor(challenge, { clientChallenge: challenge }),
  );
  assert.deepEqual([...reply], [REJECTION_STATUS["reflected-challenge"]]);
  assert.equal((await logger.waitFor("rejected")).fields.reason, "reflected-challenge");
});

Deno.test("relay: an honest hello recorded in one session fails in another (wrong-proof, §9)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const sessionA = await openRaw(port);
  const recorded = helloFor(sessionA.challenge);
  // The honest client's hello is taken to another session instead of its own.
  const { reply: reply } = await answerRaw(port, () => recorded);
  assert.deepEqual([...reply], [REJECTION_STATUS["wrong-proof"]]);
  assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-proof");
  // In its own session the same hello is accepted: the proof was valid, only misplaced.
  await writeAll(sessionA.conn, recorded);
  const status = await readExactly(sessionA.conn, 1 + 32);
  assert.equal(status[0], 0);
  sessionA.conn.close();
});

Deno.test("downgrade: a hello whose mode was rewritten on the way fails its proof (§9)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const { reply: reply } = await answerRaw(port, (challenge) => {
    const hello = helloFor(challenge, { mode: "integrity" });
    hello[9] = 0x00; // "{sha256}" 02 [mode]: integrity becomes plain
    return hello;
  });
  assert.deepEqual([...reply], [REJECTION_STATUS["wrong-proof"]]);
  assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-proof");
});

Deno.test("replay: a whole recorded client session, sent again, is refused at the hello", async () => {
  await using started = await startServer();
  const { server, logger, port } = started;
  // Record what an honest integrity client sends, through a relay that keeps a copy.
  const recorded: Uint8Array[] = [];
  const relay = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relaying = (async () => {
    const fromClient = await relay.accept();
    const toServer = await Deno.connect({ hostname: "127.0.0.1", port });
    const upstream = (async () => {
      const buffer = new Uint8Array(65536);
      for (let n; (n = await fromClient.read(buffer)) !== null;) {
        recorded.push(buffer.slice(0, n));
        await writeAll(toServer, buffer.subarray(0, n));
      }
      await toServer.closeWrite();
    })();
    const buffer = new Uint8Array(65536);
    for (let n; (n = await toServer.read(buffer)) !== null;) {
      await writeAll(fromClient, buffer.subarray(0, n));
    }
    await upstream;
    fromClient.close();
    toServer.close();
  })();
  const reply = await exchange({
    secret: SECRET,
    port: relay.addr.port,
    mode: "integrity",
    message: encoder.encode("transfer 100 to bob"),
  });
  assert.equal(decoder.decode(reply), "TRANSFER 100 TO BOB");
  await relaying;
  relay.close();
  await logger.waitFor("closed");

  const { reply: echoed } = await answerRaw(port, () => concat(recorded));
  assert.deepEqual([...echoed], [REJECTION_STATUS["wrong-proof"]], "only a status byte, no echo");
  assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-proof");
  assert.equal((await server.stats()).authenticated, 1);
});

/**
 * A fake server: sends a challenge, reads the whole hello, sized by its own bytes (§9, §12), then
 * does whatever `respond` says, and closes.
 */
function fakeServer(
  respond: (conn: Deno.TcpConn, challenge: Uint8Array, hello: ParsedHello) => Promise<void>,
): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      const challenge = createChallenge();
      await writeAll(conn, challenge);
      await respond(conn, challenge, await readHello(conn));
    } finally {
      conn.close();
    }
  })();
  done.catch(() => {}); // awaited by the test: an early failure is reported there, not as uncaught
  return { port: listener.addr.port, done };
}

/**
 * Connects to `port` and expects a {@linkcode ServerAuthenticationError} whose detail matches
 * `detail`: a client that wrongly accepts is closed at once, so the fake server behind it ends
 * and the test fails instead of hanging.
 */
async function assertImpostorRefused(
  port: number,
  detail: RegExp,
  options: Partial<Parameters<typeof connect>[0]> = {},
): Promise<void> {
  const outcome = await withTimeout(
    connect({ secret: SECRET, port, ...options }).then(
      (client) => (client.close(), "accepted"),
      (error: unknown) => error,
    ),
    "the client's verdict on the impostor",
  );
  assert.ok(
    outcome instanceof ServerAuthenticationError &&
      /could not prove it knows the secret/.test(outcome.message),
    `expected ServerAuthenticationError, got ${outcome}`,
  );
  assert.match(outcome.message, detail);
}

/** The server's key share an impostor sends with version 03 (§12): a real one, or none for 02. */
function impostorShare(hello: ParsedHello): Uint8Array {
  return hello.version === 3 ? createKeyShare().publicKey : new Uint8Array(0);
}

/** How long the proof of `hello`'s digest is (§9). */
const proofLength = (hello: ParsedHello) => DIGESTS[hello.digest as DigestName].length;

/** An impostor's whole answer: 00, Ps with version 03, then `proof` (§10, §12). */
const accepted = (hello: ParsedHello, share: Uint8Array, proof: Uint8Array) =>
  concat([Uint8Array.of(0), hello.version === 3 ? share : new Uint8Array(0), proof]);

const IMPOSTORS: [
  string,
  (conn: Deno.TcpConn, challenge: Uint8Array, hello: ParsedHello) => Promise<void>,
  RegExp,
][] = [
  [
    "a random proof",
    (conn, _, hello) =>
      writeAll(
        conn,
        accepted(
          hello,
          impostorShare(hello),
          crypto.getRandomValues(new Uint8Array(proofLength(hello))),
        ),
      ),
    /proof does not verify/,
  ],
  [
    "no proof at all",
    (conn) => writeAll(conn, Uint8Array.of(0)),
    /the connection ended after 0 of \d+ bytes of its answer/,
  ],
  [
    "the client's own proof reflected back",
    (conn, _, hello) => writeAll(conn, accepted(hello, impostorShare(hello), hello.proof)),
    /proof does not verify/,
  ],
  [
    "a valid proof under another secret",
    async (conn, challenge, hello) => {
      const other = await SecretKeys.import(encoder.encode("an impostor's secret"));
      const share = impostorShare(hello);
      const digest = hello.digest as DigestName;
      const proof = computeProof(other, digest, "server", challenge, hello.head, share);
      await writeAll(conn, accepted(hello, share, proof));
    },
    /proof does not verify/,
  ],
];

for (const [what, respond, detail] of IMPOSTORS) {
  for (const forwardSecrecy of [true, false]) {
    const version = forwardSecrecy ? "03" : "02";
    Deno.test(`the client refuses an impostor server that answers a ${version} hello with ${what} (§10)`, async () => {
      const impostor = fakeServer(async (conn, challenge, hello) => {
        assert.equal(hello.version, forwardSecrecy ? 3 : 2, "the hello the client was asked for");
        await respond(conn, challenge, hello);
      });
      await assertImpostorRefused(impostor.port, detail, { forwardSecrecy });
      await impostor.done;
    });
  }
}

Deno.test("replay against a client: a server's answer from another session does not verify (§10, §12)", async () => {
  // Record a real server's whole answer (00, Ps, proof) to an honest 03 hello, then replay it to a
  // new client: the same length as a genuine answer, so only the proof can give it away.
  const { server, port } = await startServer();
  let recordedAnswer: Uint8Array;
  try {
    const raw = await openRaw(port);
    try {
      const head = encodeHelloHead(
        "sha256",
        "encrypt",
        createChallenge(),
        createKeyShare().publicKey,
      );
      await writeAll(
        raw.conn,
        concat([head, computeProof(keys, "sha256", "client", raw.challenge, head)]),
      );
      recordedAnswer = await readExactly(raw.conn, 1 + 32 + 32);
      assert.equal(recordedAnswer[0], 0, "the real server accepted");
    } finally {
      raw.conn.close();
    }
  } finally {
    await server.close();
  }
  const replaying = fakeServer(async (conn, _, hello) => {
    assert.equal(hello.bytes.length, 106, "a version 03 sha256 hello (§9, §12)");
    await writeAll(conn, recordedAnswer);
  });
  await assertImpostorRefused(replaying.port, /proof does not verify/);
  await replaying.done;
});

Deno.test("a status byte the client does not know is a rejection, `status 9`, and unauthenticated (§10)", async () => {
  // Up to the status byte, a server like any other: the challenge, the whole hello read.
  const unknown = fakeServer(async (conn, _, hello) => {
    assert.equal(hello.version, 3);
    await writeAll(conn, Uint8Array.of(0x09));
    assert.equal((await readToEnd(conn)).length, 0, "the client sends nothing more, and closes");
  });
  const outcome = await withTimeout(
    connect({ secret: SECRET, port: unknown.port }).then(
      (client) => (client.close(), "accepted"),
      (error: unknown) => error,
    ),
    "the client's verdict on status 9",
  );
  assert.ok(outcome instanceof HandshakeRejectedError, `got ${outcome}`);
  assert.equal(outcome.reason, "status 9");
  // Anyone on the path can forge a status byte (§8): the client must not present it as fact.
  assert.match(outcome.message, /\(status 9, an unauthenticated answer\)/);
  await withTimeout(unknown.done, "the fake server");
});

Deno.test("a v2 server proves itself with the previous secret to a client still on it (rotation)", async () => {
  const previous = encoder.encode("the old secret");
  await using started = await startServer({
    secret: encoder.encode("the new one"),
    previousSecret: previous,
  });
  const { server, logger, port } = started;
  const reply = await exchange({
    secret: previous,
    port,
    mode: "encrypt",
    message: encoder.encode("old"),
  });
  assert.equal(decoder.decode(reply), "OLD");
  await logger.waitFor("previous-secret-used");
  assert.equal((await server.stats()).authenticatedWithPrevious, 1);
});

Deno.test("authenticateClient() reads exactly the hello, and bytes after it are the service's (§9)", async () => {
  const input: number[] = [];
  const written: number[] = [];
  let consumed = 0;
  let challenge: Uint8Array | undefined;
  const stream = {
    read(buffer: Uint8Array) {
      if (input.length === 0) {
        input.push(
          ...helloFor(challenge!, { digest: "sha512" }),
          ...encoder.encode("service"),
        );
      }
      const n = Math.min(buffer.length, 5, input.length - consumed);
      buffer.set(input.slice(consumed, consumed + n));
      consumed += n;
      return Promise.resolve(n);
    },
    write(data: Uint8Array) {
      written.push(...data);
      challenge ??= data.slice(0, 32);
      return Promise.resolve(data.length);
    },
  };
  const outcome = await authenticateClient(stream, { keys });
  assert.ok(outcome.authenticated && outcome.protocol === 2 && outcome.digest === "sha512");
  assert.equal(consumed, 8 + 2 + 32 + 64);
  assert.equal(written.length, 32 + 1 + 64, "challenge, status byte, SHA-512 proof");
});

Deno.test("readChallenge() and a v2 hello to a server that closes at once are told apart", async () => {
  // A refusing server (at its cap) closes before the challenge: ChallengeError, as in v1.
  await using started = await startServer({ maxConnections: 1 });
  const { port } = started;
  const held = await openRaw(port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await assert.rejects(
      withTimeout(readChallenge(conn), "the refusal"),
      /closed the connection before the challenge: it is full/,
    );
    conn.close();
  } finally {
    held.conn.close();
  }
});

Deno.test("connect() refuses option combinations that cannot work, before dialling", async () => {
  const cases: [Parameters<typeof connect>[0], RegExp][] = [
    [{ secret: SECRET, protocol: 3 as 2 }, /protocol must be 1 or 2, got 3/],
    [{ secret: SECRET, digest: "md5" as "sha1" }, /unknown digest "md5"/],
    [{ secret: SECRET, mode: "secret" as "plain" }, /mode must be plain, integrity or encrypt/],
    [{ secret: SECRET, protocol: 1, mode: "integrity" }, /protocol 1 has no frames/],
    [{ secret: SECRET, protocol: 1, digest: "sha256" }, /protocol 1 always uses HMAC-SHA1/],
    [{ secret: SECRET, digest: "sha1-prefix" }, /sha1-prefix digest is a protocol 1 answer/],
  ];
  for (const [options, message] of cases) {
    // Port 1 on loopback: nothing listens there, so a dial would fail differently.
    await assert.rejects(
      connect({ ...options, port: 1 }),
      (error: unknown) => error instanceof RangeError && message.test(error.message),
    );
  }
});
