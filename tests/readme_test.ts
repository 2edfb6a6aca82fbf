/**
 * The README as a newcomer uses it: its library example, run as written from a project of its own
 * that links this checkout the way the README says, with the permissions the README names; and
 * its `connect` examples, which must paste as written on a machine with only Node.js.
 */

import assert from "node:assert/strict";
import { parseConnectArgs } from "../cli/connect.ts";
import { decoder } from "./_helpers.ts";
import { freshEnv, ROOT } from "./_process.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

/** The text of a `## heading` section, up to the next one. */
function section(heading: string): string {
  const start = README.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README.md has no "## ${heading}" section`);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

/** The fenced blocks of `text` with the info string `lang`, in order. */
function blocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp("^```" + lang + "\\n([\\s\\S]*?)^```$", "gm"))]
    .map((match) => match[1]);
}

/** A command line as the shell splits it, for the simple quoting the README uses. */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((match) => match[1] ?? match[2]);
}

Deno.test("the README's library example runs as written from another project", async () => {
  const library = section("As a library");
  const [config] = blocks(library, "json");
  const [program] = blocks(library, "ts");
  const [run] = blocks(library, "sh");
  assert.ok(config && program && run, "the section has a json, a ts and an sh block");
  // The README's layout: this checkout cloned as ../hmac-echo, next to the new project.
  await using fresh = await freshEnv();
  await Deno.symlink(ROOT.replace(/\/$/, ""), `${fresh.home}/hmac-echo`);
  const project = `${fresh.home}/my-app`;
  await Deno.mkdir(project);
  await Deno.writeTextFile(`${project}/deno.json`, config);
  await Deno.writeTextFile(`${project}/main.ts`, program);

  const [deno, ...args] = words(run.split("#")[0]);
  assert.equal(deno, "deno");
  assert.ok(!args.some((arg) => arg === "-A" || arg.startsWith("--allow-all")), run);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: project,
    env: fresh.env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = decoder.decode(stdout);
  assert.equal(code, 0, decoder.decode(stderr));
  assert.match(output, /^listening on 127\.0\.0\.1:\d+\nhello\n$/);
});

Deno.test("every connect example in the README pastes as written on a machine with only Node.js", () => {
  // What each line runs: after any `echo … |`, before any comment.
  const examples = blocks(README, "sh").flatMap((block) => block.split("\n"))
    .map((line) => ({ line, command: line.split(/\s#/)[0].split("|").at(-1)! }))
    .filter(({ command }) => /\bconnect\b/.test(command));
  assert.ok(examples.length >= 5, `too few connect examples: ${examples.length}`);
  for (const { line: example, command } of examples) {
    const [npx, yes, deno, task, connect, ...args] = words(command);
    assert.deepEqual(
      [npx, yes, deno, task, connect],
      ["npx", "-y", "deno@2.9.6", "task", "connect"],
      example,
    );
    assert.doesNotThrow(() => parseConnectArgs(args), example);
  }
});
