/**
 * The command line as users run it: real processes, started with the exact permissions of the
 * `serve` and `connect` tasks in deno.json (the README's commands), in a clean environment.
 */

import assert from "node:assert/strict";
import { SERVE_USAGE } from "../cli/usage.ts";
import { decoder, encoder, readToEnd, withTimeout } from "./_helpers.ts";
import denoConfig from "../deno.json" with { type: "json" };
import { freshEnv, ROOT, ServerProcess, startServeTask, taskArgs } from "./_process.ts";

/** Starts `serve` as the `serve` task would. */
function startServe(args: string[], env: Record<string, string>): ServerProcess {
  return startServeTask(args, env);
}

/** Starts `connect --listen ...` (the tunnel) as the `connect` task would, stderr line by line. */
function startTunnel(args: string[], env: Record<string, string>): ServerProcess {
  return ServerProcess.start(Deno.execPath(), [...taskArgs("connect"), ...args], {
    env,
    cwd: ROOT,
  });
}

/** Runs `connect` to completion. */
function runConnect(
  args: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runTask("connect", args, env, stdin);
}

/** Runs a command to completion as its task would, its output captured. */
async function runTask(
  name: "serve" | "connect",
  args: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...taskArgs(name), ...args],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("first run with no configuration: serve creates a secret, connect finds it", async () => {
  await using fresh = await freshEnv();
  const server = startServe(["--port", "0"], fresh.env);
  try {
    const port = await server.port();
    const created = await server.waitForLine(/ secret-created path=/);
    const path = `${fresh.env.XDG_CONFIG_HOME}/hmac-echo/secret`;
    assert.ok(created.includes(path), created);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);

    const result = await runConnect(["--port", String(port), "--message", "hi"], fresh.env);
    assert.deepEqual(result, { code: 0, stdout: "HI\n", stderr: "" });
    await server.waitForLine(/ closed id=1 /);
  } finally {
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.lines.join("\n"));
  }
  assert.ok(server.lines.some((line) => / stopped /.test(line)));
});

Deno.test("connect streams piped stdin to the server and the replies to stdout", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "pipe test secret, long enough" });
  const server = startServe(["--port", "0"], fresh.env);
  try {
    const port = await server.port();
    const input = "hello\nwörld, straße\n" + "line\n".repeat(20_000);
    const result = await runConnect(["--port", String(port)], fresh.env, input);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, input.toUpperCase());

    const echoed = await runConnect(["--port", String(port)], fresh.env, "hi\n");
    assert.equal(echoed.stdout, "HI\n");
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("connect with the wrong secret exits 1 and says so; no secret reaches any output", async () => {
  const serverSecret = "server-side-secret-value-1f2e3d";
  const clientSecret = "client-side-wrong-value-9a8b7c";
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: serverSecret });
  const server = startServe(["--port", "0"], fresh.env);
  try {
    const port = await server.port();
    const result = await runConnect(
      ["--port", String(port), "--message", "hi"],
      { ...fresh.env, HMAC_ECHO_SECRET: clientSecret },
    );
    assert.equal(result.code, 1);
    assert.equal(result.stdout, "");
    assert.equal(
      result.stderr,
      `hmac-echo: Authentication rejected by 127.0.0.1:${port} (wrong-proof, an unauthenticated ` +
        "answer): check the secret\n",
    );
    await server.waitForLine(/ rejected .*reason=wrong-proof/);
    for (const secret of [serverSecret, clientSecret]) {
      assert.ok(!result.stderr.includes(secret));
      assert.ok(!server.lines.some((line) => line.includes(secret)));
    }
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("connect to a port nobody listens on exits 1 with a clear message", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await runConnect(["--port", String(port), "--message", "hi"], fresh.env);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    `hmac-echo: Cannot connect to 127.0.0.1:${port}: connection refused. Is the server running there?\n`,
  );
});

Deno.test("serve on a port in use exits 1 with a clear message", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const server = startServe(["--port", String(listener.addr.port)], fresh.env);
    const status = await server.exited();
    assert.equal(status.code, 1);
    assert.ok(
      server.lines.some((line) =>
        line === `hmac-echo: Cannot listen on 127.0.0.1:${listener.addr.port}: the address is ` +
            "already in use. Stop the other server or choose another --port"
      ),
      server.lines.join("\n"),
    );
  } finally {
    listener.close();
  }
});

Deno.test("--help and --version exit 0; usage errors exit 2 with a pointer to --help", async (t) => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  await t.step("--help", async () => {
    const { code, stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "main.ts", "--help"],
      cwd: ROOT,
      env: fresh.env,
      clearEnv: true,
    }).output();
    assert.equal(code, 0);
    const text = decoder.decode(stdout);
    assert.match(text, /^hmac-echo \d+\.\d+\.\d+: .*\n\nUsage:\n {2}hmac-echo serve/);
    assert.match(text, /"hmac-echo serve --help" or "hmac-echo connect --help"/);
  });
  await t.step("serve --help prints serve's options only", async () => {
    const result = await runTask("serve", ["--help"], fresh.env);
    assert.deepEqual(result, { code: 0, stdout: SERVE_USAGE, stderr: "" });
    assert.match(result.stdout, /^Listening:\n {2}--host H /m);
    for (const flag of ["--message", "--retry", "--protocol"]) {
      assert.ok(!result.stdout.includes(flag), `connect's ${flag} in serve --help`);
    }
  });
  await t.step("--version", async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "main.ts", "--version"],
      cwd: ROOT,
      env: fresh.env,
      clearEnv: true,
    });
    const { code, stdout } = await child.output();
    assert.equal(code, 0);
    assert.equal(decoder.decode(stdout), `hmac-echo ${denoConfig.version}\n`);
  });
  await t.step("connect --version", async () => {
    const result = await runConnect(["--version"], fresh.env);
    assert.deepEqual(result, { code: 0, stdout: `hmac-echo ${denoConfig.version}\n`, stderr: "" });
  });
  // Every usage error is a unit test of the parser (tests/cli_args_test.ts); here, that the
  // program turns one into exit status 2, a pointer to --help and no stack trace.
  await t.step("connect --bogus", async () => {
    const result = await runConnect(["--bogus"], fresh.env);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      result.stderr,
      `hmac-echo: Unknown option '--bogus'. Run "hmac-echo connect --help" for usage.\n`,
    );
  });
  await t.step("serve --max-connections 0", async () => {
    const server = startServe(["--max-connections", "0"], fresh.env);
    assert.equal((await server.exited()).code, 2);
    assert.match(
      server.lines.join("\n"),
      /--max-connections must be a positive whole number, got "0"\. Run "hmac-echo serve --help"/,
    );
    assert.ok(!server.lines.some((line) => /^\s+at /.test(line)), "no stack trace");
  });
  await t.step("an unknown command", async () => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "main.ts", "sevre"],
      cwd: ROOT,
      env: fresh.env,
      clearEnv: true,
    }).output();
    assert.equal(code, 2);
    assert.match(decoder.decode(stderr), /Unknown command "sevre": use serve or connect/);
  });
});

Deno.test("secret errors exit 2 with what to do", async (t) => {
  await using fresh = await freshEnv();
  await t.step("connect before any secret exists: serve makes one", async () => {
    const result = await runConnect(["--message", "x"], fresh.env);
    assert.equal(result.code, 2);
    const path = `${fresh.env.XDG_CONFIG_HOME}/hmac-echo/secret`;
    assert.equal(
      result.stderr,
      `hmac-echo: No secret: no --secret-file, no HMAC_ECHO_SECRET, and the default file "${path}" ` +
        `does not exist. "hmac-echo serve" creates it, with a random secret, the first time it ` +
        `runs on this machine; for a server elsewhere, set HMAC_ECHO_SECRET or pass ` +
        `--secret-file PATH with that server's secret\n`,
    );
  });
  await t.step(
    "serve --secret-file in a folder that does not exist: how to make both",
    async () => {
      const file = `${fresh.home}/not-yet/secret`;
      const failed = startServe(["--secret-file", file, "--port", "0"], fresh.env);
      assert.equal((await failed.exited()).code, 2);
      assert.equal(failed.lines.length, 1, failed.lines.join("\n"));
      const [said, command] = failed.lines[0].split(". Create it, for example: ");
      assert.equal(said, `hmac-echo: Cannot read the secret file "${file}": it does not exist`);
      // The command as a user would paste it; then serve starts with the file it made.
      const made = await new Deno.Command("sh", { args: ["-c", command], env: fresh.env }).output();
      assert.equal(made.code, 0, decoder.decode(made.stderr));
      const server = startServe(["--secret-file", file, "--port", "0"], fresh.env);
      try {
        await server.port();
        assert.ok(!server.lines.some((line) => / warn /.test(line)), server.lines.join("\n"));
      } finally {
        assert.equal((await server.stop()).code, 0);
      }
    },
  );
  await t.step("an empty secret file, for serve and for connect", async () => {
    const file = `${fresh.home}/empty-secret`;
    await Deno.writeTextFile(file, "\n", { mode: 0o600 });
    const result = await runConnect(["--secret-file", file, "--message", "x"], fresh.env);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /The secret file ".*empty-secret" is empty/);
    const server = startServe(["--secret-file", file, "--port", "0"], fresh.env);
    assert.equal((await server.exited()).code, 2);
    assert.match(server.lines.join("\n"), /is empty/);
  });
});

Deno.test("serve --quiet drops per-connection lines but keeps the lifecycle", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "quiet test secret, long enough" });
  const server = startServe(["--port", "0", "--quiet"], fresh.env);
  let port;
  try {
    port = await server.port();
    const result = await runConnect(["--port", String(port), "--message", "shh"], fresh.env);
    assert.equal(result.stdout, "SHH\n");
  } finally {
    assert.equal((await server.stop("SIGINT")).code, 0);
  }
  assert.ok(server.lines.some((line) => / stopped /.test(line)));
  assert.equal(
    server.lines.filter((line) => / (accepted|authenticated|closed) /.test(line)).length,
    0,
  );
});

Deno.test("serve --workers 2 shares one port between two server threads", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "workers test secret, long enough" });
  const server = startServe(["--port", "0", "--workers", "2"], fresh.env);
  try {
    const port = await server.port();
    assert.match(await server.waitForLine(/ listening /), / workers=2 /);
    // The kernel spreads connections by a hash of their addresses: over 40, both threads serve
    // some unless something is wrong (a chance of 2 in a trillion otherwise).
    const { exchange } = await import("../client/client.ts");
    for (let i = 0; i < 40; i++) {
      const reply = await exchange({
        secret: encoder.encode("workers test secret, long enough"),
        port,
        message: encoder.encode(`m${i}`),
      });
      assert.equal(decoder.decode(reply), `M${i}`);
    }
    await server.waitForLine(/ authenticated .* worker=1/);
    await server.waitForLine(/ authenticated .* worker=2/);
  } finally {
    assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
  }
  assert.ok(server.lines.some((line) => / stopped accepted=40 authenticated=40 /.test(line)));
  // One server, one numbering: the threads never hand out the same connection id.
  const ids = server.lines.flatMap((line) => line.match(/ authenticated id=(\d+) /)?.[1] ?? []);
  assert.equal(ids.length, 40);
  assert.equal(new Set(ids).size, 40, `ids repeat: ${ids.join(",")}`);
});

Deno.test("serve --workers on a port in use exits 1 with the same clear message", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const server = startServe(["--port", String(listener.addr.port), "--workers", "2"], fresh.env);
    assert.equal((await server.exited()).code, 1);
    assert.match(server.lines.join("\n"), /the address is already in use/);
  } finally {
    listener.close();
  }
});

Deno.test("a second serve --workers on the same port fails instead of joining the first", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const first = startServe(["--port", "0", "--workers", "2"], fresh.env);
  try {
    const port = await first.port();
    const second = startServe(["--port", String(port), "--workers", "2"], fresh.env);
    try {
      // Were it to join, it would listen and run on: fail on that instead of waiting forever.
      const outcome = await withTimeout(
        Promise.race([
          second.exited().then(() => "exited"),
          second.port().then(() => "joined the port", () => "exited"),
        ]),
        "the second server to exit",
      );
      assert.equal(outcome, "exited");
      assert.equal((await second.exited()).code, 1);
      assert.match(second.lines.join("\n"), /the address is already in use/);
    } finally {
      await second.stop();
    }
  } finally {
    assert.equal((await first.stop()).code, 0);
  }
});

Deno.test("serve --workers 0 starts one worker per core", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const server = startServe(["--port", "0", "--workers", "0"], fresh.env);
  try {
    const line = await server.waitForLine(/ listening /);
    assert.match(line, new RegExp(` workers=${navigator.hardwareConcurrency} `));
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("serve --log-format json writes one JSON object per line, secret-free", async () => {
  const secret = "json-log-secret-4f5e6d";
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: secret });
  const server = startServe(["--port", "0", "--log-format", "json"], fresh.env);
  let port = 0;
  try {
    const listening = JSON.parse(await server.waitForLine(/"event":"listening"/));
    port = Number(String(listening.address).split(":")[1]);
    const result = await runConnect(["--port", String(port), "--message", "j"], fresh.env);
    assert.equal(result.stdout, "J\n");
    await server.waitForLine(/"event":"closed"/);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
  const events = server.lines.filter((line) => line.startsWith("{")).map((line) =>
    JSON.parse(line)
  );
  assert.deepEqual(
    events.map((event) => event.event),
    ["listening", "accepting", "accepted", "authenticated", "closed", "shutting-down", "stopped"],
  );
  assert.equal(
    events.find((event) => event.event === "accepting").note,
    "older clients are served too: v1 answers and v2 sessions without forward secrecy; " +
      "--require-forward-secrecy refuses them",
  );
  assert.ok(events.every((event) => event.time && event.level));
  assert.ok(!server.lines.some((line) => line.includes(secret)));
});

Deno.test("serve --workers exits 1 with the reason when a worker cannot start", async () => {
  // Without read permission the worker thread cannot load its module. The supervisor must report
  // that and exit, not wait for a worker that will never answer.
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a cli test secret, 32 bytes long" });
  const main = new URL("../main.ts", import.meta.url).pathname;
  const server = ServerProcess.start(
    Deno.execPath(),
    ["run", "--allow-net", "--allow-env", main, "serve", "--port", "0", "--workers", "2"],
    { env: fresh.env },
  );
  const status = await withTimeout(server.exited(), "serve to exit");
  assert.equal(status.code, 1);
  assert.match(
    server.lines.join("\n"),
    /Cannot start the server threads for 127\.0\.0\.1:0: .*read access/,
  );
});

Deno.test("connect --retry waits out a server that is not up yet", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "retry test secret, long enough" });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  // The client's stderr, line by line, through the same helper as a server's.
  const client = ServerProcess.start(
    Deno.execPath(),
    [...taskArgs("connect"), "--port", String(port), "--retry", "30", "--message", "late"],
    { env: fresh.env, cwd: ROOT },
  );
  const { serve } = await import("../server/server.ts");
  let server;
  try {
    assert.match(
      await client.waitForLine(/; retry 1 of 30 in \d+ ms$/),
      new RegExp(`Cannot connect to 127\\.0\\.0\\.1:${port}: connection refused`),
    );
    server = await serve({ secret: encoder.encode("retry test secret, long enough"), port });
    assert.equal((await client.exited()).code, 0, client.lines.join("\n"));
    assert.equal((await server.stats()).authenticated, 1);
  } finally {
    await server?.close();
  }
});

Deno.test("connect --retry never retries a rejection", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "a wrong secret, long enough" });
  const { serve } = await import("../server/server.ts");
  const server = await serve({ secret: encoder.encode("right"), port: 0 });
  try {
    const port = server.addr.port;
    const result = await runConnect(
      ["--port", String(port), "--retry", "5", "--message", "x"],
      fresh.env,
    );
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr,
      `hmac-echo: Authentication rejected by 127.0.0.1:${port} (wrong-proof, an unauthenticated ` +
        "answer): check the secret\n",
    );
    assert.equal((await server.stats()).accepted, 1, "one attempt only");
  } finally {
    await server.close();
  }
});

Deno.test("serve --previous-secret-file keeps clients of the old secret working", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "the new secret, long enough" });
  const oldFile = `${fresh.home}/old-secret`;
  await Deno.writeTextFile(oldFile, "the old secret, long enough\n", { mode: 0o600 });
  const server = startServe(["--port", "0", "--previous-secret-file", oldFile], fresh.env);
  try {
    const port = await server.port();
    assert.match(await server.waitForLine(/ rotation /), /previous="file .*old-secret"/);
    const old = await runConnect(["--port", String(port), "--message", "old"], {
      ...fresh.env,
      HMAC_ECHO_SECRET: "the old secret, long enough",
    });
    assert.equal(old.stdout, "OLD\n", old.stderr);
    await server.waitForLine(/ previous-secret-used /);
    const wrong = await runConnect(["--port", String(port), "--message", "x"], {
      ...fresh.env,
      HMAC_ECHO_SECRET: "some other secret",
    });
    assert.equal(wrong.code, 1);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

/**
 * A fake server for one connection: sends a challenge, reads one whole hello (its length from its
 * tag, version and digest, PROTOCOL.md §9), then answers `status` and closes, or just closes.
 */
function forgedRejection(status: number | "close"): { port: number; done: Promise<void> } {
  const lengths: Record<string, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      await conn.write(crypto.getRandomValues(new Uint8Array(32)));
      let hello = new Uint8Array(0);
      const buffer = new Uint8Array(256);
      const expected = () => {
        const end = hello.indexOf(0x7d); // "}"
        if (end < 0 || hello.length < end + 2) return Infinity;
        const digest = decoder.decode(hello.subarray(1, end));
        return end + 3 + 32 + (hello[end + 1] === 3 ? 32 : 0) + lengths[digest];
      };
      while (hello.length < expected()) {
        const n = await conn.read(buffer);
        if (n === null) return;
        hello = new Uint8Array([...hello, ...buffer.subarray(0, n)]);
      }
      if (status !== "close") await conn.write(Uint8Array.of(status));
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, done };
}

Deno.test("a forged rejection never talks connect into a weaker setting, and is called unauthenticated", async (t) => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "forged rejection test secret" });
  // What each client is told, by what it asked for and what came back (PROTOCOL.md §8, §10).
  const forged = ": this answer was forged, or the server misbehaves; see its log";
  const cases: [flags: string[], status: number | "close", told: string][] = [
    [[], 0x01, " (wrong-proof, an unauthenticated answer): check the secret"],
    [[], 0x02, " (unsupported-digest, an unauthenticated answer): ask its operator which digests"],
    [
      [],
      0x03,
      ` (mode-refused, an unauthenticated answer). Every hmac-echo server accepts --encrypt${forged}`,
    ],
    [["--integrity"], 0x03, " (mode-refused, an unauthenticated answer): ask for --encrypt"],
    [["--plain"], 0x03, " (mode-refused, an unauthenticated answer): ask for --encrypt"],
    [[], 0x05, " (unsupported-version, an unauthenticated answer): ask its operator which version"],
    [
      [],
      0x07,
      ` (forward-secrecy-required, an unauthenticated answer). This client asked for forward secrecy${forged}`,
    ],
    [
      ["--no-forward-secrecy"],
      0x07,
      " (forward-secrecy-required, an unauthenticated answer): drop --no-forward-secrecy",
    ],
    [
      ["--plain"],
      0x07,
      " (forward-secrecy-required, an unauthenticated answer): ask for --encrypt",
    ],
    [[], 0x09, " rejected the hello (status 9, an unauthenticated answer)"],
    [[], "close", " (an unauthenticated close): it is throttling this address"],
  ];
  for (const [flags, status, told] of cases) {
    const name = `${flags.join(" ") || "the default"}, answered ${status}`;
    await t.step(name, async () => {
      const server = forgedRejection(status);
      const result = await runConnect(
        ["--port", String(server.port), ...flags, "--message", "x"],
        fresh.env,
      );
      await server.done;
      assert.equal(result.code, 1, result.stderr);
      const said = result.stderr.split("\n").filter((line) => !line.includes("warning:"));
      assert.deepEqual(said.slice(1), [""], `one line: ${result.stderr}`);
      assert.ok(said[0].includes(told), `${said[0]}\n  should say: ${told}`);
      // Nothing weaker than what was asked is offered as the remedy.
      assert.doesNotMatch(
        said[0],
        /(add|use|try|ask for|with) (--plain|--integrity|--protocol 1|--no-forward-secrecy|--digest)/,
      );
    });
  }
});

Deno.test("serve --integrity: connect --integrity and --encrypt get in; weaker clients are told why", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "framed test secret, long enough" });
  const server = startServe(
    ["--port", "0", "--integrity", "--digests", "sha256,sha512"],
    fresh.env,
  );
  try {
    const port = await server.port();
    assert.match(
      await server.waitForLine(/ listening /),
      / protocols=2 require=integrity forwardSecrecy=offered digests=sha256,sha512 /,
    );
    assert.match(
      await server.waitForLine(/ accepting /),
      / notice accepting note="older clients are served too: v2 sessions without forward secrecy; --require-forward-secrecy refuses them"$/,
    );
    for (const flags of [["--integrity"], ["--encrypt", "--digest", "sha512"]]) {
      const result = await runConnect(
        ["--port", String(port), ...flags, "--message", "framed"],
        fresh.env,
      );
      assert.deepEqual(result, { code: 0, stdout: "FRAMED\n", stderr: "" }, flags.join(" "));
    }
    const plain = await runConnect(
      ["--port", String(port), "--plain", "--message", "x"],
      fresh.env,
    );
    assert.equal(plain.code, 1);
    assert.equal(
      plain.stderr,
      `hmac-echo: 127.0.0.1:${port} refuses the frame mode this client asked for (mode-refused, ` +
        "an unauthenticated answer): ask for --encrypt\n",
    );
    const sha1 = await runConnect([
      "--port",
      String(port),
      "--integrity",
      "--digest",
      "sha1",
      "--message",
      "x",
    ], fresh.env);
    assert.equal(sha1.code, 1);
    assert.match(
      sha1.stderr,
      /does not accept this digest \(unsupported-digest, an unauthenticated answer\): ask its operator which digests it accepts/,
    );
    const v1 = await runConnect(
      ["--port", String(port), "--protocol", "1", "--message", "x"],
      fresh.env,
    );
    assert.equal(v1.code, 1);
    assert.match(
      v1.stderr,
      /Authentication rejected by 127\.0\.0\.1:\d+ \(an unauthenticated close\): check the secret \(a server that requires protocol 2 rejects a protocol 1 answer the same way/,
    );
    await server.waitForLine(/ rejected .*reason=v1-refused/);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("serve --require-forward-secrecy: a default connect gets in; --no-forward-secrecy and v1 are refused", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "forward-secret test secret, long" });
  const server = startServe(["--port", "0", "--require-forward-secrecy"], fresh.env);
  try {
    const port = await server.port();
    assert.match(
      await server.waitForLine(/ listening /),
      / protocols=2 forwardSecrecy=required digests=sha1,sha256,sha384,sha512 /,
    );
    const served = await runConnect(["--port", String(port), "--message", "fs"], fresh.env);
    assert.deepEqual(served, { code: 0, stdout: "FS\n", stderr: "" });
    await server.waitForLine(/ authenticated .*protocol=2 .*forwardSecret=true/);

    const old = await runConnect(
      ["--port", String(port), "--no-forward-secrecy", "--message", "x"],
      fresh.env,
    );
    assert.equal(old.code, 1, old.stderr);
    assert.equal(old.stdout, "");
    // After the flag's own warning, the reason, as the server stated it.
    assert.match(
      old.stderr.trimEnd().split("\n").at(-1)!,
      new RegExp(
        `^hmac-echo: 127\\.0\\.0\\.1:${port} .*\\(forward-secrecy-required, an unauthenticated answer\\): drop --no-forward-secrecy`,
      ),
    );
    await server.waitForLine(/ rejected .*reason=forward-secrecy-required/);

    const v1 = await runConnect(
      ["--port", String(port), "--protocol", "1", "--message", "x"],
      fresh.env,
    );
    assert.equal(v1.code, 1, v1.stderr);
    await server.waitForLine(/ rejected .*reason=v1-refused/);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
  // Nothing older is served, so the start says nothing about serving it.
  assert.ok(!server.lines.some((line) => / accepting /.test(line)), server.lines.join("\n"));
  assert.match(
    server.lines.find((line) => / stopped /.test(line))!,
    / authenticated=1 rejected=2 .*rejected-forward-secrecy-required=1 rejected-v1-refused=1/,
  );
});

Deno.test("serve --digest sha1-prefix warns, and accepts the tutorial's answer from connect --protocol 1", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "legacy test secret, long enough" });
  const server = startServe(["--port", "0", "--digest", "sha1-prefix"], fresh.env);
  try {
    const port = await server.port();
    await server.waitForLine(/ warn legacy-digest-enabled /);
    const legacy = await runConnect(
      ["--port", String(port), "--protocol", "1", "--digest", "sha1-prefix", "--message", "old"],
      fresh.env,
    );
    assert.equal(legacy.code, 0, legacy.stderr);
    assert.equal(legacy.stdout, "OLD\n");
    assert.match(
      legacy.stderr,
      /warning: --digest sha1-prefix sends the tutorial's sha1\(secret \+ challenge\)/,
    );
    await server.waitForLine(/ warn legacy-digest-used /);
    await server.waitForLine(/ authenticated .*protocol=1 digest=sha1-prefix/);
    // HMAC clients, v1 and v2, are served as before.
    for (const flags of [["--protocol", "1"], []]) {
      const result = await runConnect(
        ["--port", String(port), ...flags, "--message", "new"],
        fresh.env,
      );
      assert.deepEqual(result, { code: 0, stdout: "NEW\n", stderr: "" }, flags.join(" "));
    }
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("without --digest sha1-prefix the tutorial's answer is rejected as a wrong digest", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "legacy test secret, long enough" });
  const server = startServe(["--port", "0"], fresh.env);
  try {
    const port = await server.port();
    const legacy = await runConnect(
      ["--port", String(port), "--protocol", "1", "--digest", "sha1-prefix", "--message", "old"],
      fresh.env,
    );
    assert.equal(legacy.code, 1);
    assert.match(legacy.stderr, /Authentication rejected/);
    await server.waitForLine(/ rejected .*reason=wrong-digest/);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("connect says in one line that a throttling server closed before the challenge", async () => {
  await using fresh = await freshEnv();
  const server = startServe(
    ["--port", "0", "--throttle-after", "2", "--throttle-cooldown", "60"],
    fresh.env,
  );
  try {
    const port = await server.port();
    const guess = () =>
      runConnect(["--port", String(port), "--message", "x"], {
        ...fresh.env,
        HMAC_ECHO_SECRET: "not the server's secret at all",
      });
    const wrong = await guess();
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /Authentication rejected by 127\.0\.0\.1:\d+ \(wrong-proof, an unauthenticated answer\): check the secret\n$/,
    );
    // The second wrong answer starts the cool-down: its verdict is withheld (PROTOCOL.md §3).
    const withheld = await guess();
    assert.match(withheld.stderr, /closed the connection without answering .* it is throttling/);
    await server.waitForLine(/ throttling address=127\.0\.0\.1/);
    // The right secret now, from the same address: turned away before any challenge.
    const right = await runConnect(["--port", String(port), "--message", "x"], fresh.env);
    assert.equal(right.code, 1);
    assert.equal(right.stderr.split("\n").length, 2, `one line: ${right.stderr}`);
    assert.match(
      right.stderr,
      /^hmac-echo: The server closed the connection before the challenge: it is full, or is throttling this address after failed handshakes \(see its log\).*--retry does not wait it out/,
    );
    // With --retry: a short line per retry, and the advice once, with the last failure.
    const retried = await runConnect(
      ["--port", String(port), "--retry", "2", "--message", "x"],
      fresh.env,
    );
    assert.equal(retried.code, 1);
    const lines = retried.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 3, retried.stderr);
    assert.match(
      lines[0],
      /before the challenge: .*\(see its log\), or it is not an hmac-echo server; retry 1 of 2 in \d+ ms$/,
    );
    assert.match(lines[1], /; retry 2 of 2 in \d+ ms$/);
    assert.equal(retried.stderr.match(/--retry does not wait it out/g)?.length, 1, retried.stderr);
    assert.match(lines[2], /--retry does not wait it out/);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("a secret under 16 bytes: refused by serve and connect, accepted with --allow-weak-secret", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "s3cret" });
  const refused = startServe(["--port", "0"], fresh.env);
  assert.equal((await refused.exited()).code, 2);
  assert.match(
    refused.lines.join("\n"),
    /The secret from environment variable HMAC_ECHO_SECRET is 6 bytes: at least 16 are needed.*head -c 32 \/dev\/urandom/,
  );
  assert.ok(!refused.lines.join("\n").includes("s3cret"), "the secret never reaches an error");

  const server = startServe(["--port", "0", "--allow-weak-secret"], fresh.env);
  try {
    const port = await server.port();
    assert.match(await server.waitForLine(/ warn weak-secret /), /is 6 bytes, under 16/);
    const weak = await runConnect(["--port", String(port), "--message", "hi"], fresh.env);
    assert.equal(weak.code, 2);
    assert.match(weak.stderr, /is 6 bytes: at least 16 are needed/);
    const allowed = await runConnect(
      ["--port", String(port), "--allow-weak-secret", "--message", "hi"],
      fresh.env,
    );
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(allowed.stdout, "HI\n");
    assert.match(allowed.stderr, /^hmac-echo: warning: the secret from .* is 6 bytes, under 16/);

    // connect --listen, the tunnel: the same refusal, and the same way past it.
    const tunnelArgs = ["--listen", "127.0.0.1:0", "--port", String(port)];
    const refusedTunnel = startTunnel(tunnelArgs, fresh.env);
    // Were it to accept the secret, it would listen and run on: stop it and fail, not wait.
    const said = await refusedTunnel.waitForLine(/ listening |^hmac-echo: /);
    if (/ listening /.test(said)) {
      await refusedTunnel.stop();
      assert.fail(`the tunnel started with a 6-byte secret: ${said}`);
    }
    assert.equal((await refusedTunnel.exited()).code, 2);
    assert.equal(refusedTunnel.lines.length, 1, refusedTunnel.lines.join("\n"));
    assert.match(
      refusedTunnel.lines[0],
      /^hmac-echo: The secret from environment variable HMAC_ECHO_SECRET is 6 bytes: at least 16 are needed.*head -c 32 \/dev\/urandom.*--allow-weak-secret/,
    );
    assert.ok(!refusedTunnel.lines[0].includes("s3cret"), "the secret never reaches an error");
    const tunnel = startTunnel([...tunnelArgs, "--allow-weak-secret"], fresh.env);
    try {
      assert.match(
        await tunnel.waitForLine(/ warn weak-secret /),
        /the secret from environment variable HMAC_ECHO_SECRET is 6 bytes, under 16/,
      );
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: await tunnel.port() });
      try {
        await conn.write(encoder.encode("through"));
        await conn.closeWrite();
        assert.equal(decoder.decode(await readToEnd(conn)), "THROUGH");
      } finally {
        conn.close();
      }
    } finally {
      assert.equal((await tunnel.stop()).code, 0, tunnel.lines.join("\n"));
    }
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("connect warns once, on stderr, when other users can read its secret file", async () => {
  const secret = "loose-file-secret-7c6b5a";
  await using fresh = await freshEnv();
  const file = `${fresh.home}/loose-secret`;
  await Deno.writeTextFile(file, `${secret}\n`);
  await Deno.chmod(file, 0o644);
  const server = startServe(["--port", "0"], { ...fresh.env, HMAC_ECHO_SECRET: secret });
  try {
    const port = await server.port();
    const result = await runConnect(
      ["--port", String(port), "--secret-file", file, "--message", "hi"],
      fresh.env,
    );
    assert.deepEqual(result, {
      code: 0,
      stdout: "HI\n",
      stderr: `hmac-echo: warning: The secret file "${file}" can be read by other users ` +
        `(mode 644); run: chmod 600 "${file}"\n`,
    });
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("serve and connect --listen, --log-format json: an error that ends it is one JSON line", async (t) => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: "json-fatal-secret-3e2d1c" });

  /** Runs serve (or the tunnel) to its exit; its stderr must be exactly one line. */
  async function fatalLine(args: string[], code: number, tunnel = false): Promise<string> {
    const server = tunnel
      ? ServerProcess.start(Deno.execPath(), [...taskArgs("connect"), ...args], {
        env: fresh.env,
        cwd: ROOT,
      })
      : startServe(args, fresh.env);
    assert.equal((await server.exited()).code, code, server.lines.join("\n"));
    assert.equal(server.lines.length, 1, server.lines.join("\n"));
    assert.ok(!server.lines[0].includes("json-fatal-secret"));
    return server.lines[0];
  }

  /** The logger's shape: time, level, event, and here the message. */
  function assertFatal(line: string, message: RegExp): void {
    const { time, level, event, message: said, ...rest } = JSON.parse(line);
    assert.deepEqual({ level, event, rest }, { level: "error", event: "fatal", rest: {} });
    assert.ok(!Number.isNaN(Date.parse(time)) && time.endsWith("Z"), time);
    assert.match(said, message);
  }

  await t.step("a port in use: exit 1", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    const line = await fatalLine(["--log-format", "json", "--port", String(port)], 1);
    assertFatal(
      line,
      new RegExp(`^Cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`),
    );
  });
  await t.step("the metrics port in use: exit 1", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    const args = ["--log-format", "json", "--port", "0", "--metrics-port", String(port)];
    assertFatal(
      await fatalLine(args, 1),
      /^Cannot serve metrics on 127\.0\.0\.1:\d+: the address .*choose another --metrics-port$/,
    );
  });
  await t.step("a secret file that does not exist: exit 2", async () => {
    const file = `${fresh.home}/missing`;
    const line = await fatalLine(["--secret-file", file, "--log-format", "json"], 2);
    assertFatal(line, /^Cannot read the secret file ".*\/missing": it does not exist\. Create it/);
  });
  await t.step("a flag out of range, once the flags could be read: exit 2", async () => {
    const line = await fatalLine(["--log-format", "json", "--max-connections", "0"], 2);
    assertFatal(line, /^--max-connections must be a positive whole number, got "0"\. Run /);
  });
  await t.step("the tunnel: a secret file that does not exist, exit 2", async () => {
    const file = `${fresh.home}/missing`;
    const args = ["--listen", "127.0.0.1:0", "--log-format", "json", "--secret-file", file];
    assertFatal(await fatalLine(args, 2, true), /^Cannot read the secret file ".*\/missing"/);
  });
  await t.step("the tunnel: its listening port in use, exit 1", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const args = ["--listen", `127.0.0.1:${listener.addr.port}`, "--log-format", "json"];
    assertFatal(await fatalLine(args, 1, true), /^Cannot listen on .*: already in use/);
  });
  await t.step("flags that cannot be read say so in plain text", async () => {
    const line = await fatalLine(["--log-format", "json", "--bogus"], 2);
    assert.match(line, /^hmac-echo: Unknown option '--bogus'\. Run "hmac-echo serve --help"/);
  });
});
