/**
 * hmac-echo behind a real L4 load balancer: HAProxy from Debian's packages, three instances, one
 * killed mid-run. The configuration is the one docs/DEPLOY.md shows. `.ci/run` installs HAProxy;
 * where it is missing the test is reported as ignored, with the reason.
 */

import assert from "node:assert/strict";
import { connect, relay } from "../client/client.ts";
import { concat, decoder, encoder, SECRET, withTimeout } from "./_helpers.ts";
import { freshEnv, ServerProcess, startServeTask } from "./_process.ts";

function whyIgnored(): string | undefined {
  try {
    new Deno.Command("haproxy", { args: ["-v"], stdout: "null", stderr: "null" }).outputSync();
    return undefined;
  } catch {
    return "haproxy is not installed (apt-get install haproxy; .ci/run does)";
  }
}
const ignoredBecause = whyIgnored();
if (ignoredBecause) console.log(`balancer test ignored: ${ignoredBecause}`);

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** The HAProxy configuration of docs/DEPLOY.md, for these instances. */
function haproxyConfig(frontend: number, instances: { port: number; metrics: number }[]): string {
  return `global
  log stderr format raw local0 notice
defaults
  mode tcp
  log global
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
frontend hmac_echo
  bind 127.0.0.1:${frontend}
  default_backend hmac_echo_servers
backend hmac_echo_servers
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 100ms fall 2 rise 2 send-proxy-v2
${
    instances.map((it, i) => `  server s${i + 1} 127.0.0.1:${it.port} check port ${it.metrics}`)
      .join("\n")
  }
`;
}

interface Session {
  clientPort: number;
  ok: boolean;
  startedAfterDown: boolean;
  error?: string;
}

Deno.test({
  name: "behind HAProxy: an instance killed mid-run is marked down, no live session fails",
  ignore: ignoredBecause !== undefined,
  async fn() {
    await using fresh = await freshEnv({ HMAC_ECHO_SECRET: decoder.decode(SECRET) });
    const instances = [1, 2, 3].map(() =>
      startServeTask([
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1",
      ], fresh.env)
    );
    let haproxy: ServerProcess | undefined;
    try {
      const addresses = await Promise.all(instances.map(async (instance) => ({
        port: await instance.port(),
        metrics: Number(
          (await instance.waitForLine(/ metrics address=/)).match(/address=127\.0\.0\.1:(\d+)/)![1],
        ),
      })));
      const frontend = freePort();
      const config = `${fresh.home}/haproxy.cfg`;
      await Deno.writeTextFile(config, haproxyConfig(frontend, addresses));
      haproxy = ServerProcess.start("haproxy", ["-f", config, "-db"], { env: fresh.env });

      let down = false;
      const sessions: Session[] = [];
      const oneSession = async (): Promise<void> => {
        const startedAfterDown = down;
        let clientPort = 0;
        try {
          // retries: the frontend may not accept yet in the first instants of HAProxy's life.
          const client = await connect({
            secret: SECRET,
            port: frontend,
            retries: 20,
            retryDelayMs: 20,
          });
          clientPort = client.localAddr.port;
          const chunks: Uint8Array[] = [];
          await relay(
            client,
            ReadableStream.from([encoder.encode(`session ${clientPort}`)]),
            (c) => {
              chunks.push(c.slice());
            },
          );
          const reply = decoder.decode(concat(chunks));
          sessions.push({ clientPort, startedAfterDown, ok: reply === `SESSION ${clientPort}` });
        } catch (error) {
          sessions.push({ clientPort, startedAfterDown, ok: false, error: String(error) });
        }
      };
      // Honest clients, four at a time, until the kill has been noticed and then some.
      const honest = async () => {
        for (let i = 0; i < 400 && sessions.filter((s) => s.startedAfterDown).length < 60; i++) {
          await oneSession();
        }
      };
      const clients = [honest(), honest(), honest(), honest()];
      // Kill instance 2 once traffic flows, then wait for HAProxy to mark it down.
      await withTimeout(
        (async () => {
          while (sessions.filter((s) => s.ok).length < 40) await oneSession();
        })(),
        "40 sessions through HAProxy",
      );
      await instances[1].stop("SIGKILL");
      await haproxy.waitForLine(/s2 is DOWN/);
      down = true;
      await withTimeout(Promise.all(clients), "the honest clients to finish");

      // Every session begun after the balancer marked the instance down succeeded.
      const late = sessions.filter((s) => s.startedAfterDown);
      assert.ok(late.length >= 60);
      assert.deepEqual(late.filter((s) => !s.ok), []);
      // Which client ports each live instance authenticated, from its log.
      const served = (instance: ServerProcess) =>
        new Set(
          instance.lines.flatMap((line) =>
            [...line.matchAll(/ authenticated id=\d+ remote=127\.0\.0\.1:(\d+)/g)].map((m) =>
              Number(m[1])
            )
          ),
        );
      const live = [served(instances[0]), served(instances[2])];
      // Any failure at all was on the killed instance: no live instance logged that client.
      for (const failed of sessions.filter((s) => !s.ok)) {
        assert.ok(
          !live.some((ports) => ports.has(failed.clientPort)),
          `session from port ${failed.clientPort} failed on a live instance: ${failed.error}`,
        );
      }
      // The live instances saw the real clients through the PROXY protocol, and shared the load.
      for (const [i, ports] of live.entries()) {
        assert.ok(
          late.some((s) => ports.has(s.clientPort)),
          `instance ${i * 2 + 1} served after the kill`,
        );
        const proxied = [instances[0], instances[2]][i].lines.find((line) =>
          / proxied /.test(line)
        )!;
        const [, client, proxy] = proxied.match(/remote=(\S+) proxy=(\S+)/)!;
        assert.notEqual(client, proxy, "the log names the client, not the balancer");
      }
      console.log(
        `balancer: ${sessions.length} sessions, ${sessions.filter((s) => !s.ok).length} failed, ` +
          `none on a live instance; ${late.length} begun after HAProxy marked it down, all ok`,
      );
      // Every successful session is in exactly one instance's log under its own port.
      const all = [...live, served(instances[1])];
      for (const session of sessions.filter((s) => s.ok)) {
        assert.equal(all.filter((ports) => ports.has(session.clientPort)).length, 1);
      }
    } finally {
      if (haproxy) await haproxy.stop("SIGTERM");
      for (const instance of instances) await instance.stop("SIGTERM");
    }
  },
});
