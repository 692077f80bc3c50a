"""Single logout: end a session everywhere and tell every portal in it.

Whatever ends a session — RP-initiated logout, logout at the gateway, revocation
from the account page, idle or absolute expiry — goes through ``end_session``.
It marks the durable session record ended (once: the UPDATE decides the winner
among instances), drops the browser session from the short-lived store and
queues a back-channel logout for every portal of the session that registered a
``backchannel_logout_uri``.  Deliveries run in the background (``Notifier``)
with a short timeout and retries, never following redirects; the user never
waits on a slow portal, and failures are recorded.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

from flask import Flask, current_app

from . import audit, metrics
from .db import db
from .models import Account, Client, Grant, LogoutDelivery, SessionRecord, utcnow

log = logging.getLogger("sso.logout")

RETRY_DELAYS = (5, 30, 120, 600)  # seconds after attempt 1, 2, 3, 4 ...
LEASE = 60  # a claimed delivery is not taken by another instance for this long


def _gw():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def end_session(sid: str, reason: str) -> bool:
    """End the session ``sid`` everywhere. True if this call ended it (first wins)."""
    now = utcnow()
    claimed = db.session.execute(
        db.update(SessionRecord)
        .where(SessionRecord.sid == sid, SessionRecord.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    ).rowcount
    if claimed != 1:
        db.session.commit()
        return False
    record = db.session.get(SessionRecord, sid)
    assert record is not None
    if record.handle:
        from .session import KIND

        _gw().store.delete(KIND, record.handle)
    # Tokens issued under this session end with it: a logout that left refresh
    # tokens alive would not be a logout.
    db.session.execute(
        db.update(Grant)
        .where(Grant.sid == sid, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="logout")
    )
    queued = []
    for client_id in _portals(record):
        client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
        if client is not None and client.backchannel_logout_uri and not client.disabled:
            db.session.add(LogoutDelivery(sid=sid, client_id=client_id, account_id=record.account_id))
            queued.append(client_id)
    db.session.commit()
    audit.record("session.ended", actor=record.account_id, sid=sid, reason=reason, notified=queued)
    notifier = current_app.extensions.get("sso_notifier")
    if notifier is not None and queued:
        notifier.wake()
    return True


def _portals(record: SessionRecord) -> list[str]:
    """The portals of the session: those in the record's snapshot of the browser
    session (synced with it at most every RECORD_SYNC seconds, sso.session) and those
    that redeemed a code under its ``sid`` (a grant each; the hop that gave the code
    does not write the record), in the order they joined."""
    redeemed = db.session.execute(
        db.select(Grant.client_id).where(Grant.sid == record.sid).order_by(Grant.created_at)
    ).scalars()
    return list(dict.fromkeys([*(record.clients or []), *redeemed]))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Back-Channel Logout §2.8: the OP does not follow redirects from the RP.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_logout_token(uri: str, token: str, timeout: float) -> tuple[bool, str]:
    if urllib.parse.urlsplit(uri).scheme not in ("https", "http"):
        return False, "not an http(s) URI"
    body = urllib.parse.urlencode({"logout_token": token}).encode()
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        uri, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))[:300]
    # §2.8: 200 (or 204) means the RP logged the session out.
    return (200 <= status < 300), f"HTTP {status}"


def deliver_due(limit: int = 50) -> int:
    """Deliver the pending notifications that are due; returns how many were attempted."""
    from .oidc.tokens import issue_logout_token

    settings = _gw().settings
    now = utcnow()
    due = (
        db.session.execute(
            db.select(LogoutDelivery.id)
            .where(LogoutDelivery.status == "pending", LogoutDelivery.next_attempt_at <= now)
            .order_by(LogoutDelivery.next_attempt_at)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    attempted = 0
    for delivery_id in due:
        # Claim it for LEASE seconds: other instances skip it meanwhile.
        claimed = db.session.execute(
            db.update(LogoutDelivery)
            .where(
                LogoutDelivery.id == delivery_id,
                LogoutDelivery.status == "pending",
                LogoutDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + timedelta(seconds=LEASE), attempts=LogoutDelivery.attempts + 1)
        ).rowcount
        db.session.commit()
        if claimed != 1:
            continue
        attempted += 1
        delivery = db.session.get(LogoutDelivery, delivery_id)
        client = db.session.execute(db.select(Client).filter_by(client_id=delivery.client_id)).scalar_one_or_none()
        account = db.session.get(Account, delivery.account_id)
        if client is None or account is None or not client.backchannel_logout_uri:
            delivery.status, delivery.last_error = "failed", "portal or account no longer exists"
            db.session.commit()
            continue
        token = issue_logout_token(client, account, delivery.sid)
        ok, detail = post_logout_token(client.backchannel_logout_uri, token, settings.logout_delivery_timeout)
        if ok:
            delivery.status, delivery.delivered_at, delivery.last_error = "delivered", utcnow(), None
        elif delivery.attempts >= settings.logout_max_attempts:
            delivery.status, delivery.last_error = "failed", detail
            audit.record(
                "logout.delivery_failed",
                outcome="failure",
                commit=False,
                client_id=client.client_id,
                sid=delivery.sid,
                error=detail,
            )
        else:
            delay = RETRY_DELAYS[min(delivery.attempts - 1, len(RETRY_DELAYS) - 1)]
            delivery.next_attempt_at, delivery.last_error = utcnow() + timedelta(seconds=delay), detail
        db.session.commit()
        metrics.logout_delivery("retry" if delivery.status == "pending" else delivery.status)
        log.info("back-channel logout client=%s attempt=%d %s", client.client_id, delivery.attempts, detail)
    return attempted


def end_expired_sessions(limit: int = 100) -> int:
    """End sessions whose idle or absolute timeout passed, so their portals hear of it."""
    from .session import load

    now = utcnow()
    candidates = (
        db.session.execute(
            db.select(SessionRecord)
            .where(SessionRecord.ended_at.is_(None))
            .where((SessionRecord.expires_at <= now) | (SessionRecord.absolute_expires_at <= now))
            .limit(limit)
        )
        .scalars()
        .all()
    )
    ended = 0
    for record in candidates:
        alive = load(record.handle) if record.handle else None
        if alive is not None and record.absolute_expires_at > now:
            # Still in use: the record's idle estimate was stale. Move it on.
            record.expires_at = now + timedelta(seconds=_gw().settings.session_idle_timeout)
            db.session.commit()
            continue
        reason = "absolute_timeout" if record.absolute_expires_at <= now else "idle_timeout"
        ended += end_session(record.sid, reason)
    return ended


class Notifier:
    """One background thread per process: deliver due logouts, end expired sessions."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def start(self) -> None:
        # Threads do not survive fork(): a thread started in a pre-fork parent is
        # not running in its workers, so each process starts its own.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sso-notifier", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> None:
        with self._app.app_context():
            try:
                end_expired_sessions()
                deliver_due()
            finally:
                db.session.remove()

    def _run(self) -> None:
        interval = self._app.extensions["sso"].settings.background_interval
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a broken round must not kill the worker
                log.exception("notifier round failed")
            self._wake.wait(interval)
            self._wake.clear()


def init_app(app: Flask) -> Notifier:
    notifier = Notifier(app)
    app.extensions["sso_notifier"] = notifier
    return notifier
