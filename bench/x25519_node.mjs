// What the Node.js generator (bench/v2_loadgen.mjs) spends on one X25519 key exchange per version
// 03 session, through the same functions of tests/peers/v2_client.mjs: a fresh key pair with its
// raw public key (x25519KeyPair, as makeHello calls it), and Z from the server's raw key (x25519). Wall time and this
// process's CPU time per exchange; compare with bench/crypto_speed.ts's WebCrypto line.
// Usage: node bench/x25519_node.mjs

import process from "node:process";
import { x25519, x25519KeyPair } from "../tests/peers/v2_client.mjs";

const ROUNDS = 2_000;
const peerPublic = x25519KeyPair().publicBytes;

function exchange() {
  return x25519(x25519KeyPair().privateKey, peerPublic);
}

for (let i = 0; i < ROUNDS / 10; i++) exchange(); // warm-up
const cpuBefore = process.cpuUsage();
const started = performance.now();
for (let i = 0; i < ROUNDS; i++) exchange();
const wall = (performance.now() - started) / ROUNDS * 1000;
const used = process.cpuUsage(cpuBefore);
console.log(
  `${"X25519 one side".padEnd(20)} ${wall.toFixed(1).padStart(6)} µs per exchange ` +
    `(${((used.user + used.system) / ROUNDS).toFixed(1)} µs CPU): Node.js ${process.version}, ` +
    "x25519KeyPair (generateKeyPairSync, JWK import), createPublicKey, diffieHellman",
);
