"""How the CLI shows things: tables for people, JSON for scripts, snippets for first calls."""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence
from typing import Any

from authz.domain.audit_event import AuditRecord
from authz.domain.model import Token

SECRET_PLACEHOLDER = "<TOKEN-SECRET>"


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def token_json(token: Token, now: float) -> dict[str, Any]:
    """Public view of a token: every field but the secret hash."""
    return {
        "id": token.id,
        "label": token.label,
        "user": token.user,
        "logins": list(token.logins),
        "created_at": iso(token.created_at),
        "created_by": token.created_by,
        "expires_at": iso(token.expires_at) or None,
        "limits": list(token.limits),
        "ips": list(token.ips),
        "on_behalf_of": list(token.on_behalf_of),
        "revoked_at": iso(token.revoked_at) or None,
        "last_used_at": iso(token.last_used_at) or None,
        "use_count": token.use_count,
        "state": token.state(now),
    }


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    all_rows = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    )


def token_table(tokens: Sequence[Token], now: float) -> str:
    return table(
        [(t.id, t.label, t.user or "(any)", t.state(now), iso(t.expires_at) or "never",
          str(t.use_count), iso(t.last_used_at)) for t in tokens],
        ("ID", "LABEL", "USER", "STATE", "EXPIRES", "USES", "LAST USED"),
    )


def token_details(token: Token, now: float) -> str:
    d = token_json(token, now)
    lines = [f"{k + ':':<14}{'-' if v is None else v}" for k, v in d.items()
             if k not in ("limits", "logins", "ips", "on_behalf_of")]
    for k in ("logins", "ips", "on_behalf_of"):
        lines.append(f"{k + ':':<14}{', '.join(d[k]) or '-'}")
    lines.append("limits:" + ("" if token.limits else "        (none: every /rest/ endpoint)"))
    lines += [f"  {n}. {line}" for n, line in enumerate(token.limits, 1)]
    return "\n".join(lines)


# Requests a first call may make, most telling first; the snippet uses the first one the
# token's own lines allow, so it works as printed (a token for issues gets an issue URL).
_SAMPLE_PATHS = ("/rest/api/2/myself", "/rest/api/2/serverInfo", "/rest/api/2/issue/AAA-1",
                 "/rest/api/2/search", "/rest/api/2/project", "/rest/api/2/field")


def _literal_path(line: str) -> str | None:
    """A path a line plausibly names: its URL regex with the '.*' parts dropped
    ('[post].*/rest/api/2/issue/KANBAN-100/comment.*' → '/rest/api/2/issue/KANBAN-100/comment')."""
    url = line.split("]", 1)[1] if line.startswith("[") and "]" in line else line
    url = url.split("[QueryParam::", 1)[0].split("[JsonData::", 1)[0]
    text = url.replace(".*", "").replace("(/)?", "")
    i = text.find("/rest/")
    if i < 0:
        i = text.find("/")
    text = text[i:] if i >= 0 else ""
    if not text or any(c in text for c in "[](){}|?+*^$\\"):
        return None
    return text


def sample_request(token: Token, base_url: str) -> tuple[str, str] | None:
    """(method, path) of a request the token's lines allow, GET preferred; None when no
    candidate passes (the snippet then says to replace the URL)."""
    from authz.domain import limits as limits_mod

    if not token.limits:
        return "GET", _SAMPLE_PATHS[0]
    compiled = limits_mod.compile_limits(tuple(token.limits))
    base = base_url.rstrip("/")
    literal = [p for p in map(_literal_path, token.limits) if p]
    methods: list[str] = ["GET"]
    for line in token.limits:
        lim = line[1 : line.find("]")] if line.startswith("[") and "]" in line else ""
        for m in lim.split(","):
            if m.strip().isalpha() and m.strip().upper() not in methods:
                methods.append(m.strip().upper())
    for method in methods:
        for path in (*_SAMPLE_PATHS, *literal):
            if limits_mod.match(compiled, method=method, url=base + path, query="").allowed:
                return method, path
    return None


def snippet_parts(token: Token, secret: str | None, base_url: str) -> dict[str, Any]:
    s = secret or SECRET_PLACEHOLDER
    login = token.user or "YOUR-LOGIN"
    sample = sample_request(token, base_url)
    method, path = sample or ("GET", "/rest/api/2/myself")
    url = base_url.rstrip("/") + path
    note = "" if sample else (
        "no common request matches this token's limit lines: replace the URL with one they allow")
    body = method in ("POST", "PUT", "PATCH")
    curl_x = "" if method == "GET" else f" -X {method}"
    curl_body = " -H 'Content-Type: application/json' -d '{}'" if body else ""
    curl = [f"curl --fail-with-body -sS{curl_x}{curl_body} -u {shlex.quote(f'{login}:{s}')} "
            f"{shlex.quote(url)}"]
    if token.user:
        curl.append(f"curl --fail-with-body -sS{curl_x}{curl_body} "
                    f"-H {shlex.quote(f'Authorization: Bearer {s}')} {shlex.quote(url)}")
    js_opts = f'method: "{method}", ' if method != "GET" else ""
    js_headers = "Authorization: auth" + (', "Content-Type": "application/json"' if body else "")
    js_body = ', body: "{}"' if body else ""
    javascript = [
        f'const auth = "Basic " + btoa("{login}:{s}");',
        f'const res = await fetch("{url}", {{ {js_opts}headers: {{ {js_headers} }}{js_body} }});',
        "const text = await res.text();",
        "if (!res.ok) { console.error(res.status, text); process.exit(1); }",
        "console.log(text);",
    ]
    if token.user:
        javascript.append(f'// Bearer: headers: {{ Authorization: "Bearer {s}" }}')
    py_body = ", json={}" if body else ""
    call = (f'requests.get("{url}"' if method == "GET"
            else f'requests.request("{method}", "{url}"')
    python = [
        "import sys",
        "import requests",
        f'r = {call}, auth=("{login}", "{s}"){py_body})',
        "if not r.ok:",
        "    sys.exit(f\"{r.status_code} {r.text}\")",
        "print(r.json())",
    ]
    if token.user:
        python.append(f'# Bearer: headers={{"Authorization": "Bearer {s}"}} instead of auth=')
    return {"method": method, "url": url, "note": note, "curl": "\n".join(curl),
            "javascript": "\n".join(javascript), "python": "\n".join(python)}


def snippets(token: Token, secret: str | None, base_url: str) -> str:
    """Ready-to-run first calls that exit non-zero on a deny: curl, JavaScript (Node 18+
    fetch, as an ES module: save as .mjs) and Python requests, Basic and Bearer."""
    parts = snippet_parts(token, secret, base_url)
    out = [f"# {parts['note']}"] if parts["note"] else []
    out += ["# curl" + (" (Basic, then Bearer)" if token.user else " (Basic)"), parts["curl"],
            "# JavaScript (Node 18+, save as first-call.mjs)", parts["javascript"],
            "# Python (requests)", parts["python"]]
    return "\n".join(out)


def snippets_json(token: Token, secret: str | None, base_url: str) -> dict[str, Any]:
    return {"id": token.id, "base_url": base_url, **snippet_parts(token, secret, base_url)}


def test_line(method: str, r: Any) -> str:
    """One line for ``token test``: the verdict, the request as judged, and why."""
    who = f" as {r.login}" if r.login else ""
    where = f" from {r.client_ip}" if r.client_ip else ""
    head = f"{method.upper()} {r.url}{who}{where}"
    if r.allowed:
        return f"ALLOW {head}: {r.reason} (Jira sees contextUser: {r.effective_user})"
    return f"DENY {r.status} {head}: {r.reason} ({r.code})"


AUDIT_COLUMNS = ("time", "token_id", "login", "effective_user", "method", "path", "decision",
                 "reason", "client_ip")


def _audit_row(r: AuditRecord) -> list[str]:
    row = {c: str(getattr(r, c)) for c in AUDIT_COLUMNS}
    extra = dict(r.extra)
    if extra.get("kind") == "admin":
        # Admin changes share the stream: show who did what in the same columns.
        row["decision"] = f"admin:{extra.get('action', '')}"
        row["login"] = extra.get("actor", "")
    return [row[c] for c in AUDIT_COLUMNS]


def audit_table(records: Sequence[AuditRecord]) -> str:
    return table([_audit_row(r) for r in records], [c.upper() for c in AUDIT_COLUMNS])


def audit_json(record: AuditRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)
