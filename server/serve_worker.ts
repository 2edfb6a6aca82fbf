/**
 * One `workers: N` thread: runs a server on the shared port until the supervisor (`workers.ts`)
 * says stop. Not a public module.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { createLogger } from "../log.ts";
import { resolveConfig } from "./config.ts";
import { listen, type Server } from "./server.ts";
import { SharedLimits } from "./shared_limits.ts";
import type { FromWorker, ToWorker } from "./worker_messages.ts";

let server: Server | undefined;

function reply(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "start") {
    try {
      const config = resolveConfig(message.config);
      server = await listen(config, {
        // Every line says which worker wrote it.
        logger: createLogger(config.log, { worker: message.id }),
        reusePort: true,
        // Ids 1, 1 + N, 1 + 2N, … in worker 1; 2, 2 + N, … in worker 2: unique per server.
        firstId: message.id,
        idStep: message.count,
        limits: new SharedLimits(config, { buffer: message.limits }),
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
    reply({ type: "stats", request: message.request, stats: await server.stats() });
  } else if (message.type === "secrets" && server) {
    const { request, secret, previousSecret } = message;
    try {
      await server.replaceSecrets({ secret, previousSecret });
      reply({ type: "secrets-replaced", request });
    } catch (error) {
      reply({ type: "secrets-replaced", request, error: String(error) });
    }
  } else if (message.type === "close" && server) {
    await server.close({ gracePeriodMs: message.gracePeriodMs });
    reply({ type: "closed", stats: await server.stats() });
  }
};
