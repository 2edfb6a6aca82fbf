/**
 * `deno task compile` end to end: builds both binaries and runs them with no Deno on the PATH.
 *
 * `deno compile` needs its `denort` base binary: from `DENORT_BIN`, or downloaded from
 * dl.deno.land. Where neither is available (a machine without that network, like this project's
 * CI) the test is reported as ignored, with the reason; it is never faked. Without a base binary,
 * `deno task compile` must say so in one line: that is tested everywhere.
 */

import assert from "node:assert/strict";
import { decoder } from "./_helpers.ts";
import { freshEnv, ServerProcess } from "./_process.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const DOWNLOAD_OPT_IN = "HMAC_ECHO_TEST_COMPILE_DOWNLOAD";

function whyIgnored(): string | undefined {
  if (Deno.env.get("DENORT_BIN")) return undefined;
  if (Deno.env.get(DOWNLOAD_OPT_IN) === "1") return undefined;
  return "no denort base binary for deno compile: set DENORT_BIN=/path/to/denort, or " +
    `${DOWNLOAD_OPT_IN}=1 to let deno compile download it (tests stay off the network otherwise)`;
}

const ignoredBecause = whyIgnored();
if (ignoredBecause) console.log(`compile test ignored: ${ignoredBecause}`);

Deno.test({
  name: "deno task compile builds a server and a client that run without Deno",
  ignore: ignoredBecause !== undefined,
  async fn() {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(build.code, 0, decoder.decode(build.stderr));

    // No Deno anywhere on the PATH: the binaries must carry their own runtime.
    await using fresh = await freshEnv({ PATH: "/nonexistent" });
    const server = ServerProcess.start(`${ROOT}dist/hmac-echo-server`, ["--port", "0"], {
      env: fresh.env,
    });
    try {
      const port = await server.port();
      await server.waitForLine(/ secret-created path=/);
      const client = await new Deno.Command(`${ROOT}dist/hmac-echo-client`, {
        args: ["--port", String(port), "--message", "compiled"],
        env: fresh.env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(client.code, 0, decoder.decode(client.stderr));
      assert.equal(decoder.decode(client.stdout), "COMPILED\n");
    } finally {
      assert.equal((await server.stop()).code, 0, server.lines.join("\n"));
    }
  },
});

/** `deno task compile` with no base binary anywhere: the line it prints, and its status. */
async function compileWithout(
  env: Record<string, string>,
): Promise<{ code: number; lines: string[] }> {
  // An empty DENO_DIR holds no cached base binary, and a proxy on a closed port makes
  // dl.deno.land unreachable from any network, for the check and for deno compile alike.
  const denoDir = await Deno.makeTempDir({ prefix: "hmac-echo-compile-test-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = listener.addr.port;
  listener.close();
  try {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: denoDir,
        DENO_DIR: denoDir,
        HTTPS_PROXY: `http://127.0.0.1:${closedPort}`,
        NO_COLOR: "1",
        ...env,
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    // deno task first echoes the command it runs.
    const lines = decoder.decode(stderr).split("\n").filter((line) =>
      !/^(Task compile |$)/.test(line)
    );
    return { code, lines };
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
}

Deno.test("deno task compile without a base binary says in one line what is missing", async (t) => {
  await t.step("no DENORT_BIN, no cache, dl.deno.land unreachable", async () => {
    const { code, lines } = await compileWithout({});
    assert.equal(code, 1);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0],
      /^deno task compile: deno compile needs its base binary, denort [\d.]+, and cannot download it from dl\.deno\.land \(.*Connection refused.*\): set DENORT_BIN=\/path\/to\/denort, unzipped from https:\/\/dl\.deno\.land\/release\/v[\d.]+\/denort-[\w-]+\.zip$/,
    );
  });

  await t.step("DENORT_BIN naming no file", async () => {
    const { code, lines } = await compileWithout({ DENORT_BIN: "/nonexistent/denort" });
    assert.equal(code, 1);
    assert.deepEqual(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /^deno task compile: DENORT_BIN=\/nonexistent\/denort is not a file: /);
  });
});
