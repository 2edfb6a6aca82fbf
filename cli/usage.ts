/** The usage text `--help` prints. */

import { DIGESTS } from "../protocol/keys.ts";
import {
  DEFAULT_BACKLOG,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_PORT,
} from "../server/config.ts";
import {
  DEFAULT_THROTTLE_COOLDOWN_MS,
  DEFAULT_THROTTLE_FAILURES,
  DEFAULT_THROTTLE_WINDOW_MS,
} from "../server/throttle.ts";
import { PREVIOUS_SECRET_ENV_VAR, SECRET_ENV_VAR } from "./secret.ts";
import denoConfig from "../deno.json" with { type: "json" };

/** The version, from deno.json. */
export const VERSION: string = denoConfig.version;

const ALL_DIGESTS = Object.keys(DIGESTS).join(",");

/** `hmac-echo --help`. */
export const USAGE = `hmac-echo ${VERSION}: an upper-casing echo server behind an HMAC challenge

Usage:
  hmac-echo serve   [--host H] [--port P] [--secret-file F] [options below]
  hmac-echo connect [--host H] [--port P] [--secret-file F] [--message TEXT] [--retry N]
                    [--protocol 1|2] [--digest D] [--integrity | --encrypt]
  hmac-echo --help | --version

serve options:
  --host H                 address to listen on (default ${DEFAULT_HOSTNAME})
  --port P                 port to listen on, 0 for any free one (default ${DEFAULT_PORT})
  --secret-file F          file holding the shared secret (see "The secret" below)
  --previous-secret-file F a previous secret still accepted during a rotation (or ${PREVIOUS_SECRET_ENV_VAR})
  --handshake-timeout S    seconds a client has to answer the challenge (default ${
  DEFAULT_HANDSHAKE_TIMEOUT_MS / 1000
})
  --idle-timeout S         close an authenticated connection idle this long (default 0: never)
  --max-connections N      connections served at once; more are closed at once (default ${DEFAULT_MAX_CONNECTIONS})
  --max-connections-per-address N
                           the same, per client address; 0: no cap (default ${DEFAULT_MAX_CONNECTIONS_PER_ADDRESS})
  --throttle-after N       failed handshakes from one address that start a cool-down (default ${DEFAULT_THROTTLE_FAILURES}; 0: off)
  --throttle-window S      ... counted over this many seconds (default ${
  DEFAULT_THROTTLE_WINDOW_MS / 1000
})
  --throttle-cooldown S    first cool-down; it doubles with each repeat, up to an hour (default ${
  DEFAULT_THROTTLE_COOLDOWN_MS / 1000
})
  --backlog N              listen queue length, for reconnect storms (default ${DEFAULT_BACKLOG})
  --workers N              server threads sharing the port (SO_REUSEPORT); 0: one per core (default 1)
  --require-v2             refuse protocol v1 clients (v2 authenticates the server too)
  --integrity              require v2 with integrity frames (or encryption); implies --require-v2
  --encrypt                require v2 with encrypted frames (AES-256-GCM); implies --require-v2
  --digests LIST           digests a v2 client may use, comma-separated; leave sha1 out to
                           forbid it (default ${ALL_DIGESTS})
  --digest sha1-prefix     also accept the Python tutorial's sha1(secret + challenge) v1 answers,
                           to migrate its clients; weaker than HMAC, logged as a warning
  --proxy-protocol         read a PROXY protocol header (v1 or v2) from a load balancer first
  --trusted-proxies LIST   the balancers allowed to send one: IPs and CIDR blocks, comma-separated
  --metrics-port P         serve Prometheus /metrics and a /healthz check over HTTP (default: off)
  --metrics-host H         address for them (default 127.0.0.1)
  --log-format text|json   one line per event, for people (default) or for log shippers
  --quiet                  log only lifecycle lines, warnings and errors, not every connection

connect options:
  --host H, --port P       the server (default ${DEFAULT_HOSTNAME}:${DEFAULT_PORT})
  --secret-file F          file holding the shared secret
  --message TEXT           send TEXT, print the reply, exit
  --retry N                retry a failed connection N times, backing off (never a rejection)
  --protocol 1|2           2 (default) authenticates the server too; 1 only for old servers,
                           never chosen silently
  --digest D               v2: sha1, sha256 (default), sha384 or sha512;
                           v1: hmac-sha1 (default) or sha1-prefix (the tutorial's legacy answer)
  --integrity              v2: every frame carries a sequence number and a MAC
  --encrypt                v2: every frame is encrypted and authenticated (AES-256-GCM)
  Without --message: from a terminal, an interactive session (Ctrl-D ends it); from a pipe,
  stdin is streamed to the server and the replies to stdout.

The secret (never on the command line, where other users could see it in ps):
  1. the content of --secret-file F (one trailing newline ignored), if given; else
  2. the UTF-8 bytes of the ${SECRET_ENV_VAR} environment variable, if set; else
  3. the default file $XDG_CONFIG_HOME/hmac-echo/secret (or ~/.config/hmac-echo/secret),
     which "serve" creates with a random secret if it does not exist.

Exit status: 0 success, 1 failure (rejected, unreachable, port in use), 2 usage or secret error.
`;
