/**
 * What `bench.ts` and `protocol_pairs.ts` share to run a server as its own process: pinning to a
 * core, its CPU time, and a start that waits until it listens on a free port.
 *
 * @module
 */

/** Server on core 0, generator on core 1, where the machine has two and `taskset`. */
export const PINNED = Deno.build.os === "linux" && navigator.hardwareConcurrency >= 2;

/** `command` pinned to `core` (through `taskset`) where the machine allows it. */
export function pinned(core: number, command: string[]): string[] {
  return PINNED ? ["taskset", "-c", String(core), ...command] : command;
}

/** utime + stime of `pid`, in clock ticks (1/100 s); NaN once it has gone. Read through cat:
 * Deno asks --allow-all to read another process's /proc. */
export function cpuTicks(pid: number): number {
  try {
    const stat = new TextDecoder().decode(
      new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).outputSync().stdout,
    );
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** A server process started by {@linkcode startOnFreePort}. */
export interface RunningServer {
  child: Deno.ChildProcess;
  port: number;
}

/**
 * Server ports come from below Linux's ephemeral range (32768 and up), where the generator's own
 * outgoing connections take their local ports; a port still taken anyway is skipped.
 */
let nextPort = 20_000 + Math.floor(Math.random() * 10_000);

/**
 * Starts `command(port)` for `name` and resolves once it logs that it is listening; its stderr is
 * then drained so it never blocks. A port already in use is skipped, up to 5 tries.
 */
export async function startOnFreePort(
  name: string,
  command: (port: number) => string[],
  env: Record<string, string>,
): Promise<RunningServer> {
  for (let attempt = 1;; attempt++) {
    try {
      return await startOn(name, command, env, nextPort++);
    } catch (error) {
      if (attempt === 5 || !/already in use/.test(String(error))) throw error;
    }
  }
}

async function startOn(
  name: string,
  command: (port: number) => string[],
  env: Record<string, string>,
  port: number,
): Promise<RunningServer> {
  const [program, ...args] = command(port);
  const child = new Deno.Command(program, {
    args,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/listening/.test(seen)) {
    const { done, value } = await reader.read();
    if (done) {
      await child.status;
      throw new Error(`${name} exited before listening: ${seen}`);
    }
    seen += value;
  }
  (async () => {
    while (!(await reader.read()).done);
  })();
  return { child, port };
}
