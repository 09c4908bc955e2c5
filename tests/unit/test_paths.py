"""Path normal form (docs/product.md §6): whatever Tomcat could resolve differently is refused."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.domain import paths
from authz.domain.paths import is_under_prefix, non_normal_reason, split_path


@pytest.mark.parametrize(
    "path",
    [
        "/rest/api/2/issue/ABC-1",
        "/rest/api/2/issue/ABC-1/comment",
        "/rest/api/2/issue/SCRUM-12/comment/10001",
        "/rest/api/2/search",
        "/rest/api/2/project",
        "/rest/api/latest/myself",
        "/rest/extender/1.0/customField/all",
        "/rest/agile/1.0/board/7/sprint",
        "/rest/api/2/user/picker%20x",
        "/rest/api/2/attachment/file%20name.txt",
        "/rest/api/2/filter/100%25done",  # %25 followed by non-hex
        "/rest/api/2/x/%25",  # %25 at the end
        "/rest/api/2/x/%25z1",
        "/rest/api/2/issue/ABC-1/",  # trailing slash
        "/rest/api/2/issue/file.txt",  # a dot inside a segment
        "/rest/api/2/issue/...",  # three dots is not a dot segment
        "/rest/api/2/issue/.hidden",
        "/rest/api/2/issue/a..b",
        "/rest/api/2/user%40example.com",
        "/rest/api/2/x/%C3%A4",  # valid UTF-8 escapes
        "/rest/api/2/x/a+b",
        "/rest/api/2/x/a:b@c!$&'()*=,~_-",
        "/",
        "/jira/rest/api/2/issue/ABC-1",
    ],
)
def test_normal_paths_accepted(path: str) -> None:
    assert non_normal_reason(path) is None


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/rest/api/2/issue/../project", "dot segment"),
        ("/rest/api/2/issue/..", "dot segment"),
        ("/rest/api/2/./issue", "dot segment"),
        ("/rest/api/2/issue/.", "dot segment"),
        ("/..", "dot segment"),
        ("/.", "dot segment"),
        ("/rest//api/2/issue", "'//'"),
        ("//rest/api/2/issue", "'//'"),
        ("/rest/api/2/issue//", "'//'"),
        ("/rest/api/2/issue/%2e%2e/project", "'.'"),
        ("/rest/api/2/issue/%2E%2E/project", "'.'"),
        ("/rest/api/2/issue/.%2e/project", "'.'"),
        ("/rest/api/2/issue/%2E/project", "'.'"),
        ("/rest/api/2/issue%2f..%2fproject", "'/'"),
        ("/rest/api/2/issue%2F..%2Fproject", "'/'"),
        ("/rest/api/2/issue%5c..%5cproject", "'\\\\'"),
        ("/rest/api/2/issue%5C..", "'\\\\'"),
        ("/rest/api/2/issue\\..\\project", "'\\\\'"),
        ("/rest/api/2/issue;x=1", "';'"),
        ("/rest/api/2/issue/..;/project", "';'"),
        ("/rest/api/2/issue/%2e%2e;/project", "';'"),
        ("/rest/api/2/issue%3b", "';'"),
        ("/rest/api/2/issue%3B..", "';'"),
        ("/rest/api/2/issue%00", "control"),
        ("/rest/api/2/issue%0a", "control"),
        ("/rest/api/2/issue%7f", "\\x7f"),
        ("/rest/api/2/issue%7F", "\\x7f"),
        ("/rest/api/2/issue\x00", "control"),
        ("/rest/api/2/issue\r\nX: y", "control"),
        ("/rest/api/2/issue\x7f", "\\x7f"),
        ("/rest/api/2/issue\t", "control"),
        ("/rest/api/2/issue/ä", "non-ASCII"),
        ("/rest/api/2/issue/\u2025", "non-ASCII"),  # two-dot leader
        ("/rest/api/2/issue/\uff0e\uff0e", "non-ASCII"),  # full-width dots
        ("/rest/api/2/issue/%c0%ae%c0%ae/project", "UTF-8"),  # overlong '.'
        ("/rest/api/2/issue/%C0%AE", "UTF-8"),
        ("/rest/api/2/issue%c0%af..", "UTF-8"),  # overlong '/'
        ("/rest/api/2/issue/%e0%80%ae", "UTF-8"),  # 3-byte overlong '.'
        ("/rest/api/2/x/%ff", "UTF-8"),
        ("/rest/api/2/issue/%252e%252e/project", "double"),
        ("/rest/api/2/issue%252fproject", "double"),
        ("/rest/api/2/x/%2525", "double"),
        ("/rest/api/2/x/%", "malformed"),
        ("/rest/api/2/x/%2", "malformed"),
        ("/rest/api/2/x/%zz", "malformed"),
        ("/rest/api/2/x/%g0", "malformed"),
        ("/rest/api/2/x/%%32e", "malformed"),
        ("/rest/api/2/x/%-1", "malformed"),
        ("/rest/api/2/x/% 2", "malformed"),
        ("/rest/api/2/issue#frag", "'#'"),
        ("rest/api/2/issue", "start with '/'"),
        ("", "start with '/'"),
        ("*", "start with '/'"),
        ("http://jira/rest/api/2/issue", "start with '/'"),
    ],
)
def test_non_normal_paths_refused(path: str, words: str) -> None:
    reason = non_normal_reason(path)
    assert reason is not None, path
    assert words.lower() in reason.lower(), reason


@pytest.mark.parametrize(
    "path",
    [
        "/rest/api/2/issue/%25%32%65%25%32%65/project",  # decodes twice to '..'
        "/rest/api/2/issue%25%32%66project",  # decodes twice to '/'
        "/rest/api/2/issue%25%33%62",  # decodes twice to ';'
        "/rest/api/2/issue/%25%32e%25%32e/project",
    ],
)
def test_fully_double_encoded_escapes_refused(path: str) -> None:
    assert non_normal_reason(path) is not None


@pytest.mark.parametrize(
    "path", ["/rest/api/2/issue/%53CRUM-1", "/rest/api/2/%69ssue/ABC-1", "/rest/api/2/x/%7e"]
)
def test_encoded_unreserved_characters_refused(path: str) -> None:
    assert non_normal_reason(path) is not None


# --- split_path / is_under_prefix -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/rest/api/2/issue", ("/rest/api/2/issue", "")),
        ("/rest/api/2/search?jql=a", ("/rest/api/2/search", "jql=a")),
        ("/a?b?c", ("/a", "b?c")),
        ("/a?", ("/a", "")),
        ("/a?x=/rest/api/2/issue", ("/a", "x=/rest/api/2/issue")),
        ("?q", ("", "q")),
        ("", ("", "")),
        ("/a?jql=project%3DX;order", ("/a", "jql=project%3DX;order")),
    ],
)
def test_split_path_at_first_question_mark(raw: str, want: tuple[str, str]) -> None:
    assert split_path(raw) == want


def test_semicolon_in_query_does_not_affect_path() -> None:
    path, query = split_path("/rest/api/2/search?jql=a;b")
    assert non_normal_reason(path) is None
    assert query == "jql=a;b"


@pytest.mark.parametrize(
    ("path", "prefixes", "want"),
    [
        ("/rest/api/2/issue", ("/rest/",), True),
        ("/rest/", ("/rest/",), True),
        ("/rest", ("/rest/",), False),
        ("/restful/x", ("/rest/",), False),
        ("/REST/api/2", ("/rest/",), False),
        ("/secure/Dashboard.jspa", ("/rest/",), False),
        ("/jira/rest/api/2/issue", ("/jira/rest/",), True),
        ("/rest/api/2/issue", ("/jira/rest/",), False),
        ("/x/y", ("/rest/", "/x/"), True),
        ("/x/y", (), False),
    ],
)
def test_has_prefix(path: str, prefixes: tuple[str, ...], want: bool) -> None:
    assert is_under_prefix(path, prefixes) is want


# --- properties --------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "/", "/", "/", ".", "..", "a", "rest", "ABC-1", "%", "%2", "%2e", "%2E", "%2f", "%2F",
        "%5c", "%5C", "%3b", "%25", "%252e", "%32", "%65", "%c0", "%ae", "%41", "%20", "%00",
        ";", "\\", "?", "#", "\x00", "\n", "ä", "~", "e", "f", "5", "c", "%e2%80%a5", "%3f",
        "%23", "%3B", "%5C", "%2e%2e", "..;",
    ]
)
_PATHS = st.one_of(
    st.text(max_size=60),
    st.lists(_PIECES, max_size=20).map("".join),
    st.lists(_PIECES, max_size=20).map(lambda p: "/" + "".join(p)),
)


@given(_PATHS)
def test_arbitrary_paths_never_raise(path: str) -> None:
    reason = non_normal_reason(path)
    assert reason is None or (isinstance(reason, str) and reason)


@given(_PATHS)
def test_accepted_paths_are_in_normal_form(raw: str) -> None:
    path, _ = split_path(raw)  # as the server sees it: the query is split off first
    if non_normal_reason(path) is not None:
        return
    assert path.startswith("/")
    assert path.isascii()
    decoded = unquote_to_bytes(path).decode("utf-8")  # must be valid UTF-8
    # Decoding added no separator: the segments Tomcat sees are the segments we matched.
    assert decoded.count("/") == path.count("/")
    assert "//" not in decoded
    for seg in decoded.split("/"):
        assert seg not in (".", ".."), path
    # Encoded '?' and '#' are plain data for Tomcat; ';' and '\\' are not.
    for ch in ";\\":
        assert ch not in decoded, path
    assert "#" not in path
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded), path
    # No escape that decodes to something dangerous survives as '%25XX'.
    assert not re.search(r"%25[0-9A-Fa-f]{2}", path), path


@given(st.text(max_size=80))
def test_split_path_is_lossless(raw: str) -> None:
    path, query = split_path(raw)
    assert "?" not in path
    assert path + ("?" + query if "?" in raw else "") == raw


_PLAIN_PIECES = st.sampled_from(["/", "/", ".", "..", "...", "a", "Z", "9", "-", "_", "~", "!",
                                 "$", "&", "'", "(", "*", "+", ",", "=", ":", "@", "%41", ";",
                                 "\\", "\n", "ä", "#", " "])


@given(st.one_of(_PATHS, st.lists(_PLAIN_PIECES, max_size=24).map("".join)))
def test_quick_pattern_agrees_with_the_rules(path: str) -> None:
    # The quick pattern only ever vouches for paths that every rule accepts.
    if path and paths._PLAINLY_NORMAL.fullmatch(path) is not None:
        assert paths._checked_reason(path) is None, path
    assert non_normal_reason(path) == (
        None if path and paths._PLAINLY_NORMAL.fullmatch(path) else paths._checked_reason(path)
    )


# --- hosts and schemes (issue 13) ---------------------------------------------------------------

from authz.domain.paths import host_error, scheme_error  # noqa: E402


@pytest.mark.parametrize("host", ["jira.example.com", "jira:8080", "127.0.0.1:8000",
                                  "[::1]:8000", "[2001:db8::1]", "ex%41mple.com", "a-b_c~d",
                                  "jira.example.com:"])
def test_valid_hosts(host: str) -> None:
    assert host_error(host) is None


@pytest.mark.parametrize("host", ["x/rest/api/2/issue/KANBAN-100/comment", "jira?x", "jira#x",
                                  "a@jira", "jira\\x", "jira x", "", "jira:8o", "[::1", "[::1]x",
                                  ":80", "jira:80:80", "é.example.com", "jira\t", "%", "a%2",
                                  "h" * 300])
def test_invalid_hosts(host: str) -> None:
    assert host_error(host) is not None


@given(st.text(max_size=40))
def test_a_valid_host_never_holds_path_or_authority_text(host: str) -> None:
    if host_error(host) is None:
        assert not set(host) & set("/?#@\\ \t\r\n")
        assert host.isascii()


def test_schemes() -> None:
    assert scheme_error("http") is None and scheme_error("https") is None
    for bad in ("HTTP", "ftp", "", "https://x", "http,https", " http"):
        assert scheme_error(bad) is not None
