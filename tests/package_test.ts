/** The package others depend on (deno.json `exports`): the `./cli` export imported as a module. */

import assert from "node:assert/strict";
import { decoder } from "./_helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("the ./cli export runs the command only as the main module", async () => {
  // Imported, main.ts must neither run the command (which would print usage and exit 2) nor exit.
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `await import(${JSON.stringify(`${ROOT}main.ts`)}); console.log("imported");`],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.deepEqual(
    { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) },
    { code: 0, stdout: "imported\n", stderr: "" },
  );
});
