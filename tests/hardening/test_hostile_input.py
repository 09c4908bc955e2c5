"""Hostile input against the pure decision logic: properties tests/unit does not already cover.

tests/unit holds per-module properties (arbitrary text never raises, accepted paths are in
normal form, parse_line raises only LimitSyntaxError). These add, across the whole decision:

* arbitrary *bytes* as Envoy may deliver them (raw header values, obs-text, bad UTF-8);
* a complete reason → status table that every decision must follow;
* mutation properties: start from an allowed request, apply path / credential / header tricks,
  and whatever is still allowed must be what Tomcat would serve inside the limit, with the
  stored secret and an allowed identity;
* differential oracles: URL limits against RE2 directly, QueryParam clauses against urllib,
  token prefixes against Tomcat's decoded view;
* the Envoy translation and response builder: arbitrary CheckRequests never raise, deny bodies
  never carry a secret, an ALLOW always strips the client's Authorization.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes

import re2
from envoy.service.auth.v3 import external_auth_pb2
from hardening_support import scaled, tomcat_view
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from authz.domain import limits as limits_mod
from authz.domain import paths, token_format
from authz.domain.credentials import CredentialError, Credentials, parse_authorization
from authz.domain.decide import Policy, judge, screen
from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Reason, Token
from authz.envoyauth.request import to_http_request
from authz.envoyauth.response import ResponseBuilder
from authz.service import CheckService, StoreUnavailableError

PROPS = settings(max_examples=scaled(150, 4000), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


NOW = 1_700_000_000.0
LIMIT = ".*/rest/api/2/issue/ALLOWED-1.*"
SECRET = token_format.generate_secret()
UNBOUND_SECRET = token_format.generate_secret()
IMPORTED = "imp:orted:Secret-1234567890"
TOKENS = {
    t.secret_hash: t
    for t in (
        Token(id="lim", secret_hash=token_format.hash_secret(SECRET), user="alice",
              limits=(LIMIT,), on_behalf_of=("bob",)),
        Token(id="unb", secret_hash=token_format.hash_secret(UNBOUND_SECRET)),
        Token(id="imp", secret_hash=token_format.hash_secret(IMPORTED), user="alice"),
    )
}
ALL_SECRETS = (SECRET, UNBOUND_SECRET, IMPORTED)
ALLOWED_PATH = "/rest/api/2/issue/ALLOWED-1"


def basic(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def request(path: str = ALLOWED_PATH, auth: str | None = None, *, method: str = "GET",
            query: str = "", **headers: str) -> HttpRequest:
    h = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    if auth is not None:
        h["authorization"] = auth
    return HttpRequest(method, "https", "jira.example.com", path, query, h, "10.0.0.7")


def decide(req: HttpRequest, policy: Policy | None = None) -> Decision:
    policy = policy or Policy()
    first = screen(req, policy)
    if isinstance(first, Decision):
        return first
    token = TOKENS.get(token_format.hash_secret(first.secret))
    return judge(req, first, token, policy, NOW)


def check_invariants(req: HttpRequest, d: Decision) -> None:
    """What every decision owes, whatever the input."""
    assert isinstance(d, Decision)
    assert d.status == STATUS[d.reason], d
    assert (d.outcome is Outcome.DENY) == (d.status != 200)
    assert (d.outcome is Outcome.ALLOW) == (d.reason is Reason.OK)
    for s in ALL_SECRETS:
        assert s not in d.message
    if d.outcome is Outcome.ALLOW:
        assert d.token is not None and d.effective_user
        # An allow needs the exact stored secret in a well-formed header ...
        creds = parse_authorization(req.headers.get("authorization"))
        assert isinstance(creds, Credentials)
        assert token_format.hash_secret(creds.secret) == d.token.secret_hash
        # ... a normal-form path under /rest/ that Tomcat serves as it was judged ...
        assert paths.non_normal_reason(req.path) is None
        assert tomcat_view(req.path) == unquote(req.path)
        assert req.path.startswith("/rest/")
        # ... with the canonical method, an RFC 3986 host and http(s) Jira acts on ...
        assert req.method.isupper() and req.method.isalpha()
        assert paths.host_error(req.host) is None and req.scheme in ("http", "https")
        assert not any(h in req.headers for h in ("x-http-method-override", "x-http-method",
                                                  "x-method-override"))
        # ... inside the token's limits ...
        if d.token.limits:
            assert any(re.fullmatch(lim, req.url) for lim in d.token.limits), req.url
            assert any(re.fullmatch(lim, "https://jira.example.com" + tomcat_view(req.path))
                       for lim in d.token.limits)
        # ... running as the bound user, the login, or an allowed on-behalf-of user.
        allowed_users = {(d.token.user or creds.login).lower()}
        allowed_users |= {u.lower() for u in d.token.on_behalf_of}
        assert d.effective_user.lower() in allowed_users or "*" in d.token.on_behalf_of


# --- arbitrary bytes --------------------------------------------------------------------------

_as_header = st.one_of(
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),  # obs-text as Envoy passes it
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),  # raw header_map
    st.binary(max_size=200).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.binary(max_size=120).map(lambda b: "Bearer " + b.decode("latin-1")),
)


@PROPS
@given(_as_header, st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
       st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
@example(basic("alice", SECRET) + "\x00", ALLOWED_PATH, "")
@example(basic("alice", SECRET), ALLOWED_PATH + "\x00", "")
@example("Basic " + base64.b64encode(b"alice:" + SECRET.encode() + b"\xff").decode(),
         ALLOWED_PATH, "")
def test_arbitrary_bytes_never_raise_and_never_allow(auth: str, path: str, obo: str) -> None:
    req = request(path, auth, contextuser=obo)
    d = decide(req)
    check_invariants(req, d)
    assert d.outcome is not Outcome.ALLOW  # 190 random bits are not found by chance


@PROPS
@given(st.binary(max_size=60), st.binary(max_size=120))
def test_basic_splits_at_the_first_colon_whatever_the_bytes(login: bytes, secret: bytes) -> None:
    """RFC 7617: the secret may contain ':' (and anything else); the login may not."""
    assume(b":" not in login)
    got = parse_authorization("Basic " + base64.b64encode(login + b":" + secret).decode(),
                              max_bytes=100_000)
    assert isinstance(got, Credentials | CredentialError)
    if isinstance(got, Credentials):
        assert got.login.encode() == login and got.secret.encode() == secret
    else:
        assert got.reason and got.scheme == "basic"


@PROPS
@given(st.integers(min_value=1, max_value=3), st.text(min_size=1, max_size=8000))
def test_oversized_header_is_a_clear_401(mult: int, pad: str) -> None:
    value = "Bearer " + pad * (8200 // len(pad) + 1) * mult
    d = decide(request(auth=value))
    assert d.status == 401 and d.reason is Reason.MALFORMED_CREDENTIALS


# --- mutations of an allowed request ----------------------------------------------------------

_PATH_TRICKS = st.sampled_from([
    "/..", "/.", "/%2e%2e", "/%2E%2E", "/.%2e", "//", "/", ";", ";x=/ALLOWED-1", "%3b", "%3B",
    "\\", "%5c", "%5C", "%2f", "%2F", "%252e%252e", "%252f", "%c0%ae", "%c0%af", "%e0%80%ae",
    "%00", "%09", "%0a", "?", "%3f", "#", "%23", "%25", "%41", "%4f", "ALLOWED-1", "OTHER-2",
    "/OTHER-2", "/../OTHER-2", "%ef%bc%8e", "\u00e4", "%C3%A4", "%ff", "..;", "%2e%2e;", " ",
    # benign pieces, so that some mutated paths stay normal and get judged by the limit
    "/comment", "-", "/ALLOWED-1", "%20", "%ef%bc%8e%ef%bc%8e", "%3F", "%25", "x", "/rest/",
    "/api/2/issue/OTHER-2", "/../ALLOWED-1", "...", "/...", "%e2%80%a5",
])


@st.composite
def _mutated_path(draw: Any) -> str:
    path = ALLOWED_PATH
    for _ in range(draw(st.integers(1, 4))):
        trick = draw(_PATH_TRICKS)
        at = draw(st.one_of(st.just(len(path)), st.integers(0, len(path))))
        path = path[:at] + trick + path[at:]
    case = draw(st.sampled_from(["keep", "keep", "keep", "upper", "swap-one"]))
    if case == "upper":
        path = path.upper()
    elif case == "swap-one":
        i = draw(st.integers(0, len(path) - 1))
        path = path[:i] + path[i].swapcase() + path[i + 1 :]
    return path


@PROPS
@given(_mutated_path())
@example("/rest/api/2/issue/ALLOWED-1/../OTHER-2")
@example("/rest/api/2/issue/OTHER-2;x=/rest/api/2/issue/ALLOWED-1")
@example("/rest/api/2/issue/ALLOWED-1%2f..%2fOTHER-2")
@example("/rest/api/2/issue/ALLOWED-1/%c0%ae%c0%ae/OTHER-2")
def test_path_tricks_never_leave_the_limit(raw: str) -> None:
    path, query = paths.split_path(raw)
    req = request(path, basic("alice", SECRET), query=query)
    d = decide(req)
    check_invariants(req, d)  # an allowed trick must be served by Tomcat inside the limit
    if d.outcome is not Outcome.ALLOW:
        assert d.status in (400, 403), d


_SECRET_EDITS = st.sampled_from(["sub", "del", "ins", "case", "swap"])


@st.composite
def _edited_secret(draw: Any) -> str:
    s = draw(st.sampled_from(ALL_SECRETS))
    for _ in range(draw(st.integers(1, 2))):
        edit = draw(_SECRET_EDITS)
        i = draw(st.integers(0, len(s) - 1))
        c = draw(st.characters(min_codepoint=0x21, max_codepoint=0x7E))
        if edit == "sub":
            s = s[:i] + c + s[i + 1 :]
        elif edit == "del":
            s = s[:i] + s[i + 1 :]
        elif edit == "ins":
            s = s[:i] + c + s[i:]
        elif edit == "case":
            s = s[:i] + s[i].swapcase() + s[i + 1 :]
        elif i + 1 < len(s):
            s = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
    return s


@PROPS
@given(_edited_secret(), st.sampled_from(["alice", "ALICE", "bob", "", "alice ", "maß"]),
       st.booleans())
def test_edited_secrets_never_allow(secret: str, login: str, bearer: bool) -> None:
    assume(secret not in ALL_SECRETS)
    auth = f"Bearer {secret}" if bearer else basic(login, secret)
    req = request(auth=auth)
    d = decide(req)
    check_invariants(req, d)
    assert d.outcome is not Outcome.ALLOW
    if token_format.looks_like_token(secret) and d.outcome is Outcome.DENY:
        assert d.status == 401 and d.token_like  # one of ours, refused and audited


@PROPS
@given(st.text(alphabet=token_format._ALPHABET, min_size=32, max_size=32))
def test_forged_checksums_are_unknown_tokens(body: str) -> None:
    """A forger who knows the format gets past the checksum, never past the lookup."""
    forged = token_format.PREFIX + body + token_format._checksum(body)
    assume(forged not in ALL_SECRETS)
    d = decide(request(auth=basic("alice", forged)))
    assert d.reason is Reason.UNKNOWN_TOKEN and d.status == 401


_IDENTITY = st.one_of(
    st.sampled_from(["bob", "BOB", " bob ", "bob,bob", "bob,admin", "admin", "alice", "ALICE",
                     "*", "", "\uff42\uff4f\uff42", "bo\u0062", "bób", "b\u200bob", "maß", "ß"]),
    st.text(max_size=20),
)


@PROPS
@given(_IDENTITY, st.sampled_from(["alice", "Alice", "bob"]))
def test_identity_header_never_grants_an_unlisted_user(identity: str, login: str) -> None:
    req = request(auth=basic(login, SECRET), contextuser=identity)
    d = decide(req)
    check_invariants(req, d)
    if d.outcome is Outcome.ALLOW:
        assert d.effective_user.lower() in ("alice", "bob"), d.effective_user


# --- limits: differential against RE2 and urllib ----------------------------------------------

_URL_PIECES = st.sampled_from([".*", "/rest/", "api/2/", "issue/", "[A-Z]+-[0-9]+", "(a|b)",
                               "x", "\\d", "[^/]*", "?", "+", "{1,3}", "\\.", "|", "$", "^"])


@PROPS
@given(st.lists(_URL_PIECES, min_size=1, max_size=8).map("".join),
       st.sampled_from(["/rest/api/2/issue/AB-1", "/rest/x", "/rest/api/2/issue/a",
                        "/rest/api/2/issue/", "/", "/rest/api/2/issue/AB-12/comment"]),
       st.text(max_size=30))
def test_url_limit_is_re2_fullmatch_and_ignores_the_query(regex: str, path: str,
                                                          query: str) -> None:
    try:
        lim = limits_mod.parse_line(regex)
    except limits_mod.LimitSyntaxError:
        return
    assume(lim.methods is None and not lim.clauses)
    url = "https://jira.example.com" + path
    want = re2.fullmatch(lim.line, url) is not None
    got = limits_mod.match([lim], method="GET", url=url, query=query)
    assert got.allowed == want
    assert limits_mod.match([lim], method="GET", url=url, query="").allowed == want


_QS_KEYS = st.sampled_from(["jql", "JQL", "j%71l", "jql%00", "x", "", "jql[]"])
_QS_VALUES = st.sampled_from(["project%20%3D%20A", "project+%3D+A", "project = A", "A", "",
                              "%ff", "%c0%a0", "project%20%3D%20A%00", "B", "%26jql%3DB",
                              "project%20%3D%20A;jql=B", "%"])


@PROPS
@given(st.lists(st.tuples(_QS_KEYS, st.one_of(st.none(), _QS_VALUES)), max_size=5))
def test_query_param_clause_against_urllib(pairs: list[tuple[str, str | None]]) -> None:
    query = "&".join(k if v is None else f"{k}={v}" for k, v in pairs)
    lim = limits_mod.parse_line(".*/rest/api/2/search[QueryParam::jql==project = A]")
    got = limits_mod.match([lim], method="GET", url="https://j/rest/api/2/search", query=query)
    try:
        parsed = parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        assert not got.allowed
        return
    values = [v for k, v in parsed if k == "jql"]
    want = bool(values) and all(re2.fullmatch("project = A", v) is not None for v in values)
    assert got.allowed == want, (query, values)


@PROPS
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_stored_lines_never_widen_access(lines: list[str]) -> None:
    """compile_limits on arbitrary stored lines (a corrupt record) never raises, and a line that
    does not parse can only take access away."""
    compiled = limits_mod.compile_limits(tuple(lines))
    assert len(compiled) == len(lines)
    good = []
    for ln in lines:
        try:
            good.append(limits_mod.parse_line(ln))
        except limits_mod.LimitSyntaxError:
            continue
    for url in ("https://j/rest/api/2/issue/A-1", "https://j/", "https://j/rest/x?y"):
        got = limits_mod.match(compiled, method="GET", url=url, query="a=b")
        want = limits_mod.match(good, method="GET", url=url, query="a=b") if good else None
        assert got.allowed == (want.allowed if want is not None else False)


# --- paths: differential against Tomcat's decoding --------------------------------------------

_RAW_BYTE = st.integers(0, 255)


@st.composite
def _byte_path(draw: Any) -> str:
    """Segments of arbitrary bytes, each byte raw (if printable ASCII) or percent-encoded."""
    segs = []
    for _ in range(draw(st.integers(1, 5))):
        parts = []
        for b in draw(st.lists(_RAW_BYTE, max_size=6)):
            if 0x21 <= b <= 0x7E and draw(st.booleans()):
                parts.append(chr(b))
            else:
                parts.append(f"%{b:02{draw(st.sampled_from(['x', 'X']))}}")
        segs.append("".join(parts))
    return "/" + "/".join(segs)


@PROPS
@given(_byte_path())
def test_accepted_byte_paths_mean_the_same_to_tomcat(path: str) -> None:
    why = paths.non_normal_reason(path)
    if why is not None:
        return
    decoded = unquote_to_bytes(path)
    text = decoded.decode("utf-8")  # accepted ⇒ valid, shortest-form UTF-8
    assert tomcat_view(path) == text  # no segment Tomcat would drop, merge or resolve
    assert unquote(text) == text or "%" not in quote(text, safe="/%")  # nothing left to decode
    assert paths.is_under_prefix(path, ("/rest/",)) == text.startswith("/rest/")


_OVERLONG = {".": ["%c0%ae", "%e0%80%ae", "%f0%80%80%ae"],
             "/": ["%c0%af", "%e0%80%af", "%f0%80%80%af"],
             "\\": ["%c1%9c", "%e0%81%9c"], ";": ["%c0%bb", "%e0%80%bb"]}


@PROPS
@given(st.sampled_from(sorted(_OVERLONG)), st.integers(0, 2), st.integers(1, 3))
def test_overlong_utf8_always_refused(ch: str, form: int, count: int) -> None:
    enc = _OVERLONG[ch][min(form, len(_OVERLONG[ch]) - 1)]
    path = f"{ALLOWED_PATH}/{enc * count}/OTHER-2"
    assert paths.non_normal_reason(path) is not None
    d = decide(request(path, basic("alice", SECRET)))
    assert d.status == 400 and d.reason is Reason.NON_NORMAL_PATH


# --- the Envoy edge: translation, the whole service, the response -----------------------------

_HEADER_NAMES = st.sampled_from(["authorization", "Authorization", "contextuser", "contextUser",
                                 "x-forwarded-for", "user-agent", "x-request-id", ":path",
                                 ":method", "x-envoy-auth-partial-body", "host"])


class _Tokens:
    async def lookup(self, secret_hash: str) -> Token | None:
        if secret_hash.startswith("0"):
            raise StoreUnavailableError("down")  # a sixteenth of lookups: Redis away
        return TOKENS.get(secret_hash)


class _Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []

    def would_accept(self) -> bool:
        return True

    def emit(self, event: dict[str, str], *, token_id: str | None = None,
             used: bool = False) -> bool:
        self.events.append(event)
        return True


@PROPS
@given(
    st.text(max_size=80), st.text(max_size=10),
    st.dictionaries(_HEADER_NAMES, st.one_of(_as_header, st.text(max_size=40)), max_size=5),
    st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=60)), max_size=4),
    st.one_of(st.none(), st.binary(max_size=40)),
)
def test_arbitrary_check_requests_through_the_service(
    path: str, method: str, headers: dict[str, str], raw: list[tuple[str, bytes]],
    body: bytes | None,
) -> None:
    check = external_auth_pb2.CheckRequest()
    http = check.attributes.request.http
    http.path, http.method, http.host = path, method, "jira.example.com"
    if raw:  # encode_raw_headers: bytes, one entry per occurrence
        for k, v in raw:
            http.header_map.headers.add(key=k, raw_value=v)
    else:
        for k, v in headers.items():
            http.headers[k] = v
    if body is not None:
        http.raw_body = body
    check.attributes.source.address.socket_address.address = "10.0.0.7"
    req = to_http_request(check, [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])
    audit = _Audit()
    svc = CheckService(Policy(), _Tokens(), audit, clock=lambda: NOW)
    d = asyncio.run(svc.check(req))
    check_invariants(req, d)
    if d.token_like:
        assert len(audit.events) == 1
    resp = ResponseBuilder("contextUser", "Jira").build(d)
    wire = resp.SerializeToString()
    for s in ALL_SECRETS:
        assert s.encode() not in wire
    for ev in audit.events:
        assert not any(s in json.dumps(ev) for s in ALL_SECRETS)
    _check_response(d, resp)


def _check_response(d: Decision, resp: external_auth_pb2.CheckResponse) -> None:
    if d.outcome is Outcome.ALLOW:
        ok = resp.ok_response
        assert "authorization" in ok.headers_to_remove
        assert [(h.header.key, h.header.value) for h in ok.headers] == [
            ("contextuser", d.effective_user)]
        assert "contextuser" not in ok.headers_to_remove
    elif d.outcome is Outcome.PASS:
        assert list(resp.ok_response.headers_to_remove) == ["contextuser"]
        assert not resp.ok_response.headers
    else:
        denied = resp.denied_response
        assert denied.status.code == d.status
        body = json.loads(denied.body)
        assert set(body) == {"errorMessages", "errors", "error", "reason"}
        www = [h for h in denied.headers if h.header.key == "www-authenticate"]
        assert bool(www) == (d.status == 401)


@PROPS
@given(st.sampled_from([ALLOWED_PATH, ALLOWED_PATH + "/comment", "/rest/api/2/myself",
                        "/rest/api/2/issue/OTHER-2"]),
       st.sampled_from(["alice", "ALICE", "bob"]), st.sampled_from(ALL_SECRETS),
       st.sampled_from(["", "bob", "BOB", "admin"]), st.booleans(), st.booleans())
def test_valid_requests_decide_exactly(path: str, login: str, secret: str, identity: str,
                                       bearer: bool, deny_unauth: bool) -> None:
    """The positive side: the mutation properties would pass vacuously if nothing was ever
    allowed, so the exact outcome of well-formed requests is pinned here."""
    auth = f"Bearer {secret}" if bearer else basic(login, secret)
    req = request(path, auth, contextuser=identity)
    d = decide(req, Policy(deny_unauthenticated=deny_unauth))
    check_invariants(req, d)
    token = TOKENS[token_format.hash_secret(secret)]
    user = token.user or (None if bearer else login)
    if user is None:
        assert d.reason is Reason.BEARER_UNBOUND
        return
    if token.user and not bearer and login.lower() != token.user.lower():
        assert d.reason is Reason.WRONG_USER
        return
    if token.limits and not re.fullmatch(LIMIT, req.url):
        assert d.reason is Reason.NO_LIMIT_MATCHED
        return
    if identity and identity.lower() != user.lower() and identity.lower() not in {
        u.lower() for u in token.on_behalf_of
    }:
        assert d.reason is Reason.ON_BEHALF_NOT_ALLOWED
        return
    assert d.outcome is Outcome.ALLOW, d
    assert d.effective_user == (identity if identity and identity.lower() != user.lower()
                                else user)


def test_policy_variants_keep_the_status_table() -> None:
    """Scheme and unauthenticated policies change reasons, never the reason → status map."""
    for schemes in (frozenset({"basic"}), frozenset({"bearer"}), frozenset({"basic", "bearer"})):
        for deny in (False, True):
            policy = dataclasses.replace(Policy(), schemes=schemes, deny_unauthenticated=deny)
            for auth in (None, basic("alice", SECRET), f"Bearer {SECRET}", basic("a", "pw"),
                         "Bearer pat-123", "Basic ???", basic("alice", SECRET[:-1] + "x")):
                req = request(auth=auth)
                check_invariants(req, decide(req, policy))
