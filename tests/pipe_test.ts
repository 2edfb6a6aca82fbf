/**
 * `pipeBoth` (_pipe.ts) on scripted streams: what it passes on, in what order, when it
 * half-closes, what a failure does, and how big the buffers it reads into are. tests/forward_test.ts
 * runs it between real sockets.
 */

import assert from "node:assert/strict";
import { pipeBoth, type PipeEnd, type PipeFailure } from "../_pipe.ts";

/** A stream whose reads the test feeds and whose writes it records. */
class ScriptedEnd implements PipeEnd {
  readonly written: Uint8Array[] = [];
  readonly bufferSizes: number[] = [];
  halfClosed = false;
  closed = false;
  #queue: (Uint8Array | null | Error)[] = [];
  #waiting?: (value: Uint8Array | null | Error) => void;
  #writeError?: Error;
  #watchers: { done: () => boolean; resolve: () => void }[] = [];

  /** Resolves once `done()` holds, checked whenever a read starts or a half-close arrives. */
  until(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => this.#watchers.push({ done, resolve }));
  }

  #changed(): void {
    this.#watchers = this.#watchers.filter((w) => !(w.done() && (w.resolve(), true)));
  }

  /** The next read returns `chunk`; `null` is the end, an Error a failed read. */
  feed(chunk: Uint8Array | null | Error): void {
    if (this.#waiting) {
      const waiting = this.#waiting;
      this.#waiting = undefined;
      waiting(chunk);
    } else {
      this.#queue.push(chunk);
    }
  }

  /** From now on, writes fail with `error`. */
  failWrites(error: Error): void {
    this.#writeError = error;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    this.bufferSizes.push(buffer.length);
    this.#changed();
    const next = this.#queue.length > 0
      ? this.#queue.shift()!
      : await new Promise<Uint8Array | null | Error>((resolve) => this.#waiting = resolve);
    if (next instanceof Error) throw next;
    if (next === null) return null;
    assert.ok(next.length <= buffer.length, "the test feeds no more than the buffer holds");
    buffer.set(next);
    return next.length;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#writeError) return Promise.reject(this.#writeError);
    this.written.push(data.slice());
    return Promise.resolve(data.length);
  }

  closeWrite(): Promise<void> {
    this.halfClosed = true;
    this.#changed();
    return Promise.resolve();
  }

  /** What `abort` does: a waiting read fails, as on a closed socket. */
  close(): void {
    this.closed = true;
    this.feed(new Deno.errors.BadResource("closed"));
  }

  text(): string {
    return this.written.map((chunk) => new TextDecoder().decode(chunk)).join("");
  }
}

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("pipeBoth passes bytes both ways in order and each half-close on as a half-close", async () => {
  const a = new ScriptedEnd();
  const b = new ScriptedEnd();
  const chunks: string[] = [];
  const piping = pipeBoth(a, b, {
    onChunk: (from, n) => chunks.push(`${from}:${n}`),
    abort: () => assert.fail("nothing failed"),
  });
  a.feed(bytes("GET /"));
  a.feed(bytes(" HTTP/1.0"));
  a.feed(null); // a's half-close
  b.feed(bytes("200 OK"));
  b.feed(null);
  const result = await piping;
  assert.equal(b.text(), "GET / HTTP/1.0");
  assert.equal(a.text(), "200 OK");
  assert.ok(b.halfClosed && a.halfClosed);
  assert.deepEqual(result, { aToB: 14, bToA: 6 });
  assert.deepEqual(chunks.sort(), ["a:5", "a:9", "b:6"]);
});

Deno.test("pipeBoth: a half-closed side can still receive until the other side is done", async () => {
  const a = new ScriptedEnd();
  const b = new ScriptedEnd();
  const piping = pipeBoth(a, b, { abort: () => assert.fail("nothing failed") });
  a.feed(null);
  await b.until(() => b.halfClosed);
  b.feed(bytes("late"));
  b.feed(bytes(" answer"));
  b.feed(null);
  await piping;
  assert.equal(a.text(), "late answer");
});

Deno.test("pipeBoth: the first failure aborts once, and the pipe ends when both directions have", async () => {
  const a = new ScriptedEnd();
  const b = new ScriptedEnd();
  const failures: PipeFailure[] = [];
  const piping = pipeBoth(a, b, {
    abort: (failure) => {
      failures.push(failure);
      a.close();
      b.close();
    },
  });
  a.feed(bytes("partial"));
  b.feed(new Deno.errors.ConnectionReset("reset by peer"));
  const result = await piping;
  assert.equal(failures.length, 1);
  assert.equal(failures[0].side, "b");
  assert.equal(failures[0].op, "read");
  assert.ok(failures[0].error instanceof Deno.errors.ConnectionReset);
  assert.deepEqual(result.failure, failures[0]);
  assert.ok(!a.halfClosed, "a failure is not a half-close");
});

Deno.test("pipeBoth: a side that half-closed and then went away ends its direction cleanly", async () => {
  const a = new ScriptedEnd();
  const b = new ScriptedEnd();
  const piping = pipeBoth(a, b, { abort: () => assert.fail("not a failure") });
  b.feed(bytes("+OK\r\n"));
  b.feed(null); // the target answered and half-closed…
  await a.until(() => a.halfClosed);
  b.failWrites(new Deno.errors.BrokenPipe("broken pipe")); // …and then closed
  a.feed(bytes("PING\r\n")); // still sent by the client, with nowhere to go
  a.feed(bytes("PING\r\n"));
  a.feed(null); // read and discarded up to the client's own half-close
  const result = await piping;
  assert.equal(result.failure, undefined);
  assert.equal(a.text(), "+OK\r\n");
  // Read to the client's half-close: closing with unread bytes would reset the connection.
  assert.equal(a.bufferSizes.length, 3, "both PINGs and the end were read");
});

Deno.test("pipeBoth reads into a small buffer while idle, a large one while busy", async () => {
  const a = new ScriptedEnd();
  const b = new ScriptedEnd();
  const piping = pipeBoth(a, b, { abort: () => assert.fail("nothing failed") });
  const fill = () => a.feed(new Uint8Array(a.bufferSizes.at(-1)!));
  // Full reads: 1 KiB, then doubling up to 64 KiB.
  for (let i = 0; i < 8; i++) {
    await waitForRead(a, i + 1);
    fill();
  }
  await waitForRead(a, 9);
  assert.deepEqual(a.bufferSizes, [1, 2, 4, 8, 16, 32, 64, 64, 64].map((k) => k * 1024));
  // One short read ends the burst: the read that may wait for an idle peer is back at 1 KiB.
  a.feed(bytes("x"));
  await waitForRead(a, 10);
  assert.equal(a.bufferSizes.at(-1), 1024);
  a.feed(null);
  b.feed(null);
  await piping;
  assert.deepEqual(b.bufferSizes, [1024], "an idle direction never grew");
});

/** Resolves once `end` has started its `count`th read. */
function waitForRead(end: ScriptedEnd, count: number): Promise<void> {
  return end.until(() => end.bufferSizes.length >= count);
}
