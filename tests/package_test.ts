/**
 * The package others depend on (deno.json `exports`, `publish`, `license`): what
 * `deno publish --dry-run` would ship, and the `./cli` export imported as a library module.
 */

import assert from "node:assert/strict";
import { decoder } from "./_helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("deno publish --dry-run passes and ships the product, its licence and its docs only, links whole", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    // --allow-dirty: a dry run publishes nothing, and the tests run on work in progress too.
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = decoder.decode(stderr);
  assert.equal(code, 0, output);
  const files = [...output.matchAll(/^\s+file:\/\/(\S+) \(/gm)].map((m) => m[1].slice(ROOT.length));
  for (const file of ["LICENSE", "README.md", "mod.ts", "main.ts", "server/serve_worker.ts"]) {
    assert.ok(files.includes(file), `${file} is not in the package:\n${files.join("\n")}`);
  }
  const notProduct = files.filter((file) =>
    /^(tests|bench|chaos|tools|bin|dist|\.ci)\//.test(file) || file === "BENCHMARKS.md"
  );
  assert.deepEqual(notProduct, []);
  // jsr.io renders the shipped Markdown: a relative link to a file left out would be broken there.
  for (const doc of files.filter((file) => file.endsWith(".md"))) {
    const text = await Deno.readTextFile(`${ROOT}${doc}`);
    for (const [, target] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      const file = new URL(target, `file:///${doc}`).pathname.slice(1);
      assert.ok(files.includes(file), `${doc} links to ${target}, which is not in the package`);
    }
  }
});

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
