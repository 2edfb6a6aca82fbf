"""An hmac-echo protocol v1 server written from docs/PROTOCOL.md, Python 3 standard library only.

Usage: v1_server.py   (the secret comes from HMAC_ECHO_SECRET)
Listens on 127.0.0.1 on a free port, prints "PORT <n>", serves one connection, then exits with
status 0 if that client authenticated and 3 if it was rejected.
"""

import codecs
import hmac
import os
import socket
import sys


def read_up_to(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def main():
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"PORT {listener.getsockname()[1]}", flush=True)
        conn, _ = listener.accept()
        with conn:
            challenge = os.urandom(32)                                      # PROTOCOL.md §1
            conn.sendall(challenge)
            answer = read_up_to(conn, 40)                                   # PROTOCOL.md §3
            expected = hmac.new(secret, challenge, "sha1").hexdigest()
            try:
                valid = len(answer) == 40 and hmac.compare_digest(answer.decode("ascii").lower(), expected)
            except UnicodeDecodeError:
                valid = False
            if not valid:
                sys.exit(3)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # PROTOCOL.md §4
            while chunk := conn.recv(65536):
                conn.sendall(decoder.decode(chunk).upper().encode("utf-8"))
            conn.sendall(decoder.decode(b"", final=True).upper().encode("utf-8"))


main()
