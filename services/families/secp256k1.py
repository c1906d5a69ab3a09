"""secp256k1 as the families use it: points, low-S, recovery ids and verification (one copy).

The HSM returns ``r || s`` from ``CKM_ECDSA``; every chain custos signs for wants low-S
(EIP-2 on Ethereum, the Cosmos SDK's ante handler), and Ethereum also wants the recovery id.
"""

from __future__ import annotations

from coincurve import PublicKey
from coincurve.ecdsa import deserialize_recoverable, recover

from services.families.errors import TransactionInvalid

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = N // 2
_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


class PointInvalid(TransactionInvalid):
    """Bytes that are not a secp256k1 public key in the expected encoding."""


def check_point(point: bytes) -> tuple[int, int]:
    """(x, y) of a 65-byte uncompressed point on the curve."""
    if len(point) != 65 or point[0] != 0x04:
        raise PointInvalid("a secp256k1 public key is a 65-byte uncompressed point")
    x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    if (y * y - x * x * x - 7) % _P != 0:
        raise PointInvalid("the secp256k1 public key is not on the curve")
    return x, y


def compress(point: bytes) -> bytes:
    """The 33-byte compressed form of a 65-byte point."""
    x, y = check_point(point)
    return bytes([0x02 | (y & 1)]) + x.to_bytes(32, "big")


def low_s(signature: bytes) -> bytes:
    """``r || s`` (64 bytes) with ``s <= n/2``; refuses out-of-range values."""
    if len(signature) != 64:
        raise TransactionInvalid("a secp256k1 signature is 64 bytes r || s")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        raise TransactionInvalid("signature r or s out of range")
    if s > HALF_N:
        s = N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def recover_point(digest: bytes, signature: bytes, recovery_id: int) -> bytes | None:
    """The 65-byte point that made ``r || s`` over ``digest`` under ``recovery_id`` (None if none)."""
    if len(digest) != 32 or len(signature) != 64 or recovery_id not in (0, 1):
        return None
    try:
        rec = deserialize_recoverable(signature + bytes([recovery_id]))
        return bytes(PublicKey(recover(digest, rec, hasher=None)).format(compressed=False))
    except Exception:  # coincurve raises bare Exceptions on bad input
        return None


def recovery_id(digest: bytes, signature: bytes, point: bytes) -> int:
    """v in {0, 1} such that ``(r || s, v)`` over ``digest`` recovers ``point``."""
    for v in (0, 1):
        if recover_point(digest, signature, v) == point:
            return v
    raise TransactionInvalid("the signature was not made by the vault's key")


def verify(digest: bytes, signature: bytes, point: bytes) -> bool:
    """Whether low-S ``r || s`` (a trailing recovery id is ignored) over ``digest`` is ``point``'s."""
    if len(signature) == 65:
        signature = signature[:64]
    if len(digest) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(signature[32:], "big") > HALF_N:
        return False
    try:
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < N and 0 < s < N):
            return False
        der = _der(r, s)
        return bool(PublicKey(point).verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def _der(r: int, s: int) -> bytes:
    def integer(v: int) -> bytes:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body
