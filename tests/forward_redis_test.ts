/**
 * A real Redis behind the tunnel, as docs/DEPLOY.md sets it up: `redis-server` on a Unix socket
 * only (no TCP port), `serve --forward unix:…` and `connect --listen` as the deno.json tasks run
 * them, and redis-cli (and many clients at once) talking to the local port as if it were Redis.
 * `.ci/run` installs Redis from Debian; where it is missing the test is reported as ignored, with
 * the reason.
 */

import assert from "node:assert/strict";
import { decoder, encoder, SECRET, withTimeout } from "./_helpers.ts";
import { freshEnv, ROOT, ServerProcess, startServeTask, taskArgs } from "./_process.ts";
import { encodeCommand, RespClient } from "./_resp.ts";

function whyIgnored(): string | undefined {
  for (const command of ["redis-server", "redis-cli"]) {
    try {
      new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" })
        .outputSync();
    } catch {
      return `${command} is not installed (apt-get install redis-server redis-tools; .ci/run does)`;
    }
  }
  return undefined;
}
const ignoredBecause = whyIgnored();
if (ignoredBecause) console.log(`Redis test ignored: ${ignoredBecause}`);

/** Runs redis-cli with `args`, `input` on its stdin. */
async function redisCli(
  args: string[],
  input?: Uint8Array,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command("redis-cli", {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** `connect --listen ADDRESS` as the connect task runs it. */
function startTunnelTask(serverPort: number, listen: string, env: Record<string, string>) {
  return ServerProcess.start(
    Deno.execPath(),
    [...taskArgs("connect"), "--port", String(serverPort), "--listen", listen],
    { env, cwd: ROOT },
  );
}

Deno.test({
  name: "Redis through connect --listen and serve --forward: data, pipelines, 50 clients, a kill",
  ignore: ignoredBecause !== undefined,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "hmac-echo-redis-" });
    await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
    const redisSocket = `${dir}/redis.sock`;
    // Port 0: Redis listens on no TCP port at all, so the tunnel is the only way in.
    const redis = ServerProcess.start("bash", [
      "-c",
      'exec redis-server "$@" 1>&2',
      "redis-server",
      "--port",
      "0",
      "--unixsocket",
      redisSocket,
      "--unixsocketperm",
      "700",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ], { env: { PATH: fresh.env.PATH } });
    let server: ServerProcess | undefined;
    let tunnel: ServerProcess | undefined;
    const clients: RespClient[] = [];
    try {
      await redis.waitForLine(/ready to accept connections at /i);
      server = startServeTask([
        "--port",
        "0",
        "--forward",
        `unix:${redisSocket}`,
        "--metrics-port",
        "0",
      ], fresh.env);
      const serverPort = await server.port();
      await server.waitForLine(/ forwarding target=unix:/);
      tunnel = startTunnelTask(serverPort, "127.0.0.1:0", fresh.env);
      const local = await tunnel.port();
      const cli = (...args: string[]) => ["-h", "127.0.0.1", "-p", String(local), ...args];

      await t.step("redis-cli talks to the local port as if it were Redis", async () => {
        assert.deepEqual(await redisCli(cli("PING")), { code: 0, stdout: "PONG\n", stderr: "" });
        // The server really is on no TCP port: only the tunnel reaches it.
        assert.equal((await redisCli(cli("CONFIG", "GET", "port"))).stdout, "port\n0\n");
      });

      await t.step("SET then GET of a 1 MiB value, byte for byte", async () => {
        const random = new Uint8Array(512 * 1024);
        for (let at = 0; at < random.length; at += 65536) {
          crypto.getRandomValues(random.subarray(at, at + 65536));
        }
        const value = Array.from(random, (byte) => byte.toString(16).padStart(2, "0")).join("");
        assert.equal(value.length, 1024 * 1024);
        const set = await redisCli(cli("-x", "SET", "big"), encoder.encode(value));
        assert.equal(set.stdout, "OK\n", set.stderr);
        const get = await redisCli(cli("--raw", "GET", "big"));
        assert.equal(get.code, 0, get.stderr);
        assert.ok(get.stdout === `${value}\n`, `GET returned ${get.stdout.length} characters`);
      });

      await t.step("a pipelined batch of 10 000 commands (redis-cli --pipe)", async () => {
        const batch = Array.from(
          { length: 10_000 },
          (_, i) => encodeCommand(["SET", `key:${i}`, `value:${i}`]),
        ).join("");
        const piped = await redisCli(cli("--pipe"), encoder.encode(batch));
        assert.equal(piped.code, 0, piped.stderr);
        assert.match(piped.stdout, /errors: 0, replies: 10000/);
        const client = await RespClient.connect(local);
        try {
          assert.equal(await client.command("DBSIZE"), 10_001);
          assert.deepEqual(await client.command("MGET", "key:0", "key:9999"), [
            "value:0",
            "value:9999",
          ]);
        } finally {
          client.close();
        }
      });

      await t.step("50 clients at once, each its own session", async () => {
        await Promise.all(Array.from({ length: 50 }, async (_, i) => {
          const client = await RespClient.connect(local);
          try {
            for (let n = 0; n < 20; n++) await client.command("INCR", "counter");
            const mine = `client ${i}: ${"x".repeat(i * 100)}`;
            assert.deepEqual(
              await client.pipeline([["SET", `client:${i}`, mine], ["GET", `client:${i}`]]),
              ["OK", mine],
            );
          } finally {
            client.close();
          }
        }));
        const check = await redisCli(cli("GET", "counter"));
        assert.equal(check.stdout, "1000\n");
        const metricsAt = (await server!.waitForLine(/ metrics address=/)).match(/address=(\S+)/)!;
        const metrics = await (await fetch(`http://${metricsAt[1]}/metrics`)).text();
        const forwarded = Number(metrics.match(/^hmac_echo_forwarded_total (\d+)$/m)![1]);
        assert.ok(forwarded >= 56, `${forwarded} sessions forwarded`);
        assert.match(metrics, /^hmac_echo_forward_duration_seconds_count \d+$/m);
      });

      await t.step("connect --listen unix:…: a socket only its owner can use", async () => {
        const path = `${dir}/tunnel.sock`;
        const unixTunnel = startTunnelTask(serverPort, `unix:${path}`, fresh.env);
        try {
          await unixTunnel.waitForLine(/ listening address=unix:/);
          assert.equal((await Deno.lstat(path)).mode! & 0o777, 0o600);
          assert.equal((await redisCli(["-s", path, "GET", "counter"])).stdout, "1000\n");
        } finally {
          assert.equal((await unixTunnel.stop()).code, 0, unixTunnel.lines.join("\n"));
        }
        await assert.rejects(Deno.lstat(path), Deno.errors.NotFound, "removed at the end");
      });

      await t.step(
        "the server killed: open clients fail at once and cleanly, not hang",
        async () => {
          for (let i = 0; i < 5; i++) {
            const client = await RespClient.connect(local);
            clients.push(client);
            assert.equal(await client.command("PING"), "PONG");
          }
          server!.kill("SIGKILL");
          await server!.exited();
          for (const client of clients) {
            // The next command finds the connection closed: no reply, and no wait for one.
            await client.send("PING").catch(() => {});
            const reply = await withTimeout(
              client.nextReply().catch((error) => error),
              "a client's connection to end",
            );
            assert.ok(
              reply === undefined || reply instanceof Deno.errors.ConnectionReset,
              `got ${reply}`,
            );
          }
          // A new client is closed at once too; redis-cli says so and exits.
          for (let i = 0; i < 3; i++) {
            const late = await withTimeout(redisCli(cli("PING")), "redis-cli after the kill");
            assert.notEqual(late.code, 0);
            assert.match(late.stdout + late.stderr, /Server closed the connection|reset/i);
          }
          await tunnel!.waitForLine(/ dial-failed .*reason=ConnectionRefused/);
          const lines = tunnel!.lines.filter((line) => / dial-failed /.test(line));
          assert.equal(lines.length, 1, "the cause once, not once per connection");
        },
      );
    } finally {
      for (const client of clients) client.close();
      if (tunnel) assert.equal((await tunnel.stop()).code, 0, tunnel.lines.join("\n"));
      await server?.stop();
      await redis.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
