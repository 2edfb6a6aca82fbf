/**
 * What the tests, the chaos suite and the benchmarks share when they run the program as its own
 * process (never imported by the product): the arguments deno.json's tasks give `deno`, and a
 * child's output as lines.
 *
 * @module
 */

import denoConfig from "../deno.json" with { type: "json" };

/** `deno task NAME` without the task runner in between: its `deno` arguments, split. */
export function taskArgs(name: "serve" | "connect"): string[] {
  const [deno, ...args] = denoConfig.tasks[name].split(" ");
  if (deno !== "deno") throw new Error(`the ${name} task does not start with "deno": ${deno}`);
  return args;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** The task's whole command, `deno` and `main.ts` as absolute paths: it runs from any folder. */
export function taskCommand(name: "serve" | "connect"): string[] {
  return [Deno.execPath(), ...taskArgs(name).map((arg) => arg === "main.ts" ? MAIN : arg)];
}

/** The complete lines of `stream`, as they arrive; a last line without its newline is dropped. */
export async function* linesOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
}
