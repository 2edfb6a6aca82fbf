"""What the version 03 peers (v3_client.py, v3_server.py) share, written from docs/PROTOCOL.md:
the digests and modes of §9, HKDF-SHA-256 (RFC 5869) for §11's keys, and §11's frames.

Needs the `cryptography` package for AES-GCM.
"""

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DIGESTS = ("sha1", "sha256", "sha384", "sha512")
MODE_LABELS = {0x01: "integrity", 0x02: "encrypt"}
MAX_PAYLOAD = 65536
MAX_FRAMES = 2 ** 32
# A point of order 8 on Curve25519 (RFC 7748's curve): X25519 with it gives all zeros.
LOW_ORDER_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


class FrameError(Exception):
    pass


def read_up_to(sock, count):
    """Up to `count` bytes: fewer only if the connection ended first."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def hkdf_sha256(ikm, salt, info, length=32):
    """RFC 5869: extract, then expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def seal(mode, key, seq, payload):
    """§11: n (4) || seq (8) || body || tag."""
    if seq >= MAX_FRAMES:
        raise FrameError("sequence-exhausted")
    header = struct.pack(">IQ", len(payload), seq)
    if mode == 0x01:
        return header + payload + hmac.new(key, header + payload, hashlib.sha256).digest()
    return header + AESGCM(key).encrypt(bytes(4) + header[4:], payload, header)


def open_frame(mode, key, header, rest):
    """§11: the payload of a frame, given its 12-byte header and body || tag; or FrameError."""
    length = struct.unpack(">I", header[:4])[0]
    if mode == 0x01:
        payload, tag = rest[:length], rest[length:]
        good = hmac.new(key, header + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(tag, good):
            raise FrameError("tampered-frame")
        return payload
    try:
        return AESGCM(key).decrypt(bytes(4) + header[4:], rest, header)
    except InvalidTag:
        raise FrameError("tampered-frame") from None
