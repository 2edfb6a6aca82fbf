"""An hmac-echo protocol v2 server written from docs/PROTOCOL.md §8-§11, Python 3 standard library
only: it checks the hello, proves the secret back, and echoes in plain or integrity mode.

Usage: v2_server.py [--impostor]   (the secret comes from HMAC_ECHO_SECRET)
Listens on 127.0.0.1 on a free port, prints "PORT <n>", serves one connection, then exits 0 if the
client authenticated and 3 if it was rejected. With --impostor it plays a server that does not know
the secret: it accepts any hello and "proves" itself with HMAC_ECHO_SECRET, whatever the client's is;
it exits 5 if the client then sends it a service byte, 0 if the client hangs up.
"""

import codecs
import hashlib
import hmac
import os
import socket
import struct
import sys

MODES = {0: "plain", 1: "integrity"}
MAX_PAYLOAD = 65536


def read_up_to(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def hkdf_sha256(ikm, salt, info):
    prk = hmac.new(salt, ikm, "sha256").digest()                          # RFC 5869 extract
    return hmac.new(prk, info + b"\x01", "sha256").digest()              # one 32-byte block


def frame(key, seq, payload):                                             # §11
    header = struct.pack(">IQ", len(payload), seq)
    return header + payload + hmac.new(key, header + payload, "sha256").digest()


def main():
    impostor = sys.argv[1:] == ["--impostor"]
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"PORT {listener.getsockname()[1]}", flush=True)
        conn, _ = listener.accept()
        with conn:
            cs = os.urandom(32)                                              # §1
            conn.sendall(cs)
            first = read_up_to(conn, 40)                                     # §8, §9
            close = first.find(b"}", 1, 16)
            if not first.startswith(b"{") or close < 2:
                conn.sendall(b"\x04")
                sys.exit(3)
            digest = first[1:close].decode("ascii", "replace")
            if digest not in ("sha1", "sha256", "sha384", "sha512"):
                conn.sendall(b"\x02")
                sys.exit(3)
            tag_length = close + 1
            mode = first[tag_length + 1]
            if first[tag_length] != 2 or mode not in MODES:
                conn.sendall(b"\x05" if first[tag_length] != 2 else b"\x04")
                sys.exit(3)
            proof_length = hashlib.new(digest).digest_size
            hello = first + read_up_to(conn, tag_length + 34 + proof_length - 40)
            head, proof = hello[:tag_length + 34], hello[tag_length + 34:]
            cc = head[tag_length + 2:]
            expected = hmac.new(secret, b"hmac-echo v2 client->server" + cs + head, digest).digest()
            if not impostor and not hmac.compare_digest(proof, expected):
                conn.sendall(b"\x01")
                sys.exit(3)
            server_proof = hmac.new(secret, b"hmac-echo v2 server->client" + cs + head, digest).digest()
            conn.sendall(b"\x00" + server_proof)                             # §10
            if impostor:  # exit 5 if the client, fooled, sends us anything
                try:
                    sys.exit(5 if conn.recv(65536) else 0)
                except ConnectionResetError:
                    sys.exit(0)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            if MODES[mode] == "plain":                                       # §4
                while chunk := conn.recv(65536):
                    conn.sendall(decoder.decode(chunk).upper().encode("utf-8"))
                conn.sendall(decoder.decode(b"", final=True).upper().encode("utf-8"))
                return
            receive_key = hkdf_sha256(secret, cs + cc, b"hmac-echo v2 integrity client->server")
            send_key = hkdf_sha256(secret, cs + cc, b"hmac-echo v2 integrity server->client")
            receive_seq = send_seq = 0
            while True:
                header = read_up_to(conn, 12)
                length, seq = struct.unpack(">IQ", header)
                body = read_up_to(conn, length + 32)
                payload, tag = body[:length], body[length:]
                good = hmac.new(receive_key, header + payload, "sha256").digest()
                if length > MAX_PAYLOAD or not hmac.compare_digest(tag, good) or seq != receive_seq:
                    sys.exit(4)
                receive_seq += 1
                text = decoder.decode(payload, final=length == 0).upper().encode("utf-8")
                for offset in range(0, len(text), MAX_PAYLOAD):
                    conn.sendall(frame(send_key, send_seq, text[offset:offset + MAX_PAYLOAD]))
                    send_seq += 1
                if length == 0:
                    conn.sendall(frame(send_key, send_seq, b""))              # the end frame
                    return


main()
