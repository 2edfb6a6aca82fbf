// An hmac-echo protocol v2 client written from docs/PROTOCOL.md §8-§11 with Node.js's node:net and
// node:crypto only: the hello, the server's proof, HKDF-SHA-256 keys, and integrity or AES-256-GCM
// frames. bench/v2_loadgen.mjs drives the same functions as a load generator.
//
// Usage: node v2_client.mjs HOST PORT MESSAGE [DIGEST [MODE]]   (secret from HMAC_ECHO_SECRET)
// DIGEST: sha1, sha256 (default), sha384, sha512. MODE: plain, integrity, encrypt (default).
// Exit status: 0 success (reply on stdout), 1 rejected, 4 bad server proof, 5 a bad reply frame.

import crypto from "node:crypto";
import net from "node:net";
import process from "node:process";

const MODES = { plain: 0, integrity: 1, encrypt: 2 };
const STATUS_NAMES = [
  "accepted",
  "wrong-proof",
  "unsupported-digest",
  "mode-refused",
  "malformed-hello",
  "unsupported-version",
  "reflected-challenge",
];
export const MAX_PAYLOAD = 65536;

/** §9: the hello for server challenge `cs`, and what the rest of the handshake needs. */
export function makeHello(secret, cs, digest, mode) {
  const cc = crypto.randomBytes(32);
  const head = Buffer.concat([Buffer.from(`{${digest}}`), Buffer.from([2, MODES[mode]]), cc]);
  const proof = crypto.createHmac(digest, secret)
    .update("hmac-echo v2 client->server").update(cs).update(head).digest();
  return { hello: Buffer.concat([head, proof]), head, cc, proofLength: proof.length };
}

/** §10: whether the server's proof is right, compared in constant time. */
export function serverProofOk(secret, digest, cs, head, proof) {
  const expected = crypto.createHmac(digest, secret)
    .update("hmac-echo v2 server->client").update(cs).update(head).digest();
  return proof.length === expected.length && crypto.timingSafeEqual(proof, expected);
}

/** §11: this client's keys, one per direction. */
export function sessionKeys(secret, mode, cs, cc) {
  const key = (direction) =>
    Buffer.from(
      crypto.hkdfSync(
        "sha256",
        secret,
        Buffer.concat([cs, cc]),
        `hmac-echo v2 ${mode} ${direction}`,
        32,
      ),
    );
  return { mode, send: key("client->server"), receive: key("server->client") };
}

function header(length, seq) {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32BE(length, 0);
  bytes.writeBigUInt64BE(BigInt(seq), 4);
  return bytes;
}

function nonce(seq) {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(seq), 4);
  return iv;
}

/** §11: one frame carrying `payload` (empty: the end frame). */
export function seal(keys, seq, payload) {
  const head = header(payload.length, seq);
  if (keys.mode === "integrity") {
    const tag = crypto.createHmac("sha256", keys.send).update(head).update(payload).digest();
    return Buffer.concat([head, payload, tag]);
  }
  const cipher = crypto.createCipheriv("aes-256-gcm", keys.send, nonce(seq));
  cipher.setAAD(head);
  const body = Buffer.concat([cipher.update(payload), cipher.final()]);
  return Buffer.concat([head, body, cipher.getAuthTag()]);
}

/** §11: opens the frame at the start of `buffer`: null if incomplete, else its payload and size. */
export function open(keys, expectedSeq, buffer) {
  if (buffer.length < 12) return null;
  const length = buffer.readUInt32BE(0);
  const seq = Number(buffer.readBigUInt64BE(4));
  if (length > MAX_PAYLOAD) throw new Error("oversized-frame");
  const tagLength = keys.mode === "integrity" ? 32 : 16;
  const size = 12 + length + tagLength;
  if (buffer.length < size) return null;
  const head = buffer.subarray(0, 12);
  const body = buffer.subarray(12, 12 + length);
  const tag = buffer.subarray(12 + length, size);
  let payload;
  if (keys.mode === "integrity") {
    const good = crypto.createHmac("sha256", keys.receive).update(head).update(body).digest();
    if (!crypto.timingSafeEqual(tag, good)) throw new Error("tampered-frame");
    payload = Buffer.from(body);
  } else {
    const decipher = crypto.createDecipheriv("aes-256-gcm", keys.receive, nonce(seq));
    decipher.setAAD(head);
    decipher.setAuthTag(tag);
    try {
      payload = Buffer.concat([decipher.update(body), decipher.final()]);
    } catch {
      throw new Error("tampered-frame");
    }
  }
  if (seq !== expectedSeq) {
    throw new Error(seq < expectedSeq ? "replayed-frame" : "out-of-order-frame");
  }
  return { payload, size };
}

/** A socket read as "give me n bytes". */
export class Reader {
  #buffered = Buffer.alloc(0);
  #waiting = null;
  #ended = false;

  constructor(socket) {
    socket.on("data", (chunk) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", () => {
      this.#ended = true;
      this.#wake();
    });
  }

  #wake() {
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.();
  }

  get buffered() {
    return this.#buffered;
  }

  consume(n) {
    this.#buffered = this.#buffered.subarray(n);
  }

  /** Resolves once n bytes are buffered (true) or the socket has ended first (false). */
  async need(n) {
    while (this.#buffered.length < n) {
      if (this.#ended) return false;
      await new Promise((resolve) => (this.#waiting = resolve));
    }
    return true;
  }

  async take(n) {
    if (!await this.need(n)) return this.#buffered.subarray(0, 0);
    const bytes = this.#buffered.subarray(0, n);
    this.consume(n);
    return bytes;
  }

  /** The next frame's payload; throws on a bad frame or an end without an end frame. */
  async nextPayload(keys, expectedSeq) {
    for (;;) {
      const opened = open(keys, expectedSeq, this.#buffered);
      if (opened) {
        this.consume(opened.size);
        return opened.payload;
      }
      if (this.#ended) throw new Error("truncated-stream");
      await new Promise((resolve) => (this.#waiting = resolve));
    }
  }
}

/** Connects and runs the handshake: resolves to the socket, its reader and the frame keys. */
export async function handshake({ host, port, secret, digest, mode }) {
  const socket = net.connect({ host, port, noDelay: true });
  const reader = new Reader(socket);
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const cs = await reader.take(32);
  if (cs.length < 32) throw Object.assign(new Error("no challenge"), { exit: 1 });
  const { hello, head, cc, proofLength } = makeHello(secret, cs, digest, mode);
  socket.write(hello);
  const status = await reader.take(1);
  if (status.length === 0 || status[0] !== 0) {
    socket.destroy();
    throw Object.assign(new Error(`rejected: ${STATUS_NAMES[status[0]] ?? "no answer"}`), {
      exit: 1,
    });
  }
  if (!serverProofOk(secret, digest, cs, head, await reader.take(proofLength))) {
    socket.destroy();
    throw Object.assign(new Error("the server could not prove it knows the secret"), { exit: 4 });
  }
  const keys = mode === "plain" ? null : sessionKeys(secret, mode, cs, cc);
  return { socket, reader, keys };
}

async function main() {
  const [host, port, message, digest = "sha256", mode = "encrypt"] = process.argv.slice(2);
  const secret = Buffer.from(process.env.HMAC_ECHO_SECRET ?? "", "utf8");
  const { socket, reader, keys } = await handshake({
    host,
    port: Number(port),
    secret,
    digest,
    mode,
  });
  const input = Buffer.from(message, "utf8");
  if (!keys) {
    socket.end(input);
    const chunks = [];
    while (await reader.need(1)) chunks.push(await reader.take(reader.buffered.length));
    process.stdout.write(Buffer.concat(chunks));
    return;
  }
  let seq = 0;
  for (let offset = 0; offset < input.length; offset += MAX_PAYLOAD) {
    socket.write(seal(keys, seq++, input.subarray(offset, offset + MAX_PAYLOAD)));
  }
  socket.end(seal(keys, seq, Buffer.alloc(0)));
  const reply = [];
  for (let expected = 0;; expected++) {
    let payload;
    try {
      payload = await reader.nextPayload(keys, expected);
    } catch (error) {
      throw Object.assign(error, { exit: 5 });
    }
    if (payload.length === 0) break;
    reply.push(payload);
  }
  socket.destroy();
  process.stdout.write(Buffer.concat(reply));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    process.stderr.write(`${error.message}\n`);
    process.exitCode = error.exit ?? 2;
  });
}
