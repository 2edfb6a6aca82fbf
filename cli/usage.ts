/**
 * The help texts: a short overview for `hmac-echo --help`, and each command's own options, in
 * groups, with the defaults the code uses (never typed a second time here).
 *
 * @module
 */

import { DEFAULT_GRACE_PERIOD_MS, DEFAULT_HOSTNAME, resolveSettings } from "../server/config.ts";
import { DEFAULT_DRAIN_DELAY_MS } from "./serve.ts";
import { CONNECT_DEFAULTS } from "./connect.ts";
import { MIN_SECRET_LENGTH, PREVIOUS_SECRET_ENV_VAR, SECRET_ENV_VAR } from "./secret.ts";
import denoConfig from "../deno.json" with { type: "json" };

/** The version, from deno.json. */
export const VERSION: string = denoConfig.version;

/**
 * One line of a command's help: the flag as typed, what it does, and the default, if there is
 * one worth showing, appended as "(default …)".
 */
type OptionHelp = readonly [flag: string, text: string, fallback?: string | number];

/** A heading and its options: adding a flag to a group is adding one line. */
type HelpGroup = readonly [heading: string, options: readonly OptionHelp[]];

/** What `serve` runs with when no flag says otherwise: the server's own defaults. */
const SERVER = resolveSettings({ log: {} });

/** Milliseconds as the seconds a flag takes. */
function seconds(ms: number): string {
  return `${ms / 1000} s`;
}

const SERVE_GROUPS: readonly HelpGroup[] = [
  ["Listening", [
    ["--host H", "address to listen on", SERVER.hostname],
    ["--port P", "port to listen on, 0 for any free one", SERVER.port],
    ["--backlog N", "listen queue length, for reconnect storms", SERVER.backlog],
    [
      "--workers N",
      "server threads sharing the port (SO_REUSEPORT); 0: one per core",
      SERVER.workers,
    ],
    ["--proxy-protocol", "read a PROXY protocol header (v1 or v2) from a load balancer first"],
    [
      "--trusted-proxies LIST",
      "the balancers allowed to send one: IPs and CIDR blocks, comma-separated",
    ],
  ]],
  ["Secrets", [
    ["--secret-file F", `file holding the shared secret (see "The secret" below)`],
    [
      "--previous-secret-file F",
      `a previous secret still accepted during a rotation (or ${PREVIOUS_SECRET_ENV_VAR})`,
    ],
    [
      "--allow-weak-secret",
      `accept a secret under ${MIN_SECRET_LENGTH} bytes (the tutorial's), with a warning at start`,
    ],
  ]],
  ["Limits", [
    [
      "--handshake-timeout S",
      "seconds a client has to answer the challenge",
      seconds(SERVER.handshakeTimeoutMs),
    ],
    [
      "--idle-timeout S",
      "close an authenticated connection idle this long; 0: never",
      seconds(SERVER.idleTimeoutMs),
    ],
    [
      "--max-connections N",
      "connections served at once; more are closed at once",
      SERVER.maxConnections,
    ],
    [
      "--max-connections-per-address N",
      "the same, per client address; 0: no cap",
      SERVER.maxConnectionsPerAddress,
    ],
    [
      "--throttle-after N",
      "failed handshakes from one address that start a cool-down; 0: off",
      SERVER.throttle.maxFailures,
    ],
    ["--throttle-window S", "... counted over this long", seconds(SERVER.throttle.windowMs)],
    [
      "--throttle-cooldown S",
      `the first cool-down; it doubles with each repeat, up to ${
        seconds(SERVER.throttle.maxCooldownMs)
      }`,
      seconds(SERVER.throttle.cooldownMs),
    ],
  ]],
  ["Protocol", [
    ["--require-v2", "refuse protocol v1 clients (v2 authenticates the server too)"],
    [
      "--require-forward-secrecy",
      "refuse sessions without an ephemeral key exchange: v1, and v2 clients that do not offer one",
    ],
    ["--integrity", "require v2 with integrity frames (or encryption); implies --require-v2"],
    [
      "--encrypt",
      "require v2 with encrypted frames (AES-256-GCM); implies --require-v2; either this or " +
      "--integrity",
    ],
    [
      "--digests LIST",
      "digests a v2 client may use, comma-separated; leave sha1 out to forbid it",
      SERVER.digests.join(","),
    ],
    [
      "--digest sha1-prefix",
      "also accept the Python tutorial's sha1(secret + challenge) v1 answers, to migrate its " +
      "clients; weaker than HMAC, logged as a warning",
    ],
  ]],
  ["Forwarding", [
    [
      "--forward ADDR",
      "forward each authenticated session to ADDR (HOST:PORT, a PORT on 127.0.0.1, or " +
      "unix:/path) instead of echoing; serves only encrypted, forward-secret sessions",
    ],
    [
      "--target-timeout S",
      "seconds the target has to accept a connection; then the session is closed",
      seconds(SERVER.targetTimeoutMs),
    ],
    [
      "--no-keepalive",
      "turn off TCP keepalive on client connections and the target's (on by default, probing " +
      "at the kernel's net.ipv4.tcp_keepalive_* intervals)",
    ],
  ]],
  ["Operations", [
    ["--metrics-port P", "serve Prometheus /metrics and a /healthz check over HTTP", "off"],
    ["--metrics-host H", "address for them", DEFAULT_HOSTNAME],
    [
      "--log-format text|json",
      "one line per event, for people or for log shippers",
      SERVER.log?.format,
    ],
    ["--quiet", "log only lifecycle lines, warnings and errors, not every connection"],
    [
      "--drain-delay S",
      "after SIGTERM, answer /healthz 503 but keep accepting this long, for balancers",
      seconds(DEFAULT_DRAIN_DELAY_MS),
    ],
    [
      "--grace-period S",
      "then give open sessions this long to finish before closing them",
      seconds(DEFAULT_GRACE_PERIOD_MS),
    ],
  ]],
];

const CONNECT_GROUPS: readonly HelpGroup[] = [
  ["Connecting", [
    ["--host H", "the server's address", CONNECT_DEFAULTS.hostname],
    ["--port P", "the server's port", CONNECT_DEFAULTS.port],
    [
      "--retry N",
      "retry a failed connection N times, backing off; a rejection is never retried",
      CONNECT_DEFAULTS.retries,
    ],
  ]],
  ["Secrets", [
    ["--secret-file F", `file holding the shared secret (see "The secret" below)`],
    [
      "--allow-weak-secret",
      `accept a secret under ${MIN_SECRET_LENGTH} bytes (the tutorial's), with a warning`,
    ],
  ]],
  ["Protocol", [
    [
      "--protocol 1|2",
      "2 authenticates the server too; 1 only for old servers, never chosen silently",
      CONNECT_DEFAULTS.protocol,
    ],
    [
      "--digest D",
      `v2: sha1, sha256, sha384 or sha512 (default ${CONNECT_DEFAULTS.digest}); ` +
      "v1: hmac-sha1 (default) or sha1-prefix (the tutorial's legacy answer)",
    ],
    [
      "--encrypt",
      "v2, the default: every frame encrypted and authenticated (AES-256-GCM), forward-secret keys",
    ],
    ["--integrity", "v2: frames readable on the wire, each with a sequence number and a MAC"],
    ["--plain", "v2: no frames: the service bytes as they are, after a mutual handshake"],
    [
      "--no-forward-secrecy",
      "framed modes without the key exchange, only for servers older than it (warns)",
    ],
  ]],
  ["Sending", [
    ["--message TEXT", "send TEXT, print the reply, exit"],
  ]],
  ["Tunnel (to a server that forwards its sessions)", [
    [
      "--listen ADDR",
      "listen on ADDR (HOST:PORT, a PORT on 127.0.0.1, or unix:/path, created 0600): each " +
      "local connection becomes its own encrypted, forward-secret session to the server",
    ],
    [
      "--max-connections N",
      "local connections served at once; more are closed at once",
      CONNECT_DEFAULTS.maxConnections,
    ],
    [
      "--no-keepalive",
      "turn off TCP keepalive on both legs (on by default, probing at the kernel's intervals)",
    ],
    [
      "--log-format text|json",
      "the tunnel's events, one line each, on stderr",
      CONNECT_DEFAULTS.logFormat,
    ],
    ["--quiet", "log only lifecycle lines, warnings and errors, not every connection"],
  ]],
];

/** Help lines are wrapped at the width of the notes below them; descriptions start in this column. */
const WIDTH = 100;
const DESCRIPTION_COLUMN = 27;

function formatGroups(groups: readonly HelpGroup[]): string {
  return groups.map(([heading, options]) => `${heading}:\n${options.map(formatOption).join("")}`)
    .join("\n");
}

function formatOption([flag, text, fallback]: OptionHelp): string {
  // "(default …)" stays whole: a default split across lines is easy to misread.
  const words = text.split(" ");
  if (fallback !== undefined) words.push(`(default ${fallback})`);
  const lines = wrap(words, WIDTH - DESCRIPTION_COLUMN);
  const indent = " ".repeat(DESCRIPTION_COLUMN);
  const head = `  ${flag}`;
  // A flag too long for its column gets a line of its own.
  const first = head.length <= DESCRIPTION_COLUMN - 2
    ? head.padEnd(DESCRIPTION_COLUMN)
    : `${head}\n${indent}`;
  return first + lines.join(`\n${indent}`) + "\n";
}

function wrap(words: string[], width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of words) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line];
}

const TAGLINE = "an upper-casing echo server behind an HMAC challenge";

/** Where the secret comes from; `creates` for the one command that makes the default file. */
function secretNote(creates: boolean): string {
  return `The secret (never on the command line, where other users could see it in ps):
  1. the content of --secret-file F (one trailing newline ignored), if given; else
  2. the UTF-8 bytes of the ${SECRET_ENV_VAR} environment variable, if set; else
  3. the default file $XDG_CONFIG_HOME/hmac-echo/secret (or ~/.config/hmac-echo/secret)${
    creates ? ",\n     created with a random secret if it does not exist." : "."
  }
`;
}

/** The exit statuses, with what a failure (1) is for the command at hand. */
function exitStatus(failures: string): string {
  return `Exit status: 0 success, 1 failure (${failures}), 2 usage or secret error.\n`;
}

/** `hmac-echo --help`: what there is, and where each command's options are. */
export const USAGE = `hmac-echo ${VERSION}: ${TAGLINE}

Usage:
  hmac-echo serve [options]      run the server
  hmac-echo connect [options]    authenticate to a server, send it text, print the replies
  hmac-echo --help | --version

Run "hmac-echo serve --help" or "hmac-echo connect --help" for each command's options.

${exitStatus("rejected, unreachable, port in use")}`;

/** `hmac-echo serve --help`. */
export const SERVE_USAGE = `hmac-echo serve: ${TAGLINE}

Usage: hmac-echo serve [options]
       hmac-echo serve --help | --version

${formatGroups(SERVE_GROUPS)}
Signals: SIGTERM or Ctrl-C drains and stops (exit 0). The same signal again within a second is the
same request (a terminal and deno task both send a Ctrl-C); any other signal, or the same one
later, forces the exit (1). SIGHUP re-reads the secret files; if one cannot be read, the old
secrets stay.

${secretNote(true)}
${exitStatus("could not listen, the port in use, say")}`;

/** `hmac-echo connect --help`. */
export const CONNECT_USAGE = `hmac-echo connect: a client for hmac-echo serve

Usage: hmac-echo connect [options]
       hmac-echo connect --help | --version

${formatGroups(CONNECT_GROUPS)}
Without --message: from a terminal, an interactive session (Ctrl-D ends it); from a pipe,
stdin is streamed to the server and the replies to stdout. With --listen, SIGTERM or Ctrl-C closes
the tunnel (exit 0); as for serve, a copy of that signal within a second is the same request.

${secretNote(false)}
${exitStatus("rejected, or the server unreachable")}`;
