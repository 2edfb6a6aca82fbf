/** Helpers for the forwarding tests: a target server the test scripts, and a tunnel in front of it. */

import { closeQuietly } from "../_io.ts";
import { startTunnel, type Tunnel, type TunnelOptions } from "../client/tunnel.ts";
import type { ServeOptions } from "../server/config.ts";
import { RecordingLogger, SECRET, type StartedServer, startServer } from "./_helpers.ts";

/** A listener whose every connection is handed to `handle`, numbered from 0. */
export interface Target extends AsyncDisposable {
  listener: Deno.Listener;
  /** The address to forward to. */
  address: { hostname: string; port: number } | { path: string };
  /** Connections accepted so far. */
  accepted: number;
  /** Settles once `handle` has returned or thrown for connection `index`. */
  handled(index: number): Promise<void>;
}

/** Starts a target on 127.0.0.1 (port 0) or, with `path`, on a Unix socket. */
export function startTarget(
  handle: (conn: Deno.Conn, index: number) => Promise<void>,
  options: { path?: string } = {},
): Target {
  const listener: Deno.Listener = options.path === undefined
    ? Deno.listen({ hostname: "127.0.0.1", port: 0 })
    : Deno.listen({ transport: "unix", path: options.path });
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const done = new Map<number, PromiseWithResolvers<void>>();
  const finished = (index: number) => {
    if (!done.has(index)) done.set(index, Promise.withResolvers<void>());
    return done.get(index)!;
  };
  const target: Target = {
    listener,
    address: options.path === undefined
      ? { hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }
      : { path: options.path },
    accepted: 0,
    handled: (index) => finished(index).promise,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await loop;
      for (const conn of conns) closeQuietly(conn);
      await Promise.allSettled(tasks);
    },
  };
  const loop = (async () => {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return; // closed
      }
      conns.add(conn);
      const index = target.accepted++;
      tasks.push(
        handle(conn, index).catch(() => {}).finally(() => {
          closeQuietly(conn);
          conns.delete(conn);
          finished(index).resolve();
        }),
      );
    }
  })();
  return target;
}

/** A forwarding server and a tunnel in front of it, each with a recording logger. */
export interface Tunnelled extends AsyncDisposable {
  started: StartedServer;
  tunnel: Tunnel;
  tunnelLog: RecordingLogger;
  /** Opens a local connection through the tunnel. */
  open(): Promise<Deno.TcpConn>;
}

/** Starts `serve({ forward: target })` and a tunnel to it on 127.0.0.1, port 0. */
export async function startTunnelled(
  forward: ServeOptions["forward"],
  options: { server?: Partial<ServeOptions>; tunnel?: Partial<TunnelOptions> } = {},
): Promise<Tunnelled> {
  const started = await startServer({ forward, ...options.server });
  const tunnelLog = new RecordingLogger();
  const tunnel = await startTunnel({
    secret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    port: started.port,
    logger: tunnelLog,
    ...options.tunnel,
  }).catch(async (error) => {
    await started.server.close();
    throw error;
  });
  return {
    started,
    tunnel,
    tunnelLog,
    open: () => Deno.connect({ hostname: "127.0.0.1", port: (tunnel.addr as Deno.NetAddr).port }),
    async [Symbol.asyncDispose]() {
      await tunnel.close();
      await started.server.close({ gracePeriodMs: 0 });
    },
  };
}

/** Writes all of `data`. */
export async function send(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) written += await conn.write(data.subarray(written));
}

/** Reads until the peer's FIN; a reset ends it too, reported as `reset`. */
export async function readAll(
  conn: Deno.Conn,
): Promise<{ bytes: Uint8Array; reset: boolean }> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  let reset = false;
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) chunks.push(buffer.slice(0, n));
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
    reset = true;
  }
  const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return { bytes, reset };
}
