/**
 * The command line's flag parsing, as pure functions: every usage error and what each flag turns
 * into, without starting a process. tests/cli_test.ts runs the program itself.
 */

import assert from "node:assert/strict";
import { CONNECT_OPTIONS, parseConnectArgs } from "../cli/connect.ts";
import { UsageError } from "../cli/flags.ts";
import { DEFAULT_DRAIN_DELAY_MS, parseServeArgs, SERVE_OPTIONS } from "../cli/serve.ts";
import { CONNECT_USAGE, SERVE_USAGE, USAGE } from "../cli/usage.ts";
import { DEFAULT_GRACE_PERIOD_MS, resolveSettings } from "../server/config.ts";

const connectErrors: [string[], RegExp][] = [
  [["--bogus"], /^Unknown option '--bogus'$/],
  [["--port", "70000"], /--port must be a whole number from 0 to 65535, got "70000"/],
  [["--port", "abc"], /--port must be a whole number/],
  [["--port"], /--port/],
  [["--port", "0"], /--port must be 1-65535 for connect/],
  [["stray"], /Unexpected argument 'stray'/],
  [["--protocol", "3"], /--protocol must be 1 or 2, got "3"/],
  [
    ["--protocol", "1", "--integrity"],
    /protocol 1 has no frames: --integrity and --encrypt need --protocol 2/,
  ],
  [["--protocol", "1", "--digest", "sha256"], /protocol 1 answers with hmac-sha1 or sha1-prefix/],
  [
    ["--digest", "md5"],
    /--digest for protocol 2 must be one of sha1,sha256,sha384,sha512, got "md5"/,
  ],
  [["--digest", "sha1-prefix"], /sha1-prefix is a protocol 1 answer: add --protocol 1/],
  [["--retry=-1"], /--retry must be a whole number, 0 or more, got "-1"/],
  // A negative number is the flag's value, refused by the flag's own check, not by node:util as
  // an "ambiguous" argument.
  [["--retry", "-1"], /^--retry must be a whole number, 0 or more, got "-1"$/],
  [["--port", "-1"], /^--port must be a whole number from 0 to 65535, got "-1"$/],
  [["--port", "-x"], /argument is ambiguous/],
  [["--integrity", "--encrypt"], /^--integrity and --encrypt are either\/or: choose one/],
  [["--encrypt", "--protocol", "1", "--integrity"], /--integrity and --encrypt are either\/or/],
  [
    ["--listen", "6380", "--plain"],
    /--listen opens only encrypted, forward-secret .*drop --plain$/,
  ],
  [["--listen", "6380", "--integrity"], /drop --integrity$/],
  [["--listen", "6380", "--no-forward-secrecy"], /drop --no-forward-secrecy$/],
  [["--listen", "6380", "--protocol", "1"], /drop --protocol 1$/],
  [["--listen", "6380", "--message", "hi"], /--listen and --message are either\/or/],
  [["--listen", "6380", "--max-connections", "0"], /--max-connections must be a positive whole/],
  [["--listen", "6380", "--log-format", "xml"], /--log-format must be text or json, got "xml"/],
  [["--listen", "6380", "--digest", "md5"], /--digest must be one of sha1,sha256,sha384,sha512/],
  [["--listen", "localhost"], /--listen takes HOST:PORT, a PORT on 127\.0\.0\.1, or unix:\/path/],
  [["--listen", "unix:"], /the path is missing in "unix:"/],
  [["--listen", ":80"], /the host is missing in ":80"/],
  [["--listen", "99999"], /--listen's port must be a whole number from 0 to 65535/],
  [["--quiet"], /^--quiet goes with --listen/],
  [["--no-keepalive"], /^--no-keepalive goes with --listen/],
];

for (const [args, message] of connectErrors) {
  Deno.test(`parseConnectArgs(${JSON.stringify(args)}) is a usage error`, () => {
    assert.throws(() => parseConnectArgs(args), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, message);
      return true;
    });
  });
}

const serveErrors: [string[], RegExp][] = [
  [["--handshake-timeout=-1"], /--handshake-timeout must be a positive number, got "-1"/],
  [["--handshake-timeout", "-1"], /^--handshake-timeout must be a positive number, got "-1"$/],
  [["--max-connections", "0"], /--max-connections must be a positive whole number, got "0"/],
  [["--max-connections", "2.5"], /--max-connections must be a positive whole number/],
  [["--max-connections", "ten"], /--max-connections must be a positive whole number, got "ten"/],
  [["--idle-timeout=-3"], /--idle-timeout must be a number, 0 or more, got "-3"/],
  [["--idle-timeout", "-3"], /^--idle-timeout must be a number, 0 or more, got "-3"$/],
  [["--throttle-window", "-.5"], /^--throttle-window must be a positive number, got "-.5"$/],
  [["--workers", "-2"], /^--workers must be a whole number, 0 \(one per core\) or more, got "-2"$/],
  [
    ["--workers", "1.5"],
    /^--workers must be a whole number, 0 \(one per core\) or more, got "1\.5"$/,
  ],
  [["--port", "-1"], /^--port must be a whole number from 0 to 65535, got "-1"$/],
  [["--metrics-port", "-1"], /^--metrics-port must be a whole number from 0 to 65535, got "-1"$/],
  [["--quiet", "-1"], /^Unknown option '-1'/],
  [["--throttle-after", "x"], /--throttle-after must be a whole number, 0 or more, got "x"/],
  [["--port", "65536"], /--port must be a whole number from 0 to 65535, got "65536"/],
  [["--metrics-port", "x"], /--metrics-port must be a whole number from 0 to 65535, got "x"/],
  [["--log-format", "xml"], /--log-format must be text or json, got "xml"/],
  [["--grace-period", "-1"], /^--grace-period must be a number of seconds, 0 or more, got "-1"$/],
  [["--drain-delay", "soon"], /^--drain-delay must be a number of seconds, 0 or more, got "soon"$/],
  [
    ["--digests", "sha256,md5"],
    /--digests: unknown digest "md5"; choose from sha1,sha256,sha384,sha512/,
  ],
  [["--digests", ","], /--digests needs at least one digest/],
  [
    ["--digest", "sha256"],
    /serve --digest takes only sha1-prefix .* choose v2 digests with --digests/,
  ],
  [["--digest", "sha1-prefix", "--integrity"], /--digest sha1-prefix accepts v1 answers, which/],
  [["--proxy-protocol"], /--proxy-protocol and --trusted-proxies go together/],
  [["--integrity", "--encrypt"], /^--integrity and --encrypt are either\/or: choose one/],
  [["--require-v2", "--encrypt", "--integrity"], /--integrity and --encrypt are either\/or/],
  [
    ["--forward", "redis"],
    /--forward takes HOST:PORT, a PORT on 127\.0\.0\.1, or unix:\/path, got "redis"/,
  ],
  [["--forward", "0"], /--forward's port must be a whole number from 1 to 65535, got "0"/],
  [["--forward", "unix:"], /--forward takes .*the path is missing/],
  [["--target-timeout", "2"], /^--target-timeout goes with --forward/],
  [
    ["--forward", "6379", "--target-timeout", "-1"],
    /^--target-timeout must be a positive number, got "-1"$/,
  ],
  [
    ["--forward", "unix:/" + "x".repeat(200)],
    /^--forward must be a Unix socket's path of 1 to 107 bytes/,
  ],
  [["--forward", "6379", "--digest", "sha1-prefix"], /--digest sha1-prefix accepts v1 answers/],
  [
    ["--proxy-protocol", "--trusted-proxies", "10.0.0.0/33"],
    /--trusted-proxies: "10\.0\.0\.0\/33" is not an IP address or a CIDR block/,
  ],
];

for (const [args, message] of serveErrors) {
  Deno.test(`parseServeArgs(${JSON.stringify(args)}) is a usage error`, () => {
    assert.throws(() => parseServeArgs(args), (error: unknown) => {
      assert.ok(error instanceof UsageError, String(error));
      assert.match(error.message, message);
      return true;
    });
  });
}

Deno.test("parseServeArgs() turns flags into the server's plain-data settings", () => {
  const command = parseServeArgs([
    "--port=0",
    "--handshake-timeout",
    "2.5",
    "--max-connections",
    "50",
    "--throttle-after",
    "0",
    "--integrity",
    "--digests",
    "SHA256, sha512",
    "--proxy-protocol",
    "--trusted-proxies",
    "127.0.0.1,10.0.0.0/8",
    "--log-format",
    "json",
    "--quiet",
    "--secret-file",
    "/some/file",
    "--metrics-port",
    "9464",
    "--drain-delay",
    "2",
    "--grace-period",
    "0.5",
  ]);
  assert.equal(command.kind, "serve");
  if (command.kind !== "serve") return;
  const { settings } = command;
  assert.equal(settings.port, 0);
  assert.equal(settings.handshakeTimeoutMs, 2500);
  assert.equal(settings.maxConnections, 50);
  assert.deepEqual(settings.throttle, {
    maxFailures: 0,
    windowMs: undefined,
    cooldownMs: undefined,
  });
  assert.equal(settings.require, "integrity");
  assert.deepEqual(settings.digests, ["sha256", "sha512"]);
  assert.deepEqual(settings.trustedProxies, ["127.0.0.1", "10.0.0.0/8"]);
  assert.deepEqual(settings.log, { format: "json", quiet: true });
  assert.equal(command.secretFile, "/some/file");
  assert.deepEqual(command.metrics, { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(command.shutdown, { drainDelayMs: 2000, gracePeriodMs: 500 });
  // Plain data: it survives structured cloning (postMessage to a worker) unchanged.
  assert.deepEqual(structuredClone(settings), settings);
});

Deno.test("parseServeArgs(): --integrity or --encrypt imply --require-v2", () => {
  const requirement = (args: string[]) => {
    const command = parseServeArgs(args);
    return command.kind === "serve" ? command.settings.require : undefined;
  };
  assert.equal(requirement([]), undefined);
  assert.equal(requirement(["--require-v2"]), "v2");
  assert.equal(requirement(["--require-v2", "--integrity"]), "integrity");
  assert.equal(requirement(["--require-v2", "--encrypt"]), "encrypt");
});

Deno.test("parseServeArgs(): --forward names a target and raises what the server requires", () => {
  const settings = (args: string[]) => {
    const command = parseServeArgs(args);
    assert.ok(command.kind === "serve");
    return command.settings;
  };
  assert.deepEqual(settings(["--forward", "6379"]).forward, { hostname: "127.0.0.1", port: 6379 });
  assert.deepEqual(settings(["--forward", "db.internal:5432"]).forward, {
    hostname: "db.internal",
    port: 5432,
  });
  assert.deepEqual(settings(["--forward", "[::1]:6379"]).forward, { hostname: "::1", port: 6379 });
  assert.deepEqual(settings(["--forward", "unix:/run/redis/redis.sock"]).forward, {
    path: "/run/redis/redis.sock",
  });
  const forwarding = settings(["--forward", "6379", "--target-timeout", "2.5", "--no-keepalive"]);
  assert.equal(forwarding.targetTimeoutMs, 2500);
  assert.equal(forwarding.keepAlive, false);
  const resolved = resolveSettings(forwarding);
  assert.equal(resolved.require, "encrypt");
  assert.equal(resolved.requireForwardSecrecy, true);
  assert.equal(resolveSettings(settings([])).keepAlive, true);
  assert.deepEqual(structuredClone(forwarding), forwarding, "plain data, for the workers");
});

Deno.test("parseConnectArgs(): --listen is a tunnel command, encrypted and forward-secret", () => {
  assert.deepEqual(
    parseConnectArgs(["--listen", "6380", "--host", "10.0.0.5", "--port", "4444", "--retry", "2"]),
    {
      kind: "tunnel",
      options: {
        listen: { hostname: "127.0.0.1", port: 6380 },
        hostname: "10.0.0.5",
        port: 4444,
        retries: 2,
        digest: "sha256",
        maxConnections: 1000,
        keepAlive: true,
      },
      secretFile: undefined,
      warnings: [],
      allowWeakSecret: false,
      log: { format: "text", quiet: false },
    },
  );
  const unix = parseConnectArgs([
    "--listen",
    "unix:/run/app/redis.sock",
    "--encrypt",
    "--digest",
    "sha512",
    "--no-keepalive",
    "--log-format",
    "json",
    "--quiet",
    "--max-connections",
    "50",
  ]);
  assert.ok(unix.kind === "tunnel");
  assert.deepEqual(unix.options.listen, { path: "/run/app/redis.sock" });
  assert.equal(unix.options.digest, "sha512");
  assert.equal(unix.options.keepAlive, false);
  assert.equal(unix.options.maxConnections, 50);
  assert.deepEqual(unix.log, { format: "json", quiet: true });
  const anyPort = parseConnectArgs(["--listen", "0"]);
  assert.ok(anyPort.kind === "tunnel");
  assert.deepEqual(anyPort.options.listen, { hostname: "127.0.0.1", port: 0 });
});

Deno.test("parseServeArgs(): --workers 0 means one per core", () => {
  const command = parseServeArgs(["--workers", "0"]);
  assert.ok(command.kind === "serve");
  assert.equal(command.settings.workers, navigator.hardwareConcurrency);
});

Deno.test("parseConnectArgs() turns flags into connect() options", () => {
  assert.deepEqual(parseConnectArgs(["--port", "5000", "--encrypt", "--digest", "sha512"]), {
    kind: "connect",
    options: {
      hostname: "127.0.0.1",
      port: 5000,
      retries: 0,
      protocol: 2,
      digest: "sha512",
      mode: "encrypt",
      forwardSecrecy: true,
    },
    secretFile: undefined,
    message: undefined,
    warnings: [],
    allowWeakSecret: false,
  });
  const v1 = parseConnectArgs(["--protocol", "1", "--digest", "sha1-prefix", "--retry", "3"]);
  assert.ok(v1.kind === "connect");
  assert.equal(v1.options.protocol, 1);
  assert.equal(v1.options.digest, "sha1-prefix");
  assert.equal(v1.options.retries, 3);
  assert.match(v1.warnings[0], /sha1-prefix sends the tutorial's sha1\(secret \+ challenge\)/);
  assert.deepEqual(parseConnectArgs(["-h"]), { kind: "help" });
  const negative = parseConnectArgs(["--message", "-1"]);
  assert.ok(negative.kind === "connect");
  assert.equal(negative.message, "-1", "a negative number is a value for any flag that takes one");
});

Deno.test("--help and --version work after either command, whatever the other flags say", () => {
  for (const parse of [parseServeArgs, parseConnectArgs]) {
    assert.deepEqual(parse(["--version"]), { kind: "version" }, parse.name);
    assert.deepEqual(parse(["-V"]), { kind: "version" }, parse.name);
    // Flags that would be refused do not hide the answer.
    assert.deepEqual(parse(["--port", "99999", "--version"]), { kind: "version" }, parse.name);
    assert.deepEqual(parse(["--version", "--help"]), { kind: "help" }, parse.name);
  }
});

/** The flags a help text names, as `--name`. */
function flagsIn(help: string): Set<string> {
  return new Set(help.match(/--[a-z0-9][a-z0-9-]*/g));
}

/** The "(default …)" of `flag`'s entry in a help text: its lines up to the next entry. */
function defaultIn(help: string, flag: string): string | undefined {
  const entry = help.split(/\n(?= {2}--|\n)/).find((text) => text.startsWith(`  ${flag} `));
  assert.ok(entry, `${flag} has an entry`);
  return entry.replace(/\s+/g, " ").match(/\(default ([^)]*)\)/)?.[1];
}

Deno.test("each command's help names every flag it takes, and no other", () => {
  for (
    const [help, options] of [[SERVE_USAGE, SERVE_OPTIONS], [
      CONNECT_USAGE,
      CONNECT_OPTIONS,
    ]] as const
  ) {
    const taken = Object.keys(options).map((name) => `--${name}`);
    assert.deepEqual([...flagsIn(help)].sort(), taken.sort());
  }
  // The overview names the commands and where their options are, and no option of either.
  assert.deepEqual(flagsIn(USAGE), new Set(["--help", "--version"]));
  assert.match(USAGE, /^ {2}hmac-echo serve .*\n {2}hmac-echo connect /m);
  assert.match(USAGE, /"hmac-echo serve --help" or "hmac-echo connect --help"/);
});

Deno.test("serve's help shows the defaults the server runs with", () => {
  const command = parseServeArgs([]);
  assert.ok(command.kind === "serve");
  const settings = resolveSettings(command.settings);
  const expected: Record<string, string> = {
    "--host": settings.hostname,
    "--port": String(settings.port),
    "--backlog": String(settings.backlog),
    "--workers": String(settings.workers),
    "--handshake-timeout": `${settings.handshakeTimeoutMs / 1000} s`,
    "--idle-timeout": `${settings.idleTimeoutMs / 1000} s`,
    "--max-connections": String(settings.maxConnections),
    "--max-connections-per-address": String(settings.maxConnectionsPerAddress),
    "--throttle-after": String(settings.throttle.maxFailures),
    "--throttle-window": `${settings.throttle.windowMs / 1000} s`,
    "--throttle-cooldown": `${settings.throttle.cooldownMs / 1000} s`,
    "--digests": settings.digests.join(","),
    "--log-format": resolveSettings({ log: {} }).log!.format,
  };
  for (const [flag, value] of Object.entries(expected)) {
    assert.equal(defaultIn(SERVE_USAGE, flag), value, flag);
  }
  assert.equal(defaultIn(SERVE_USAGE, "--integrity"), undefined);
});

Deno.test("connect's help shows the defaults connect() is given", () => {
  const command = parseConnectArgs([]);
  assert.ok(command.kind === "connect");
  const { options } = command;
  assert.equal(defaultIn(CONNECT_USAGE, "--host"), options.hostname);
  assert.equal(defaultIn(CONNECT_USAGE, "--port"), String(options.port));
  assert.equal(defaultIn(CONNECT_USAGE, "--retry"), String(options.retries));
  assert.equal(defaultIn(CONNECT_USAGE, "--protocol"), String(options.protocol));
  assert.match(CONNECT_USAGE, new RegExp(`v2: .*\\(default ${options.digest}\\)`));
});

Deno.test("parseServeArgs() without shutdown flags: no drain delay, the server's grace period", () => {
  const command = parseServeArgs([]);
  assert.ok(command.kind === "serve");
  assert.deepEqual(command.shutdown, {
    drainDelayMs: DEFAULT_DRAIN_DELAY_MS,
    gracePeriodMs: DEFAULT_GRACE_PERIOD_MS,
  });
  assert.equal(DEFAULT_DRAIN_DELAY_MS, 0);
});
