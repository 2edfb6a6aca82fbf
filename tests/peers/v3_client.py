"""An hmac-echo client for hello version 03 (forward secrecy), written from docs/PROTOCOL.md
§8-§12 alone: a fresh X25519 key share in the hello, the server's proof over its own share Ps,
frame keys from HKDF-SHA-256 over Z || secret, and frames in integrity or encrypt mode.

Usage: v3_client.py [--bad-key-share] HOST PORT MESSAGE [DIGEST [MODE]]
       (the secret comes from the environment variable HMAC_ECHO_SECRET, taken as raw bytes)
DIGEST is sha1, sha256 (default), sha384 or sha512. MODE is integrity (default) or encrypt; plain
sends mode 00 with version 03, which a server must refuse (§9: 04, malformed-hello).
--bad-key-share sends a low-order point as Pc (with a valid proof), which a server must refuse
(§12: 08, bad-key-share).

It sends MESSAGE (UTF-8) in frames of at most 65 536 bytes, then its end frame, while it reads the
reply frames until the server's end frame; it prints the reply to stdout. It does not half-close
(§11: the client keeps TCP open for the replies); it closes once the server's end frame is in.

Exit status:
  0  success: the reply is on stdout
  1  rejected: "rejected: REASON" on stderr (REASON from §9's table, or "status N" for a status
     byte it does not know), or the connection ended where the challenge ("no challenge: ...")
     or the status byte ("no answer to the hello ...", §10) belongs; none of these is
     authenticated, and it never retries (with another version, digest or mode)
  2  usage error
  4  the server could not prove the secret: its proof is missing, short or wrong (over Ps too, so
     a substituted Ps lands here); nothing was sent after the hello
  5  a reply frame failed a check: "reply: REASON" on stderr, REASON from §11's table
  6  bad-server-key-share: the server's Ps (under a valid proof) gives an all-zero X25519 shared
     secret; nothing was sent after the hello
  7  the server accepted a hello it must refuse (only with MODE plain or --bad-key-share)

Needs the `cryptography` package (Debian: python3-cryptography; versions 38 and 48 both work)
for X25519 and AES-GCM.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys
import threading

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from v3_frames import (DIGESTS, LOW_ORDER_POINT, MAX_FRAMES, MAX_PAYLOAD, MODE_LABELS, FrameError,
                       hkdf_sha256,
                       open_frame, read_up_to, seal)

MODES = {"plain": 0x00, "integrity": 0x01, "encrypt": 0x02}
STATUS_NAMES = {1: "wrong-proof", 2: "unsupported-digest", 3: "mode-refused",
                4: "malformed-hello", 5: "unsupported-version", 6: "reflected-challenge",
                7: "forward-secrecy-required", 8: "bad-key-share"}


class ServerProofError(Exception):
    pass


class BadServerKeyShare(Exception):
    pass


def make_hello(secret, cs, digest, mode, cc, private=None, pc=None):
    """§9 and §12: head = "{digest}" 03 mode Cc Pc; returns (head, hello, private key)."""
    if private is None:
        key = X25519PrivateKey.generate()  # fresh for every connection (§12)
    else:
        key = X25519PrivateKey.from_private_bytes(private)
    if pc is None:
        pc = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    head = b"{" + digest.encode("ascii") + b"}" + bytes([0x03, mode]) + cc + pc
    proof = hmac.new(secret, b"hmac-echo v2 client->server" + cs + head, digest).digest()
    return head, head + proof, key


def finish(secret, cs, cc, head, digest, mode, private, ps, server_proof):
    """§10, §12: checks the server's proof over head || Ps, then derives (send, receive) keys."""
    length = hashlib.new(digest).digest_size
    expected = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head + ps, digest).digest()
    if len(ps) != 32 or len(server_proof) != length \
            or not hmac.compare_digest(server_proof, expected):
        raise ServerProofError()
    try:
        z = private.exchange(X25519PublicKey.from_public_bytes(ps))
    except ValueError:  # the library refuses an all-zero result
        raise BadServerKeyShare() from None
    if z == bytes(32):
        raise BadServerKeyShare()
    label = MODE_LABELS[mode]
    keys = tuple(hkdf_sha256(z + secret, cs + cc,
                             f"hmac-echo v3 {label} {direction}".encode("ascii") + head + ps)
                 for direction in ("client->server", "server->client"))
    return keys  # the private key is dropped by the caller once this returns


def read_frames(sock, mode, key):
    """The payloads of the frames read until the end frame (§11's checks, in its order)."""
    reply, expected = b"", 0
    tag_length = 32 if mode == 0x01 else 16
    while True:
        header = read_up_to(sock, 12)
        if not header:
            raise FrameError("truncated-stream")
        if len(header) < 12:
            raise FrameError("truncated-frame")
        length, seq = struct.unpack(">IQ", header)
        if length > MAX_PAYLOAD:
            raise FrameError("oversized-frame")
        rest = read_up_to(sock, length + tag_length)
        if len(rest) < length + tag_length:
            raise FrameError("truncated-frame")
        payload = open_frame(mode, key, header, rest)
        if seq >= MAX_FRAMES:
            raise FrameError("sequence-exhausted")
        if seq < expected:
            raise FrameError("replayed-frame")
        if seq > expected:
            raise FrameError("out-of-order-frame")
        expected += 1
        if length == 0:
            return reply
        reply += payload


def send_frames(sock, mode, key, message):
    try:
        seq = 0
        for offset in range(0, len(message), MAX_PAYLOAD):
            sock.sendall(seal(mode, key, seq, message[offset:offset + MAX_PAYLOAD]))
            seq += 1
        sock.sendall(seal(mode, key, seq, b""))  # the end frame
    except OSError:
        pass  # the server closed; the reading side reports what it saw


def fail(status, message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


def main():
    args = sys.argv[1:]
    bad_key_share = bool(args) and args[0] == "--bad-key-share"
    if bad_key_share:
        args = args[1:]
    if not 3 <= len(args) <= 5:
        fail(2, __doc__.split("\n\n")[1])
    host, port, message = args[0], int(args[1]), args[2].encode("utf-8")
    digest = args[3] if len(args) > 3 else "sha256"
    mode_name = args[4] if len(args) > 4 else "integrity"
    if digest not in DIGESTS or mode_name not in MODES:
        fail(2, f"unknown digest or mode: {digest} {mode_name}")
    mode = MODES[mode_name]
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    proof_length = hashlib.new(digest).digest_size
    with socket.create_connection((host, port)) as sock:
        cs = read_up_to(sock, 32)                                              # §1
        if len(cs) < 32:
            fail(1, "no challenge: not an hmac-echo server, or it refused the connection")
        cc = os.urandom(32)
        head, hello, private = make_hello(secret, cs, digest, mode, cc,
                                          pc=LOW_ORDER_POINT if bad_key_share else None)
        sock.sendall(hello)                                                      # §9, §12
        try:
            status = read_up_to(sock, 1)                                       # §10
        except OSError:
            status = b""
        if not status:
            fail(1, "no answer to the hello (not a v2 server, a refusal or a throttle;"
                    " the close is not authenticated)")
        if status[0] != 0:
            fail(1, "rejected: " + STATUS_NAMES.get(status[0], f"status {status[0]}"))
        answer = read_up_to(sock, 32 + proof_length)                           # Ps, proof
        if mode == 0x00 or bad_key_share:
            fail(7, "the server accepted a hello it must refuse")
        try:
            send_key, receive_key = finish(secret, cs, cc, head, digest, mode, private,
                                           answer[:32], answer[32:])
        except ServerProofError:
            fail(4, "the server could not prove it knows the secret")
        except BadServerKeyShare:
            fail(6, "bad-server-key-share: the server's key share is a low-order point")
        del private
        sender = threading.Thread(target=send_frames, args=(sock, mode, send_key, message),
                                  daemon=True)
        sender.start()
        try:
            reply = read_frames(sock, mode, receive_key)
        except FrameError as error:
            fail(5, f"reply: {error}")
        except OSError as error:
            fail(5, f"reply: truncated-stream ({error})")
        sender.join()
    sys.stdout.buffer.write(reply)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
