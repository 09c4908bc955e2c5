"""Render a hardening run's figures (JIRA_AUTHZ_HARDENING_REPORT=FILE) as Markdown.

    python tests/hardening/render_report.py FILE > /tmp/figures.md

Prints the headline figures and the bypass table (attempt, expected, observed) that
docs/hardening.md carries.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _outcome(o: dict[str, Any]) -> str:
    text = f"{o['status']} {o['by']}"
    extra = []
    if "identity" in o:
        extra.append(f"contextUser={o['identity'] if o['identity'] is not None else '—'}")
    if o.get("authorization") == "present":
        extra.append("Authorization kept")
    if "jira_path" in o:
        extra.append(f"path `{o['jira_path']}`")
    if "jira_method" in o and o["jira_method"] != "GET":
        extra.append(f"method {o['jira_method']}")
    if o.get("absent_headers"):
        extra.append("without " + ", ".join(o["absent_headers"]))
    if "reason" in o:
        extra.append(f"“{o['reason']}”")
    return text + (f" ({', '.join(extra)})" if extra else "")


_OBSERVED = ("status", "by", "identity", "authorization", "jira_path", "jira_method")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(data: dict[str, Any]) -> str:
    c = data["counts"]
    out = [
        f"| figure | {'full' if data['full'] else 'short'} run |",
        "|---|---|",
        f"| requests sent through Envoy | {c.get('requests sent', 0):,} |",
        f"| faults injected | {c.get('faults injected', 0)} |",
        f"| bypass attempts tried | {c.get('bypass attempts', 0)} |",
        f"| fuzz inputs | {c.get('fuzz inputs', 0):,} |",
        f"| audit events lost | {c.get('audit events lost', 0)} |",
        f"| audit events lost on a crash (SIGKILL, by design) | "
        f"{c.get('audit events lost on a crash (SIGKILL)', 0)} |",
        f"| audit events duplicated | {c.get('audit events duplicated', 0)} |",
        f"| wrongful allows | {c.get('wrongful allows', 0)} |",
    ]
    for key, value in data["notes"].items():
        if key.startswith("load") and isinstance(value, dict):
            rss = value["authz rss kib (start, after warm-up, end)"]
            out.append(f"| {key}: authz RSS start → after warm-up → end | "
                       f"{rss[0] / 1024:.1f} → {rss[1] / 1024:.1f} → {rss[2] / 1024:.1f} MiB |")
    scan = data.get("secret_scan", {})
    out.append(f"| secrets searched / findings | {scan.get('secrets', 0)} / "
               f"{len(scan.get('findings', []))} |")
    out += ["", "| # | group | attempt | expected | observed |", "|---|---|---|---|---|"]
    for i, row in enumerate(data["bypass_rows"], 1):
        exp, obs = _outcome(row["expected"]), _outcome(row["observed"])
        # Expectations checked on the reply itself (absent headers, reason) are not echoed in
        # the observation: a row is "=" when every observable expectation matched.
        observable = {k: v for k, v in row["expected"].items() if k in _OBSERVED}
        same = "= " if {k: v for k, v in row["observed"].items() if k in observable} == (
            observable) else "≠ "
        out.append(f"| {i} | {row['group']} | {_cell(row['attempt'])} | {_cell(exp)} | "
                   f"{same}{_cell(obs)} |")
    out += ["", "```json", json.dumps(data["notes"], indent=2, default=str), "```"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f)))
