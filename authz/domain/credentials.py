"""Parse the ``Authorization`` header into credentials, refusing anything ambiguous.

The header is hostile input: every malformed form yields a ``CredentialError`` with a clear
reason (answered with 401), never an exception. Schemes other than Basic and Bearer (Jira's
OAuth, Negotiate, …) are not ours and yield ``None`` so they pass through to Jira.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from typing import Literal, NamedTuple

from authz.domain.token_format import looks_like_token

Scheme = Literal["basic", "bearer"]


class Credentials(NamedTuple):
    """Parsed credentials. A NamedTuple (immutable, cheap to build: one per Check)."""

    scheme: Scheme
    login: str
    """Basic login; '' for Bearer."""
    secret: str
    """Never logged: ``repr`` leaves it out."""

    def __repr__(self) -> str:
        return f"Credentials(scheme={self.scheme!r}, login={self.login!r})"


class CredentialError(NamedTuple):
    reason: str
    scheme: str = ""
    secret: str = ""
    """The secret when the header could be split that far (to tell a token from a password):
    a malformed header that still carries one of our tokens is a token call, and audited.
    Never logged: ``repr`` leaves it out."""

    def __repr__(self) -> str:
        return f"CredentialError(reason={self.reason!r}, scheme={self.scheme!r})"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# For an ASCII string, str.isspace() or a control character is exactly this class.
_BEARER_BAD = re.compile(r"[\x00-\x20\x7f]")


def _has_control(s: str) -> bool:
    # Control characters are not printable: the (usual) printable text needs no regex.
    return not s.isprintable() and _CONTROL.search(s) is not None


def _parse_basic(param: str) -> Credentials | CredentialError:
    try:
        raw = b64decode(param, validate=True)
    except (binascii.Error, ValueError):
        return CredentialError("Basic credentials are not valid base64", "basic")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return CredentialError("Basic credentials are not valid UTF-8", "basic")
    login, sep, secret = text.partition(":")
    if not sep:
        return CredentialError("Basic credentials lack the ':' between login and secret",
                               "basic", text if looks_like_token(text) else "")
    if not login:
        return CredentialError("Basic credentials have an empty login", "basic", secret)
    if looks_like_token(login.strip()):
        # `curl -u "$TOKEN:"`: the token went into the login. A secret must never become a
        # user name (logged, traced, sent to Jira as the identity).
        return CredentialError(
            "Basic login is an API token: send the token as the password", "basic",
            login.strip(),
        )
    if not secret:
        return CredentialError("Basic credentials have an empty secret", "basic")
    if _has_control(login) or _has_control(secret):
        return CredentialError("Basic credentials contain control characters", "basic", secret)
    if login != login.strip():
        return CredentialError("Basic login has leading or trailing spaces", "basic", secret)
    return Credentials("basic", login, secret)


def _parse_bearer(param: str) -> Credentials | CredentialError:
    if not param.isascii() or _BEARER_BAD.search(param) is not None:
        return CredentialError("Bearer token contains invalid characters", "bearer", param)
    return Credentials("bearer", "", param)


def _token_among(parts: list[str], max_bytes: int) -> str:
    """The first of our tokens carried by any of several joined values, or ''."""
    for part in parts:
        got = parse_authorization(part, max_bytes=max_bytes)
        if got is not None and looks_like_token(got.secret):
            return got.secret
    return ""


def parse_authorization(value: str | None, *, max_bytes: int = 8192) -> (
    Credentials | CredentialError | None
):
    """Credentials from one ``Authorization`` value; None when absent or another scheme."""
    if value is None or value == "":
        return None
    if len(value) > max_bytes:
        return CredentialError(f"Authorization header is longer than {max_bytes} bytes")
    if "," in value:
        # Envoy joins repeated headers with ','; neither base64 nor our secrets contain one.
        return CredentialError("more than one Authorization header or value",
                               secret=_token_among(value.split(","), max_bytes))
    scheme, sep, param = value.strip(" \t").partition(" ")
    low = scheme.lower()
    if low not in ("basic", "bearer"):
        return None
    param = param.strip(" \t")
    if not sep or not param:
        return CredentialError(f"{scheme} credentials are empty", low)
    if low == "basic":
        return _parse_basic(param)
    return _parse_bearer(param)
