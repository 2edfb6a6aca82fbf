/** Internal byte-stream helpers shared by the handshake, the server and the client. */

/** The part of `Deno.Conn` the protocol code needs, so tests and wrappers can stand in for it. */
export interface ByteStream {
  /** Reads up to `buffer.length` bytes; `null` at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`, returning how many bytes were written. */
  write(data: Uint8Array): Promise<number>;
}

/**
 * Reads until `buffer` is full or the stream ends.
 *
 * @returns how many bytes were read: `buffer.length` unless the stream ended first.
 */
export async function readFull(
  stream: Pick<ByteStream, "read">,
  buffer: Uint8Array,
): Promise<number> {
  let filled = 0;
  while (filled < buffer.length) {
    const n = await stream.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/** Writes every byte of `data`; `write` may accept only part of it per call. */
export async function writeAll(
  stream: Pick<ByteStream, "write">,
  data: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < data.length) {
    written += await stream.write(data.subarray(written));
  }
}

/** Whether `error` means the peer went away: the ordinary end of a TCP session, not a fault. */
export function isDisconnect(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.UnexpectedEof;
}

/** Closes a connection or listener that may already be closed. */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}

/** The chunks joined into one array. */
export function concat(chunks: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** `host:port`, with brackets around IPv6 hosts. */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}
