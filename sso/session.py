"""The browser SSO session: the only code that reads or writes the session cookie.

The cookie holds a random id; the session lives in the short-lived store under a
hash of that id, with an idle timeout (refreshed on use) and an absolute one.
The id is replaced at every login (no fixation).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Response, current_app, g, request

from .crypto import new_token

KIND = "session"


def cookie_name() -> str:
    # RFC 6265bis §4.1.3.2: __Host- pins the cookie to this host, https and path "/".
    settings = current_app.extensions["sso"].settings
    return "sso_session" if settings.development else "__Host-sso_session"


@dataclass
class BrowserSession:
    account_id: str
    connector_id: str
    auth_time: int
    amr: list[str]
    acr: str
    sid: str = field(default_factory=lambda: new_token(16))
    created_at: int = field(default_factory=lambda: int(time.time()))
    clients: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BrowserSession:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _store():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"].store


def _timeouts() -> tuple[int, int]:
    s = current_app.extensions["sso"].settings
    return s.session_idle_timeout, s.session_absolute_timeout


def _ttl(session: BrowserSession) -> int:
    idle, absolute = _timeouts()
    remaining = session.created_at + absolute - int(time.time())
    return max(1, min(idle, remaining))


def current() -> BrowserSession | None:
    """The session for this request, or None (absent, expired or past its absolute limit)."""
    if "sso_session" in g:
        return g.sso_session  # type: ignore[no-any-return]
    found = None
    token = request.cookies.get(cookie_name())
    if token and len(token) <= 128:
        data = _store().get(KIND, token)
        if data is not None:
            session = BrowserSession.from_dict(data)
            _, absolute = _timeouts()
            if session.created_at + absolute > time.time():
                _store().touch(KIND, token, _ttl(session))  # sliding idle timeout
                found = session
            else:
                _store().delete(KIND, token)
    g.sso_session = found
    return found


def start(session: BrowserSession, response: Response) -> None:
    """Store a new session under a fresh id and set the cookie; drops any previous one."""
    old = request.cookies.get(cookie_name())
    if old and len(old) <= 128:
        _store().delete(KIND, old)
    token = new_token(32)
    _store().put(KIND, token, asdict(session), _ttl(session))
    g.sso_session = session
    g.sso_session_token = token
    _set_cookie(response, token)


def save(session: BrowserSession) -> None:
    """Persist changes (e.g. a portal joined the session) under the current id."""
    token = g.get("sso_session_token") or request.cookies.get(cookie_name())
    if token:
        _store().put(KIND, token, asdict(session), _ttl(session))


def end(response: Response) -> BrowserSession | None:
    session = current()
    token = g.get("sso_session_token") or request.cookies.get(cookie_name())
    if token and len(token) <= 128:
        _store().delete(KIND, token)
    g.sso_session = None
    response.delete_cookie(cookie_name(), path="/", secure=not _dev(), httponly=True, samesite="Lax")
    return session


def _dev() -> bool:
    return bool(current_app.extensions["sso"].settings.development)


def _set_cookie(response: Response, token: str) -> None:
    # No Max-Age: a browser session cookie; the server enforces both timeouts.
    response.set_cookie(
        cookie_name(), token, path="/", secure=not _dev(), httponly=True, samesite="Lax"
    )
