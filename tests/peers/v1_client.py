"""An hmac-echo protocol v1 client written from docs/PROTOCOL.md, Python 3 standard library only.

Usage: v1_client.py [--legacy] HOST PORT MESSAGE   (the secret comes from HMAC_ECHO_SECRET)
With --legacy it answers as the Python tutorial did, sha1(secret + challenge) (§3.1).
Prints the reply to stdout; exits 1 when the server hangs up without replying (a rejection).
"""

import hashlib
import hmac
import os
import socket
import sys


def read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"connection ended after {len(data)} of {count} bytes")
        data += chunk
    return data


def main():
    legacy = sys.argv[1] == "--legacy"
    args = sys.argv[2:] if legacy else sys.argv[1:]
    host, port, message = args[0], int(args[1]), args[2].encode("utf-8")
    secret = os.environb[b"HMAC_ECHO_SECRET"]
    with socket.create_connection((host, port)) as sock:
        challenge = read_exactly(sock, 32)                                   # PROTOCOL.md §1
        if legacy:
            answer = hashlib.sha1(secret + challenge).hexdigest().encode()  # PROTOCOL.md §3.1
        else:
            answer = hmac.new(secret, challenge, "sha1").hexdigest().encode()  # PROTOCOL.md §2
        sock.sendall(answer)
        sock.sendall(message)                                                # PROTOCOL.md §4
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    if message and not reply:
        print("rejected", file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(reply)


main()
