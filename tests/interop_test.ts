/**
 * The wire format against an independent implementation: Python 3 peers written from
 * docs/PROTOCOL.md alone (tests/peers/), not from this TypeScript.
 */

import assert from "node:assert/strict";
import {
  exchange,
  HandshakeRejectedError,
  ProtocolMismatchError,
  ServerAuthenticationError,
} from "../client/client.ts";
import { decoder, encoder, SECRET, startServer } from "./_helpers.ts";
import type { ServerStats } from "../server/stats.ts";

const PEERS = new URL("./peers/", import.meta.url).pathname;
const SECRET_TEXT = decoder.decode(SECRET);
const MESSAGE = "interop: grüße, ﬁne, 😀, plain ascii";
/** Long enough for several frames each way. */
const LONG_MESSAGE = MESSAGE + " ß".repeat(40_000);

/**
 * The Python that has the `cryptography` package, which the version 03 peers need: `python3` on
 * the PATH, or Debian's, where `.ci/run` installs python3-cryptography.
 */
const PYTHON = ["python3", "/usr/bin/python3"].find((python) => {
  try {
    return new Deno.Command(python, { args: ["-c", "import cryptography"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}) ?? "python3";

/** Runs one of tests/peers/ with Python (`.py`) or `node` (`.mjs`). */
function peer(script: string, args: string[], secret: string): Deno.ChildProcess {
  return new Deno.Command(script.endsWith(".py") ? PYTHON : "node", {
    args: [PEERS + script, ...args],
    env: { HMAC_ECHO_SECRET: secret, PYTHONUNBUFFERED: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads the Python server's "PORT n" line, then keeps draining its stdout until it exits. */
async function readPort(child: Deno.ChildProcess): Promise<{ port: number; rest: Promise<void> }> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the Python server exited before printing its port: ${seen}`);
    seen += value;
  }
  const match = seen.match(/^PORT (\d+)\n/);
  if (!match) throw new Error(`unexpected first line from the Python server: ${seen}`);
  const rest = (async () => {
    while (!(await reader.read()).done);
  })();
  return { port: Number(match[1]), rest };
}

/**
 * Runs `use` against a Python server peer, which serves one connection and exits; returns its exit
 * status. The server is waited for even when `use` throws, so no process outlives the test.
 */
async function againstPythonServer(
  script: string,
  args: string[],
  secret: string,
  use: (port: number) => Promise<void>,
): Promise<number> {
  const child = peer(script, args, secret);
  const exited = child.status;
  try {
    const { port, rest } = await readPort(child);
    await use(port);
    await rest;
  } finally {
    await exited;
    await child.stderr.cancel();
  }
  return (await exited).code;
}

Deno.test("a Python v1 client authenticates against the Deno server and gets its echo", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const child = peer("v1_client.py", ["127.0.0.1", String(port), MESSAGE], SECRET_TEXT);
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, decoder.decode(stderr));
  assert.equal(decoder.decode(stdout), MESSAGE.toUpperCase());
  await logger.waitFor("authenticated");
});

Deno.test("a Python v1 client with the wrong secret is rejected by the Deno server", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const child = peer("v1_client.py", ["127.0.0.1", String(port), MESSAGE], "not the secret");
  const { code, stdout } = await child.output();
  assert.equal(code, 1);
  assert.equal(stdout.length, 0);
  assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-digest");
});

Deno.test("the Deno client authenticates against a Python v1 server and gets its echo", async () => {
  const code = await againstPythonServer("v1_server.py", [], SECRET_TEXT, async (port) => {
    const message = encoder.encode(MESSAGE);
    const reply = await exchange({ secret: SECRET, port, protocol: 1, message });
    assert.equal(decoder.decode(reply), MESSAGE.toUpperCase());
  });
  assert.equal(code, 0, "the Python server saw a valid answer");
});

Deno.test("the Deno client reports a rejection by a Python v1 server", async () => {
  const code = await againstPythonServer("v1_server.py", [], "its other secret", async (port) => {
    await assert.rejects(
      exchange({ secret: SECRET, port, protocol: 1, message: encoder.encode(MESSAGE) }),
      HandshakeRejectedError,
    );
  });
  assert.equal(code, 3, "the Python server rejected the answer");
});

Deno.test("a v2 client does not fall back to v1 against a Python v1 server (PROTOCOL.md §8)", async () => {
  const code = await againstPythonServer("v1_server.py", [], SECRET_TEXT, async (port) => {
    await assert.rejects(
      exchange({ secret: SECRET, port, message: encoder.encode(MESSAGE) }),
      (error: unknown) =>
        error instanceof ProtocolMismatchError &&
        /\(an unauthenticated close\): .* or it does not speak protocol 2; see its log/.test(
          error.message,
        ),
    );
  });
  assert.equal(code, 3, "the Python server saw one answer, a v2 hello, and rejected it");
});

Deno.test("a Python client answering as the tutorial did gets in only with sha1Prefix (§3.1)", async () => {
  for (const sha1Prefix of [true, false]) {
    await using started = await startServer({ sha1Prefix });
    const { server, logger, port } = started;
    const child = peer(
      "v1_client.py",
      ["--legacy", "127.0.0.1", String(port), MESSAGE],
      SECRET_TEXT,
    );
    const { code, stdout } = await child.output();
    if (sha1Prefix) {
      assert.equal(code, 0);
      assert.equal(decoder.decode(stdout), MESSAGE.toUpperCase());
      await logger.waitFor("legacy-digest-used");
      assert.equal((await server.stats()).authenticatedSha1Prefix, 1);
    } else {
      assert.equal(code, 1);
      assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-digest");
    }
  }
});

// Each peer over several digests and modes; the message spans several 64 KiB frames, and stays
// under the 128 KiB one command-line argument may have.
const V2_CASES = [
  ["v2_client.py", "sha1", "integrity"],
  ["v2_client.py", "sha256", "integrity"],
  ["v2_client.py", "sha384", "plain"],
  ["v2_client.py", "sha512", "integrity"],
  ["v2_client.mjs", "sha256", "encrypt"],
  ["v2_client.mjs", "sha512", "encrypt"],
  ["v2_client.mjs", "sha384", "integrity"],
] as const;

for (const [script, digest, mode] of V2_CASES) {
  const who = script.endsWith(".py") ? "A Python" : "A Node.js";
  Deno.test(`${who} v2 client (${digest}, ${mode}) verifies the server and gets its echo (§8-§11)`, async () => {
    await using started = await startServer({
      require: mode === "plain" ? undefined : mode,
    });
    const { logger, port } = started;
    const message = MESSAGE + " ﬁ".repeat(25_000);
    const child = peer(script, ["127.0.0.1", String(port), message, digest, mode], SECRET_TEXT);
    const { code, stdout, stderr } = await child.output();
    assert.equal(code, 0, decoder.decode(stderr));
    assert.equal(decoder.decode(stdout), message.toUpperCase());
    const authenticated = await logger.waitFor("authenticated");
    assert.deepEqual([authenticated.fields.digest, authenticated.fields.mode], [digest, mode]);
  });
}

Deno.test("a Python v2 client hears the server's reasons: wrong-proof, mode-refused", async () => {
  await using started = await startServer({ require: "integrity", throttle: false });
  const { port } = started;
  for (
    const [secret, mode, reason] of [
      ["not the secret", "integrity", "wrong-proof"],
      [SECRET_TEXT, "plain", "mode-refused"],
    ]
  ) {
    const child = peer(
      "v2_client.py",
      ["127.0.0.1", String(port), "x", "sha256", mode],
      secret,
    );
    const { code, stderr } = await child.output();
    assert.equal(code, 1);
    assert.equal(decoder.decode(stderr), `rejected: ${reason}\n`);
  }
});

Deno.test("a Node.js client with the wrong secret is rejected with wrong-proof", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const { code, stderr } = await peer(
    "v2_client.mjs",
    ["127.0.0.1", String(port), "x"],
    "not the secret",
  )
    .output();
  assert.equal(code, 1);
  assert.equal(decoder.decode(stderr), "rejected: wrong-proof\n");
  assert.equal((await logger.waitFor("rejected")).fields.reason, "wrong-proof");
});

for (const mode of ["plain", "integrity"] as const) {
  Deno.test(`the Deno v2 client (${mode}) verifies a Python v2 server and gets its echo`, async () => {
    const message = LONG_MESSAGE;
    const code = await againstPythonServer("v2_server.py", [], SECRET_TEXT, async (port) => {
      const bytes = encoder.encode(message);
      const reply = await exchange({
        secret: SECRET,
        port,
        mode,
        // The Python peer speaks hello version 02 (§9), written before the key exchange (§12).
        forwardSecrecy: mode === "plain" ? undefined : false,
        digest: "sha384",
        message: bytes,
      });
      assert.equal(decoder.decode(reply), message.toUpperCase());
    });
    assert.equal(code, 0, "the Python server accepted the hello");
  });
}

Deno.test("the Deno v2 client hears a Python v2 server's rejection, and refuses a Python impostor", async () => {
  const rejected = await againstPythonServer(
    "v2_server.py",
    [],
    "its other secret",
    async (port) => {
      await assert.rejects(
        exchange({ secret: SECRET, port, mode: "plain", message: encoder.encode("x") }),
        (error: unknown) =>
          error instanceof HandshakeRejectedError && error.reason === "wrong-proof",
      );
    },
  );
  assert.equal(rejected, 3);
  const impostor = await againstPythonServer(
    "v2_server.py",
    ["--impostor"],
    "the impostor's own secret",
    async (port) => {
      await assert.rejects(
        exchange({
          secret: SECRET,
          port,
          mode: "plain",
          message: encoder.encode("for your eyes only"),
        }),
        ServerAuthenticationError,
      );
    },
  );
  assert.equal(impostor, 0, "the impostor got no service byte");
});

// Hello version 03 (§12) against peers written from the document alone, every digest and both
// framed modes, in both directions.
const V3_CASES = (["sha1", "sha256", "sha384", "sha512"] as const).flatMap((digest) =>
  (["integrity", "encrypt"] as const).map((mode) => [digest, mode] as const)
);

/**
 * A peer's version 03 client (`script`, given host, port, message, digest, mode, then `extra`)
 * against a server that requires forward secrecy: its echo, and a forward-secret session in the
 * server's log (§12). Returns the server's counters.
 */
async function peerForwardSecretSession(
  script: string,
  extra: string[],
  digest: string,
  mode: string,
): Promise<ServerStats> {
  await using started = await startServer({ requireForwardSecrecy: true });
  const { logger, port, server } = started;
  const child = peer(
    script,
    ["127.0.0.1", String(port), LONG_MESSAGE, digest, mode, ...extra],
    SECRET_TEXT,
  );
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, decoder.decode(stderr));
  assert.equal(decoder.decode(stdout), LONG_MESSAGE.toUpperCase());
  const authenticated = await logger.waitFor("authenticated");
  assert.deepEqual(
    [authenticated.fields.digest, authenticated.fields.mode, authenticated.fields.forwardSecret],
    [digest, mode, true],
  );
  return await server.stats();
}

for (const [digest, mode] of V3_CASES) {
  Deno.test(`a Python version 03 client (${digest}, ${mode}) gets a forward-secret session (§12)`, async () => {
    const stats = await peerForwardSecretSession("v3_client.py", [], digest, mode);
    assert.equal(stats.authenticatedForwardSecret, 1);
  });

  Deno.test(`the Deno client (${digest}, ${mode}) gets a forward-secret session from a Python server`, async () => {
    const message = LONG_MESSAGE;
    const code = await againstPythonServer(
      "v3_server.py",
      ["--require-forward-secrecy"],
      SECRET_TEXT,
      async (port) => {
        const reply = await exchange({
          secret: SECRET,
          port,
          digest,
          mode,
          message: encoder.encode(message),
        });
        assert.equal(decoder.decode(reply), message.toUpperCase());
      },
    );
    assert.equal(code, 0, "the Python server accepted the version 03 hello");
  });
}

// The Node.js peer (the benchmark's generator speaks through it) in version 03 too.
for (const [digest, mode] of [["sha256", "encrypt"], ["sha512", "integrity"]] as const) {
  Deno.test(`a Node.js version 03 client (${digest}, ${mode}) gets a forward-secret session (§12)`, async () => {
    await peerForwardSecretSession("v2_client.mjs", ["03"], digest, mode);
  });
}

Deno.test("the Node.js peer recomputes every value of §13's vectors A and B", async () => {
  const { code, stdout } = await peer("v2_client.mjs", ["--vectors"], "").output();
  assert.equal(code, 0, decoder.decode(stdout));
  assert.match(decoder.decode(stdout), /every value matched\n$/);
});

Deno.test("tests/peers/fs_vectors.py --check: §13's vectors, the Python peers and their attacks all pass", async () => {
  // Its own checks: §13 as printed, RFC 7748 and RFC 5869 known answers, and the version 03
  // Python peers against each other, honest and hostile; a failure is a line "FAIL  what".
  const { code, stdout, stderr } = await peer("fs_vectors.py", ["--check"], "").output();
  const report = decoder.decode(stdout);
  assert.equal(code, 0, report + decoder.decode(stderr));
  assert.deepEqual(report.match(/^FAIL .*$/gm) ?? [], []);
  assert.match(report, /\nall checks passed\n$/);
  // Not a run that checked next to nothing: there are some sixty checks.
  assert.ok((report.match(/^ok {4}/gm) ?? []).length >= 50, report);
});

Deno.test("the Deno client refuses a Python server that substitutes, forges or weakens its key share", async () => {
  for (
    const [flag, secret] of [
      ["--impostor", "the impostor's own secret"],
      ["--substitute-ps", SECRET_TEXT],
      ["--low-order-ps", SECRET_TEXT],
    ]
  ) {
    const code = await againstPythonServer("v3_server.py", [flag], secret, async (port) => {
      await assert.rejects(
        exchange({ secret: SECRET, port, message: encoder.encode("for your eyes only") }),
        ServerAuthenticationError,
        flag,
      );
    });
    assert.equal(code, 0, `${flag}: the fooled client sent no service byte`);
  }
});

Deno.test("a Python client's low-order key share is refused with bad-key-share (§12)", async () => {
  await using started = await startServer();
  const { logger, port } = started;
  const child = peer(
    "v3_client.py",
    ["--bad-key-share", "127.0.0.1", String(port), "x"],
    SECRET_TEXT,
  );
  const { code, stderr } = await child.output();
  assert.equal(code, 1);
  assert.equal(decoder.decode(stderr), "rejected: bad-key-share\n");
  assert.equal((await logger.waitFor("rejected")).fields.reason, "bad-key-share");
});

Deno.test("--require-forward-secrecy answers a Python version 02 client 07, which it reports as unknown", async () => {
  await using started = await startServer({ requireForwardSecrecy: true });
  const child = peer(
    "v2_client.py",
    ["127.0.0.1", String(started.port), "x", "sha256", "integrity"],
    SECRET_TEXT,
  );
  const { code, stderr } = await child.output();
  assert.equal(code, 1);
  // The peer was written before 07 existed: it reports the byte it does not know (§10).
  assert.equal(decoder.decode(stderr), "rejected: status 7\n");
});
