"""Test vectors for hello version 03 (docs/PROTOCOL.md §13), computed from the document's
definitions (§9 hello and proofs, §10 outcome, §11 frames, §12 key exchange and frame keys) alone.

Usage: fs_vectors.py            prints §13's vectors as Markdown
       fs_vectors.py --write    puts them into docs/PROTOCOL.md in place of the line
                                VECTORS_PLACEHOLDER (refuses if that line is not there)
       fs_vectors.py --check    self-check; exit status 0 when every check passes, 1 otherwise:
                                - the vectors recompute identically and appear verbatim in §13;
                                - known answers: RFC 7748 §6.1 (X25519), RFC 5869 case 1 (HKDF);
                                - v3_client.py's and v3_server.py's own functions, given the fixed
                                  inputs, produce the vectors' bytes (they share no code with this
                                  file: stdlib HKDF there, the cryptography package's here);
                                - v3_client.py against v3_server.py on 127.0.0.1 for the four
                                  digests and both framed modes, then rejections, the impostor,
                                  key-share attacks and frame tampering (exit statuses and stderr).

Needs Python 3 and the `cryptography` package (Debian: python3-cryptography; versions 38 and
48 both work) for X25519, HKDF and AES-GCM. This file uses the package's HKDF; the peers use their
own RFC 5869 code.
"""

import hashlib
import hmac
import importlib.util
import os
import re
import socket
import struct
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOL_MD = os.path.join(HERE, "..", "..", "docs", "PROTOCOL.md")
PLACEHOLDER = "VECTORS_PLACEHOLDER"

# The fixed inputs (a real implementation draws Cs, Cc and both private keys at random).
SECRET = b"hmac-echo test vector secret"
CS = bytes(range(0x00, 0x20))
CC = bytes(range(0x20, 0x40))
CLIENT_PRIVATE = bytes(range(0x40, 0x60))
SERVER_PRIVATE = bytes(range(0x60, 0x80))
VECTORS = [("A", "sha256", 0x03, 0x02), ("B", "sha512", 0x03, 0x01)]
MODE_NAMES = {0x01: "integrity", 0x02: "encrypt"}
WRAP = 64  # hex characters per line


def hkdf_sha256(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def x25519(private, public):
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public))


def public_key(private):
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def seal(mode, key, seq, payload):
    """One frame (§11): n (4) || seq (8) || body || tag."""
    header = struct.pack(">IQ", len(payload), seq)
    if mode == 0x01:  # integrity: HMAC-SHA-256(key, n || seq || payload), 32 bytes
        return header + payload + hmac.new(key, header + payload, hashlib.sha256).digest()
    nonce = bytes(4) + struct.pack(">Q", seq)  # encrypt: AES-256-GCM, AAD = the header
    return header + AESGCM(key).encrypt(nonce, payload, header)  # ciphertext || 16-byte tag


def compute(digest, version, mode):
    """Every value of one session, in the order §13 lists them."""
    pc, ps = public_key(CLIENT_PRIVATE), public_key(SERVER_PRIVATE)
    head = b"{" + digest.encode("ascii") + b"}" + bytes([version, mode]) + CC + pc  # §9, §12
    client_proof = hmac.new(SECRET, b"hmac-echo v2 client->server" + CS + head, digest).digest()
    hello = head + client_proof
    z = x25519(CLIENT_PRIVATE, ps)                                                 # §12
    assert z == x25519(SERVER_PRIVATE, pc), "X25519 is not symmetric?"
    server_proof = hmac.new(SECRET, b"hmac-echo v2 server->client" + CS + head + ps,
                            digest).digest()
    outcome = b"\x00" + ps + server_proof                                          # §10, §12
    name = MODE_NAMES[mode]
    keys = [hkdf_sha256(z + SECRET, CS + CC,
                        f"hmac-echo v3 {name} {direction}".encode("ascii") + head + ps)
            for direction in ("client->server", "server->client")]
    return [
        ("Pc", pc),
        ("Ps", ps),
        ("head", head),
        ("client_proof", client_proof),
        ("hello", hello),
        ("Z", z),
        ("server_proof", server_proof),
        ("outcome", outcome),
        ("key c->s", keys[0]),
        ("key s->c", keys[1]),
        ("c->s frame 0", seal(mode, keys[0], 0, b"hello")),
        ("s->c frame 0", seal(mode, keys[1], 0, b"HELLO")),
        ("c->s end frame 1", seal(mode, keys[0], 1, b"")),
    ]


def block(rows):
    width = max(len(name) for name, _ in rows)
    lines = ["```"]
    for name, value in rows:
        text = value.hex() if isinstance(value, bytes) else value
        chunks = [text[i:i + WRAP] for i in range(0, len(text), WRAP)] or [""]
        lines.append(f"{name.ljust(width)} = {chunks[0]}")
        lines.extend(" " * (width + 3) + chunk for chunk in chunks[1:])
    lines.append("```")
    return lines


def wrap(paragraph, width=100):
    """Greedy filling at `width` columns, code spans kept whole: the way `deno fmt` wraps prose."""
    words, lines, line = re.findall(r"`[^`]*`\S*|\S+", paragraph), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def render():
    out = wrap("Inputs, the same for both vectors: the secret is the 28 ASCII bytes"
               " `hmac-echo test vector secret`; Cs, Cc and the two private keys are counting"
               " bytes.") + [""]
    out += block([
        ("secret", SECRET),
        ("Cs", CS),
        ("Cc", CC),
        ("client private", CLIENT_PRIVATE),
        ("server private", SERVER_PRIVATE),
    ])
    out += [""] + wrap(
        "In each vector, `hello` is `head || client_proof`, `outcome` is the server's whole"
        " answer `00 || Ps || server_proof`, `c->s frame 0` carries the 5 ASCII bytes `hello`,"
        " `s->c frame 0` carries `HELLO` and `c->s end frame 1` is the client's end frame"
        " (n = 0, seq 1). Long values continue on the next lines; every value is one run of hex.")
    for letter, digest, version, mode in VECTORS:
        rows = compute(digest, version, mode)
        name = MODE_NAMES[mode]
        size = len(dict(rows)["hello"])
        frames = ("AES-256-GCM, 16-byte tags" if mode == 0x02 else "HMAC-SHA-256, 32-byte tags")
        out += ["", f"### Vector {letter}: {digest}, version `{version:02x}`, mode `{mode:02x}`"
                f" ({name})", ""]
        out += wrap(f"A {size}-byte hello; frame keys from the labels"
                    f" `hmac-echo v3 {name} client->server` and"
                    f" `hmac-echo v3 {name} server->client`; frames in {frames}.") + [""]
        out += block(rows)
    return "\n".join(out) + "\n"


def write():
    with open(PROTOCOL_MD, encoding="utf-8") as file:
        text = file.read()
    if text.count(PLACEHOLDER + "\n") != 1:
        sys.exit(f"{PROTOCOL_MD}: no single line {PLACEHOLDER} to replace")
    with open(PROTOCOL_MD, "w", encoding="utf-8") as file:
        file.write(text.replace(PLACEHOLDER + "\n", render()))


# ------------------------------------------------------------------------------------------------
# --check

def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Checker:
    def __init__(self):
        self.failures = 0

    def __call__(self, condition, what):
        print(("ok    " if condition else "FAIL  ") + what, flush=True)
        if not condition:
            self.failures += 1


def x25519_rfc7748(k, u):
    """RFC 7748 §5, written out: decodeScalar25519, decodeUCoordinate, the ladder, encoding."""
    p, a24 = 2 ** 255 - 19, 121665
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k = int.from_bytes(k, "little")
    if isinstance(u, bytes):
        u = int.from_bytes(u[:31] + bytes([u[31] & 127]), "little")
    x1, x2, z2, x3, z3, swap = u, 1, 0, u, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % p, (x2 - z2) % p
        aa, bb = a * a % p, b * b % p
        e = (aa - bb) % p
        c, d = (x3 + z3) % p, (x3 - z3) % p
        da, cb = d * a % p, c * b % p
        x3, z3 = (da + cb) ** 2 % p, x1 * (da - cb) ** 2 % p
        x2, z2 = aa * bb % p, e * (aa + a24 * e) % p
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, p - 2, p) % p).to_bytes(32, "little")


def check_vectors(check):
    first, second = render(), render()
    check(first == second, "the vectors recompute identically")
    with open(PROTOCOL_MD, encoding="utf-8") as file:
        document = file.read()
    section = document[document.find("## 13. Test vectors"):]
    check(first in section, "the vectors in docs/PROTOCOL.md §13 are the recomputed ones")
    check(all(len(line) <= 100 for line in first.splitlines()), "no Markdown line over 100 chars")

    # Known answers for the primitives, so that the vectors rest on more than this file.
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    check(x25519(alice, public_key(bob)).hex()
          == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
          "X25519 matches RFC 7748 §6.1")
    for private, public in ((CLIENT_PRIVATE, SERVER_PRIVATE), (SERVER_PRIVATE, CLIENT_PRIVATE)):
        share = public_key(public)
        check(x25519_rfc7748(private, 9) == public_key(private)
              and x25519_rfc7748(private, share) == x25519(private, share),
              f"RFC 7748 §5 in pure Python gives the same key share and Z for private key"
              f" {private[:1].hex()}..")
    rfc5869 = HKDF(algorithm=hashes.SHA256(), length=42,
                   salt=bytes.fromhex("000102030405060708090a0b0c"),
                   info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")).derive(b"\x0b" * 22)
    check(rfc5869.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                           "34007208d5b887185865", "HKDF-SHA-256 matches RFC 5869 test case 1")

    # The peers' own code, fed the fixed inputs, must produce the same bytes.
    client, server = load("v3_client"), load("v3_server")
    for letter, digest, version, mode in VECTORS:
        expected = dict(compute(digest, version, mode))
        head, hello, private = client.make_hello(SECRET, CS, digest, mode, CC, CLIENT_PRIVATE)
        check(hello == expected["hello"], f"vector {letter}: v3_client.py builds the same hello")
        answer, server_keys = server.accept_v3(SECRET, CS, head, digest, SERVER_PRIVATE)
        check(answer == expected["outcome"], f"vector {letter}: v3_server.py answers the outcome")
        client_keys = client.finish(SECRET, CS, CC, head, digest, mode, private,
                                    answer[1:33], answer[33:])
        keys = (expected["key c->s"], expected["key s->c"])
        check(client_keys == keys, f"vector {letter}: v3_client.py derives the same keys")
        check(server_keys[mode] == keys, f"vector {letter}: v3_server.py derives the same keys")
        check(client.seal(mode, keys[0], 0, b"hello") == expected["c->s frame 0"]
              and client.seal(mode, keys[0], 1, b"") == expected["c->s end frame 1"]
              and server.seal(mode, keys[1], 0, b"HELLO") == expected["s->c frame 0"],
              f"vector {letter}: both peers seal the same frames")
        check(server.open_frame(mode, keys[0], expected["c->s frame 0"][:12],
                                expected["c->s frame 0"][12:]) == b"hello"
              and client.open_frame(mode, keys[1], expected["s->c frame 0"][:12],
                                    expected["s->c frame 0"][12:]) == b"HELLO",
              f"vector {letter}: both peers open the other's frame")


class Server:
    """A server peer in a subprocess: its port, then (after the client) its exit status, stderr."""

    def __init__(self, args=(), secret=SECRET, script="v3_server.py"):
        env = dict(os.environ, HMAC_ECHO_SECRET=secret.decode("latin-1"))
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, script),
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env)
        line = self.process.stdout.readline().decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def finish(self):
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err.decode()


def run_client(port, message, digest="sha256", mode="integrity", secret=SECRET, flags=(),
               script="v3_client.py"):
    env = dict(os.environ, HMAC_ECHO_SECRET=secret.decode("latin-1"))
    done = subprocess.run([sys.executable, os.path.join(HERE, script), *flags, "127.0.0.1",
                           str(port), message, digest, mode], capture_output=True, env=env,
                          timeout=60)
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode()


def raw_hello(server, data):
    """Sends `data` as the hello (after reading Cs); returns (Cs, everything the server sent)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        cs = b""
        while len(cs) < 32:
            cs += sock.recv(32 - len(cs))
        sock.sendall(data(cs) if callable(data) else data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return cs, reply


def check_peers(check):
    message = "interop: grüße, ﬁne, 😀, plain ascii" + " ß" * 40_000  # several frames each way
    for digest in ("sha1", "sha256", "sha384", "sha512"):
        for mode in ("integrity", "encrypt"):
            server = Server()
            code, out, err = run_client(server.port, message, digest, mode)
            server_code, server_err = server.finish()
            check(code == 0 and out == message.upper() and server_code == 0,
                  f"v3_client.py -> v3_server.py, {digest}, {mode}: {len(message.encode())} bytes"
                  f" in, {len(out.encode())} out (client {code}, server {server_code})"
                  + (f" {err.strip()} {server_err.strip()}" if code or server_code else ""))
    server = Server()
    code, out, _ = run_client(server.port, "", "sha256", "encrypt")
    check(code == 0 and out == "" and server.finish()[0] == 0, "an empty message: end frames only")

    # Rejections heard by the client (§9's status bytes).
    cases = [
        ([], {"secret": b"not the secret"}, "wrong-proof"),
        ([], {"mode": "plain"}, "malformed-hello"),
        ([], {"flags": ["--bad-key-share"]}, "bad-key-share"),
        (["--require", "encrypt"], {"mode": "integrity"}, "mode-refused"),
    ]
    for server_args, client_args, reason in cases:
        server = Server(server_args)
        code, out, err = run_client(server.port, "x", **client_args)
        server_code, server_err = server.finish()
        check(code == 1 and err == f"rejected: {reason}\n" and out == "" and server_code == 3
              and server_err == f"rejected: {reason}\n",
              f"rejected: {reason} (client {code} {err.strip()!r}, server {server_code})")

    # Status bytes a v3 client cannot provoke, from raw hellos.
    def v3_hello(version, mode, proof_secret=SECRET, reflect=False):
        def build(cs):
            cc = cs if reflect else os.urandom(32)
            pc = public_key(os.urandom(32))
            head = b"{sha256}" + bytes([version, mode]) + cc + pc
            return head + hmac.new(proof_secret, b"hmac-echo v2 client->server" + cs + head,
                                   "sha256").digest()
        return build
    raws = [
        ("version 04", [], v3_hello(0x04, 0x01), b"\x05", "unsupported-version"),
        ("mode 03", [], v3_hello(0x03, 0x03), b"\x04", "malformed-hello"),
        ("no }", [], b"{" + b"a" * 39, b"\x04", "malformed-hello"),
        ("{md5}", [], b"{md5}" + bytes(35), b"\x02", "unsupported-digest"),
        ("{}", [], b"{}" + bytes(38), b"\x02", "unsupported-digest"),
        ("Cc = Cs", [], v3_hello(0x03, 0x01, reflect=True), b"\x06", "reflected-challenge"),
        ("a version 02 hello", ["--require-forward-secrecy"],
         lambda cs: b"{sha256}\x02\x01" + bytes(64), b"\x07", "forward-secrecy-required"),
        ("a truncated hello", [], b"{sha256}\x03\x01" + bytes(60), b"", "incomplete-hello"),
        ("a v1 answer", ["--require-forward-secrecy"], b"0" * 40, b"", "v1-refused"),
    ]
    for what, server_args, data, status, reason in raws:
        server = Server(server_args)
        if what == "a truncated hello":
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.recv(32)
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                reply = sock.recv(100)
        else:
            _, reply = raw_hello(server, data)
        server_code, server_err = server.finish()
        check(reply == status and server_code == 3 and server_err == f"rejected: {reason}\n",
              f"{what}: status {status.hex() or '(none)'}, {reason} (got {reply.hex() or 'none'},"
              f" {server_err.strip()!r})")

    # A version 02 client and a v1 client still get in (§12: a default server speaks both).
    server = Server()
    code, out, _ = run_client(server.port, "v2 ß", "sha384", "integrity", script="v2_client.py")
    check(code == 0 and out == "V2 SS" and server.finish()[0] == 0,
          "v2_client.py (version 02, integrity) against v3_server.py")
    server = Server()
    code, out, _ = run_client(server.port, "v2 plain", "sha1", "plain", script="v2_client.py")
    check(code == 0 and out == "V2 PLAIN" and server.finish()[0] == 0,
          "v2_client.py (version 02, plain) against v3_server.py")
    server = Server()
    env = dict(os.environ, HMAC_ECHO_SECRET=SECRET.decode())
    done = subprocess.run([sys.executable, os.path.join(HERE, "v1_client.py"), "127.0.0.1",
                           str(server.port), "v1"], capture_output=True, env=env, timeout=60)
    check(done.returncode == 0 and done.stdout == b"V1" and server.finish()[0] == 0,
          "v1_client.py against v3_server.py")

    # Older servers: a v2-only server refuses version 03 with 05, a v1 server closes (§8, §12);
    # the client reports either and does not retry with a weaker version.
    for script, expected in (("v2_server.py", "rejected: unsupported-version\n"),
                             ("v1_server.py", "no answer to the hello")):
        server = Server(script=script)
        code, out, err = run_client(server.port, "x")
        server_code, _ = server.finish()
        check(code == 1 and err.startswith(expected) and server_code == 3,
              f"v3_client.py against {script}: exit {code}, {err.strip()!r}, one attempt only")

    # The server cannot prove itself, or attacks the key exchange: the client sends nothing.
    attacks = [
        (["--impostor"], b"the impostor's own secret", 4, "impostor"),
        (["--substitute-ps"], SECRET, 4, "Ps replaced after the proof"),
        (["--low-order-ps"], SECRET, 6, "a low-order Ps under a valid proof"),
    ]
    for server_args, secret, expected, what in attacks:
        server = Server(server_args, secret)
        code, out, err = run_client(server.port, "for your eyes only")
        server_code, _ = server.finish()
        check(code == expected and out == "" and server_code == 0,
              f"{what}: client exits {code} ({err.strip()}), server got no service byte"
              f" (exit {server_code})")

    # Frames the server must refuse (§11), from a client built of v3_client.py's functions.
    client = load("v3_client")
    tampers = [
        ("tampered-frame", lambda seal, key: seal(key, 0, b"x")[:-1] + b"\x00"),
        ("replayed-frame", lambda seal, key: seal(key, 0, b"x") + seal(key, 0, b"x")),
        ("out-of-order-frame", lambda seal, key: seal(key, 1, b"x")),
        ("oversized-frame", lambda seal, key: struct.pack(">IQ", 65537, 0)),
        ("truncated-frame", lambda seal, key: seal(key, 0, b"xyz")[:20]),
        ("truncated-stream", lambda seal, key: seal(key, 0, b"xyz")),
    ]
    for mode_name, mode in (("integrity", 1), ("encrypt", 2)):
        for reason, frames in tampers:
            server = Server()
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                cs = client.read_up_to(sock, 32)
                cc = os.urandom(32)
                head, hello, private = client.make_hello(SECRET, cs, "sha256", mode, cc)
                sock.sendall(hello)
                answer = client.read_up_to(sock, 1 + 32 + 32)
                send_key, _ = client.finish(SECRET, cs, cc, head, "sha256", mode, private,
                                            answer[1:33], answer[33:])
                sock.sendall(frames(lambda *a: client.seal(mode, *a), send_key))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            server_code, server_err = server.finish()
            check(server_code == 4 and server_err.endswith(f"frame: {reason}\n"),
                  f"{mode_name}: the server refuses a frame: {reason} (exit {server_code})")


def main():
    if sys.argv[1:] == []:
        sys.stdout.write(render())
    elif sys.argv[1:] == ["--write"]:
        write()
    elif sys.argv[1:] == ["--check"]:
        check = Checker()
        check_vectors(check)
        check_peers(check)
        print("all checks passed" if not check.failures else f"{check.failures} checks FAILED")
        sys.exit(1 if check.failures else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
