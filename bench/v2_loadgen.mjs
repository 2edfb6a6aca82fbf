// Load generator for the cost of protocol v2 against v1 (BENCHMARKS.md): the same Node.js process
// drives every variant, so the ratios between them compare like with like. It speaks the protocol
// through tests/peers/v2_client.mjs, the independent implementation written from PROTOCOL.md, and
// verifies every echoed byte.
//
// Usage: node v2_loadgen.mjs sessions|bulk|hold --port P --secret S --variant V
//          [--concurrency N] [--duration SECONDS] [--connections N]
// hold: opens N authenticated connections, prints one line, and holds them until stdin closes.
// V: v1, v2-plain, v2-integrity, v2-encrypt (hello version 02), v3-integrity, v3-encrypt (hello
// version 03: a fresh X25519 key exchange per connection, the client's default); v2 and v3 use
// HMAC-SHA-256. Prints one JSON line.

import crypto from "node:crypto";
import net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { handshake, MAX_PAYLOAD, Reader, seal } from "../tests/peers/v2_client.mjs";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string" },
    secret: { type: "string" },
    variant: { type: "string" },
    concurrency: { type: "string", default: "10" },
    duration: { type: "string", default: "4" },
    connections: { type: "string", default: "1000" },
  },
});
const mode = positionals[0];
const port = Number(values.port);
const secret = Buffer.from(values.secret, "utf8");
const variant = values.variant;
const durationMs = Number(values.duration) * 1000;

/** Connects and authenticates as `variant`; framed variants get their keys. */
async function open() {
  if (variant === "v1") {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
    const reader = new Reader(socket);
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const challenge = await reader.take(32);
    socket.write(crypto.createHmac("sha1", secret).update(challenge).digest("hex"));
    return { socket, reader, keys: null };
  }
  const [version, frameMode] = variant.split("-");
  return await handshake({
    host: "127.0.0.1",
    port,
    secret,
    digest: "sha256",
    mode: frameMode,
    version: version === "v3" ? 3 : 2,
  });
}

/** Sends `data` and then the end of input (an end frame when framed). */
function sendAll({ socket, keys }, chunks, seqStart = 0) {
  let seq = seqStart;
  let ok = true;
  for (const chunk of chunks) ok = socket.write(keys ? seal(keys, seq++, chunk) : chunk);
  return { seq, ok };
}

/** Reads reply bytes until the end (the end frame, or the server's FIN); calls onBytes for each. */
async function receiveAll({ reader, keys }, onBytes) {
  if (!keys) {
    while (await reader.need(1)) onBytes(await reader.take(reader.buffered.length));
    return;
  }
  for (let seq = 0;; seq++) {
    const payload = await reader.nextPayload(keys, seq);
    if (payload.length === 0) return;
    onBytes(payload);
  }
}

const MESSAGE = Buffer.from("hello benchmark!");
const EXPECTED = Buffer.from("HELLO BENCHMARK!");
let errors = 0;
let verifyFailures = 0;
const cpuBefore = process.cpuUsage();
const started = performance.now();

async function oneSession() {
  const session = await open();
  try {
    const { socket, keys } = session;
    sendAll(session, [MESSAGE]);
    if (keys) socket.write(seal(keys, 1, Buffer.alloc(0)));
    socket.end();
    const reply = [];
    await receiveAll(session, (bytes) => reply.push(Buffer.from(bytes)));
    if (!Buffer.concat(reply).equals(EXPECTED)) verifyFailures++;
  } finally {
    session.socket.destroy();
  }
}

function generatorCpu(elapsedMs) {
  const used = process.cpuUsage(cpuBefore);
  return (used.user + used.system) / 1000 / elapsedMs;
}

if (mode === "sessions") {
  let completed = 0;
  const deadline = started + durationMs;
  await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
    while (performance.now() < deadline) {
      try {
        await oneSession();
        completed++;
      } catch {
        errors++;
      }
    }
  }));
  const elapsed = performance.now() - started;
  console.log(JSON.stringify({
    mode,
    variant,
    seconds: elapsed / 1000,
    completed,
    perSecond: completed / (elapsed / 1000),
    errors,
    verifyFailures,
    generatorCpu: generatorCpu(elapsed),
  }));
} else if (mode === "bulk") {
  const payload = Buffer.alloc(MAX_PAYLOAD);
  for (let i = 0; i < payload.length; i++) payload[i] = 0x61 + (i % 26);
  const expected = Buffer.from(payload.toString("latin1").toUpperCase(), "latin1");
  const session = await open();
  let received = 0;
  const receiving = receiveAll(session, (bytes) => {
    // The reply is upper(payload) repeated; check each byte against its place in that stream.
    for (let i = 0; i < bytes.length;) {
      const at = (received + i) % expected.length;
      const n = Math.min(bytes.length - i, expected.length - at);
      if (expected.compare(bytes, i, i + n, at, at + n) !== 0) verifyFailures++;
      i += n;
    }
    received += bytes.length;
  });
  const deadline = started + durationMs;
  let seq = 0;
  let sent = 0;
  while (performance.now() < deadline) {
    const result = sendAll(session, [payload], seq);
    seq = result.seq;
    sent += payload.length;
    if (!result.ok) await new Promise((resolve) => session.socket.once("drain", resolve));
  }
  if (session.keys) session.socket.write(seal(session.keys, seq, Buffer.alloc(0)));
  session.socket.end();
  await receiving;
  session.socket.destroy();
  const elapsed = performance.now() - started;
  if (received !== sent) errors++;
  console.log(JSON.stringify({
    mode,
    variant,
    seconds: elapsed / 1000,
    bytes: received,
    mbPerSecond: received / 1e6 / (elapsed / 1000),
    errors,
    verifyFailures,
    generatorCpu: generatorCpu(elapsed),
  }));
} else if (mode === "hold") {
  const wanted = Number(values.connections);
  const sessions = [];
  let next = 0;
  await Promise.all(Array.from({ length: 50 }, async () => {
    while (next++ < wanted) {
      try {
        sessions.push(await open());
      } catch {
        errors++;
      }
    }
  }));
  console.log(JSON.stringify({ mode, variant, held: sessions.length, errors }));
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.once("end", resolve));
  for (const session of sessions) session.socket.destroy();
} else {
  console.error("usage: v2_loadgen.mjs sessions|bulk|hold --port P --secret S --variant V");
  process.exit(2);
}
