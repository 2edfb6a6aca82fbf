/**
 * How fast WebCrypto itself is in this Deno, per 64 KiB frame: the ceiling for v2's frame layer,
 * which does two such operations per echoed byte (verify in, sign or seal out); what one side's
 * X25519 key exchange costs (hello version 03, PROTOCOL.md §12: once per connection); and how much
 * heap one CryptoKey holds; and, beside each, the same work through `node:crypto`'s synchronous
 * calls, which the frame layer uses for small frames and the key exchange always.
 * `deno run --v8-flags=--expose-gc bench/crypto_speed.ts`; prints one line per measurement.
 */

import process from "node:process";
import { createCipheriv, createHmac } from "node:crypto";
import { createKeyShare, sharedSecret } from "../protocol/key_exchange.ts";

const FRAME = new Uint8Array(65_536).fill(0x61);
const ROUNDS = 2_000;

/**
 * Microseconds per call of `operation`, one call at a time after a tenth as many to warm up: wall
 * time, and the process's CPU time (WebCrypto runs its work on other threads).
 */
async function timed(
  operation: () => unknown,
  rounds: number,
): Promise<{ wall: number; cpu: number }> {
  for (let i = 0; i < rounds / 10; i++) await operation(); // warm-up
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < rounds; i++) await operation();
  const wall = (performance.now() - started) / rounds * 1000;
  const used = process.cpuUsage(cpuBefore);
  return { wall, cpu: (used.user + used.system) / rounds };
}

const hmacKey = await crypto.subtle.generateKey(
  { name: "HMAC", hash: "SHA-256", length: 256 },
  false,
  ["sign"],
);
const aesKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
  "encrypt",
]);
const iv = new Uint8Array(12);

const operations: [string, () => Promise<unknown>][] = [
  ["HMAC-SHA-256 sign", () => crypto.subtle.sign("HMAC", hmacKey, FRAME)],
  ["AES-256-GCM encrypt", () => crypto.subtle.encrypt({ name: "AES-GCM", iv }, aesKey, FRAME)],
];
for (const [name, operation] of operations) {
  // CPU as well as wall time: the bulk figures' "server CPU per MB" compares with this one.
  const { wall, cpu } = await timed(operation, ROUNDS);
  console.log(
    `${name.padEnd(20)} ${wall.toFixed(1).padStart(6)} µs per 64 KiB ` +
      `(${cpu.toFixed(1)} µs CPU): ${(FRAME.length / wall).toFixed(0)} MB/s on one core`,
  );
}

// Small frames, the two engines side by side: what protocol/frame_key.ts's SYNCHRONOUS_LIMIT rests
// on. Wall time per call, one at a time: WebCrypto hands each call to another thread and back.
// node:crypto gets the key's bytes, as the frame key gives them.
{
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const webAes = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
  const webHmac = await crypto.subtle.importKey(
    "raw",
    raw,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const header = new Uint8Array(12);
  const seal = (data: Uint8Array) => {
    const cipher = createCipheriv("aes-256-gcm", raw, iv);
    cipher.setAAD(header);
    const sealed = cipher.update(data);
    cipher.final();
    return [sealed, cipher.getAuthTag()];
  };
  for (const size of [32, 1024, 16_384, 65_536]) {
    const data = new Uint8Array(size).fill(0x61);
    const pairs: [string, () => unknown][] = [
      [
        "AES-GCM WebCrypto",
        () => crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: header }, webAes, data),
      ],
      ["AES-GCM node:crypto", () => seal(data)],
      ["HMAC WebCrypto", () => crypto.subtle.sign("HMAC", webHmac, data)],
      ["HMAC node:crypto", () => createHmac("sha256", raw).update(data).digest()],
    ];
    const line: string[] = [];
    for (const [name, operation] of pairs) {
      const { wall } = await timed(operation, size > 4096 ? ROUNDS : 10 * ROUNDS);
      line.push(`${name} ${wall.toFixed(1)} µs`);
    }
    console.log(`${`small frames, ${size} B`.padEnd(20)} ${line.join(", ")}`);
  }
}

// §12, one side's share of a forward-secret handshake: a fresh key pair, its raw public key for the
// wire, the peer's raw key imported, and Z: through WebCrypto, and through node:crypto as
// protocol/key_exchange.ts makes it (its own functions).
const peerPublic = await crypto.subtle.exportKey(
  "raw",
  ((await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"])) as CryptoKeyPair)
    .publicKey,
);
async function x25519Exchange(): Promise<ArrayBuffer> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  await crypto.subtle.exportKey("raw", pair.publicKey);
  const peer = await crypto.subtle.importKey("raw", peerPublic, { name: "X25519" }, false, []);
  return await crypto.subtle.deriveBits({ name: "X25519", public: peer }, pair.privateKey, 256);
}
const exchanges: [string, () => unknown][] = [
  ["X25519 WebCrypto", x25519Exchange],
  ["X25519 node:crypto", () => sharedSecret(createKeyShare(), new Uint8Array(peerPublic))],
];
for (const [name, exchange] of exchanges) {
  const { wall, cpu } = await timed(exchange, ROUNDS);
  console.log(
    `${name.padEnd(20)} ${wall.toFixed(1).padStart(6)} µs per exchange ` +
      `(${cpu.toFixed(1)} µs CPU): key pair, public bytes, peer's key, Z`,
  );
}

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.log("CryptoKey heap: run with --v8-flags=--expose-gc to measure it");
} else {
  const KEYS = 2_000;
  const heapUsed = () => (gc(), gc(), Deno.memoryUsage().heapUsed);
  const before = heapUsed();
  const held: CryptoKey[] = [];
  for (let i = 0; i < KEYS; i++) {
    held.push(
      await crypto.subtle.importKey(
        "raw",
        crypto.getRandomValues(new Uint8Array(32)),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign", "verify"],
      ),
    );
  }
  const perKey = (heapUsed() - before) / held.length;
  console.log(
    `${"CryptoKey (HMAC)".padEnd(20)} ${perKey.toFixed(0).padStart(6)} bytes of V8 heap each`,
  );
}
