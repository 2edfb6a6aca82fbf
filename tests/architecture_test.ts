/**
 * docs/ARCHITECTURE.md's import rule, checked on the source: which layer may import which, and no
 * cycles. A new module that breaks the rule fails here, naming the import.
 */

import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const ROOT = new URL("../", import.meta.url).pathname;

/** Layer of a product file, by folder; root modules are the shared base. */
function layer(file: string): string {
  if (file === "main.ts" || file.startsWith("bin/")) return "entry";
  if (file === "mod.ts") return "library";
  const folder = file.split("/")[0];
  return ["cli", "server", "client", "protocol"].includes(folder) ? folder : "base";
}

/** Which layers each layer may import (docs/ARCHITECTURE.md). */
const MAY_IMPORT: Record<string, string[]> = {
  entry: ["cli"],
  library: ["server", "client", "protocol", "base"],
  cli: ["cli", "server", "client", "protocol", "base"],
  server: ["server", "protocol", "base"],
  client: ["client", "protocol", "base"],
  protocol: ["protocol", "base"],
  base: ["base"],
};

function productFiles(dir = ""): string[] {
  const files: string[] = [];
  for (const entry of Deno.readDirSync(join(ROOT, dir))) {
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) {
      if (["cli", "server", "client", "protocol", "bin"].includes(path.split("/")[0])) {
        files.push(...productFiles(path));
      }
    } else if (path.endsWith(".ts")) {
      files.push(path);
    }
  }
  return files;
}

/**
 * The relative `.ts` imports of `file`, as root paths: static imports and re-exports, and with
 * `workerUrls` the modules it starts as worker threads (another isolate: no import cycle).
 */
function importsOf(file: string, workerUrls: boolean): string[] {
  const text = Deno.readTextFileSync(join(ROOT, file))
    // Doc examples import their own module by name; they are not imports of the module.
    .replace(/```[\s\S]*?```/g, "");
  const pattern = workerUrls
    ? /(?:from|import|new URL\()\s*\(?\s*"(\.{1,2}\/[^"]+\.ts)"/g
    : /(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+\.ts)"/g;
  const specifiers = [...text.matchAll(pattern)].map((match) => match[1]);
  return specifiers.map((specifier) => relative(ROOT, join(ROOT, dirname(file), specifier)));
}

const files = productFiles();
const graph = new Map(files.map((file) => [file, importsOf(file, true)]));
const staticGraph = new Map(files.map((file) => [file, importsOf(file, false)]));

Deno.test("every import follows the layer rule of docs/ARCHITECTURE.md", () => {
  const broken: string[] = [];
  for (const [file, imports] of graph) {
    for (const target of imports) {
      if (!MAY_IMPORT[layer(file)].includes(layer(target))) {
        broken.push(`${file} (${layer(file)}) imports ${target} (${layer(target)})`);
      }
    }
  }
  assert.deepEqual(broken, []);
  assert.ok(graph.size > 20, `found only ${graph.size} product files`);
});

Deno.test("the product modules import each other without cycles", () => {
  const cycles: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "visiting") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" -> "));
      return;
    }
    state.set(file, "visiting");
    for (const target of staticGraph.get(file) ?? []) visit(target, [...path, file]);
    state.set(file, "done");
  };
  for (const file of staticGraph.keys()) visit(file, []);
  assert.deepEqual(cycles, []);
});
