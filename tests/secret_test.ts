/** Where the secret comes from: precedence, the default file, and every error a user can hit. */

import assert from "node:assert/strict";
import { defaultSecretPath, loadPreviousSecret, loadSecret, SecretError } from "../cli/secret.ts";
import { decoder, encoder } from "./_helpers.ts";

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "hmac-echo-secret-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadSecret() creates the default file once: 32 random bytes as hex, mode 0600", async () => {
  await withTempDir(async (dir) => {
    const getEnv = envOf({ XDG_CONFIG_HOME: dir });
    const first = await loadSecret({ createDefault: true, getEnv });
    assert.equal(first.created, true);
    assert.equal(first.source, `file ${dir}/hmac-echo/secret`);
    assert.match(decoder.decode(first.secret), /^[0-9a-f]{64}$/);
    assert.equal((await Deno.stat(`${dir}/hmac-echo/secret`)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/hmac-echo`)).mode! & 0o777, 0o700);
    assert.deepEqual(first.warnings, []);

    const second = await loadSecret({ createDefault: true, getEnv });
    assert.equal(second.created, false);
    assert.deepEqual(second.secret, first.secret);
  });
});

/** The message `promise` rejects with, which must be a {@linkcode SecretError}. */
async function secretErrorOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(() => undefined, (error: unknown) => error);
  assert.ok(error instanceof SecretError, `expected a SecretError, got ${error}`);
  return error.message;
}

Deno.test("loadSecret() for connect with no secret at all: serve makes one, or say where it is", async () => {
  await withTempDir(async (dir) => {
    const message = await secretErrorOf(
      loadSecret({ createDefault: false, getEnv: envOf({ XDG_CONFIG_HOME: dir }) }),
    );
    assert.equal(
      message,
      `No secret: no --secret-file, no HMAC_ECHO_SECRET, and the default file ` +
        `"${dir}/hmac-echo/secret" does not exist. "hmac-echo serve" creates it, with a random ` +
        `secret, the first time it runs on this machine; for a server elsewhere, set ` +
        `HMAC_ECHO_SECRET or pass --secret-file PATH with that server's secret`,
    );
  });
});

Deno.test("loadSecret() for connect with a missing --secret-file: check the path, make nothing", async () => {
  await withTempDir(async (dir) => {
    const message = await secretErrorOf(
      loadSecret({ secretFile: `${dir}/nope`, createDefault: false, getEnv: envOf({}) }),
    );
    assert.equal(
      message,
      `Cannot read the secret file "${dir}/nope": it does not exist. Check the path: the file ` +
        "must hold the secret the server and its clients share",
    );
  });
});

Deno.test("loadSecret() for serve with a missing --secret-file gives a command that makes it, folder too", async () => {
  await withTempDir(async (dir) => {
    // A folder that does not exist yet, and a name the shell must not read as syntax.
    const path = `${dir}/new folder/it's "$HOME"/secret`;
    const message = await secretErrorOf(
      loadSecret({ secretFile: path, createDefault: true, getEnv: envOf({}) }),
    );
    const [said, command] = message.split(". Create it, for example: ");
    assert.equal(said, `Cannot read the secret file "${path}": it does not exist`);
    assert.ok(!message.includes("hmac-echo serve"), message);
    assert.ok(command.includes("mkdir -p"), command);

    const { code, stderr } = await new Deno.Command("sh", {
      args: ["-c", command],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, decoder.decode(stderr));
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/new folder`)).mode! & 0o777, 0o700);
    const loaded = await loadSecret({ secretFile: path, createDefault: true, getEnv: envOf({}) });
    assert.match(decoder.decode(loaded.secret), /^[0-9a-f]{64}$/);
    assert.deepEqual(loaded.warnings, []);
  });
});

Deno.test("loadPreviousSecret() with a missing file says it must be the old secret", async () => {
  await withTempDir(async (dir) => {
    const message = await secretErrorOf(
      loadPreviousSecret({ secretFile: `${dir}/old`, getEnv: envOf({}) }),
    );
    assert.equal(
      message,
      `Cannot read the secret file "${dir}/old": it does not exist. --previous-secret-file must ` +
        "hold the secret clients used before the new one: check the path, or leave the flag out " +
        "when no rotation is under way",
    );
  });
});

Deno.test("loadSecret() precedence: --secret-file, then HMAC_ECHO_SECRET, then the default", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/explicit`;
    await Deno.writeTextFile(file, "from-file\n", { mode: 0o600 });
    const both = await loadSecret({
      secretFile: file,
      createDefault: true,
      getEnv: envOf({ HMAC_ECHO_SECRET: "from-env", XDG_CONFIG_HOME: dir }),
    });
    assert.equal(decoder.decode(both.secret), "from-file");
    assert.match(both.warnings[0], /Both --secret-file and HMAC_ECHO_SECRET are set/);

    const env = await loadSecret({
      createDefault: true,
      getEnv: envOf({ HMAC_ECHO_SECRET: "from-env ✓", XDG_CONFIG_HOME: dir }),
    });
    assert.deepEqual(env.secret, encoder.encode("from-env ✓"));
    assert.equal(env.source, "environment variable HMAC_ECHO_SECRET");
    // The environment variable wins over the default file, which is then not even created.
    await assert.rejects(Deno.stat(`${dir}/hmac-echo/secret`), Deno.errors.NotFound);
  });
});

Deno.test("loadSecret() strips exactly one trailing line ending from a secret file", async () => {
  await withTempDir(async (dir) => {
    const cases: [string, string][] = [
      ["abc\n", "abc"],
      ["abc\r\n", "abc"],
      ["abc\n\n", "abc\n"],
      ["abc", "abc"],
      [" abc \n", " abc "],
    ];
    for (const [content, secret] of cases) {
      await Deno.writeTextFile(`${dir}/s`, content, { mode: 0o600 });
      const loaded = await loadSecret({
        secretFile: `${dir}/s`,
        createDefault: false,
        getEnv: envOf({}),
      });
      assert.equal(decoder.decode(loaded.secret), secret, JSON.stringify(content));
    }
  });
});

Deno.test("loadSecret() refuses empty secrets with a clear message", async () => {
  await withTempDir(async (dir) => {
    for (const content of ["", "\n", "\r\n"]) {
      await Deno.writeTextFile(`${dir}/empty`, content);
      await assert.rejects(
        loadSecret({ secretFile: `${dir}/empty`, createDefault: false, getEnv: envOf({}) }),
        (error: unknown) => error instanceof SecretError && /is empty/.test(error.message),
      );
    }
    await assert.rejects(
      loadSecret({ createDefault: false, getEnv: envOf({ HMAC_ECHO_SECRET: "" }) }),
      (error: unknown) => error instanceof SecretError && /set but empty/.test(error.message),
    );
  });
});

Deno.test("loadSecret() names the file and the reason when it cannot read it", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      loadSecret({ secretFile: dir, createDefault: false, getEnv: envOf({}) }),
      (error: unknown) =>
        error instanceof SecretError &&
        error.message.startsWith(`Cannot read the secret file "${dir}"`),
    );
    await assert.rejects(
      loadSecret({ secretFile: `${dir}/missing`, createDefault: false, getEnv: envOf({}) }),
      (error: unknown) => error instanceof SecretError && /does not exist/.test(error.message),
    );
  });
});

Deno.test("loadSecret() warns when other users can read the secret file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/loose`, "secret\n");
    await Deno.chmod(`${dir}/loose`, 0o644);
    const loaded = await loadSecret({
      secretFile: `${dir}/loose`,
      createDefault: false,
      getEnv: envOf({}),
    });
    assert.match(loaded.warnings[0], /can be read by other users \(mode 644\); run: chmod 600/);
    assert.ok(!loaded.warnings[0].includes("secret\n"));
  });
});

Deno.test("defaultSecretPath() uses XDG_CONFIG_HOME, else HOME, and ignores a relative XDG", () => {
  assert.equal(
    defaultSecretPath(envOf({ XDG_CONFIG_HOME: "/x", HOME: "/h" })),
    "/x/hmac-echo/secret",
  );
  assert.equal(defaultSecretPath(envOf({ HOME: "/h" })), "/h/.config/hmac-echo/secret");
  assert.equal(
    defaultSecretPath(envOf({ XDG_CONFIG_HOME: "rel", HOME: "/h" })),
    "/h/.config/hmac-echo/secret",
  );
  assert.throws(() => defaultSecretPath(envOf({})), SecretError);
});
