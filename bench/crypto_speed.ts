/**
 * How fast WebCrypto itself is in this Deno, per 64 KiB frame: the ceiling for v2's frame layer,
 * which does two such operations per echoed byte (verify in, sign or seal out); what one side's
 * X25519 key exchange costs (hello version 03, PROTOCOL.md §12: once per connection); and how much
 * heap one CryptoKey holds, which every framed connection keeps two of.
 * `deno run --v8-flags=--expose-gc bench/crypto_speed.ts`; prints one line per measurement.
 */

import process from "node:process";

const FRAME = new Uint8Array(65_536).fill(0x61);
const ROUNDS = 2_000;

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
  for (let i = 0; i < ROUNDS / 10; i++) await operation(); // warm-up
  const started = performance.now();
  for (let i = 0; i < ROUNDS; i++) await operation();
  const microseconds = (performance.now() - started) / ROUNDS * 1000;
  console.log(
    `${name.padEnd(20)} ${microseconds.toFixed(1).padStart(6)} µs per 64 KiB: ` +
      `${(FRAME.length / microseconds).toFixed(0)} MB/s on one core`,
  );
}

// §12, one side's share of a forward-secret handshake: a fresh key pair, its raw public key for the
// wire, the peer's raw key imported, and Z. Wall time, and the process's CPU time (WebCrypto runs
// some operations on other threads), per exchange.
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
{
  const EXCHANGES = ROUNDS;
  for (let i = 0; i < EXCHANGES / 10; i++) await x25519Exchange(); // warm-up
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < EXCHANGES; i++) await x25519Exchange();
  const wall = (performance.now() - started) / EXCHANGES * 1000;
  const used = process.cpuUsage(cpuBefore);
  const cpu = (used.user + used.system) / EXCHANGES;
  console.log(
    `${"X25519 one side".padEnd(20)} ${wall.toFixed(1).padStart(6)} µs per exchange ` +
      `(${cpu.toFixed(1)} µs CPU): generateKey, exportKey, importKey, deriveBits`,
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
