/**
 * One `serve --workers` thread: runs a server on the shared port until the supervisor
 * (`workers.ts`) says stop. Not a public module.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { type Logger, StderrLogger } from "./log.ts";
import { TrustedProxies } from "./proxy_protocol.ts";
import { serve, type Server } from "./server.ts";
import type { FromWorker, ToWorker } from "./workers.ts";

let server: Server | undefined;

function reply(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "start") {
    const stderr = new StderrLogger(message.log);
    // Every line says which worker wrote it.
    const logger: Logger = {
      log: (level, name, fields) => stderr.log(level, name, { ...fields, worker: message.id }),
    };
    try {
      const { trustedProxies, ...options } = message.options;
      server = await serve({
        ...options,
        trustedProxies: trustedProxies === undefined
          ? undefined
          : new TrustedProxies(trustedProxies),
        logger,
        reusePort: true,
      });
    } catch (error) {
      const { name, message: text } = error instanceof Error ? error : new Error(String(error));
      return reply({ type: "failed", name, message: text });
    }
    // No permissions are given back here: workers share the process's permissions, and a revoke
    // here would stop the next worker from loading this module. The supervisor revokes once all
    // workers listen.
    reply({ type: "listening", port: server.addr.port });
  } else if (message.type === "stats" && server) {
    reply({ type: "stats", request: message.request, stats: server.stats });
  } else if (message.type === "close" && server) {
    await server.close({ gracePeriodMs: message.gracePeriodMs });
    reply({ type: "closed", stats: server.stats });
  }
};
