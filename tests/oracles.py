"""Test oracles shared by the suites: independent statements of what another program does,
written once (the tests compare our answers with them)."""

from __future__ import annotations

from urllib.parse import unquote


def tomcat_view(path: str) -> str:
    """The path Tomcat serves: `;params` cut per segment, %-decoded, dot segments resolved.

    The oracle for "did a request reach Jira on a path its limit allows": if this still matches
    the limit, Jira serves an allowed resource."""
    out: list[str] = []
    for seg in path.split("/")[1:]:
        seg = unquote(seg.split(";", 1)[0], errors="replace")
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    return "/" + "/".join(out)
