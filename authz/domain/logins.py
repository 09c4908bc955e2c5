"""The one rule for "is this the same Jira user": every comparison of logins goes through here.

Jira lower-cases user names (Java ``toLowerCase``), which keeps ``maß`` and ``mass``, ``ﬀ`` and
``ff`` apart as different accounts. Unicode case folding (``str.casefold``) would merge them:
a token allowed for one would act for the other, and ``token list --user mass`` would list
``maß``'s tokens. So logins are lower-cased, never case-folded (docs/product.md §2).
"""

from __future__ import annotations


def login_key(login: str) -> str:
    """The form two logins are compared (and counted, and indexed) in."""
    return login.lower()


def same_user(a: str, b: str) -> bool:
    return login_key(a) == login_key(b)
