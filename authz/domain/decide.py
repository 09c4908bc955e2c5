"""The decision, as two pure steps around the token lookup.

``screen`` runs before any I/O: path normal form, credential parsing, scheme policy. It either
answers at once or names the secret to look up. ``judge`` runs after the lookup: binding,
expiry, IP, endpoint, limits, on-behalf-of — in that order, so the first failing rule is the
reason reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.domain import limits as limits_mod
from authz.domain import network, paths, token_format
from authz.domain.credentials import CredentialError, Credentials, parse_authorization
from authz.domain.logins import same_user
from authz.domain.model import STATUS, Decision, HttpRequest, Outcome, Reason, Token, deny


@dataclass(frozen=True, slots=True)
class Policy:
    """The configuration a decision depends on, flattened for the hot path (built from the
    configuration by ``authz.policies.decision_policy``)."""

    schemes: frozenset[str] = frozenset({"basic", "bearer"})
    deny_unauthenticated: bool = False
    token_prefixes: tuple[str, ...] = ("/rest/",)
    identity_header: str = "contextuser"
    """Lower-cased, as Envoy delivers header names."""
    xff_trusted_hops: int = 0
    envoy_appends_peer: bool = True
    max_header_bytes: int = 8192
    service_credential: bool = False
    """An upstream service Authorization replaces the client's: Jira acts as the identity
    header's user only, so an unbound token (any login) would act as whoever it names."""
    allow_unbound_with_service_credential: bool = False


# Methods are case-sensitive (RFC 9110 §9.1): Envoy's HTTP/2 codec passes ``post`` through as
# it came, Tomcat then serves it as an unknown method while a ``[post]`` line, compared
# case-insensitively, would have allowed it. Only the canonical upper-case tokens are judged.
CANONICAL_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)
# Headers some frameworks (Jersey's HttpMethodOverrideFilter, Spring's HiddenHttpMethodFilter
# variants, proxies) read as "the real method": on a token call the judged method would not be
# the one Jira runs.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def not_a_token(policy: Policy, reason: Reason, message: str) -> Decision:
    """No token involved: pass through to Jira's own authentication, or deny by policy."""
    if policy.deny_unauthenticated:
        return deny(Reason.UNAUTHENTICATED_DENIED, "an API token is required")
    return Decision(Outcome.PASS, reason, STATUS[reason], message)


def screen(req: HttpRequest, policy: Policy) -> Decision | Credentials:
    """Everything decidable without the token store."""
    why = paths.non_normal_reason(req.path)
    if why is not None:
        return deny(Reason.NON_NORMAL_PATH, why)
    if req.method not in CANONICAL_METHODS:
        return deny(Reason.NON_CANONICAL_METHOD,
                    "request method is not a canonical upper-case HTTP method")
    why = paths.host_error(req.host)
    if why is not None:
        return deny(Reason.INVALID_HOST, why)
    why = paths.scheme_error(req.scheme)
    if why is not None:
        return deny(Reason.INVALID_SCHEME, why)
    parsed = parse_authorization(
        req.headers.get("authorization"), max_bytes=policy.max_header_bytes
    )
    if parsed is None:
        return not_a_token(policy, Reason.NO_CREDENTIALS, "no token credentials")
    if isinstance(parsed, CredentialError):
        token_like = token_format.looks_like_token(parsed.secret)
        return deny(Reason.MALFORMED_CREDENTIALS, parsed.reason, token_like=token_like)
    token_like = token_format.looks_like_token(parsed.secret)
    if parsed.scheme not in policy.schemes:
        if token_like:
            return deny(
                Reason.SCHEME_NOT_ALLOWED,
                f"{parsed.scheme.capitalize()} credentials are not accepted for API tokens",
                login=parsed.login, token_like=True,
            )
        return not_a_token(policy, Reason.NOT_A_TOKEN, "credentials are not an API token")
    if token_like and not token_format.is_well_formed(parsed.secret):
        return deny(
            Reason.MALFORMED_TOKEN, "token is malformed (bad length or checksum)",
            login=parsed.login, token_like=True,
        )
    return parsed


def _login_matches(token: Token, login: str) -> bool:
    return token.user is not None and (
        same_user(token.user, login) or any(same_user(x, login) for x in token.logins)
    )


def _on_behalf_of(token: Token, requested: str) -> bool:
    return any(x == "*" or same_user(x, requested) for x in token.on_behalf_of)


def judge(
    req: HttpRequest, creds: Credentials, token: Token | None, policy: Policy, now: float,
    compiled: limits_mod.CompiledLimits | None = None,
) -> Decision:
    """The decision once the token (or its absence) is known. ``compiled``: the server's
    compiled-line cache (without one, the token's lines are compiled for this call)."""
    login = creds.login
    if token is None:
        if token_format.looks_like_token(creds.secret):
            return deny(Reason.UNKNOWN_TOKEN, "unknown API token", login=login,
                         token_like=True)
        # Not one of ours: a Jira password (Basic) or a Jira personal access token (Bearer).
        return not_a_token(policy, Reason.NOT_A_TOKEN, "credentials are not an API token")
    common = {"token": token, "login": login, "token_like": True}
    if any(h in req.headers for h in METHOD_OVERRIDE_HEADERS):
        return deny(Reason.METHOD_OVERRIDE,
                    "method override headers are not accepted with API tokens", **common)
    if token.is_revoked(now):
        return deny(Reason.REVOKED, "API token has been revoked", **common)
    if token.is_expired(now):
        return deny(Reason.EXPIRED, "API token has expired", **common)
    if creds.scheme == "bearer":
        if token.user is None:
            return deny(Reason.BEARER_UNBOUND,
                        "Bearer credentials need a token bound to a user", **common)
        user = token.user
    elif token.user is None:
        if policy.service_credential and not policy.allow_unbound_with_service_credential:
            return deny(Reason.UNBOUND_WITH_SERVICE_CREDENTIAL,
                        "unbound API tokens are not accepted while Jira is called with a "
                        "service credential", **common)
        user = login
    elif _login_matches(token, login):
        user = token.user
    else:
        return deny(Reason.WRONG_USER, "API token does not belong to this login", **common)
    ip = network.client_ip(req.source_ip, req.headers.get("x-forwarded-for"),
                           policy.xff_trusted_hops, policy.envoy_appends_peer)
    common["client_ip"] = ip
    if not network.ip_allowed(ip, token.ips):
        return deny(Reason.IP_NOT_ALLOWED, "client address is not allowed for this token",
                    effective_user=user, **common)
    if not paths.is_under_prefix(req.path, policy.token_prefixes):
        return deny(Reason.UNSUPPORTED_PATH, "API tokens are not accepted on this path",
                    effective_user=user, **common)
    result = limits_mod.match(
        limits_mod.compile_limits(token.limits, compiled),
        method=req.method, url=req.url, query=req.query,
        body=req.body, body_truncated=req.body_truncated,
    )
    if not result.allowed:
        return deny(Reason.NO_LIMIT_MATCHED, result.why, effective_user=user, **common)
    requested = req.headers.get(policy.identity_header, "").strip()
    if requested and (token_format.looks_like_token(requested) or creds.secret in requested):
        # A credential is not a user name: never run as it, log it or send it to Jira.
        return deny(Reason.ON_BEHALF_NOT_ALLOWED,
                    "the identity header holds an API token, not a user name",
                    matched_limit=result.line, **common)
    effective = user
    if requested and not same_user(requested, user):
        if "," in requested or not _on_behalf_of(token, requested):
            return deny(Reason.ON_BEHALF_NOT_ALLOWED,
                        "this token may not act on behalf of the requested user",
                        effective_user=requested, matched_limit=result.line, **common)
        effective = requested
    return Decision(Outcome.ALLOW, Reason.OK, STATUS[Reason.OK], "", token, login, effective,
                    result.line, True, ip)
