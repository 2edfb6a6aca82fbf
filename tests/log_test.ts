/** The logger: text and JSON lines, quiet mode, and the per-event rate limit. */

import assert from "node:assert/strict";
import { StderrLogger, type StderrLoggerOptions } from "../log.ts";
import { decoder } from "./_helpers.ts";

function capture(options: StderrLoggerOptions = {}) {
  const lines: string[] = [];
  const logger = new StderrLogger({
    ...options,
    output: (bytes) => lines.push(decoder.decode(bytes)),
  });
  return { logger, lines };
}

Deno.test("StderrLogger writes one text line per event, quoting values with spaces", () => {
  const { logger, lines } = capture();
  logger.log("warn", "rejected", {
    id: 7,
    remote: "127.0.0.1:5",
    detail: "not hex",
    skip: undefined,
  });
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warn rejected id=7 remote=127\.0\.0\.1:5 detail="not hex"\n$/,
  );
});

Deno.test("StderrLogger with format json writes one parseable object per line", () => {
  const { logger, lines } = capture({ format: "json" });
  logger.log("info", "closed", { id: 1, bytesIn: 40, remote: 'quote " and\nnewline' });
  assert.equal(lines.length, 1);
  assert.ok(lines[0].endsWith("}\n") && !lines[0].slice(0, -1).includes("\n"));
  const event = JSON.parse(lines[0]);
  assert.deepEqual(
    { ...event, time: undefined },
    {
      time: undefined,
      level: "info",
      event: "closed",
      id: 1,
      bytesIn: 40,
      remote: 'quote " and\nnewline',
    },
  );
  assert.ok(!Number.isNaN(Date.parse(event.time)));
});

Deno.test("StderrLogger quiet drops info but keeps notices, warnings and errors", () => {
  const { logger, lines } = capture({ quiet: true });
  for (const level of ["info", "notice", "warn", "error"] as const) logger.log(level, level);
  assert.deepEqual(lines.map((line) => line.split(" ")[1]), ["notice", "warn", "error"]);
});

Deno.test("StderrLogger limits each event's lines per second and reports what it dropped", () => {
  const { logger, lines } = capture({ maxPerSecond: 10 });
  for (let i = 0; i < 1_000; i++) logger.log("warn", "refused", { i });
  logger.log("notice", "other-event");
  logger.flush();
  const written = lines.filter((line) => / refused /.test(line)).length;
  const dropped = lines
    .filter((line) => / log-suppressed event=refused /.test(line))
    .map((line) => Number(line.match(/ count=(\d+)/)![1]));
  // The 1 000 events may straddle a second boundary: then two windows of 10 each.
  assert.ok(written === 10 || written === 20, `${written} lines written`);
  assert.ok(dropped.length >= 1);
  assert.equal(written + dropped.reduce((a, b) => a + b, 0), 1_000, "every event is accounted for");
  assert.equal(lines.filter((line) => / other-event/.test(line)).length, 1);
});

Deno.test("StderrLogger drops and counts a line it cannot write, instead of throwing", () => {
  let calls = 0;
  const logger = new StderrLogger({
    output: () => {
      calls++;
      throw new Deno.errors.BrokenPipe("Broken pipe (os error 32)");
    },
  });
  logger.log("warn", "rejected", { reason: "wrong-digest" });
  logger.log("notice", "listening");
  assert.equal(calls, 2);
  assert.equal(logger.droppedLines, 2);
});
