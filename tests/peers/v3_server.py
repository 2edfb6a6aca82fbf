"""An hmac-echo server for hello version 03 (forward secrecy), written from docs/PROTOCOL.md alone:
it checks the hello in §9's order, answers 00 || Ps || server_proof (§10, §12) and echoes the
service upper-cased in frames (§11) under keys from the X25519 exchange. Like a default server
(§12) it also serves hello version 02 (plain, integrity, encrypt; §11's keys) and v1 answers
(§2).

Usage: v3_server.py [--impostor | --substitute-ps | --low-order-ps]
                    [--require-forward-secrecy] [--require integrity|encrypt]
       (the secret comes from the environment variable HMAC_ECHO_SECRET, taken as raw bytes)
Listens on 127.0.0.1 on a free port, prints "PORT <n>" as its first line of stdout, serves one
connection, and exits.

  --require-forward-secrecy  refuses version 02 hellos (07, forward-secrecy-required) and v1
                             answers (v1-refused: closes without a byte)
  --require MODE             refuses weaker modes (03, mode-refused), and v1 answers as above
  --impostor                 plays a server that does not know the client's secret: it does not
                             check the client's proof and "proves" itself with HMAC_ECHO_SECRET
                             (run it with another secret than the client's), as v2_server.py does
  --substitute-ps            knows the secret, but sends another Ps than the one its proof covers
                             (a man in the middle replacing the share, §12); version 03 only
  --low-order-ps             knows the secret and proves a low-order point as Ps, whose X25519
                             result is all zeros (§12: the client must refuse it); version 03 only

Exit status:
  0  the client authenticated and the session ended as §4/§11 say (the client's end frame, or its
     half-close in plain mode and v1); with --impostor, --substitute-ps or --low-order-ps: the
     client sent no service byte after the answer and hung up
  3  rejected: "rejected: REASON" on stderr, REASON from §9's table (a status byte was sent, if
     that row has one) or §3's (v1: incomplete-answer, malformed-answer, wrong-digest,
     v1-refused), or incomplete-hello
  4  a client frame failed a check: "frame: REASON" on stderr, REASON from §11's table; the
     connection is closed at once and nothing of that frame is echoed
  5  with --impostor, --substitute-ps or --low-order-ps: the client, fooled, sent a byte

Status bytes it sends (§9): 01 wrong-proof, 02 unsupported-digest (not {sha1}, {sha256},
{sha384} or {sha512}), 03 mode-refused, 04 malformed-hello (no "}" in the first 16 bytes, a mode
above 02, or mode 00 with version 03), 05 unsupported-version (a version other than 02 and 03),
06 reflected-challenge, 07 forward-secrecy-required, 08 bad-key-share (Pc gives an all-zero X25519
result). After a status byte it half-closes and reads what is left of the hello (briefly) before
closing, so that unread bytes do not turn its close into a reset that could lose the status byte.

Needs the `cryptography` package (Debian: python3-cryptography; versions 38 and 48 both work)
for X25519 and AES-GCM.
"""

import argparse
import codecs
import hashlib
import hmac
import os
import socket
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from v3_frames import (DIGESTS, LOW_ORDER_POINT, MAX_FRAMES, MAX_PAYLOAD, MODE_LABELS, FrameError,
                       hkdf_sha256,
                       open_frame, read_up_to, seal)



class BadKeyShare(Exception):
    pass


class Rejected(Exception):
    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.reason, self.status = reason, status


def raw(public):
    """RFC 7748 §5: the 32-byte little-endian u coordinate."""
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def parse_head(head):
    """(tag length t, Cc, Pc or b"") of a hello's head (§9)."""
    t = head.index(b"}") + 1
    return t, head[t + 2:t + 34], head[t + 34:t + 66]


def accept_v3(secret, cs, head, digest, private=None):
    """§12: (outcome 00 || Ps || server_proof, {mode: (client->server, server->client) key})."""
    key = X25519PrivateKey.generate() if private is None \
        else X25519PrivateKey.from_private_bytes(private)
    _, cc, pc = parse_head(head)
    try:
        z = key.exchange(X25519PublicKey.from_public_bytes(pc))
    except ValueError:  # the library refuses an all-zero result
        raise BadKeyShare() from None
    if z == bytes(32):
        raise BadKeyShare()
    ps = raw(key.public_key())
    del key  # thrown away once the keys are derived (below; nothing else holds it)
    proof = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head + ps, digest).digest()
    keys = {mode: tuple(hkdf_sha256(z + secret, cs + cc,
                                    f"hmac-echo v3 {label} {direction}".encode("ascii") + head + ps)
                        for direction in ("client->server", "server->client"))
            for mode, label in MODE_LABELS.items()}
    return b"\x00" + ps + proof, keys


def keys_v2(secret, cs, cc, mode):
    """§11: version 02's keys, from the secret alone."""
    label = MODE_LABELS[mode]
    return tuple(hkdf_sha256(secret, cs + cc, f"hmac-echo v2 {label} {direction}".encode("ascii"))
                 for direction in ("client->server", "server->client"))


def read_hello(conn, cs, secret, options):
    """§8, §9: the hello's fields, or Rejected. Returns (version, mode, digest, head, proof)."""
    first = read_up_to(conn, 40)
    if not first.startswith(b"{"):
        return first  # a v1 answer (§2): its first byte decides (§8)
    if len(first) < 40:
        raise Rejected("incomplete-hello")
    close = first.find(b"}", 1, 16)
    if close < 0:
        raise Rejected("malformed-hello", 0x04)
    digest = first[1:close].decode("ascii", "replace")
    if digest not in DIGESTS:
        raise Rejected("unsupported-digest", 0x02)
    t = close + 1
    version, mode = first[t], first[t + 1]
    if version not in (0x02, 0x03):
        raise Rejected("unsupported-version", 0x05)
    if mode > 0x02 or (mode == 0x00 and version == 0x03):
        raise Rejected("malformed-hello", 0x04)
    if mode < {None: 0, "integrity": 1, "encrypt": 2}[options.require]:
        raise Rejected("mode-refused", 0x03)
    if options.require_forward_secrecy and version == 0x02:
        raise Rejected("forward-secrecy-required", 0x07)
    length = t + 34 + (32 if version == 0x03 else 0) + hashlib.new(digest).digest_size
    hello = first + read_up_to(conn, length - 40)  # exactly the rest, never more
    if len(hello) < length:
        raise Rejected("incomplete-hello")
    head_length = t + 34 + (32 if version == 0x03 else 0)
    head, proof = hello[:head_length], hello[head_length:]
    if head[t + 2:t + 34] == cs:
        raise Rejected("reflected-challenge", 0x06)
    expected = hmac.new(secret, b"hmac-echo v2 client->server" + cs + head, digest).digest()
    if not options.impostor and not hmac.compare_digest(proof, expected):
        raise Rejected("wrong-proof", 0x01)
    return version, mode, digest, head


def serve_v1(conn, cs, secret, options, answer):
    """§2, §3: the (up to) 40 bytes of a v1 answer, already known not to begin with "{"."""
    if options.require or options.require_forward_secrecy:
        raise Rejected("v1-refused")
    if len(answer) < 40:
        raise Rejected("incomplete-answer")
    if any(byte not in b"0123456789abcdefABCDEF" for byte in answer):
        raise Rejected("malformed-answer")
    digest = bytes.fromhex(answer.decode("ascii"))
    if not hmac.compare_digest(digest, hmac.new(secret, cs, hashlib.sha1).digest()):
        raise Rejected("wrong-digest")
    serve_plain(conn)


def serve_plain(conn):
    """§4: upper-case the stream until the client half-closes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := conn.recv(65536):
        conn.sendall(decoder.decode(chunk).upper().encode("utf-8"))
    conn.sendall(decoder.decode(b"", final=True).upper().encode("utf-8"))


def serve_frames(conn, mode, receive_key, send_key):
    """§11: upper-case the payloads until the client's end frame; then the rest, our end frame."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tag_length = 32 if mode == 0x01 else 16
    expected = send_seq = 0
    while True:
        header = read_up_to(conn, 12)
        if not header:
            raise FrameError("truncated-stream")
        if len(header) < 12:
            raise FrameError("truncated-frame")
        length, seq = struct.unpack(">IQ", header)
        if length > MAX_PAYLOAD:
            raise FrameError("oversized-frame")
        rest = read_up_to(conn, length + tag_length)
        if len(rest) < length + tag_length:
            raise FrameError("truncated-frame")
        payload = open_frame(mode, receive_key, header, rest)
        if seq >= MAX_FRAMES:
            raise FrameError("sequence-exhausted")
        if seq < expected:
            raise FrameError("replayed-frame")
        if seq > expected:
            raise FrameError("out-of-order-frame")
        expected += 1
        text = decoder.decode(payload, final=length == 0).upper().encode("utf-8")
        for offset in range(0, len(text), MAX_PAYLOAD):
            conn.sendall(seal(mode, send_key, send_seq, text[offset:offset + MAX_PAYLOAD]))
            send_seq += 1
        if length == 0:  # the end frame: we stop reading here
            conn.sendall(seal(mode, send_key, send_seq, b""))
            return


def wait_for_silence(conn):
    """For the impostor-like modes: 5 if the client sends a byte, 0 if it hangs up."""
    try:
        sys.exit(5 if conn.recv(65536) else 0)
    except ConnectionResetError:
        sys.exit(0)


def reject(conn, error):
    print(f"rejected: {error.reason}", file=sys.stderr, flush=True)
    if error.status is not None:
        try:
            conn.sendall(bytes([error.status]))
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            for _ in range(4):  # at most the rest of a hello; see the docstring
                if not conn.recv(1024):
                    break
        except OSError:
            pass
    sys.exit(3)


def main():
    parser = argparse.ArgumentParser(description="hmac-echo v3 test server (one connection)")
    attack = parser.add_mutually_exclusive_group()
    attack.add_argument("--impostor", action="store_true")
    attack.add_argument("--substitute-ps", action="store_true")
    attack.add_argument("--low-order-ps", action="store_true")
    parser.add_argument("--require-forward-secrecy", action="store_true")
    parser.add_argument("--require", choices=("integrity", "encrypt"))
    options = parser.parse_args()
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"PORT {listener.getsockname()[1]}", flush=True)
        conn, _ = listener.accept()
        with conn:
            cs = os.urandom(32)                                                   # §1
            conn.sendall(cs)
            try:
                hello = read_hello(conn, cs, secret, options)
                if isinstance(hello, bytes):
                    serve_v1(conn, cs, secret, options, hello)
                    return
                version, mode, digest, head = hello
                if version == 0x03:
                    try:
                        answer, keys = accept_v3(secret, cs, head, digest)
                    except BadKeyShare:
                        raise Rejected("bad-key-share", 0x08) from None
                else:
                    proof = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head,
                                     digest).digest()
                    answer = b"\x00" + proof
                    keys = {m: keys_v2(secret, cs, parse_head(head)[1], m) for m in MODE_LABELS}
            except Rejected as error:
                reject(conn, error)
            if version == 0x03 and options.substitute_ps:
                answer = answer[:1] + raw(X25519PrivateKey.generate().public_key()) + answer[33:]
            if version == 0x03 and options.low_order_ps:
                proof = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head
                                 + LOW_ORDER_POINT, digest).digest()
                answer = b"\x00" + LOW_ORDER_POINT + proof
            conn.sendall(answer)                                                  # §10, §12
            if options.impostor or (version == 0x03 and (options.substitute_ps
                                                         or options.low_order_ps)):
                wait_for_silence(conn)
            print(f"authenticated: version {version:02x}, {digest}, mode {mode:02x}",
                  file=sys.stderr, flush=True)
            if mode == 0x00:
                serve_plain(conn)                                                 # §4
                return
            receive_key, send_key = keys[mode]
            try:
                serve_frames(conn, mode, receive_key, send_key)                  # §11
            except FrameError as error:
                print(f"frame: {error}", file=sys.stderr, flush=True)
                sys.exit(4)


if __name__ == "__main__":
    main()
