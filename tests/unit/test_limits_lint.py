"""Restriction lines that parse but do not mean what they look like (docs/product.md §4, issue 16
item 3): unknown clauses are refused, never-matching and prefix-widening lines warned about."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.domain import limits
from authz.domain.limits import LimitSyntaxError, lint, lint_line, parse_line


@pytest.mark.parametrize("line", [".*[Foo::a==b]", ".*/rest/.*[queryparam::x==1]",
                                  "[get].*/x[Jsondata::a==b]", ".*[Header::x==y].*"])
def test_unknown_clause_is_refused_not_read_as_a_character_class(line: str) -> None:
    with pytest.raises(LimitSyntaxError, match="unknown clause"):
        parse_line(line)


def test_unknown_clause_with_wrong_case_suggests_the_right_one() -> None:
    with pytest.raises(LimitSyntaxError, match=r"did you mean \[QueryParam::"):
        parse_line(".*/search[queryparam::jql==x]")


@pytest.mark.parametrize("line", ["[get]/rest/api/2/issue/.*", "a", "/rest/.*", "rest/api/.*",
                                  "[post]/secure/.*", "z.*", "jira.example.com/rest/.*"])
def test_never_matching_lines_are_warned_about(line: str) -> None:
    warnings = lint_line(line)
    assert any("can never match" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("line", "name"),
    [(".*/rest/api/2/issue/ALLOWED-1.*", "ALLOWED-1"), (".*/rest/api/2/issue.*", "issue"),
     ("[post].*/issue/KANBAN-100/comment.*", "comment"), (".*/issue/A-[0-9]+.*", "A-[0-9]+")],
)
def test_prefix_widening_lines_are_warned_about(line: str, name: str) -> None:
    warnings = lint_line(line)
    assert any(f"'{name}.*' also allows longer names" in w for w in warnings), warnings


@pytest.mark.parametrize("line", ["[get].*/rest/api/2/issue/.*", ".*/rest/api/2/myself",
                                  ".*/rest/api/2/issue/A-1(/.*)?", "https://jira/rest/.*",
                                  "(?i)HTTPS://JIRA/rest/.*", ".*/rest/api/2/search"
                                  "[QueryParam::jql==project.*]", "[get,post].*/rest/.*/"])
def test_good_lines_get_no_warning(line: str) -> None:
    assert lint_line(line) == []


def test_lint_numbers_lines_and_skips_unparseable_ones() -> None:
    out = lint([".*/ok/", "[get]/rest/x", "[gte].*"])
    assert len(out) == 1 and out[0].startswith("line 2: ")


URLS = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}",
    st.sampled_from(["http", "https"]), st.sampled_from(["jira", "jira.example.com:8443", "a"]),
    st.text(alphabet="/abcAB12-._", max_size=20).map(lambda p: "/" + p),
)
REGEX = st.text(alphabet="/.*abcAB12-_htps:()?[]|+", min_size=1, max_size=15)


@settings(max_examples=400, deadline=None)
@given(pattern=REGEX, urls=st.lists(URLS, min_size=1, max_size=5))
def test_a_line_called_never_matching_matches_no_url(pattern: str, urls: list[str]) -> None:
    """The warning is never a false alarm: RE2's match bounds are sound."""
    try:
        lim = parse_line(pattern)
    except LimitSyntaxError:
        return
    if any("can never match" in w for w in lint_line(pattern)):
        assert not any(limits.fullmatch(lim.url, u) for u in urls)
