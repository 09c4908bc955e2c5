"""The bypass corpus (bypass_corpus.yaml), row by row, through the real Envoy.

Each row names the request and the outcome the shipped Envoy config plus jira-authz must give;
every answer that reaches Jira is also held to the generic rules (no client Authorization on a
token call, no client identity on a pass-through, Tomcat's view of the path inside the limit).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hardening_support import (
    FIGURES,
    LEDGER,
    LocalStack,
    Reply,
    TokenOps,
    basic,
    send,
    send_raw,
    tomcat_view,
)

from authz.domain import token_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import h2c

pytestmark = pytest.mark.e2e

CORPUS = yaml.safe_load((Path(__file__).parent / "bypass_corpus.yaml").read_text("utf-8"))
ROWS: list[dict[str, Any]] = CORPUS["rows"]
PASSWORD = "Jira-Password-0815!"


def _variant(secret: str, kind: str) -> str:
    """One-character and format variants of a secret (see the YAML header)."""
    body = len(token_format.PREFIX)
    swap = {"A": "B", "B": "A"}
    if kind == "last":
        return secret[:-1] + ("A" if secret[-1] != "A" else "B")
    if kind == "body":
        c = secret[body]
        return secret[:body] + ("x" if c != "x" else "y") + secret[body + 1 :]
    if kind == "case":
        i = next(i for i in range(body, len(secret)) if secret[i].isalpha())
        return secret[:i] + secret[i].swapcase() + secret[i + 1 :]
    if kind == "short":
        return secret[:-1]
    if kind == "long":
        return secret + swap.get(secret[-1], "A")
    if kind == "noprefix":
        return secret[body:]
    if kind == "upperprefix":
        return token_format.PREFIX.upper() + secret[body:]
    if kind == "lead":
        return " " + secret
    if kind == "trail":
        return secret + " "
    if kind == "colonx":
        return secret + ":x"
    if kind == "loginprefixed":
        return "alice:" + secret
    raise ValueError(kind)


def _forged() -> str:
    """A well-formed secret (right checksum) that was never issued."""
    return token_format.generate_secret()


def _bad_checksum() -> str:
    s = token_format.generate_secret()
    return s[:-6] + ("000000" if s[-6:] != "000000" else "111111")


@dataclass
class Corpus:
    stack: LocalStack
    secrets: dict[str, str]

    def secret(self, name: str) -> str:
        if name in self.secrets:
            return self.secrets[name]
        base, _, kind = name.partition("~")
        value = _variant(self.secrets[base], kind)
        self.secrets[name] = value
        LEDGER.add(value)
        return value

    def expand(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            op, _, arg = m.group(1).partition(":")
            if op == "secret":
                return self.secret(arg)
            if op in ("basic", "b64", "b64nopad", "b64url"):
                login, _, name = arg.rpartition(":")
                raw = f"{login}:{self.secret(name) if name else ''}".encode()
                if op == "basic":
                    return "Basic " + base64.b64encode(raw).decode()
                if op == "b64":
                    return base64.b64encode(raw).decode()
                if op == "b64nopad":
                    enc = base64.b64encode(raw).decode()
                    assert enc.endswith("="), "pick a login whose encoding needs padding"
                    return enc.rstrip("=")
                enc = base64.urlsafe_b64encode(raw).decode()
                assert set(enc) & set("-_"), "pick a login that needs the URL alphabet"
                return enc
            if op == "tokenlogin":
                name, _, password = arg.partition(":")
                raw = f"{self.secret(name)}:{password}".encode()
                return "Basic " + base64.b64encode(raw).decode()
            if op == "pad":
                return "x" * int(arg)
            if op == "spaces":
                return " " * int(arg)
            if op == "manyparams":
                return "".join(f"&p{i}=1" for i in range(int(arg)))
            raise ValueError(op)

        while "${" in text:  # innermost first: ${tokenlogin:a:${secret:b}}
            text = re.sub(r"\$\{([^${}]*)\}", one, text)
        return text


@pytest.fixture(scope="module")
def corpus(shared_stack: LocalStack, shared_ops: TokenOps) -> Corpus:
    found: dict[str, str] = {"password": PASSWORD, "forged": _forged(),
                             "badsum": _bad_checksum()}
    LEDGER.add(*found.values())
    for name, spec in CORPUS["tokens"].items():
        spec = dict(spec)
        revoke = spec.pop("revoke", False)
        for k in ("limits", "on_behalf_of", "logins", "ips"):
            if k in spec:
                spec[k] = tuple(spec[k])
        token, secret = shared_ops.create(label=f"corpus {name}", **spec)
        if revoke:
            shared_ops.revoke(token.id)
        found[name] = secret
    return Corpus(shared_stack, found)


def who_answered(r: Reply) -> str:
    if r.from_jira:
        return "jira"
    if r.headers.get("cache-control") == "no-store":
        try:
            body = r.json()
        except ValueError:
            return "envoy"
        if isinstance(body, dict) and {"error", "reason"} <= set(body):
            return "authz"
    if r.status == 400 and b"path parameters" in r.body:
        return "route"
    return "envoy"


def _body(c: Corpus, row: dict[str, Any]) -> bytes | None:
    if "body" not in row:
        return None
    return c.expand(row["body"]).encode(row.get("body_encoding", "utf-8"))


def _send_row(c: Corpus, row: dict[str, Any]) -> Reply:
    path = c.expand(row["path"])
    headers = [(k, c.expand(v)) for k, v in row.get("headers", [])]
    method = row.get("method", "GET")
    body = _body(c, row)
    if row.get("h2"):
        # Prior-knowledge h2c: pseudo-headers as written (lower-case :method, :scheme https).
        try:
            r = h2c.request(c.stack.envoy_port, path, [(k.lower(), v) for k, v in headers],
                            method=method, scheme=row.get("scheme", "http"),
                            authority=row.get("authority"), body=body)
        except ConnectionError:
            return Reply(0, {}, b"")  # Envoy reset the stream / connection
        return Reply(r.status, r.headers, r.body, r.echo)
    if row.get("raw"):
        host = row.get("host", f"127.0.0.1:{c.stack.envoy_port}")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}",
                 *(f"{k}: {v}" for k, v in headers), "Connection: close", "", ""]
        wire = "\r\n".join(lines).encode("latin-1") + (body or b"")  # bytes as written
        return send_raw(c.stack.envoy_port, wire)
    # Header values as UTF-8 bytes (http.client would send str values as latin-1).
    return send(c.stack.envoy_port, path, [(k, v.encode("utf-8")) for k, v in headers],
                method=method, body=body)


def _observed(r: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"status": r.status, "by": who_answered(r)}
    if r.from_jira:
        assert r.echo is not None
        hdrs = r.echo["headers"]
        out["identity"] = hdrs.get("contextuser")
        out["authorization"] = "present" if "authorization" in hdrs else "absent"
        out["jira_path"] = r.echo["path"]
        out["jira_method"] = r.echo["method"]
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_bypass_attempt(corpus: Corpus, row: dict[str, Any]) -> None:
    r = _send_row(corpus, row)
    observed = _observed(r)
    expect = row["expect"]
    FIGURES.add("bypass attempts")
    FIGURES.bypass_rows.append({"id": row["id"], "group": row["group"],
                                "attempt": row["attempt"], "expected": expect,
                                "observed": observed})
    print(json.dumps({"row": row["id"], "observed": observed}))

    # The generic rules first: they hold whatever the row says.
    auth_sent = any(k.lower() == "authorization" for k, _ in row.get("headers", []))
    if r.from_jira:
        hdrs = r.echo["headers"]  # type: ignore[index]
        token_call = hdrs.get("contextuser") is not None
        if token_call:
            assert "authorization" not in hdrs, "a token call reached Jira with Authorization"
        if not auth_sent:
            assert hdrs.get("contextuser") is None, "identity without any credentials"
        if row.get("limit"):
            view = tomcat_view(r.echo["path"])  # type: ignore[index]
            url = f"http://127.0.0.1:{corpus.stack.envoy_port}{view}"
            assert re.fullmatch(row["limit"], url), f"Tomcat would serve {view!r}"
    elif r.status == 401:
        assert r.headers.get("www-authenticate", "").startswith("Basic realm="), r.headers
    for name in ("alice", "limited", "obo", "unbound", "jql", "imported", "star"):
        assert corpus.secrets[name].encode() not in r.body or r.from_jira, "secret in a deny body"

    # Then the row's own expectation, field by field.
    assert observed["status"] == expect["status"], (observed, r.body[:200])
    assert observed["by"] == expect["by"], (observed, r.body[:200])
    for key in ("identity", "authorization", "jira_path", "jira_method"):
        if key in expect:
            assert observed.get(key) == expect[key], (key, observed)
    if "absent_headers" in expect:
        assert r.echo is not None
        present = {h.lower() for h in expect["absent_headers"]} & set(r.echo["headers"])
        assert not present, f"reached Jira: {present}"
    if "reason" in expect:
        assert expect["reason"] in r.json()["reason"], r.body[:300]
    if "jira_body_len" in expect:
        assert r.echo is not None and len(r.echo["body"]) == expect["jira_body_len"]


def test_corpus_is_broad() -> None:
    """The issue's list of tricks is covered: keep it from shrinking unnoticed."""
    groups = {r["group"] for r in ROWS}
    assert groups == {"path", "query", "header", "credential", "method", "scheme", "host",
                      "body"}
    ids = {r["id"] for r in ROWS}
    assert len(ids) == len(ROWS), "duplicate row ids"
    assert len(ROWS) >= 100
    assert basic("a", "b").startswith("Basic ")
