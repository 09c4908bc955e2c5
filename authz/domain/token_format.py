"""Token secrets: generation, the prefix + checksum format, hashing.

Generated secrets look like ``jat_`` + 32 base62 characters (≈190 random bits) + a 6-character
base62 CRC-32 of the random part, in the spirit of GitHub's token format: a secret scanner can
find them by prefix, and a mistyped or forged one is refused without a store lookup. Imported
secrets (Extender's plain random strings) carry no format and are only hashed.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

PREFIX = "jat_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LEN = 32
_CHECK_LEN = 6
SECRET_LEN = len(PREFIX) + _RANDOM_LEN + _CHECK_LEN
_ALPHABET_SET = frozenset(_ALPHABET)
# Extender lets admins choose a token's text; its generated ones are 20 to 32 characters.
MIN_IMPORTED_LEN = 8


def _checksum(body: str) -> str:
    # CRC-32 < 62**6: six base62 digits, most significant first, unrolled (one call per Check;
    # a loop costs twice as much).
    n, a = zlib.crc32(body.encode("ascii")), _ALPHABET
    return (a[n // 916_132_832 % 62] + a[n // 14_776_336 % 62] + a[n // 238_328 % 62]
            + a[n // 3_844 % 62] + a[n // 62 % 62] + a[n % 62])


def generate_secret() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LEN))
    return PREFIX + body + _checksum(body)


def looks_like_token(secret: str) -> bool:
    """The secret claims to be one of ours (so an unknown one is a bad token, not a password)."""
    return secret.startswith(PREFIX)


def is_well_formed(secret: str) -> bool:
    """Prefix, length, alphabet and checksum all right."""
    if len(secret) != SECRET_LEN or not secret.startswith(PREFIX):
        return False
    body = secret[len(PREFIX) : len(PREFIX) + _RANDOM_LEN]
    check = secret[len(PREFIX) + _RANDOM_LEN :]
    if not _ALPHABET_SET.issuperset(body) or not _ALPHABET_SET.issuperset(check):
        return False
    return secrets.compare_digest(_checksum(body), check)


_SHA256 = hashlib.sha256()
"""Copied per hash: a fresh ``hashlib.sha256()`` looks the digest up in OpenSSL every time."""


def hash_secret(secret: str) -> str:
    """SHA-256 hex of the UTF-8 secret: the only form in which a secret is ever stored."""
    h = _SHA256.copy()
    h.update(secret.encode("utf-8"))
    return h.hexdigest()


def check_importable(secret: str) -> str | None:
    """Why an imported secret is refused, or None when it is acceptable."""
    if not secret:
        return "secret is empty"
    if len(secret) < MIN_IMPORTED_LEN:
        return f"secret is shorter than {MIN_IMPORTED_LEN} characters"
    if len(secret) > 512:
        return "secret is longer than 512 characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        return "secret contains whitespace or control characters"
    if looks_like_token(secret) and not is_well_formed(secret):
        return f"secret starts with {PREFIX!r} but its checksum is wrong"
    return None
