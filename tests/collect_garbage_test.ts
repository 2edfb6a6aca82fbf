/** CollectAfterCloses (server/collect_garbage.ts): one collection after a wave of closes. */

import assert from "node:assert/strict";
import { runInNewContext } from "node:vm";
import {
  CollectAfterCloses,
  SETTLE_MS,
  STILL_OPEN_AT_MOST,
  WAVE,
} from "../server/collect_garbage.ts";

Deno.test("CollectAfterCloses collects once a wave of closes has settled, and only then", () => {
  let collections = 0;
  const collector = new CollectAfterCloses(() => collections++);
  let now = 0;
  const at = (open: number, ms = 100) => collector.observe(open, now += ms);
  for (let open = 0; open <= 4_000; open += 500) at(open);
  // The wave: connections close over several sweeps; nothing is collected while it goes on.
  for (let open = 4_000; open >= 800; open -= 400) at(open);
  assert.equal(collections, 0, "not during the wave");
  at(800, SETTLE_MS - 1);
  assert.equal(collections, 0, "not before it has settled");
  at(800, 1);
  assert.equal(collections, 1, "once it has");
  at(800, 10 * SETTLE_MS);
  assert.equal(collections, 1, "and not again for the same wave");
  // Fewer than WAVE closes since that collection: nothing more to gain.
  assert.ok(800 < WAVE);
  at(0);
  at(0, SETTLE_MS);
  assert.equal(collections, 1);
  // A wave that leaves more than a quarter of its peak open: their live heap would make the
  // pause long, so no collection until more have gone.
  at(10_000);
  const remaining = Math.floor(10_000 * STILL_OPEN_AT_MOST) + 1;
  at(remaining);
  at(remaining, SETTLE_MS);
  assert.equal(collections, 1, "not while more than a quarter remain");
  at(remaining - 1);
  at(remaining - 1, SETTLE_MS);
  assert.equal(collections, 2);
});

Deno.test("CollectAfterCloses's default collector is V8's own gc(), exposed on this runtime", () => {
  new CollectAfterCloses();
  assert.equal(typeof runInNewContext("gc"), "function");
});
