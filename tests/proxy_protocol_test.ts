/** PROXY protocol v1/v2: the parser, trusted proxies, and the server behind a (hand-made) proxy. */

import assert from "node:assert/strict";
import { concat, readFull, writeAll } from "../_io.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { computeAnswer } from "../protocol/v1.ts";
import {
  looksLikeProxyHeader,
  ProxyHeaderError,
  readProxyHeader,
  TrustedProxies,
} from "../protocol/proxy_protocol.ts";
import { decoder, encoder, readToEnd, SECRET, startServer } from "./_helpers.ts";

function streamOf(bytes: Uint8Array) {
  let offset = 0;
  return {
    read(buffer: Uint8Array) {
      if (offset >= bytes.length) return Promise.resolve(null);
      const n = Math.min(buffer.length, bytes.length - offset);
      buffer.set(bytes.subarray(offset, offset + n));
      offset += n;
      return Promise.resolve(n);
    },
  };
}

function v2(command: number, family: number, payload: number[]): Uint8Array {
  const signature = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  return new Uint8Array([
    ...signature,
    0x20 | command,
    family,
    payload.length >> 8,
    payload.length & 255,
    ...payload,
  ]);
}

Deno.test("readProxyHeader parses v1 TCP4, TCP6 and UNKNOWN", async () => {
  assert.deepEqual(
    await readProxyHeader(
      streamOf(encoder.encode("PROXY TCP4 203.0.113.7 192.0.2.1 5555 4444\r\n")),
    ),
    {
      command: "proxy",
      source: { transport: "tcp", hostname: "203.0.113.7", port: 5555 },
      destination: { transport: "tcp", hostname: "192.0.2.1", port: 4444 },
    },
  );
  const six = await readProxyHeader(
    streamOf(encoder.encode("PROXY TCP6 2001:db8::7 2001:db8::1 6 7\r\n")),
  );
  assert.equal(six.command === "proxy" && six.source.hostname, "2001:db8::7");
  assert.deepEqual(await readProxyHeader(streamOf(encoder.encode("PROXY UNKNOWN\r\n"))), {
    command: "local",
  });
});

Deno.test("readProxyHeader parses v2 PROXY (IPv4, IPv6) and LOCAL", async () => {
  const header = await readProxyHeader(
    streamOf(v2(1, 0x11, [203, 0, 113, 7, 192, 0, 2, 1, 0x15, 0xb3, 0x11, 0x5c])),
  );
  assert.deepEqual(header, {
    command: "proxy",
    source: { transport: "tcp", hostname: "203.0.113.7", port: 5555 },
    destination: { transport: "tcp", hostname: "192.0.2.1", port: 4444 },
  });
  const six = v2(1, 0x21, [
    0x20,
    0x01,
    0x0d,
    0xb8,
    ...new Array(11).fill(0),
    7,
    ...new Array(16).fill(0),
    0,
    6,
    0,
    7,
  ]);
  const parsed = await readProxyHeader(streamOf(six));
  assert.equal(parsed.command === "proxy" && parsed.source.hostname, "2001:db8:0:0:0:0:0:7");
  assert.deepEqual(await readProxyHeader(streamOf(v2(0, 0x00, []))), { command: "local" });
  // TLVs after the addresses are allowed and skipped.
  const withTlv = v2(1, 0x11, [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0x04, 0, 1, 0]);
  assert.equal((await readProxyHeader(streamOf(withTlv))).command, "proxy");
});

Deno.test("readProxyHeader rejects every malformed header with a ProxyHeaderError", async () => {
  const bad: [string, Uint8Array][] = [
    ["not a header", encoder.encode("0123456789abcdef0123456789abcdef01234567")],
    ["v1 bad port", encoder.encode("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")],
    ["v1 bad address", encoder.encode("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n")],
    ["v1 missing fields", encoder.encode("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n")],
    ["v1 unknown protocol", encoder.encode("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n")],
    ["v1 without CRLF", encoder.encode("PROXY TCP4 " + "1".repeat(120))],
    ["v1 with data after it", encoder.encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nextra")],
    ["v1 cut short", encoder.encode("PROXY TCP4 1.2.3.4")],
    [
      "v2 bad version",
      (() => {
        const h = v2(1, 0x11, new Array(12).fill(1));
        h[12] = 0x31;
        return h;
      })(),
    ],
    ["v2 too long", v2(1, 0x11, new Array(2000).fill(0))],
    ["v2 cut short", v2(1, 0x11, new Array(12).fill(1)).subarray(0, 20)],
    ["v2 unknown family", v2(1, 0x31, new Array(12).fill(1))],
    ["empty", new Uint8Array(0)],
  ];
  for (const [name, bytes] of bad) {
    await assert.rejects(readProxyHeader(streamOf(bytes)), ProxyHeaderError, name);
  }
});

Deno.test("looksLikeProxyHeader recognises both versions from their first bytes", () => {
  assert.ok(looksLikeProxyHeader(encoder.encode("PROXY TCP4 1.2.3.4")));
  assert.ok(looksLikeProxyHeader(encoder.encode("PROX")));
  assert.ok(looksLikeProxyHeader(v2(1, 0x11, [])));
  assert.ok(!looksLikeProxyHeader(encoder.encode("0123456789abcdef")));
  assert.ok(!looksLikeProxyHeader(new Uint8Array(0)));
});

Deno.test("TrustedProxies matches exact addresses and CIDR blocks, IPv4 and IPv6", () => {
  const trusted = new TrustedProxies(
    "127.0.0.1, 10.0.0.0/8,192.168.1.0/24,::1,fd00:1::/32".split(","),
  );
  const yes = ["127.0.0.1", "10.1.2.3", "192.168.1.200", "::1", "fd00:1::7", "fd00:1:ffff::1"];
  const no = ["127.0.0.2", "11.0.0.1", "192.168.2.1", "::2", "fd00:2::1", "not an address", ""];
  for (const address of yes) assert.ok(trusted.trusts(address), address);
  for (const address of no) assert.ok(!trusted.trusts(address), address);
  assert.ok(new TrustedProxies(["0.0.0.0/0"]).trusts("203.0.113.9"));
  assert.ok(!new TrustedProxies(["0.0.0.0/0"]).trusts("::1"), "an IPv4 block never matches IPv6");
  assert.ok(new TrustedProxies(["2001:db8::/32"]).trusts("2001:db8:0:0:0:0:0:7"));
  assert.ok(trusted.trusts("::ffff:10.1.2.3"), "IPv4-mapped IPv6 matches as IPv4");
  for (
    const bad of [
      "10.0.0.0/33",
      "balancer.example",
      "1.2.3.256",
      "fd00::/129",
      "1::2::3",
      "1.2.3.4/8/9",
    ]
  ) {
    assert.throws(() => new TrustedProxies([bad]), RangeError, bad);
  }
});
/** Plays the balancer: connects, sends `header`, then runs a whole session for the client. */
async function viaProxy(
  port: number,
  header: Uint8Array,
  options: { secret?: Uint8Array; message?: string } = {},
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, header);
    const challenge = new Uint8Array(32);
    if (await readFull(conn, challenge) < 32) return "no challenge";
    const answer = computeAnswer(
      await SecretKeys.import(options.secret ?? SECRET),
      challenge,
    );
    await writeAll(conn, concat([answer, encoder.encode(options.message ?? "")]));
    await conn.closeWrite();
    return decoder.decode(await readToEnd(conn));
  } finally {
    conn.close();
  }
}

const v1 = (client: string, port: number) =>
  encoder.encode(`PROXY TCP4 ${client} 127.0.0.1 ${port} 4444\r\n`);

Deno.test("behind a trusted proxy, the server logs and serves the real client", async () => {
  await using started = await startServer({
    trustedProxies: ["127.0.0.1"],
  });
  const { logger, port } = started;
  assert.equal(
    await viaProxy(port, v1("203.0.113.7", 5555), { message: "via proxy" }),
    "VIA PROXY",
  );
  const proxied = await logger.waitFor("proxied");
  assert.equal(proxied.fields.remote, "203.0.113.7:5555");
  assert.match(String(proxied.fields.proxy), /^127\.0\.0\.1:\d+$/);
  assert.equal((await logger.waitFor("authenticated")).fields.remote, "203.0.113.7:5555");
  // v2 too.
  const header = v2(1, 0x11, [198, 51, 100, 4, 127, 0, 0, 1, 0x1f, 0x90, 0x11, 0x5c]);
  assert.equal(await viaProxy(port, header, { message: "v2" }), "V2");
  await logger.waitFor("authenticated", { remote: "198.51.100.4:8080" });
});

Deno.test("per-address caps and throttling count the real client, not the proxy", async () => {
  await using started = await startServer({
    trustedProxies: ["127.0.0.1"],
    throttle: { maxFailures: 2, cooldownMs: 60_000 },
  });
  const { logger, port } = started;
  // Two wrong answers from 203.0.113.9 put that client, not the proxy, in a cool-down.
  for (let i = 0; i < 2; i++) {
    await viaProxy(port, v1("203.0.113.9", 1000 + i), {
      secret: encoder.encode("wrong"),
      message: "x",
    });
  }
  assert.equal((await logger.waitFor("throttling")).fields.address, "203.0.113.9");
  assert.equal(
    await viaProxy(port, v1("203.0.113.9", 2000), { message: "again" }),
    "no challenge",
  );
  assert.equal((await logger.waitFor("refused")).fields.reason, "throttled");
  // Another client through the same proxy is served.
  assert.equal(await viaProxy(port, v1("203.0.113.10", 3000), { message: "fine" }), "FINE");
});

Deno.test("a PROXY header from an untrusted peer, or a malformed one, is rejected with its reason", async (t) => {
  await t.step("untrusted peer", async () => {
    await using started = await startServer({
      trustedProxies: ["10.9.9.9"],
    });
    const { logger, port } = started;
    // Not trusted: the server sends the challenge at once, and the header arrives as the answer.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(conn, v1("203.0.113.7", 5555));
      assert.equal((await readToEnd(conn)).length, 32, "the challenge, then the hang-up");
    } finally {
      conn.close();
    }
    assert.equal((await logger.waitFor("rejected")).fields.reason, "untrusted-proxy-header");
  });
  await t.step("malformed header from a trusted proxy", async () => {
    await using started = await startServer({
      trustedProxies: ["127.0.0.1"],
    });
    const { server, logger, port } = started;
    assert.equal(await viaProxy(port, encoder.encode("PROXY TCP4 nonsense\r\n")), "no challenge");
    const rejected = await logger.waitFor("rejected");
    assert.equal(rejected.fields.reason, "malformed-proxy-header");
    assert.equal((await server.stats()).throttled, 0);
  });
});

Deno.test("a 15-byte PROXY UNKNOWN header from a balancer that then waits gets its challenge at once", async () => {
  // The balancer's own connection (a health check) sends the shortest v1 header and waits for
  // the challenge: a parser that wants 16 bytes would leave it hanging until the deadline.
  await using started = await startServer({ trustedProxies: ["127.0.0.1"] });
  const { logger, port } = started;
  const header = encoder.encode("PROXY UNKNOWN\r\n");
  assert.equal(header.length, 15);
  assert.equal(await viaProxy(port, header, { message: "unknown" }), "UNKNOWN");
  await logger.waitFor("authenticated");
  assert.equal(logger.find("rejected").length, 0);
});
