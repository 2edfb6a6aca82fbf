/** Helpers for tests that run hmac-echo as a real process. */

import { linesOf, taskArgs } from "../tools/harness.ts";
import { readToEnd, withTimeout } from "./_helpers.ts";

export { taskArgs };

/** The project's root, where deno.json and main.ts are. */
export const ROOT = new URL("../", import.meta.url).pathname;

/**
 * Starts `serve` exactly as the `serve` task would, with its permissions and nothing more; with
 * `openFiles`, under `ulimit -n openFiles` as many machines run it.
 */
export function startServeTask(
  args: string[],
  env: Record<string, string>,
  options: { openFiles?: number } = {},
): ServerProcess {
  const command = [Deno.execPath(), ...taskArgs("serve"), ...args];
  if (options.openFiles === undefined) {
    return ServerProcess.start(command[0], command.slice(1), { env, cwd: ROOT });
  }
  return ServerProcess.start(
    "bash",
    ["-c", `ulimit -n ${options.openFiles} && exec "$@"`, "bash", ...command],
    { env, cwd: ROOT },
  );
}

const DENO_DIR = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;

/** A fresh, empty configuration home and the environment a new user would have. */
export async function freshEnv(extra: Record<string, string> = {}) {
  const home = await Deno.makeTempDir({ prefix: "hmac-echo-cli-test-" });
  const env = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: home,
    XDG_CONFIG_HOME: `${home}/config`,
    DENO_DIR,
    NO_COLOR: "1",
    ...extra,
  };
  return { home, env, [Symbol.asyncDispose]: () => Deno.remove(home, { recursive: true }) };
}

/** A server process (`serve`, or the compiled server), its port read back from its log. */
export class ServerProcess {
  readonly lines: string[] = [];
  #child: Deno.ChildProcess;
  #waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  #drained: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#drained = this.#drain();
  }

  /** Spawns `command args` in a clean environment `env`, stderr captured line by line. */
  static start(
    command: string,
    args: string[],
    options: { env: Record<string, string>; cwd?: string },
  ): ServerProcess {
    const child = new Deno.Command(command, {
      args,
      cwd: options.cwd,
      env: options.env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ServerProcess(child);
  }

  async #drain(): Promise<void> {
    for await (const line of linesOf(this.#child.stderr)) {
      this.lines.push(line);
      this.#waiters = this.#waiters.filter((w) =>
        !(w.pattern.test(line) && (w.resolve(line), true))
      );
    }
  }

  /**
   * The first stderr line matching `pattern`, past or future; with `after` (`lines.length` taken
   * before the action), only a line from that action on: a second reload logs the same line.
   */
  waitForLine(pattern: RegExp, options: { after?: number } = {}): Promise<string> {
    const seen = this.lines.slice(options.after ?? 0).find((line) => pattern.test(line));
    if (seen) return Promise.resolve(seen);
    const exited = this.#child.status.then((status) => {
      throw new Error(
        `the server exited (${status.code}) before logging ${pattern}:\n${this.lines.join("\n")}`,
      );
    });
    return withTimeout(
      Promise.race([
        new Promise<string>((resolve) => this.#waiters.push({ pattern, resolve })),
        exited,
      ]),
      `server line ${pattern}`,
    );
  }

  async port(): Promise<number> {
    const line = await this.waitForLine(/ listening address=127\.0\.0\.1:\d+/);
    return Number(line.match(/address=127\.0\.0\.1:(\d+)/)![1]);
  }

  /** The process id: the group id too, for a process started under `setsid`. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Sends `signal` without waiting for anything. */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Sends `signal` and waits for the exit and the last stderr line. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill(signal);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // already exited
    }
    return await this.exited();
  }

  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.#child.status;
    await this.#drained;
    await this.#child.stdout.cancel();
    return status;
  }
}

/**
 * `GET path` over a new TCP connection, as a balancer's health check makes it: fetch() would reuse
 * a pooled connection and so hide a listener that has stopped accepting.
 */
export async function httpGet(
  address: string,
  path: string,
): Promise<{ status: number; body: string }> {
  const [hostname, port] = address.split(":");
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.0\r\nHost: ${address}\r\n\r\n`));
    const response = new TextDecoder().decode(await readToEnd(conn));
    const [head, body] = response.split("\r\n\r\n", 2);
    return { status: Number(head.match(/^HTTP\/1\.[01] (\d{3}) /)![1]), body };
  } finally {
    conn.close();
  }
}
