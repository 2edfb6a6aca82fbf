/**
 * How `serve` meets signals as users send them: Ctrl-C to a `deno task serve` process group,
 * SIGTERM with a drain delay behind a balancer, SIGHUP to reload the secret files.
 */

import assert from "node:assert/strict";
import { exchange, HandshakeRejectedError } from "../client/client.ts";
import {
  decoder,
  encoder,
  openAuthenticated,
  readExactly,
  readToEnd,
  SECRET,
  startServer,
  withTimeout,
} from "./_helpers.ts";
import { REPEATED_SIGNAL_MS, ShutdownSignals } from "../cli/signals.ts";
import { freshEnv, httpGet, ROOT, ServerProcess, startServeTask } from "./_process.ts";

Deno.test("Ctrl-C to a `deno task serve` process group drains the session in flight, exit 0", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  // The README's command in a process group of its own, as a terminal runs it: the task runner
  // and the server both get the SIGINT, and the runner forwards its copy to the server too.
  const server = ServerProcess.start(
    "setsid",
    [Deno.execPath(), "task", "serve", "--port", "0"],
    { env: fresh.env, cwd: ROOT },
  );
  let held: Awaited<ReturnType<typeof openAuthenticated>> | undefined;
  try {
    const port = await server.port();
    held = await openAuthenticated(port);
    await server.waitForLine(new RegExp(` authenticated id=\\d+ remote=${held.remote} `));
    Deno.kill(-server.pid, "SIGINT"); // the whole group, as the terminal does
    await server.waitForLine(/ shutting-down signal=SIGINT /);
    await held.conn.write(encoder.encode("drained"));
    await held.conn.closeWrite();
    assert.equal(decoder.decode(await readToEnd(held.conn)), "DRAINED");
    const status = await server.exited();
    assert.equal(status.code, 0, server.lines.join("\n"));
    assert.ok(!server.lines.some((line) => / forced-exit /.test(line)), server.lines.join("\n"));
  } finally {
    held?.conn.close();
    await server.stop();
  }
});

Deno.test("Ctrl-C to a `deno task connect --listen` process group closes the tunnel, exit 0", async () => {
  await using started = await startServer();
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const tunnel = ServerProcess.start(
    "setsid",
    [
      Deno.execPath(),
      "task",
      "connect",
      "--listen",
      "127.0.0.1:0",
      "--port",
      String(started.port),
    ],
    { env: fresh.env, cwd: ROOT },
  );
  try {
    const local = await Deno.connect({ hostname: "127.0.0.1", port: await tunnel.port() });
    await local.write(encoder.encode("through"));
    await local.closeWrite();
    assert.equal(decoder.decode(await readToEnd(local)), "THROUGH");
    local.close();
    Deno.kill(-tunnel.pid, "SIGINT"); // the whole group, as the terminal does
    const status = await tunnel.exited();
    assert.equal(status.code, 0, tunnel.lines.join("\n"));
    assert.ok(tunnel.lines.some((line) => / shutting-down signal=SIGINT/.test(line)));
    assert.ok(!tunnel.lines.some((line) => / forced-exit /.test(line)), tunnel.lines.join("\n"));
  } finally {
    await tunnel.stop();
  }
});

Deno.test("SIGTERM with --drain-delay: /healthz says 503 while new clients are still served", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  const server = startServeTask(
    ["--port", "0", "--metrics-port", "0", "--drain-delay", "30", "--grace-period", "1"],
    fresh.env,
  );
  try {
    const port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    server.kill("SIGTERM");
    await server.waitForLine(/ draining drainDelayMs=30000/);
    const health = await fetch(`http://${metrics}/healthz`);
    assert.equal(`${health.status} ${await health.text()}`, "503 draining\n");
    // The listener is still open: a client the balancer sent just before it noticed is served.
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("late") });
    assert.equal(decoder.decode(reply), "LATE");
    // Another kind of signal is a deliberate second request: it ends the drain at once.
    server.kill("SIGINT");
    assert.equal((await server.exited()).code, 1);
    assert.ok(
      server.lines.some((line) => / forced-exit reason="SIGINT during shutdown"/.test(line)),
    );
  } finally {
    await server.stop();
  }
});

Deno.test("SIGTERM with --drain-delay and --grace-period: serve on, stop accepting, close the held session, exit 0", async () => {
  await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
  // 5 s: the late client and the health check must fit inside the delay on a busy machine.
  const server = startServeTask(
    ["--port", "0", "--metrics-port", "0", "--drain-delay", "5", "--grace-period", "1"],
    fresh.env,
  );
  let held: Awaited<ReturnType<typeof openAuthenticated>> | undefined;
  try {
    const port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    held = await openAuthenticated(port);
    const heldId =
      (await server.waitForLine(new RegExp(` authenticated id=\\d+ remote=${held.remote} `)))
        .match(/ id=(\d+) /)![1];

    server.kill("SIGTERM");
    await server.waitForLine(/ draining drainDelayMs=5000$/);
    assert.deepEqual(await httpGet(metrics, "/healthz"), { status: 503, body: "draining\n" });
    const reply = await exchange({ secret: SECRET, port, message: encoder.encode("late") });
    assert.equal(decoder.decode(reply), "LATE", "a client sent during the delay is served");
    await held.conn.write(encoder.encode("still here"));
    assert.equal(decoder.decode(await readExactly(held.conn, 10)), "STILL HERE");

    // After the delay the listener closes; the held session alone is left to finish.
    await server.waitForLine(/ draining sessions=1 gracePeriodMs=1000$/);
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    // It never finishes, so the grace period ends it: the server closes it, not the client.
    await server.waitForLine(/ grace-period-over closing=1$/);
    const rest = await withTimeout(readToEnd(held.conn), "the held session to be closed");
    assert.equal(rest.length, 0);

    const status = await server.exited();
    assert.equal(status.code, 0, server.lines.join("\n"));
    const events = [
      / shutting-down signal=SIGTERM /,
      / draining drainDelayMs=5000$/,
      new RegExp(` authenticated id=(?!${heldId} )\\d+ `), // the late client
      / draining sessions=1 gracePeriodMs=1000$/,
      / grace-period-over closing=1$/,
      new RegExp(` closed id=${heldId} `),
      / stopped /,
    ];
    const seen = events.map((pattern) => server.lines.findIndex((line) => pattern.test(line)));
    for (let i = 1; i < events.length; i++) {
      assert.ok(
        seen[i - 1] >= 0 && seen[i - 1] < seen[i],
        `${events[i - 1]} before ${events[i]}:\n${server.lines.join("\n")}`,
      );
    }
    assert.ok(!server.lines.some((line) => / forced-exit /.test(line)), server.lines.join("\n"));
  } finally {
    held?.conn.close();
    await server.stop();
  }
});

Deno.test("ShutdownSignals: a copy of the first signal is one request; a later one forces", () => {
  const signals = new ShutdownSignals();
  assert.equal(signals.receive("SIGINT", 0), "shut-down");
  assert.equal(signals.receive("SIGINT", 5), "repeat", "the task runner's forwarded copy");
  assert.equal(signals.receive("SIGINT", REPEATED_SIGNAL_MS - 1), "repeat");
  assert.equal(
    signals.receive("SIGINT", REPEATED_SIGNAL_MS),
    "force",
    "a deliberate second Ctrl-C",
  );
  const other = new ShutdownSignals();
  assert.equal(other.receive("SIGTERM", 0), "shut-down");
  assert.equal(other.receive("SIGTERM", 5), "repeat", "kill -TERM to the group reaches it twice");
  assert.equal(other.receive("SIGINT", 6), "force", "another signal is never a copy");
});

for (const workers of [1, 2]) {
  Deno.test(`SIGHUP reloads the secret file without dropping a session (--workers ${workers})`, async () => {
    await using fresh = await freshEnv();
    const file = `${fresh.home}/secret`;
    const oldSecret = "the old secret, 32 bytes or so, ok";
    const newSecret = "the new secret after the rotation!";
    await Deno.writeTextFile(file, oldSecret, { mode: 0o600 });
    const server = startServeTask(
      ["--port", "0", "--metrics-port", "0", "--secret-file", file, "--workers", String(workers)],
      fresh.env,
    );
    const say = (secret: string, text: string) => sayWith(secret, port, text);
    let port = 0;
    let held: Awaited<ReturnType<typeof openAuthenticated>> | undefined;
    try {
      port = await server.port();
      const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
      held = await openAuthenticated(port, encoder.encode(oldSecret));
      assert.equal(await say(oldSecret, "old"), "OLD");

      await Deno.writeTextFile(file, newSecret);
      server.kill("SIGHUP");
      await server.waitForLine(/ secrets-reloaded secret="file /);
      assert.equal(await say(newSecret, "new"), "NEW");
      await assert.rejects(say(oldSecret, "old"), HandshakeRejectedError);

      // A bad file keeps the secret in use, and says why.
      await Deno.writeTextFile(file, "");
      server.kill("SIGHUP");
      assert.match(await server.waitForLine(/ reload-failed /), /empty/);
      assert.equal(await say(newSecret, "still"), "STILL");

      // The session authenticated under the old secret was never disturbed.
      await held.conn.write(encoder.encode("held"));
      await held.conn.closeWrite();
      assert.equal(decoder.decode(await readToEnd(held.conn)), "HELD");

      const text = await (await fetch(`http://${metrics}/metrics`)).text();
      assert.match(text, /^hmac_echo_secret_reloads_total 1$/m);
      assert.match(text, /^hmac_echo_secret_reload_failures_total 1$/m);
    } finally {
      held?.conn.close();
      assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
    }
  });
}

/** `serve` with both secret files, and a metrics port: a server that can rotate by SIGHUP. */
function startRotating(env: Record<string, string>, secretFile: string, previousFile: string) {
  return startServeTask(
    ["--port", "0", "--metrics-port", "0", "--secret-file", secretFile]
      .concat(["--previous-secret-file", previousFile]),
    env,
  );
}

/** One exchange under `secret`; the reply as text. */
async function sayWith(secret: string, port: number, text: string): Promise<string> {
  const reply = await exchange({
    secret: encoder.encode(secret),
    port,
    message: encoder.encode(text),
  });
  return decoder.decode(reply);
}

Deno.test("SIGHUP reloads --previous-secret-file; a bad one keeps the previous secret in use", async () => {
  await using fresh = await freshEnv();
  const secretFile = `${fresh.home}/secret`;
  const previousFile = `${fresh.home}/secret.previous`;
  const current = "the current secret, 32 bytes long";
  const oldPrevious = "the previous secret at the start!";
  const newPrevious = "the previous secret after SIGHUP!";
  await Deno.writeTextFile(secretFile, current, { mode: 0o600 });
  await Deno.writeTextFile(previousFile, oldPrevious, { mode: 0o600 });
  const server = startRotating(fresh.env, secretFile, previousFile);
  const say = (secret: string, text: string) => sayWith(secret, port, text);
  let port = 0;
  try {
    port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    const scrape = async () => await (await fetch(`http://${metrics}/metrics`)).text();
    assert.equal(await say(oldPrevious, "before"), "BEFORE");

    await Deno.writeTextFile(previousFile, newPrevious);
    server.kill("SIGHUP");
    await server.waitForLine(
      new RegExp(` secrets-reloaded secret="file \\S+" previous="file ${previousFile}"`),
    );
    assert.equal(await say(newPrevious, "after"), "AFTER");
    assert.match(await scrape(), /^hmac_echo_authenticated_previous_secret_total 2$/m);
    await assert.rejects(say(oldPrevious, "gone"), HandshakeRejectedError);

    // Each bad file is refused with its reason, and the previous secret in use stays.
    const bad = [
      { why: /is empty/, write: () => Deno.writeTextFile(previousFile, "") },
      { why: /is 5 bytes: at least 16/, write: () => Deno.writeTextFile(previousFile, "short") },
      { why: /does not exist/, write: () => Deno.remove(previousFile) },
    ];
    for (const { why, write } of bad) {
      await write();
      server.kill("SIGHUP");
      const failed = await server.waitForLine(new RegExp(` reload-failed .*${why.source}`));
      assert.match(failed, /note="the secrets in use are unchanged"/);
      assert.equal(await say(newPrevious, "kept"), "KEPT");
    }
    assert.equal(await say(current, "current"), "CURRENT");

    const text = await scrape();
    assert.match(text, /^hmac_echo_secret_reloads_total 1$/m);
    assert.match(text, /^hmac_echo_secret_reload_failures_total 3$/m);
    assert.match(text, /^hmac_echo_authenticated_previous_secret_total 5$/m);
  } finally {
    assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
  }
});

Deno.test("SIGHUP alone begins and ends a rotation when the previous file starts as a copy of the secret", async () => {
  await using fresh = await freshEnv();
  const secretFile = `${fresh.home}/secret`;
  const previousFile = `${fresh.home}/secret.previous`;
  const first = "the first secret, before rotating";
  const second = "the second secret, after rotating";
  // docs/DEPLOY.md's way to rotate by reloads: the flag is always there, and between rotations
  // its file holds the secret itself, which accepts no one the secret does not.
  for (const file of [secretFile, previousFile]) {
    await Deno.writeTextFile(file, first, { mode: 0o600 });
  }
  const server = startRotating(fresh.env, secretFile, previousFile);
  const say = (secret: string, text: string) => sayWith(secret, port, text);
  const reload = async () => {
    const after = server.lines.length;
    server.kill("SIGHUP");
    await server.waitForLine(/ secrets-reloaded /, { after });
  };
  let port = 0;
  try {
    port = await server.port();
    const metrics = (await server.waitForLine(/ metrics address=/)).match(/address=(\S+)/)![1];
    const usedPrevious = async () =>
      Number(
        (await (await fetch(`http://${metrics}/metrics`)).text())
          .match(/^hmac_echo_authenticated_previous_secret_total (\d+)$/m)![1],
      );
    assert.equal(await say(first, "idle"), "IDLE");
    assert.equal(await usedPrevious(), 0, "a previous file equal to the secret is never used");

    // Begin: the secret becomes the previous one (already so), the new one the secret.
    await Deno.writeTextFile(secretFile, second);
    await reload();
    assert.equal(await say(second, "new"), "NEW");
    assert.equal(await say(first, "old"), "OLD");
    assert.equal(await usedPrevious(), 1);

    // End: the previous file becomes a copy of the secret again.
    await Deno.writeTextFile(previousFile, second);
    await reload();
    await assert.rejects(say(first, "late"), HandshakeRejectedError);
    assert.equal(await say(second, "done"), "DONE");
    assert.equal(await usedPrevious(), 1);
  } finally {
    assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
  }
});
