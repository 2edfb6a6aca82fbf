/**
 * `deno task install` end to end: the README's install command puts a `hmac-echo` command into a
 * temporary install root, and that command runs as a user would run it, from another directory,
 * in a clean environment: `serve`, `connect`, `serve --workers 2`.
 */

import assert from "node:assert/strict";
import { dirname } from "node:path";
import denoConfig from "../deno.json" with { type: "json" };
import { decoder } from "./_helpers.ts";
import { freshEnv, ServerProcess } from "./_process.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** A task's permission and V8 flags: flag name → its values (empty for a flag without any). */
function permissionFlags(command: string): Map<string, Set<string>> {
  const flags = new Map<string, Set<string>>();
  for (const word of command.split(" ")) {
    if (!/^(-A|--allow-|--deny-|--v8-flags)/.test(word)) continue;
    const [name, values] = word.split(/=(.*)/);
    const set = flags.get(name) ?? new Set();
    for (const value of values ? values.split(",") : []) set.add(value);
    flags.set(name, set);
  }
  return flags;
}

Deno.test("deno task install grants the union of the serve and connect tasks' permissions", () => {
  const union = permissionFlags(denoConfig.tasks.serve);
  for (const [name, values] of permissionFlags(denoConfig.tasks.connect)) {
    union.set(name, new Set([...union.get(name) ?? [], ...values]));
  }
  assert.deepEqual(permissionFlags(denoConfig.tasks.install.command), union);
});

Deno.test("deno task install gives a hmac-echo command that serves and connects", async (t) => {
  await using fresh = await freshEnv();
  const installRoot = `${fresh.home}/deno-install-root`;
  const command = `${installRoot}/bin/hmac-echo`;
  // The installed command is a script that runs `deno`: this test's Deno, found on the PATH.
  const env = {
    ...fresh.env,
    DENO_INSTALL_ROOT: installRoot,
    PATH: `${dirname(Deno.execPath())}:${fresh.env.PATH}`,
  };

  await t.step("deno task install writes the command into $DENO_INSTALL_ROOT/bin", async () => {
    const install = await new Deno.Command(Deno.execPath(), {
      args: ["task", "install"],
      cwd: ROOT,
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(install.code, 0, decoder.decode(install.stderr));
    assert.ok((await Deno.stat(command)).mode! & 0o100, `${command} is not executable`);
  });

  /** Runs `hmac-echo connect … --message hi` against `port` and checks the echo. */
  async function connectSaysHi(port: number) {
    const result = await new Deno.Command(command, {
      args: ["connect", "--port", String(port), "--message", "hi"],
      cwd: fresh.home,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.deepEqual(
      {
        code: result.code,
        stdout: decoder.decode(result.stdout),
        stderr: decoder.decode(result.stderr),
      },
      { code: 0, stdout: "HI\n", stderr: "" },
    );
  }

  for (const workers of [1, 2]) {
    const args = workers === 1 ? [] : ["--workers", String(workers)];
    const serve = ["serve", "--port", "0", ...args];
    await t.step(`hmac-echo ${serve.join(" ")} answers hmac-echo connect`, async () => {
      // Run from a directory without deno.json: the command carries its own flags.
      const server = ServerProcess.start(command, serve, { env, cwd: fresh.home });
      try {
        const port = await server.port();
        assert.match(await server.waitForLine(/ listening /), new RegExp(` workers=${workers} `));
        await connectSaysHi(port);
      } finally {
        const status = await server.stop("SIGTERM");
        assert.equal(status.code, 0, server.lines.join("\n"));
      }
      assert.ok(server.lines.some((line) => / stopped /.test(line)), server.lines.join("\n"));
    });
  }

  await t.step("the first serve created the default secret in the user's config home", async () => {
    const path = `${fresh.env.XDG_CONFIG_HOME}/hmac-echo/secret`;
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});
