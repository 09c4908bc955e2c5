"""parse_authorization (product.md §3): Basic per RFC 7617, Bearer, and every malformed form."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from authz.domain import credentials, token_format
from authz.domain.credentials import CredentialError, Credentials, parse_authorization

SECRET = "jat_0123456789abcdefghijABCDEFGHIJ0123456789"


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode("ascii")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- Basic ---------------------------------------------------------------------------------------


def test_basic_ok() -> None:
    got = parse_authorization(basic("alice", SECRET))
    assert got == Credentials("basic", "alice", SECRET)


def test_basic_secret_may_contain_colons() -> None:
    got = parse_authorization(basic("alice", "pa:ss:word:"))
    assert isinstance(got, Credentials)
    assert got.login == "alice"
    assert got.secret == "pa:ss:word:"


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
def test_basic_scheme_case_insensitive(scheme: str) -> None:
    got = parse_authorization(f"{scheme} {b64(b'alice:secret')}")
    assert got == Credentials("basic", "alice", "secret")


@pytest.mark.parametrize(
    "value",
    [
        "Basic   YWxpY2U6c2VjcmV0",
        "  Basic YWxpY2U6c2VjcmV0  ",
        "Basic YWxpY2U6c2VjcmV0\t",
        "\tBasic \t YWxpY2U6c2VjcmV0",
    ],
)
def test_basic_extra_spaces_tolerated(value: str) -> None:
    assert parse_authorization(value) == Credentials("basic", "alice", "secret")


def test_basic_utf8_login_and_secret() -> None:
    got = parse_authorization(basic("jürgen", "pässwörd-ü"))
    assert got == Credentials("basic", "jürgen", "pässwörd-ü")


def test_basic_email_login() -> None:
    got = parse_authorization(basic("alice@example.com", SECRET))
    assert isinstance(got, Credentials)
    assert got.login == "alice@example.com"


def _err(value: str, **kw: int) -> CredentialError:
    got = parse_authorization(value, **kw)
    assert isinstance(got, CredentialError), got
    assert got.reason  # every refusal says why
    return got


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Basic !!!notbase64!!!", "base64"),
        ("Basic YWxpY2U6c2VjcmV0=a", "base64"),  # data after padding
        ("Basic =YWxpY2U6c2VjcmV0", "base64"),  # leading padding
        ("Basic YWxpY2U6c2VjcmU", "base64"),  # missing padding
        ("Basic YWxpY2U6c2VjcmV0a", "base64"),  # impossible length
        ("Basic YWxp Y2U6c2VjcmV0", "base64"),  # space inside
        ("Basic " + b64(b"alice:\xff\xfesecret"), "UTF-8"),
        ("Basic " + b64(b"\xc0\xae:secret"), "UTF-8"),  # overlong UTF-8
        ("Basic " + b64(b"alicesecret"), "':'"),
        ("Basic " + b64(b":secret"), "empty login"),
        ("Basic " + b64(b"alice:"), "empty secret"),
        ("Basic " + b64(b":"), "empty login"),
        ("Basic " + b64(b"alice:sec\x00ret"), "control"),
        ("Basic " + b64(b"alice:secret\n"), "control"),
        ("Basic " + b64(b"al\tice:secret"), "control"),
        ("Basic " + b64(b"alice:sec\x7fret"), "control"),
        ("Basic " + b64(b"\x1balice:secret"), "control"),
        ("Basic " + b64(b" alice:secret"), "spaces"),
        ("Basic " + b64(b"alice :secret"), "spaces"),
        ("Basic", "empty"),
        ("Basic ", "empty"),
        ("basic \t ", "empty"),
        ("Bearer", "empty"),
        ("Bearer   ", "empty"),
    ],
)
def test_basic_and_bearer_malformed(value: str, words: str) -> None:
    err = _err(value)
    assert words.lower() in err.reason.lower(), err.reason


def test_empty_login_reports_secret_for_token_detection_but_not_in_repr() -> None:
    err = _err("Basic " + b64(f":{SECRET}".encode()))
    assert err.secret == SECRET
    assert SECRET not in repr(err)
    assert err.scheme == "basic"


def test_oversized_header_refused() -> None:
    value = basic("alice", "x" * 9000)
    err = _err(value)
    assert "8192" in err.reason


def test_oversized_limit_is_configurable() -> None:
    value = basic("alice", "x" * 300)
    assert isinstance(parse_authorization(value, max_bytes=8192), Credentials)
    err = _err(value, max_bytes=256)
    assert "256" in err.reason


def test_header_exactly_at_limit_accepted() -> None:
    value = "Bearer " + "a" * (100 - len("Bearer "))
    assert len(value) == 100
    assert isinstance(parse_authorization(value, max_bytes=100), Credentials)
    assert isinstance(parse_authorization(value + "a", max_bytes=100), CredentialError)


@pytest.mark.parametrize(
    "value",
    [
        basic("alice", SECRET) + "," + basic("bob", SECRET),
        basic("alice", SECRET) + ", Bearer " + SECRET,
        "Bearer " + SECRET + ",Bearer " + SECRET,
        "Bearer a,b",
        "Negotiate abc, Basic " + b64(b"alice:secret"),
    ],
)
def test_duplicate_header_joined_with_comma_refused(value: str) -> None:
    err = _err(value)
    assert "more than one" in err.reason


# --- Bearer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_ok(scheme: str) -> None:
    assert parse_authorization(f"{scheme} {SECRET}") == Credentials("bearer", "", SECRET)


def test_bearer_extra_spaces() -> None:
    assert parse_authorization(f"  Bearer    {SECRET}  ") == Credentials("bearer", "", SECRET)


@pytest.mark.parametrize(
    "param", ["abc def", "abc\tdef", "abc\x00", "abc\x7f", "tökén", "abc\u00a0def"]
)
def test_bearer_invalid_characters(param: str) -> None:
    err = _err(f"Bearer {param}")
    assert err.scheme == "bearer"
    assert "invalid characters" in err.reason


def test_bearer_secret_with_base64_chars() -> None:
    got = parse_authorization("Bearer abc+/=-._~")
    assert got == Credentials("bearer", "", "abc+/=-._~")


# --- other schemes and absence -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        'OAuth oauth_consumer_key="jira", oauth_token="abc"',
        "OAuth abc",
        "Negotiate YIIBhwYGKwYBBQUC",
        'Digest username="alice", realm="jira"',
        "NTLM TlRMTVNTUAABAAAA",
        "Token abc",
        "Basicx YWxpY2U6c2VjcmV0",
        "Bearerabc",
    ],
)
def test_other_schemes_or_absent_are_none(value: str | None) -> None:
    # A comma-joined foreign value is still refused: a comma means two headers.
    if value is not None and "," in value:
        assert isinstance(parse_authorization(value), CredentialError)
    else:
        assert parse_authorization(value) is None


def test_repr_never_shows_secret() -> None:
    for value in (basic("alice", SECRET), f"Bearer {SECRET}"):
        got = parse_authorization(value)
        assert isinstance(got, Credentials)
        assert SECRET not in repr(got)
        assert SECRET not in str(got)


# --- properties --------------------------------------------------------------------------------


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(value: str) -> None:
    got = parse_authorization(value)
    assert got is None or isinstance(got, Credentials | CredentialError)
    if isinstance(got, CredentialError):
        assert got.reason


@given(st.sampled_from(["Basic ", "Bearer ", "basic  ", "BEARER "]), st.text(max_size=300))
def test_arbitrary_scheme_payload_never_raises(prefix: str, value: str) -> None:
    got = parse_authorization(prefix + value)
    assert got is not None  # our schemes: credentials or a reason, never None
    assert isinstance(got, Credentials | CredentialError)


@given(st.binary(max_size=200))
def test_arbitrary_basic_bytes_never_raise(raw: bytes) -> None:
    got = parse_authorization("Basic " + b64(raw))
    assert isinstance(got, Credentials | CredentialError)
    if isinstance(got, Credentials):
        assert f"{got.login}:{got.secret}".encode() == raw


_login = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=":"),
    min_size=1,
    max_size=40,
).filter(lambda s: s == s.strip() and not token_format.looks_like_token(s))
"""A login that looks like one of our tokens is refused: see the test below."""
_secret = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80
)


@pytest.mark.parametrize("login", [SECRET, " " + SECRET, "jat_", "jat_x"])
def test_token_sent_as_the_login_is_refused(login: str) -> None:
    """`curl -u "$TOKEN:"` puts the secret in the login: it must never become a user name."""
    got = parse_authorization(basic(login, "pw"))
    assert isinstance(got, CredentialError)
    assert got.reason == "Basic login is an API token: send the token as the password"
    assert login.strip() not in repr(got)


@given(_login, _secret)
def test_basic_roundtrip_and_repr_hides_secret(login: str, secret: str) -> None:
    got = parse_authorization(basic(login, secret), max_bytes=100_000)
    assert got == Credentials("basic", login, secret)
    assume(secret not in repr(login) and secret not in "Credentials(scheme='basic', login=)")
    assert secret not in repr(got)


@given(st.text(max_size=200))
def test_repr_of_any_result_hides_secret(value: str) -> None:
    got = parse_authorization(value)
    secret = getattr(got, "secret", "")
    if not secret:
        return
    login = getattr(got, "login", "")
    assume(secret not in repr(login) and secret not in repr(getattr(got, "reason", "")))
    assume(secret not in "Credentials(scheme='basic', login=)CredentialError(reason=, scheme=)")
    assert secret not in repr(got)


@given(st.text(max_size=40))
def test_control_check_fast_path_agrees_with_the_regex(text: str) -> None:
    assert credentials._has_control(text) == (credentials._CONTROL.search(text) is not None)
