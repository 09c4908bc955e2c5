"""Secret format (product.md §2): prefix, length, base62 alphabet, checksum, SHA-256 hashing."""

from __future__ import annotations

import hashlib
import math
import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.domain import token_format
from authz.domain.token_format import (
    PREFIX,
    SECRET_LEN,
    check_importable,
    generate_secret,
    hash_secret,
    is_well_formed,
    looks_like_token,
)

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FORMAT = re.compile(r"jat_[0-9A-Za-z]{32}[0-9A-Za-z]{6}")


def test_generated_format() -> None:
    for _ in range(200):
        s = generate_secret()
        assert FORMAT.fullmatch(s), s
        assert len(s) == SECRET_LEN == 42
        assert s.startswith(PREFIX)
        assert looks_like_token(s)
        assert is_well_formed(s)
        assert check_importable(s) is None


def test_generated_secrets_are_unique_and_random_enough() -> None:
    batch = [generate_secret() for _ in range(500)]
    assert len(set(batch)) == len(batch)
    # >= 160 random bits (docs/product.md §2): 32 base62 characters.
    assert 32 * math.log2(62) >= 160
    # Every character of the alphabet shows up in the random parts: not a narrower alphabet.
    assert set("".join(s[4:36] for s in batch)) == set(ALPHABET)


def test_checksum_is_base62_crc32_of_body() -> None:
    s = generate_secret()
    body, check = s[4:36], s[36:]
    n = 0
    for c in check:
        n = n * 62 + ALPHABET.index(c)
    assert n == zlib.crc32(body.encode("ascii"))


def _body_with_check(body: str) -> str:
    n = zlib.crc32(body.encode())
    out = ""
    for _ in range(6):
        n, r = divmod(n, 62)
        out = ALPHABET[r] + out
    return PREFIX + body + out


@given(st.text(alphabet=ALPHABET, min_size=32, max_size=32))
def test_checksum_matches_the_reference_base62_encoding(body: str) -> None:
    # The unrolled encoding in token_format._checksum against the plain divmod loop above.
    assert token_format._checksum(body) == _body_with_check(body)[len(PREFIX) + 32:]
    assert is_well_formed(_body_with_check(body))


def test_known_vector() -> None:
    s = _body_with_check("A" * 32)
    assert is_well_formed(s)
    assert not is_well_formed(s.replace("jat_", "JAT_"))


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "jat_",
        "jat",
        "not-a-token",
        "JAT_" + "A" * 38,
        "jat-" + "A" * 38,
        " " + generate_secret(),
        generate_secret() + " ",
        generate_secret() + "A",
        generate_secret()[:-1],
        "jat_" + "!" * 32 + "AAAAAA",
        "jat_" + "ä" * 32 + "AAAAAA",
    ],
)
def test_not_well_formed(secret: str) -> None:
    assert not is_well_formed(secret)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=SECRET_LEN - 1), st.sampled_from(ALPHABET + "_-!ä"))
def test_one_character_change_detected(pos: int, ch: str) -> None:
    s = generate_secret()
    if s[pos] == ch:
        ch = "A" if ch != "A" else "B"
    changed = s[:pos] + ch + s[pos + 1 :]
    assert changed != s
    assert not is_well_formed(changed)


@settings(max_examples=300)
@given(st.integers(min_value=4, max_value=SECRET_LEN - 2))
def test_adjacent_transposition_detected(pos: int) -> None:
    s = generate_secret()
    if s[pos] == s[pos + 1]:
        return
    swapped = s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :]
    assert not is_well_formed(swapped)


@given(st.text(max_size=60))
def test_is_well_formed_never_raises(text: str) -> None:
    assert isinstance(is_well_formed(text), bool)
    assert isinstance(looks_like_token(text), bool)


@given(st.text(max_size=100))
def test_hash_is_sha256_hex_of_utf8(text: str) -> None:
    h = hash_secret(text)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_known_value() -> None:
    assert hash_secret("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert hash_secret("a") != hash_secret("A")


def test_has_prefix() -> None:
    assert looks_like_token("jat_anything")
    assert not looks_like_token("JAT_anything")
    assert not looks_like_token("xjat_")
    assert not looks_like_token("")


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("", "empty"),
        ("a" * (token_format.MIN_IMPORTED_LEN - 1), "shorter"),
        ("a" * 513, "longer"),
        ("abc def ghij", "whitespace"),
        ("abcdefgh\n", "whitespace"),
        ("abcdefgh\x00", "control"),
        ("abcdefgh\x7f", "control"),
        ("abcdefgh\u00a0", "whitespace"),
        ("jat_" + "A" * 38, "checksum"),
        ("jat_plainrandomstring", "checksum"),
    ],
)
def test_check_importable_refusals(secret: str, words: str) -> None:
    got = check_importable(secret)
    assert got is not None
    assert words in got


@pytest.mark.parametrize(
    "secret",
    ["a" * token_format.MIN_IMPORTED_LEN, "a" * 512, "Xk9pQ2mZ7vL4wR8tY1uE", "p@ss:w0rd,with;punct",
     "jürgen-sëcret-ünicode"],
)
def test_check_importable_accepts(secret: str) -> None:
    assert check_importable(secret) is None
