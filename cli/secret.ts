/**
 * Where the shared secret comes from: an explicit file, the environment, or a default file that
 * `serve` creates on first run so that `serve` and `connect` on one machine need no setup.
 *
 * @module
 */

import { dirname } from "node:path";
import { HmacEchoError } from "../errors.ts";

/** Environment variable holding the secret as text (its UTF-8 bytes are the secret). */
export const SECRET_ENV_VAR = "HMAC_ECHO_SECRET";

/** Environment variable holding the previous secret during a rotation (docs/DEPLOY.md). */
export const PREVIOUS_SECRET_ENV_VAR = "HMAC_ECHO_PREVIOUS_SECRET";

/** Bytes of randomness in a generated secret: 256 bits, far beyond offline guessing. */
const GENERATED_SECRET_BYTES = 32;

/**
 * The secret could not be obtained; the message says what to do. Never contains the secret.
 * Reason `secret-unavailable`.
 */
export class SecretError extends HmacEchoError {
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("secret-unavailable", message, options);
  }
}

/** Where to look for the secret, from the command line and the environment. */
export interface SecretOptions {
  /** `--secret-file`: wins over the environment variable when both are given. */
  secretFile?: string;
  /**
   * Create the default file when it is missing: `serve` does at start-up; `connect` does not.
   * It also picks the advice for a missing file: a process that makes secrets is told how to make
   * one, one that only reads them where its secret comes from.
   */
  createDefault: boolean;
  /** Reads an environment variable; `Deno.env.get` in the program, a map in tests. */
  getEnv: (name: string) => string | undefined;
}

/** The secret and a description of where it came from, for the log (never the value). */
export interface LoadedSecret {
  secret: Uint8Array;
  /** For example `file /home/me/.config/hmac-echo/secret` or `environment variable HMAC_ECHO_SECRET`. */
  source: string;
  /** True when this call generated the default file. */
  created: boolean;
  /** Things the operator should hear about: loose file permissions, an ignored variable. */
  warnings: string[];
}

/**
 * Loads the secret: `--secret-file` if given, else `HMAC_ECHO_SECRET`, else the default file
 * ({@linkcode defaultSecretPath}), which is created when `createDefault` is set.
 *
 * @throws {SecretError} when no secret can be had, or it is empty.
 */
export async function loadSecret(options: SecretOptions): Promise<LoadedSecret> {
  const fromEnv = options.getEnv(SECRET_ENV_VAR);
  if (options.secretFile !== undefined) {
    const warnings = fromEnv === undefined
      ? []
      : [`Both --secret-file and ${SECRET_ENV_VAR} are set; using --secret-file`];
    const { secretFile } = options;
    const missing = `${notFound(secretFile)}. ` +
      (options.createDefault
        ? `Create it, for example: ${createCommand(secretFile)}`
        : "Check the path: the file must hold the secret the server and its clients share");
    return await readSecretFile(secretFile, { created: false, warnings, missing });
  }
  if (fromEnv !== undefined) {
    if (fromEnv.length === 0) {
      throw new SecretError(
        `${SECRET_ENV_VAR} is set but empty: put the secret in it, or unset it to use a secret file`,
      );
    }
    return {
      secret: new TextEncoder().encode(fromEnv),
      source: `environment variable ${SECRET_ENV_VAR}`,
      created: false,
      warnings: [],
    };
  }
  const path = defaultSecretPath(options.getEnv);
  const created = options.createDefault && await createSecretFileIfMissing(path);
  return await readSecretFile(path, {
    created,
    warnings: [],
    // Only a process that does not create the default file gets here without one: connect.
    missing: `No secret: no --secret-file, no ${SECRET_ENV_VAR}, and the default file "${path}" ` +
      `does not exist. "hmac-echo serve" creates it, with a random secret, the first time it ` +
      `runs on this machine; for a server elsewhere, set ${SECRET_ENV_VAR} or pass ` +
      `--secret-file PATH with that server's secret`,
  });
}

/**
 * Loads the previous secret a server still accepts while clients move to a new one:
 * `--previous-secret-file` if given, else `HMAC_ECHO_PREVIOUS_SECRET`, else none.
 *
 * @throws {SecretError} when one is named but cannot be read, or is empty.
 */
export async function loadPreviousSecret(
  options: { secretFile?: string; getEnv: (name: string) => string | undefined },
): Promise<LoadedSecret | undefined> {
  if (options.secretFile !== undefined) {
    return await readSecretFile(options.secretFile, {
      created: false,
      warnings: [],
      // A fresh random secret would be no use here: it must be the one clients still have.
      missing: `${notFound(options.secretFile)}. --previous-secret-file must hold the secret ` +
        "clients used before the new one: check the path, or leave the flag out when no " +
        "rotation is under way",
    });
  }
  const fromEnv = options.getEnv(PREVIOUS_SECRET_ENV_VAR);
  if (fromEnv === undefined) return undefined;
  if (fromEnv.length === 0) {
    throw new SecretError(
      `${PREVIOUS_SECRET_ENV_VAR} is set but empty: unset it when no rotation is under way`,
    );
  }
  return {
    secret: new TextEncoder().encode(fromEnv),
    source: `environment variable ${PREVIOUS_SECRET_ENV_VAR}`,
    created: false,
    warnings: [],
  };
}

/**
 * The default secret file: `$XDG_CONFIG_HOME/hmac-echo/secret`, else `~/.config/hmac-echo/secret`.
 *
 * @throws {SecretError} when neither `XDG_CONFIG_HOME` nor `HOME` is set.
 */
export function defaultSecretPath(getEnv: (name: string) => string | undefined): string {
  const xdg = getEnv("XDG_CONFIG_HOME");
  // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
  if (xdg && xdg.startsWith("/")) return `${xdg}/hmac-echo/secret`;
  const home = getEnv("HOME");
  if (home) return `${home}/.config/hmac-echo/secret`;
  throw new SecretError(
    `No secret: neither XDG_CONFIG_HOME nor HOME is set, so there is no default secret file. ` +
      `Set ${SECRET_ENV_VAR} or pass --secret-file PATH`,
  );
}

/** Writes a fresh random secret to `path` unless a file is there; true if it wrote one. */
async function createSecretFileIfMissing(path: string): Promise<boolean> {
  const directory = path.slice(0, path.lastIndexOf("/"));
  const bytes = crypto.getRandomValues(new Uint8Array(GENERATED_SECRET_BYTES));
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  try {
    await Deno.mkdir(directory, { recursive: true, mode: 0o700 });
    // createNew: two servers starting at once must not overwrite each other's secret.
    await Deno.writeTextFile(path, `${hex}\n`, { createNew: true, mode: 0o600 });
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    throw new SecretError(
      `Cannot create the default secret file "${path}": ${reason(error)}. ` +
        `Set ${SECRET_ENV_VAR} or pass --secret-file PATH instead`,
      { cause: error },
    );
  }
}

/** The start of the message for a secret file that is not there. */
function notFound(path: string): string {
  return `Cannot read the secret file "${path}": it does not exist`;
}

/**
 * A shell command that makes the secret file `path` as serve makes its default one: 32 random
 * bytes as hex, the file 0600 and a new folder 0700 (`umask`, so neither is ever readable by
 * others), the folder created when it is missing.
 */
function createCommand(path: string): string {
  return `(umask 077 && mkdir -p ${shellQuote(dirname(path))} && ` +
    `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > ${shellQuote(path)})`;
}

/** `text` as one shell word: in double quotes when that is safe, else in single quotes. */
function shellQuote(text: string): string {
  return /["$`\\!]/.test(text) ? `'${text.replaceAll("'", `'\\''`)}'` : `"${text}"`;
}

async function readSecretFile(
  path: string,
  extra: {
    created: boolean;
    warnings: string[];
    /** The message when the file does not exist: what it means here, and what to do. */
    missing: string;
  },
): Promise<LoadedSecret> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    const message = error instanceof Deno.errors.NotFound
      ? extra.missing
      : `Cannot read the secret file "${path}": ${reason(error)}`;
    throw new SecretError(message, { cause: error });
  }
  const secret = stripOneLineEnding(bytes);
  if (secret.length === 0) {
    throw new SecretError(
      `The secret file "${path}" is empty: put at least 16 random bytes in it`,
    );
  }
  const warnings = [...extra.warnings];
  const mode = (await Deno.stat(path)).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    warnings.push(
      `The secret file "${path}" can be read by other users (mode ${
        (mode & 0o777).toString(8)
      }); ` +
        `run: chmod 600 "${path}"`,
    );
  }
  return { secret, source: `file ${path}`, created: extra.created, warnings };
}

/** Editors add a final newline; it is not part of the secret. Strips one LF or CRLF. */
function stripOneLineEnding(bytes: Uint8Array): Uint8Array {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) {
    end--;
    if (end > 0 && bytes[end - 1] === 0x0d) end--;
  }
  return bytes.subarray(0, end);
}

function reason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "it does not exist";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.NotCapable) return "Deno was not given access to it";
  return error instanceof Error ? error.message : String(error);
}

/** The shortest secret accepted without `--allow-weak-secret`: 128 bits if its bytes are random. */
export const MIN_SECRET_LENGTH = 16;

/**
 * Refuses a secret shorter than {@linkcode MIN_SECRET_LENGTH} bytes, unless `allowWeak`: anyone who
 * records one handshake can test guesses offline (docs/SECURITY.md), so a short one falls fast.
 *
 * @returns the warning to log when a short secret is allowed; undefined for a strong one.
 * @throws {SecretError} for a short secret without `allowWeak`.
 */
export function checkSecretStrength(
  loaded: { secret: Uint8Array; source: string },
  allowWeak: boolean,
): string | undefined {
  const length = loaded.secret.length;
  if (length >= MIN_SECRET_LENGTH) return undefined;
  if (allowWeak) {
    return `the secret from ${loaded.source} is ${length} bytes, under ${MIN_SECRET_LENGTH}: one ` +
      "recorded handshake lets anyone guess it offline; replace it with 32 random bytes";
  }
  throw new SecretError(
    `The secret from ${loaded.source} is ${length} bytes: at least ${MIN_SECRET_LENGTH} are ` +
      "needed, since anyone who records one handshake can test guesses offline. Make a strong " +
      `one: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE, and point ` +
      "--secret-file at it; or pass --allow-weak-secret to accept this one anyway",
  );
}
