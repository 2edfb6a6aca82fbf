"""An hmac-echo protocol v2 client written from docs/PROTOCOL.md §8-§11, Python 3 standard library
only: the hello, the server's proof, HKDF-SHA-256 session keys and integrity frames.

Usage: v2_client.py HOST PORT MESSAGE [DIGEST [MODE]]   (the secret comes from HMAC_ECHO_SECRET)
DIGEST is sha1, sha256 (default), sha384 or sha512; MODE is plain or integrity (default).
Prints the reply to stdout. Exit status: 0 success, 1 rejected (the reason on stderr),
4 the server could not prove the secret, 5 a reply frame failed a check.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys

STATUS_NAMES = {1: "wrong-proof", 2: "unsupported-digest", 3: "mode-refused",
                4: "malformed-hello", 5: "unsupported-version", 6: "reflected-challenge"}
MODES = {"plain": 0, "integrity": 1}
MAX_PAYLOAD = 65536


def read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def hkdf_sha256(ikm, salt, info, length=32):
    """RFC 5869: extract, then expand (one block is enough for 32 bytes)."""
    prk = hmac.new(salt, ikm, "sha256").digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), "sha256").digest()
        okm += block
        counter += 1
    return okm[:length]


def frame(key, seq, payload):                                          # PROTOCOL.md §11
    header = struct.pack(">IQ", len(payload), seq)
    return header + payload + hmac.new(key, header + payload, "sha256").digest()


def fail(status, message):
    print(message, file=sys.stderr)
    sys.exit(status)


def main():
    host, port, message = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode("utf-8")
    digest = sys.argv[4] if len(sys.argv) > 4 else "sha256"
    mode = sys.argv[5] if len(sys.argv) > 5 else "integrity"
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    proof_length = hashlib.new(digest).digest_size
    with socket.create_connection((host, port)) as sock:
        cs = read_exactly(sock, 32)                                          # §1
        cc = os.urandom(32)
        head = b"{" + digest.encode() + b"}" + bytes([2, MODES[mode]]) + cc  # §9
        proof = hmac.new(secret, b"hmac-echo v2 client->server" + cs + head, digest).digest()
        sock.sendall(head + proof)
        status = read_exactly(sock, 1)                                       # §10
        if not status:
            fail(1, "no answer to the hello")
        if status[0] != 0:
            fail(1, "rejected: " + STATUS_NAMES.get(status[0], f"status {status[0]}"))
        server_proof = read_exactly(sock, proof_length)
        expected = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head, digest).digest()
        if not hmac.compare_digest(server_proof, expected):
            fail(4, "the server could not prove it knows the secret")
        if mode == "plain":                                                  # §4
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            sys.stdout.buffer.write(reply)
            return
        send_key = hkdf_sha256(secret, cs + cc, b"hmac-echo v2 integrity client->server")
        receive_key = hkdf_sha256(secret, cs + cc, b"hmac-echo v2 integrity server->client")
        seq = 0
        for offset in range(0, len(message), MAX_PAYLOAD):
            sock.sendall(frame(send_key, seq, message[offset:offset + MAX_PAYLOAD]))
            seq += 1
        sock.sendall(frame(send_key, seq, b""))                              # the end frame
        sock.shutdown(socket.SHUT_WR)
        reply, expected_seq = b"", 0
        while True:
            header = read_exactly(sock, 12)
            if len(header) < 12:
                fail(5, "the reply ended without an end frame")
            length, seq = struct.unpack(">IQ", header)
            if length > MAX_PAYLOAD:
                fail(5, "oversized reply frame")
            body = read_exactly(sock, length + 32)
            payload, tag = body[:length], body[length:]
            good = hmac.new(receive_key, header + payload, "sha256").digest()
            if len(body) < length + 32 or not hmac.compare_digest(tag, good):
                fail(5, "a reply frame's MAC does not verify")
            if seq != expected_seq:
                fail(5, f"reply frame {seq} where {expected_seq} was due")
            expected_seq += 1
            if length == 0:
                break
            reply += payload
    sys.stdout.buffer.write(reply)


main()
