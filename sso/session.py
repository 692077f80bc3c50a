"""The browser SSO session: the only code that reads or writes the session cookie.

The cookie holds ``handle.secret``.  The session lives in the short-lived store
under the handle (hashed by the store), and holds only a hash of the secret, so
neither a store dump nor a log of handles yields a usable cookie.  The handle is
replaced at login, step-up and enterprise switch (no fixation); the OIDC ``sid``
stays the same for the whole session, so portals can be told when it ends.
Idle timeout slides on use; the absolute timeout never moves.

Writes per request: at most one store write for the session (the sliding expiry
is an ``EXPIRE``, or comes with the ``SET`` when the session changed or its
durable record is synced) and at most one ``UPDATE`` of its SessionRecord: when
the handle changes, or when the record's idle-expiry estimate is more than
``RECORD_SYNC`` seconds old.  A portal joining the session is not a record write:
the record's ``clients`` is a snapshot taken at those syncs, and single logout
tells the portals of the session's grants as well (sso.logout.end_session), the
ones that redeemed a code under this ``sid``.  A
caller that may change the session later in the request (the authorization
endpoint) reads it with ``current(defer=True)`` and ends with :func:`save` or
:func:`settle`, so the record and the store are written once, not twice.

A write-back never brings back a session that ended after it was read (a logout
by another request or instance): the record's UPDATE is for a record not ended,
the store's write is ``SET ... XX`` / ``EXPIRE`` (only while the entry exists),
and either one finding the session gone makes :func:`save` / :func:`settle`
answer False, so the caller treats the request as having no session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from flask import Response, current_app, g, request

from .crypto import new_token
from .db import DriverSQL, driver_connection, driver_execute, own_connection, unit
from .db import commit as commit_unit
from .db import rollback as rollback_unit

KIND = "session"
MAX_COOKIE = 200
# How stale the durable record's idle-expiry estimate may get before it is refreshed.
RECORD_SYNC = 60


def cookie_name(development: bool | None = None) -> str:
    """The session cookie's name (``development``: the settings' flag; None: this app's)."""
    # RFC 6265bis §4.1.3.2: __Host- pins the cookie to this host, https and path "/".
    return "sso_session" if (_dev() if development is None else development) else "__Host-sso_session"


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
    # Legal-person context chosen for this session (enterprise, role, authorisation).
    acting: dict[str, Any] | None = None
    # When the second factor was last proven (step-up freshness).
    second_factor_time: int | None = None
    user_agent: str = ""
    ip: str = ""
    handle: str = ""  # the store key of this session; not persisted inside itself
    secret_hash: str = ""
    synced_at: int = 0  # when the durable SessionRecord was last brought up to date
    # Not stored: this request's read already synced the record (the SSO hop's one
    # statement, sso.consent.standing_with_sync); the write-back stores synced_at
    # with a SET and does not UPDATE the record again.
    record_synced: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BrowserSession:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict[str, Any]:
        # Shallow (dataclasses.asdict deep-copies): the stores only serialise it.
        return {name: getattr(self, name) for name in _STORED_FIELDS}


_STORED_FIELDS = tuple(name for name in BrowserSession.__dataclass_fields__ if name not in ("handle", "record_synced"))


# g attribute: the session read by current(defer=True) still owes its sliding expiry
# (and, when stale, its record sync) to save() or settle().
_PENDING = "sso_session_pending"


def _gw():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def _store():  # type: ignore[no-untyped-def]
    return _gw().store


def _dev() -> bool:
    return bool(_gw().settings.development)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _ttl(session: BrowserSession) -> int:
    s = _gw().settings
    remaining = session.created_at + s.session_absolute_timeout - int(time.time())
    return max(1, min(s.session_idle_timeout, remaining))


# The session cookie's value when sso.oidc.hop serves a request without Flask's
# request cycle (None: read it from Flask's request).
LANE_COOKIE: ContextVar[str | None] = ContextVar("sso_lane_session_cookie", default=None)


def _parse_cookie() -> tuple[str, str] | None:
    raw = LANE_COOKIE.get()
    if raw is None:
        raw = request.cookies.get(cookie_name(), "")
    if not raw or len(raw) > MAX_COOKIE or raw.count(".") != 1:
        return None
    handle, secret = raw.split(".")
    return (handle, secret) if handle and secret else None


def load(handle: str) -> BrowserSession | None:
    data = _store().get(KIND, handle)
    if data is None:
        return None
    session = BrowserSession.from_dict(data)
    session.handle = handle
    return session


def sync_due(session: BrowserSession) -> bool:
    """Whether a write-back of ``session`` now also updates its durable record (stale)."""
    return time.time() - session.synced_at > RECORD_SYNC


def current(*, defer: bool = False) -> BrowserSession | None:
    """The session for this request, or None (absent, expired, forged or past its absolute limit).

    The idle timeout slides now (one store write: ``EXPIRE``, or ``SET`` with the
    record's sync when that is due); with ``defer=True`` it is left to
    :func:`save` or :func:`settle`, which the caller must call before it answers.
    """
    if "sso_session" in g:
        return g.sso_session  # type: ignore[no-any-return]
    found = None
    parsed = _parse_cookie()
    if parsed is not None:
        handle, secret = parsed
        session = load(handle)
        if session is not None and hmac.compare_digest(session.secret_hash, _hash(secret)):
            if session.created_at + _gw().settings.session_absolute_timeout > time.time():
                if defer:
                    setattr(g, _PENDING, True)
                    found = session
                elif _slide(session, changed=False, commit=True):
                    found = session  # else: ended since it was read (a logout elsewhere)
            else:
                from .logout import end_session

                end_session(session.sid, "absolute_timeout")
    g.sso_session = found
    return found


def forget() -> None:
    """This request has no session after all (its account is no longer active, or
    the session ended meanwhile): nothing is written back for it."""
    g.pop(_PENDING, None)
    g.sso_session = None


def signed_in() -> tuple[BrowserSession, Any] | tuple[None, None]:
    """The session and its account, when both exist and the account is active."""
    from .db import db
    from .models import Account

    session = current()
    account = db.session.get(Account, session.account_id) if session else None
    if session is None or account is None or account.status != "active":
        return None, None
    return session, account


def _write(session: BrowserSession, response: Response, *, commit: bool = True, new: bool = False) -> None:
    """Store the session under a fresh handle + secret and set the cookie (``new``: see _sync_record)."""
    handle, secret = new_token(16), new_token(32)
    session.handle = handle
    session.secret_hash = _hash(secret)
    if not _sync_record(session, commit=commit, new=new):
        g.sso_session = None  # ended meanwhile (rotate() racing a logout): not brought back
        return
    _store().put(KIND, handle, session.to_dict(), _ttl(session))
    g.sso_session = session
    # No Max-Age: a browser-session cookie; the server enforces both timeouts.
    response.set_cookie(cookie_name(), f"{handle}.{secret}", path="/", secure=not _dev(), httponly=True, samesite="Lax")


def start(session: BrowserSession, response: Response, *, commit: bool = True) -> None:
    """A new login: drop whatever session the browser had and issue a new one.

    ``commit=False``: the new record waits for the caller's commit (the login's
    audit row goes in the same transaction).
    """
    old = _parse_cookie()
    if old is not None:
        _store().delete(KIND, old[0])
    session.user_agent = (request.headers.get("User-Agent") or "")[:200]
    session.ip = request.remote_addr or ""
    _write(session, response, commit=commit, new=True)  # a new session: a new sid


def rotate(session: BrowserSession, response: Response) -> None:
    """Same session (same sid), new handle and secret: after step-up or an enterprise switch."""
    if session.handle:
        _store().delete(KIND, session.handle)
    _write(session, response)


def _naive_utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


@cache
def _record_update() -> Any:
    """The record's UPDATE, built once (its construction cost more than its execution's Python)."""
    from sqlalchemy import bindparam

    from .models import SessionRecord

    table = SessionRecord.__table__
    columns = ("handle", "clients", "last_seen_at", "expires_at")
    return (
        table.update()
        # Never for an ended session: a logout that won the race stays a logout.
        .where(table.c.sid == bindparam("b_sid"), table.c.ended_at.is_(None))
        .values({name: bindparam("b_" + name, type_=table.c[name].type) for name in columns})
    )


# The same UPDATE for PostgreSQL, straight on the driver (sso.db.driver_execute).
_RECORD_UPDATE_SQL = DriverSQL(
    """
UPDATE session_records
SET handle = %(b_handle)s, clients = CAST(%(b_clients)s AS json),
    last_seen_at = %(b_last_seen_at)s, expires_at = %(b_expires_at)s
WHERE session_records.sid = %(b_sid)s AND session_records.ended_at IS NULL
"""
)


def _record_changes(session: BrowserSession) -> dict[str, Any]:
    """What a sync writes to the session's record (its columns, by name)."""
    from datetime import timedelta

    from .models import utcnow

    now = utcnow()
    return {
        "handle": session.handle,
        "clients": list(session.clients),
        "last_seen_at": now,
        "expires_at": now + timedelta(seconds=_ttl(session)),
    }


def _update_params(sid: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The record's UPDATE parameters (``b_`` + column, ``b_sid``), as _record_update() takes them."""
    params = {"b_" + name: value for name, value in changes.items()}
    params["b_sid"] = sid
    return params


def _driver_params(params: dict[str, Any]) -> dict[str, Any]:
    """The same for the driver (_RECORD_UPDATE_SQL): JSON as SQLAlchemy's JSON type writes it."""
    params["b_clients"] = json.dumps(params["b_clients"])
    return params


def record_sync_params(session: BrowserSession) -> dict[str, Any]:
    """The record's sync as driver parameters, as _RECORD_UPDATE_SQL takes them."""
    return _driver_params(_update_params(session.sid, _record_changes(session)))


def synced_by_read(session: BrowserSession) -> None:
    """The record was synced by this request's read (sso.consent.standing_with_sync):
    the write-back stores the session (SET, with synced_at) and UPDATEs nothing."""
    session.record_synced = True
    session.synced_at = int(time.time())


def _update_record(sid: str, changes: dict[str, Any]) -> int:
    """The record's UPDATE (only while it has not ended): how many rows it changed."""
    from .db import db

    params = _update_params(sid, changes)
    connection = driver_connection(db.session)
    if connection is None:
        return int(db.session.execute(_record_update(), params).rowcount)
    return int(driver_execute(connection, _RECORD_UPDATE_SQL, _driver_params(params)).rowcount)


def _record_exists(sid: str) -> bool:
    from sqlalchemy import select

    from .models import SessionRecord

    table = SessionRecord.__table__
    return unit().execute(select(table.c.sid).where(table.c.sid == sid)).first() is not None


def _sync_record(session: BrowserSession, *, commit: bool = True, new: bool = False) -> bool:
    """Bring the durable SessionRecord (single-logout index) up to date.

    One UPDATE when the record exists and has not ended (every time but the
    first); with ``commit=False`` the caller commits it with its own changes.
    ``new``: the session was just made (start()), so its record cannot exist: no
    UPDATE tried.  False, with nothing written: the record has ended (a logout
    since the session was read); the caller must not write the session back.
    """
    from .db import db
    from .models import SessionRecord

    settings = _gw().settings
    changes = _record_changes(session)
    now = changes["last_seen_at"]
    updated = 0 if new else _update_record(session.sid, changes)
    if not updated:
        # No row updated: none yet (insert it), or an ended one (a second statement,
        # only off the usual path).
        if not new and _record_exists(session.sid):
            return False
        values = {
            "sid": session.sid,
            "account_id": session.account_id,
            "created_at": now,
            "absolute_expires_at": _naive_utc(session.created_at + settings.session_absolute_timeout),
            "user_agent": session.user_agent,
            "ip": session.ip,
            **changes,
        }
        own = own_connection()
        if own is not None:
            # The request's own connection (sso.db.open_own_connection): the row goes in
            # its transaction, now (where the Session would flush it: before the audit
            # append's lock on the chain head).
            own.execute(SessionRecord.__table__.insert(), values)  # compiled once, cached by its keys
        else:
            db.session.add(SessionRecord(**values))
    if commit:
        commit_unit()
    session.synced_at = int(time.time())
    return True


# Another short-lived entry written with the session's write-back, in the same round
# trip and only if the session is still there (the authorization code it was issued):
# (kind, key, value, ttl).
Entry = tuple[str, str, dict[str, Any], int]


def _slide(session: BrowserSession, *, changed: bool, commit: bool, with_entry: Entry | None = None) -> bool:
    """The sliding idle timeout, with the session's changes and the record's sync when due.

    One store write: ``SET ... XX`` (value and TTL) when the session changed or its
    record is synced now, ``EXPIRE`` otherwise; one record ``UPDATE`` at most, and
    only when the record is stale (a change such as a portal joining is the store's).
    Neither writes a session that is gone: False when it has ended (record) or left
    the store (logout, expiry) since it was read.  ``with_entry`` is stored with the
    session's write, atomically, or not at all.  A record already synced by this
    request's read (:func:`synced_by_read`, the SSO hop) is not UPDATEd again; the
    store write is still the SET, with the new ``synced_at``.
    """
    store = _store()
    sync = sync_due(session)  # False once synced_by_read() (synced_at is now)
    if changed or sync or session.record_synced:
        # The record's UPDATE is committed only once the store took the write: a
        # handle the store dropped meanwhile (a logout, a rotation) is not put back
        # in the record, where a later logout would delete it instead of the live one.
        if sync and not _sync_record(session, commit=False):
            return False
        if with_entry is None:
            stored = store.replace(KIND, session.handle, session.to_dict(), _ttl(session))
        else:
            stored = store.replace_and_put(KIND, session.handle, session.to_dict(), _ttl(session), with_entry)
        if not stored:
            if commit and sync:
                rollback_unit()  # else: the caller's transaction, which it rolls back
            return False
        if commit and sync:
            commit_unit()
        return True
    if with_entry is None:
        return bool(store.touch(KIND, session.handle, _ttl(session)))
    return bool(store.touch_and_put(KIND, session.handle, _ttl(session), with_entry))


def _put(entry: Entry | None) -> bool:
    if entry is not None:
        _store().put(*entry)
    return True


def save(session: BrowserSession, *, commit: bool = True, with_entry: Entry | None = None) -> bool:
    """Persist changes (a portal joined, ...) under the current handle.

    ``commit=False``: the record's update waits for the caller's commit (the store
    is written now; a portal recorded there but not in the record had no code yet).
    Also pays what ``current(defer=True)`` deferred (the write slides the expiry).
    False: the session ended since it was read; nothing was stored, and with
    ``commit=False`` the caller rolls back.  ``with_entry`` (kind, key, value, ttl)
    is stored with the session's write (same round trip), never without it.
    """
    if session.handle:
        g.pop(_PENDING, None)
        return _slide(session, changed=True, commit=commit, with_entry=with_entry)
    return _put(with_entry)


def settle(session: BrowserSession | None, *, commit: bool = True, with_entry: Entry | None = None) -> bool:
    """What ``current(defer=True)`` left undone, if :func:`save` did not do it since.

    The sliding expiry (``EXPIRE``), or the record's sync and the store write when
    the record is stale.  ``commit=False``: the record's update waits for the
    caller's commit.  False: the session ended since it was read (as :func:`save`).
    ``with_entry``: as for :func:`save` (stored on its own when there is nothing to settle).
    """
    if g.pop(_PENDING, None) and session is not None and session.handle:
        return _slide(session, changed=False, commit=commit, with_entry=with_entry)
    return _put(with_entry)


def end(response: Response, reason: str = "logout") -> BrowserSession | None:
    """Log out this browser: the session ends everywhere and its portals are told."""
    from .logout import end_session

    session = current()
    if session is not None:
        end_session(session.sid, reason)
    g.sso_session = None
    response.delete_cookie(cookie_name(), path="/", secure=not _dev(), httponly=True, samesite="Lax")
    return session


def sessions_of(account_id: str) -> list[Any]:
    """The account's sessions that have not ended (SessionRecord rows, newest first)."""
    from .db import db
    from .models import SessionRecord, utcnow

    return list(
        db.session.execute(
            db.select(SessionRecord)
            .where(SessionRecord.account_id == account_id, SessionRecord.ended_at.is_(None))
            .where(SessionRecord.expires_at > utcnow())
            .order_by(SessionRecord.created_at.desc())
        ).scalars()
    )


def revoke(account_id: str, sid: str) -> bool:
    """End one of the account's sessions (account page); its portals are told."""
    from .db import db
    from .logout import end_session
    from .models import SessionRecord

    record = db.session.get(SessionRecord, sid)
    if record is None or record.account_id != account_id:
        return False
    return end_session(sid, "revoked")
