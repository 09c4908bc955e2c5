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


def snippets(token: Token, secret: str | None, base_url: str) -> str:
    """Ready-to-run first calls: curl, JavaScript fetch and Python requests, Basic and Bearer."""
    s = secret or SECRET_PLACEHOLDER
    login = token.user or "YOUR-LOGIN"
    url = base_url.rstrip("/") + "/rest/api/2/myself"
    out = [
        "# curl (Basic)",
        f"curl -u {shlex.quote(f'{login}:{s}')} {shlex.quote(url)}",
    ]
    if token.user:
        out += ["# curl (Bearer)",
                f"curl -H {shlex.quote(f'Authorization: Bearer {s}')} {shlex.quote(url)}"]
    out += [
        "# JavaScript (fetch)",
        f'const auth = "Basic " + btoa("{login}:{s}");',
        f'const res = await fetch("{url}", {{ headers: {{ Authorization: auth }} }});',
        "console.log(await res.json());",
    ]
    if token.user:
        out += [f'// Bearer: headers: {{ Authorization: "Bearer {s}" }}']
    out += [
        "# Python (requests)",
        "import requests",
        f'r = requests.get("{url}", auth=("{login}", "{s}"))',
        "print(r.status_code, r.json())",
    ]
    if token.user:
        out += [f'# Bearer: requests.get(url, headers={{"Authorization": "Bearer {s}"}})']
    return "\n".join(out)


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
