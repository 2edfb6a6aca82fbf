"""Benchmark peer: the Python tutorial's design (socketserver.ThreadingTCPServer, a thread per
client) speaking protocol v1 (docs/PROTOCOL.md), without the tutorial's one-second sleep.

python_threading.py PORT [--no-auth]; the secret comes from HMAC_ECHO_SECRET.
"""

import codecs
import hmac
import os
import socket
import socketserver
import sys

SECRET = os.environb.get(b"HMAC_ECHO_SECRET", b"")
AUTH = "--no-auth" not in sys.argv


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if AUTH:
            challenge = os.urandom(32)
            conn.sendall(challenge)
            answer = b""
            while len(answer) < 40:
                chunk = conn.recv(40 - len(answer))
                if not chunk:
                    return
                answer += chunk
            expected = hmac.new(SECRET, challenge, "sha1").hexdigest().encode()
            if not hmac.compare_digest(answer.lower(), expected):
                return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := conn.recv(65536):
            conn.sendall(decoder.decode(chunk).upper().encode())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096


with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
    print("listening", file=sys.stderr, flush=True)
    server.serve_forever()
