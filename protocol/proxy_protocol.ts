/**
 * PROXY protocol v1 and v2 (HAProxy's spec): how an L4 load balancer tells the server who the real
 * client is. Read only from trusted proxies; docs/PROTOCOL.md §7 says where it fits.
 *
 * @module
 */

import { type ByteStream, readFull } from "../_io.ts";
import { HmacEchoError } from "../errors.ts";

/** What a PROXY header said. */
export type ProxyHeader =
  | { command: "proxy"; source: Deno.NetAddr; destination: Deno.NetAddr }
  /** The proxy's own connection (a health check, `PROXY UNKNOWN`): keep the peer's address. */
  | { command: "local" };

/** A PROXY header that breaks the spec; the message says how. Reason `malformed-proxy-header`. */
export class ProxyHeaderError extends HmacEchoError {
  /** Builds the error. */
  constructor(message: string) {
    super("malformed-proxy-header", message);
  }
}

const V2_SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
const V1_PREFIX = new TextEncoder().encode("PROXY ");
const V1_MAX_LENGTH = 107; // the spec's bound, CRLF included
const V2_FIXED_LENGTH = 16; // signature, version and command, family, payload length
const V2_MAX_PAYLOAD = 1024; // addresses plus some TLVs; more is not a balancer we know

/** Whether `bytes` start like a PROXY header of either version (as far as they go). */
export function looksLikeProxyHeader(bytes: Uint8Array): boolean {
  const startsWith = (prefix: Uint8Array) =>
    bytes.length > 0 && prefix.subarray(0, Math.min(prefix.length, bytes.length))
      .every((byte, i) => bytes[i] === byte);
  return startsWith(V1_PREFIX) || startsWith(V2_SIGNATURE);
}

/**
 * Reads one PROXY header, v1 or v2, and nothing after it. In hmac-echo the server speaks first, so
 * a client sends nothing before its challenge: any byte past the header is an error too.
 *
 * @throws {ProxyHeaderError} for anything that is not a well-formed header.
 */
export async function readProxyHeader(stream: Pick<ByteStream, "read">): Promise<ProxyHeader> {
  // Six bytes tell the versions apart ("PROXY " or v2's signature begins) and never read past a
  // header: the shortest, "PROXY UNKNOWN\r\n", is 15 bytes, and its sender then waits for us.
  const start = new Uint8Array(V2_FIXED_LENGTH);
  const got = await readFull(stream, start.subarray(0, V1_PREFIX.length));
  if (got === V1_PREFIX.length && V1_PREFIX.every((byte, i) => start[i] === byte)) {
    return await readV1(stream, start, got);
  }
  if (got === V1_PREFIX.length && V2_SIGNATURE.subarray(0, got).every((b, i) => start[i] === b)) {
    const rest = await readFull(stream, start.subarray(got));
    if (got + rest === V2_FIXED_LENGTH && V2_SIGNATURE.every((byte, i) => start[i] === byte)) {
      return await readV2(stream, start);
    }
    throw new ProxyHeaderError("expected a PROXY v2 signature; the connection began otherwise");
  }
  if (!looksLikeProxyHeader(start.subarray(0, got))) {
    throw new ProxyHeaderError(
      "expected a PROXY header (v1 or v2); the connection began otherwise",
    );
  }
  throw new ProxyHeaderError(`expected a PROXY header, the connection ended after ${got} bytes`);
}

async function readV1(
  stream: Pick<ByteStream, "read">,
  start: Uint8Array,
  got: number,
): Promise<ProxyHeader> {
  const line = new Uint8Array(V1_MAX_LENGTH);
  line.set(start.subarray(0, got));
  let length = got;
  while (indexOfCrlf(line.subarray(0, length)) < 0) {
    if (length === V1_MAX_LENGTH) {
      throw new ProxyHeaderError("PROXY v1 header longer than 107 bytes");
    }
    const n = await stream.read(line.subarray(length));
    if (n === null) throw new ProxyHeaderError("the connection ended inside a PROXY v1 header");
    length += n;
  }
  const end = indexOfCrlf(line.subarray(0, length));
  if (end + 2 !== length) {
    throw new ProxyHeaderError("data after the PROXY v1 header, before the challenge");
  }
  const text = new TextDecoder().decode(line.subarray(0, end));
  const [, protocol, ...rest] = text.split(" ");
  if (protocol === "UNKNOWN") return { command: "local" };
  if ((protocol !== "TCP4" && protocol !== "TCP6") || rest.length !== 4) {
    throw new ProxyHeaderError(`malformed PROXY v1 header: "${text.slice(0, 60)}"`);
  }
  const [sourceHost, destinationHost, sourcePort, destinationPort] = rest;
  const family = protocol === "TCP4" ? 4 : 6;
  return {
    command: "proxy",
    source: {
      transport: "tcp",
      hostname: checkHost(sourceHost, family),
      port: checkPort(sourcePort),
    },
    destination: {
      transport: "tcp",
      hostname: checkHost(destinationHost, family),
      port: checkPort(destinationPort),
    },
  };
}

async function readV2(stream: Pick<ByteStream, "read">, start: Uint8Array): Promise<ProxyHeader> {
  const version = start[12] >> 4;
  const command = start[12] & 0x0f;
  const family = start[13];
  const length = (start[14] << 8) | start[15];
  if (version !== 2) throw new ProxyHeaderError(`PROXY v2 header with version ${version}`);
  if (command > 1) throw new ProxyHeaderError(`PROXY v2 header with unknown command ${command}`);
  if (length > V2_MAX_PAYLOAD) {
    throw new ProxyHeaderError(`PROXY v2 header of ${length} bytes is too long`);
  }
  const payload = new Uint8Array(length);
  if (await readFull(stream, payload) < length) {
    throw new ProxyHeaderError("the connection ended inside a PROXY v2 header");
  }
  if (command === 0) return { command: "local" };
  const view = new DataView(payload.buffer);
  if (family === 0x11 && length >= 12) { // TCP over IPv4
    return {
      command: "proxy",
      source: {
        transport: "tcp",
        hostname: payload.subarray(0, 4).join("."),
        port: view.getUint16(8),
      },
      destination: {
        transport: "tcp",
        hostname: payload.subarray(4, 8).join("."),
        port: view.getUint16(10),
      },
    };
  }
  if (family === 0x21 && length >= 36) { // TCP over IPv6
    return {
      command: "proxy",
      source: {
        transport: "tcp",
        hostname: ipv6(payload.subarray(0, 16)),
        port: view.getUint16(32),
      },
      destination: {
        transport: "tcp",
        hostname: ipv6(payload.subarray(16, 32)),
        port: view.getUint16(34),
      },
    };
  }
  if (family === 0x00) return { command: "local" };
  throw new ProxyHeaderError(
    `PROXY v2 header for an unsupported address family 0x${family.toString(16)}`,
  );
}

function indexOfCrlf(bytes: Uint8Array): number {
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === 0x0d && bytes[i + 1] === 0x0a) return i;
  }
  return -1;
}

function checkPort(text: string): number {
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port > 65535) {
    throw new ProxyHeaderError(`bad port "${text}" in PROXY header`);
  }
  return port;
}

function checkHost(text: string, family: 4 | 6): string {
  const valid = family === 4
    ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(text) &&
      text.split(".").every((n) => Number(n) <= 255)
    : /^[0-9a-fA-F:.]+$/.test(text) && text.includes(":");
  if (!valid) throw new ProxyHeaderError(`bad IPv${family} address "${text}" in PROXY header`);
  return text;
}

function ipv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(":");
}

/** Addresses allowed to send PROXY headers: exact addresses and CIDR blocks, IPv4 or IPv6. */
export class TrustedProxies {
  #blocks: { base: bigint; bits: number; v6: boolean }[] = [];

  /**
   * Parses entries such as `["127.0.0.1", "10.0.0.0/8", "fd00::/8"]`.
   *
   * @throws {RangeError} naming an entry that is not an address or a CIDR block.
   */
  constructor(entries: readonly string[]) {
    for (const entry of entries.map((item) => item.trim()).filter(Boolean)) {
      const [address, prefix, ...extra] = entry.split("/");
      const value = parseAddress(address);
      const v6 = address.includes(":");
      const width = v6 ? 128 : 32;
      const bits = prefix === undefined ? width : Number(prefix);
      if (
        value === undefined || extra.length > 0 || !/^\d{1,3}$/.test(prefix ?? "0") || bits > width
      ) {
        throw new RangeError(`"${entry}" is not an IP address or a CIDR block`);
      }
      this.#blocks.push({ base: value >> BigInt(width - bits), bits, v6 });
    }
  }

  /** Whether `address` may send a PROXY header. */
  trusts(peer: string): boolean {
    // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6: match them as IPv4.
    const address = peer.replace(/^::ffff:(?=\d{1,3}(\.\d{1,3}){3}$)/i, "");
    const value = parseAddress(address);
    if (value === undefined) return false;
    const v6 = address.includes(":");
    const width = v6 ? 128 : 32;
    return this.#blocks.some((block) =>
      block.v6 === v6 && value >> BigInt(width - block.bits) === block.base
    );
  }
}

/** An IPv4 or IPv6 address as a number; undefined if it is neither. */
function parseAddress(text: string): bigint | undefined {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const octets = text.split(".").map(Number);
    if (octets.some((octet) => octet > 255)) return undefined;
    return octets.reduce((value, octet) => (value << 8n) | BigInt(octet), 0n);
  }
  if (!/^[0-9a-fA-F:]+$/.test(text) || (text.match(/::/g)?.length ?? 0) > 1) return undefined;
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const groups = (part: string | undefined) => (part ? part.split(":") : []);
  const missing = 8 - groups(head).length - groups(tail).length;
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined;
  const all = [
    ...groups(head),
    ...new Array(tail === undefined ? 0 : missing).fill("0"),
    ...groups(tail),
  ];
  if (all.some((group) => !/^[0-9a-fA-F]{1,4}$/.test(group))) return undefined;
  return all.reduce((value, group) => (value << 16n) | BigInt(parseInt(group, 16)), 0n);
}
