/**
 * `deno task compile` end to end: builds both binaries and runs them with no Deno on the PATH.
 *
 * `deno compile` needs its `denort` base binary: from `DENORT_BIN`, or downloaded from
 * dl.deno.land. Where neither is available (a machine without that network, like this project's
 * CI) the test is reported as ignored, with the reason; it is never faked.
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
