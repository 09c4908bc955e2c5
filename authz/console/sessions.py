"""Server-side console sessions: the browser holds only a random id, this process the rest.

Short by design: a session ends ``session_seconds`` after sign-in, and is re-checked with Jira
every ``recheck_seconds`` (see ``views``). Ids are stored hashed, so a memory dump or a log line
of the store never holds a usable cookie. Bounded: beyond ``max_sessions`` signed-in (and,
separately, anonymous) sessions the oldest go.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

SECRET_SHOWN_FOR = 300.0
"""A new token's secret waits this long at most for its one showing."""


@dataclass
class Session:
    csrf: str
    created: float
    expires: float
    user: str = ""
    """The Jira user name ('' before sign-in)."""
    display_name: str = ""
    admin: bool = False
    via: str = ""
    """How the user signed in: jira-cookie, jira-login or admin-credential."""
    recheck_at: float = 0.0
    flash: str = ""
    """A one-line message for the next page (e.g. "Revoked")."""
    secrets: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    """token id -> (secret, deadline): shown once, then removed."""

    @property
    def signed_in(self) -> bool:
        return bool(self.user)


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class SessionStore:
    def __init__(self, *, lifetime: float, max_sessions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self.clock = clock
        # Anonymous sessions (a sign-in form's CSRF token) apart from signed-in ones: anybody can
        # make the former, and a flood of them must not push real users out.
        self._anon: OrderedDict[str, Session] = OrderedDict()
        self._users: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._anon) + len(self._users)

    def _add(self, pool: OrderedDict[str, Session]) -> tuple[str, Session]:
        now = self.clock()
        sid = secrets.token_urlsafe(32)
        sess = Session(csrf=secrets.token_urlsafe(32), created=now, expires=now + self.lifetime)
        pool[_key(sid)] = sess
        while len(pool) > self.max_sessions:
            pool.popitem(last=False)
        return sid, sess

    def new(self) -> tuple[str, Session]:
        """A fresh anonymous session and its cookie value."""
        return self._add(self._anon)

    def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        key = _key(sid)
        for pool in (self._users, self._anon):
            sess = pool.get(key)
            if sess is not None:
                if self.clock() >= sess.expires:
                    del pool[key]
                    return None
                return sess
        return None

    def drop(self, sid: str | None) -> None:
        if sid:
            key = _key(sid)
            self._anon.pop(key, None)
            self._users.pop(key, None)

    def sign_in(self, old_sid: str | None, *, user: str, display_name: str, admin: bool,
                via: str, recheck_after: float) -> tuple[str, Session]:
        """A new id for the signed-in session (no fixation: the anonymous id is dropped)."""
        self.drop(old_sid)
        sid, sess = self._add(self._users)
        sess.user, sess.display_name, sess.admin, sess.via = user, display_name, admin, via
        sess.recheck_at = self.clock() + recheck_after
        return sid, sess

    def keep_secret(self, sess: Session, token_id: str, secret: str) -> None:
        sess.secrets[token_id] = (secret, self.clock() + SECRET_SHOWN_FOR)

    def take_secret(self, sess: Session, token_id: str) -> str | None:
        """The secret once; None ever after (or once its short wait is over)."""
        item = sess.secrets.pop(token_id, None)
        if item is None or self.clock() >= item[1]:
            return None
        return item[0]
