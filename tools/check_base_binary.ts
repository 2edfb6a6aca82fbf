/**
 * `deno task compile`'s first step: makes sure `deno compile` will find its `denort` base binary,
 * or says in one line what is missing and how to provide it, where `deno compile` itself would
 * end in a network error and a Rust backtrace.
 *
 * `deno compile` takes the base binary from `DENORT_BIN`, else from its cache in DENO_DIR, else
 * downloads it from dl.deno.land; this looks at the same three, in that order, and waits at most
 * 5 s for dl.deno.land. Exit 0: go on; exit 1: the line is on stderr.
 *
 * @module
 */

const VERSION = Deno.version.deno;
const ARCHIVE = `denort-${Deno.build.target}.zip`;
const DOWNLOAD_URL = `https://dl.deno.land/release/v${VERSION}/${ARCHIVE}`;
/** Longest wait for dl.deno.land to answer before calling it unreachable. */
const PROBE_TIMEOUT_MS = 5_000;

function fail(message: string): never {
  console.error(`deno task compile: ${message}`);
  Deno.exit(1);
}

/** Deno's cache folder, where `deno info` says it is: DENO_DIR, else the platform's cache folder. */
function denoDir(): string | undefined {
  const env = (name: string) => Deno.env.get(name) || undefined;
  if (env("DENO_DIR")) return env("DENO_DIR");
  switch (Deno.build.os) {
    case "windows":
      return env("LOCALAPPDATA") && `${env("LOCALAPPDATA")}\\deno`;
    case "darwin":
      return env("HOME") && `${env("HOME")}/Library/Caches/deno`;
    default: {
      const cache = env("XDG_CACHE_HOME") ?? (env("HOME") && `${env("HOME")}/.cache`);
      return cache && `${cache}/deno`;
    }
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Why dl.deno.land cannot be reached, or undefined when it answers (with anything). */
async function whyUnreachable(): Promise<string | undefined> {
  try {
    const response = await fetch(DOWNLOAD_URL, {
      method: "HEAD",
      redirect: "manual",
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
    await response.body?.cancel();
    return undefined;
  } catch (error) {
    if (error instanceof DOMException && error.name === "TimeoutError") {
      return `no answer in ${PROBE_TIMEOUT_MS / 1000} s`;
    }
    // "fetch failed", caused by "error sending request for url (…): client error (Connect): dns
    // error: failed to lookup address information: …": the last two parts say what happened.
    const cause = error instanceof Error ? error.cause ?? error : error;
    const message = cause instanceof Error ? cause.message : String(cause);
    return message.split(": ").slice(-2).join(": ");
  }
}

const denortBin = Deno.env.get("DENORT_BIN");
if (denortBin !== undefined) {
  if (!isFile(denortBin)) {
    fail(
      `DENORT_BIN=${denortBin} is not a file: point it at denort, unzipped from ${DOWNLOAD_URL}`,
    );
  }
} else {
  const dir = denoDir();
  const cached = dir !== undefined && isFile(`${dir}/dl/release/v${VERSION}/${ARCHIVE}`);
  if (!cached) {
    const why = await whyUnreachable();
    if (why !== undefined) {
      fail(
        `deno compile needs its base binary, denort ${VERSION}, and cannot download it from ` +
          `dl.deno.land (${why}): set DENORT_BIN=/path/to/denort, unzipped from ${DOWNLOAD_URL}`,
      );
    }
  }
}
