#!/usr/bin/env python3
"""Coverage-guided fuzzing of the decision's parsers: credentials, limit lines, paths.

    python fuzz/fuzz_decision.py -atheris_runs=100000        # bounded run
    python fuzz/fuzz_decision.py -max_total_time=600 CORPUS/  # ten minutes, keep a corpus

Arguments are libFuzzer's (``-help=1``). The dictionary ``fuzz/decision.dict`` is added unless
``-dict=`` is given. Each input is split by a FuzzedDataProvider into one of four targets:

0. ``parse_authorization``: never raises; credentials round-trip; errors carry a reason.
1. limit lines: ``parse_line`` raises only ``LimitSyntaxError``; a parsed line matches without
   raising; a URL-only line allows exactly what RE2's fullmatch allows.
2. paths: ``non_normal_reason`` never raises; an accepted path is one Tomcat serves as judged
   (no segment it would drop, merge, resolve or decode into a separator).
3. the whole decision (``screen`` → lookup → ``judge``) on fuzzed header, path, identity and
   method: never raises; the status follows the reason; an allow needs the stored secret, a
   normal path inside the token's limits and an allowed user.

A failed check raises ``AssertionError``: libFuzzer reports it as a crash and writes the input
to ``crash-*`` (replay: ``python fuzz/fuzz_decision.py crash-…``).
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import tomcat_view

with atheris.instrument_imports():
    from authz.domain import limits, paths, token_format
    from authz.domain.credentials import CredentialError, Credentials, parse_authorization
    from authz.domain.decide import Policy, judge, screen
    from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Token

import re2

NOW = 1_700_000_000.0
LIMIT = ".*/rest/api/2/issue/ALLOWED-1.*"
# Fixed secrets, so the fuzzer can find them through the dictionary and reach the allow path.
SECRET = "jat_" + "A" * 32 + token_format._checksum("A" * 32)
UNBOUND = "jat_" + "B" * 32 + token_format._checksum("B" * 32)
IMPORTED = "imp:orted:Secret-1234567890"
TOKENS = {
    t.secret_hash: t
    for t in (
        Token(id="lim", secret_hash=token_format.hash_secret(SECRET), user="alice",
              limits=(LIMIT, "[post].*/rest/api/2/search[QueryParam::jql==project = A]"),
              on_behalf_of=("bob",)),
        Token(id="unb", secret_hash=token_format.hash_secret(UNBOUND)),
        Token(id="imp", secret_hash=token_format.hash_secret(IMPORTED), user="alice",
              ips=("10.0.0.0/8",)),
    )
}
METHODS = ["GET", "POST", "get", "DELETE", "PATCH", "", "G\x00T"]
SECRET_SEEDS = [SECRET, UNBOUND, IMPORTED, "jira-password", "jat_"]
LOGIN_SEEDS = ["alice", "ALICE", "bob", "carol", "", "maß"]
AUTH_SEEDS = [
    "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode(),
    "Basic " + base64.b64encode(f"carol:{UNBOUND}".encode()).decode(),
    "Basic " + base64.b64encode(f"alice:{IMPORTED}".encode()).decode(),
    f"Bearer {SECRET}", f"Bearer {UNBOUND}", "Basic YWRtaW46amlyYS1wYXNzd29yZA==", "", "Basic",
    f"Bearer {SECRET}, Basic YWRtaW46amlyYS1wYXNzd29yZA==", "Negotiate abc",
]
PATH_SEEDS = ["/rest/api/2/issue/ALLOWED-1", "/rest/api/2/issue/ALLOWED-1/comment",
              "/rest/api/2/search?jql=project%20%3D%20A", "/rest/api/2/myself",
              "/rest/api/2/issue/OTHER-2", "/secure/Dashboard.jspa", "/"]
IDENTITY_SEEDS = ["", "bob", "BOB", "alice", "admin", "bob,admin"]
LINE_SEEDS = [
    "[post].*/rest/api/2/issue/KANBAN-100/comment.*",
    ".*/rest/api/2/issue/SCRUM-[1-2]{1}/comment.*", ".*/rest/api/2/issue.*",
    "[get].*/rest/api/2/project.*", "[get,POST].*/rest/api/2/search[QueryParam::jql==.*A.*]",
    ".*/rest/api/2/issue[JsonData::fields.project.key==SCRUM][QueryParam::x==1]",
    "[0-9].*", "[gte].*",
]
URL_SEEDS = ["/rest/api/2/issue/KANBAN-100/comment", "/rest/api/2/issue/SCRUM-1/comment",
             "/rest/api/2/project/A", "/rest/api/2/search", "/rest/api/2/issue"]


def _text(fdp: atheris.FuzzedDataProvider, n: int) -> str:
    """Either Unicode or raw bytes as latin-1 (what obs-text header bytes decode to)."""
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(n)
    return fdp.ConsumeBytes(n).decode("latin-1")


def _spliced(fdp: atheris.FuzzedDataProvider, seeds: list[str], n: int) -> str:
    """A seed as is, a seed with fuzzed text inserted or written over, or fuzzed text alone:
    most inputs stay close enough to valid ones to reach the deep branches."""
    base = seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)]
    op = fdp.ConsumeIntInRange(0, 3)
    if op == 0:
        return base
    if op == 1:
        return _text(fdp, n)
    at = fdp.ConsumeIntInRange(0, len(base))
    piece = _text(fdp, 24)
    if op == 2:
        return base[:at] + piece + base[at:]
    return base[:at] + piece + base[at + len(piece) :]


def _b64(login: str, secret: str) -> str:
    return base64.b64encode(f"{login}:{secret}".encode("utf-8", "surrogatepass")).decode()


def _authorization(fdp: atheris.FuzzedDataProvider) -> str:
    """Basic/Bearer headers built from fuzzed logins and secrets (mutated after decoding, where
    a mutation of the base64 text would only ever give bad base64), or spliced raw headers."""
    if fdp.ConsumeBool():
        return _spliced(fdp, AUTH_SEEDS, 200)
    login = _spliced(fdp, LOGIN_SEEDS, 20)
    secret = _spliced(fdp, SECRET_SEEDS, 60)
    scheme = ["Basic ", "Bearer ", "basic  ", "BEARER "][fdp.ConsumeIntInRange(0, 3)]
    return scheme + (_b64(login, secret) if "asic" in scheme else secret)


def fuzz_credentials(fdp: atheris.FuzzedDataProvider) -> None:
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        value = _authorization(fdp)
    elif mode == 1:
        value = _text(fdp, 400)
    else:
        value = "Basic " + base64.b64encode(fdp.ConsumeBytes(300)).decode()
    got = parse_authorization(value)
    assert got is None or isinstance(got, Credentials | CredentialError)
    if isinstance(got, CredentialError):
        assert got.reason
        assert len(got.secret) < 8 or got.secret not in got.reason
    elif isinstance(got, Credentials):
        assert got.secret
        assert got.scheme in ("basic", "bearer")
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in got.login + got.secret)
        if got.scheme == "basic":
            assert got.login and ":" not in got.login and got.login == got.login.strip()
        if len(got.secret) >= 8 and got.secret not in repr(got.login):
            assert got.secret not in repr(got)


def fuzz_limits(fdp: atheris.FuzzedDataProvider) -> None:
    line = _spliced(fdp, LINE_SEEDS, 200)
    try:
        lim = limits.parse_line(line)
    except limits.LimitSyntaxError as e:
        assert e.reason
        return
    assert lim.line == line.strip()
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    url = "https://jira.example.com" + _spliced(fdp, URL_SEEDS, 80)
    query = _spliced(fdp, ["jql=project%20%3D%20A", "x=1&jql=A", "jql=%ff", ""], 80)
    body = (_spliced(fdp, ['{"fields": {"project": {"key": "SCRUM"}}}', "[]"], 80)
            .encode("utf-8", "surrogatepass") if fdp.ConsumeBool() else None)
    got = limits.match([lim], method=method, url=url, query=query, body=body,
                       body_truncated=fdp.ConsumeBool())
    assert got.allowed == bool(got.line)
    if got.allowed:
        assert limits.fullmatch(lim.url, url)
    if lim.methods is None and not lim.clauses:
        assert got.allowed == (re2.fullmatch(lim.line, url) is not None)
    # A stored line that does not parse any more only narrows access.
    stored = limits.compile_limits((line + "\x00",))
    assert not limits.match(stored, method=method, url=url, query=query).allowed


def fuzz_paths(fdp: atheris.FuzzedDataProvider) -> None:
    raw = _spliced(fdp, PATH_SEEDS, 300)
    path, query = paths.split_path(raw)
    assert "?" not in path and path + ("?" + query if "?" in raw else "") == raw
    why = paths.non_normal_reason(path)
    if why is not None:
        assert isinstance(why, str) and why
        return
    assert path.startswith("/") and path.isascii()
    decoded = unquote_to_bytes(path).decode("utf-8")  # accepted ⇒ valid UTF-8
    assert tomcat_view(path) == decoded, path
    assert "//" not in decoded and ";" not in decoded and "\\" not in decoded
    assert not re.search(r"%[0-9A-Fa-f]{2}", decoded), path  # nothing for a second decoder
    assert paths.is_under_prefix(path, ("/rest/",)) == decoded.startswith("/rest/")


def _decide(req: HttpRequest) -> Decision:
    first = screen(req, Policy())
    if isinstance(first, Decision):
        return first
    return judge(req, first, TOKENS.get(token_format.hash_secret(first.secret)), Policy(), NOW)


def fuzz_decision(fdp: atheris.FuzzedDataProvider) -> None:
    headers = {"authorization": _authorization(fdp),
               "contextuser": _spliced(fdp, IDENTITY_SEEDS, 20)}
    if fdp.ConsumeBool():
        headers["x-forwarded-for"] = _text(fdp, 30)
    path, query = paths.split_path(_spliced(fdp, PATH_SEEDS, 100))
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    ip = ["10.0.0.7", "192.168.1.1", "::ffff:10.1.1.1", "bogus"][fdp.ConsumeIntInRange(0, 3)]
    req = HttpRequest(method, "https", "jira.example.com", path, query, headers, ip)
    d = _decide(req)
    assert d.status == STATUS[d.reason], d
    assert (d.outcome is Outcome.DENY) == (d.status != 200)
    for s in (SECRET, UNBOUND, IMPORTED):
        assert s not in d.message
    if d.outcome is Outcome.ALLOW:
        creds = parse_authorization(headers["authorization"])
        assert isinstance(creds, Credentials) and d.token is not None
        assert token_format.hash_secret(creds.secret) == d.token.secret_hash
        assert paths.non_normal_reason(path) is None
        assert tomcat_view(path) == unquote(path) and path.startswith("/rest/")
        if d.token.limits:
            assert any(limits.fullmatch(url_regex, req.url) for _, _, url_regex, _ in
                       limits.compile_limits(d.token.limits)), req.url
        users = {(d.token.user or creds.login).lower(), *(u.lower() for u in
                                                         d.token.on_behalf_of)}
        assert d.effective_user.lower() in users, d.effective_user


TARGETS = (fuzz_credentials, fuzz_limits, fuzz_paths, fuzz_decision)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)](fdp)


def main(argv: list[str]) -> None:
    if not any(a.startswith("-dict=") for a in argv):
        argv = [*argv, f"-dict={Path(__file__).with_name('decision.dict')}"]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
