"""The SSO hop's due record sync in its one read (sso.consent.standing_with_sync).

On PostgreSQL + psycopg a hop whose session record is due its sync (sso.session.
RECORD_SYNC) UPDATEs the record in the same autocommit statement as the account +
consent read: one round trip where it was BEGIN, SELECT, UPDATE, COMMIT.  The store's
write-back is then a SET with the new ``synced_at`` (the session is not due again)
and no second UPDATE.  When that UPDATE finds nothing to sync (the record missing,
ended, or naming another handle), the sync runs as before: a missing record is
inserted; an ended one means no session and nothing written back; a record another
request pointed at a new handle (a rotation) keeps it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from sso import session as browser_session
from sso.db import db
from sso.models import SessionRecord, utcnow
from tests.backends import Seen, pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import (
    code_of,
    make_record_stale,
    query_of,
    session_handle,
)
from tests.test_hop_own_connection import gateway, hop  # noqa: F401  (fixtures)

SCOPES = ["openid", "profile"]
READ = "SELECT ACCOUNTS.STATUS, ACCOUNTS.ASSURANCE,"


def _record() -> SessionRecord | None:
    db.session.expire_all()
    record = db.session.execute(db.select(SessionRecord)).scalar_one_or_none()
    if record is not None:
        db.session.expunge(record)
    db.session.commit()
    return record


def _set_record(**values: Any) -> None:
    db.session.execute(db.update(SessionRecord).values(**values))
    db.session.commit()


def _stored(gateway: Flask, handle: str) -> dict[str, Any] | None:  # noqa: F811
    return gateway.extensions["sso"].store.get(browser_session.KIND, handle)  # type: ignore[no-any-return]


def _an_hour_ago() -> dict[str, Any]:
    then = utcnow() - timedelta(hours=1)
    return {"last_seen_at": then, "expires_at": then}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("target", ["tax", "social"])  # a known portal (settle), a new one (save)
def test_a_due_hop_syncs_the_record_in_its_one_statement(hop: Any, gateway: Flask, target: str) -> None:  # noqa: F811
    browser, portals, seen = hop
    handle = session_handle(browser)
    _set_record(**_an_hour_ago())
    make_record_stale(gateway, handle)
    seen.reset()
    code_of(browser.authorize(portals[target]))
    assert seen.kinds() == ["WITH SYNCED AS"] and seen.commits == 0 and seen.orm_begins == 0
    record = _record()
    assert record is not None and record.handle == handle and record.ended_at is None
    now = utcnow()
    assert now - timedelta(seconds=30) < record.last_seen_at <= now
    idle = gateway.extensions["sso"].settings.session_idle_timeout
    assert record.expires_at - record.last_seen_at == timedelta(seconds=idle)
    assert record.clients == ["tax"]  # as read: "social" (when it joins) is found through its grant
    stored = _stored(gateway, handle)
    assert stored is not None and not browser_session.sync_due(browser_session.BrowserSession.from_dict(stored))
    assert "record_synced" not in stored  # request-local, never stored
    # Not due again: the next hop is the read alone, and the record is left as it is.
    seen.reset()
    code_of(browser.authorize(portals["tax"]))
    assert seen.kinds() == [READ] and seen.commits == 0
    assert _record().last_seen_at == record.last_seen_at  # type: ignore[union-attr]


@pytest.mark.postgres
@pytest.mark.redis
def test_a_due_hop_with_its_record_missing_inserts_it(hop: Any, gateway: Flask) -> None:  # noqa: F811
    browser, portals, seen = hop
    handle = session_handle(browser)
    sid = _record().sid  # type: ignore[union-attr]
    db.session.execute(db.delete(SessionRecord))
    db.session.commit()
    make_record_stale(gateway, handle)
    seen.reset()
    code_of(browser.authorize(portals["tax"]))
    assert seen.kinds()[0] == "WITH SYNCED AS" and "INSERT INTO SESSION_RECORDS" in seen.kinds()
    assert seen.commits == 1
    record = _record()
    assert record is not None and (record.sid, record.handle, record.ended_at) == (sid, handle, None)
    assert record.clients == ["tax"]
    seen.reset()
    code_of(browser.authorize(portals["tax"]))
    assert seen.kinds() == [READ]  # synced: not due again


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("prompt", [None, "none"])
def test_a_due_hop_with_its_record_ended_gets_no_code_and_writes_nothing(
    hop: Any, gateway: Flask, prompt: str | None  # noqa: F811
) -> None:
    # Ended (as by a logout elsewhere), though its store entry is still there.
    browser, portals, seen = hop
    handle = session_handle(browser)
    _set_record(ended_at=utcnow(), end_reason="logout", **_an_hour_ago())
    before = _record()
    make_record_stale(gateway, handle)
    stale = _stored(gateway, handle)
    params = {"prompt": prompt} if prompt else {}
    response = browser.authorize(portals["tax"], **params)
    assert response.status_code == 302 and "code=" not in response.headers["Location"]
    if prompt:
        assert query_of(response.headers["Location"])["error"] == "login_required"
    else:
        assert response.headers["Location"].startswith("/login?interaction=")
    after = _record()
    assert after is not None and before is not None
    assert (after.ended_at, after.last_seen_at, after.expires_at, after.clients, after.handle) == (
        before.ended_at,
        before.last_seen_at,
        before.expires_at,
        before.clients,
        before.handle,
    )
    assert _stored(gateway, handle) == stale  # not written back
    assert db.engine.pool.checkedout() == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_a_due_hop_never_points_the_record_back_at_a_handle_a_rotation_dropped(
    hop: Any, gateway: Flask, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # Another request rotated the session (step-up: new handle, the old one deleted, the
    # record pointed at the new one) right after this hop read it.  The hop's sync must
    # not commit the old handle into the record: a logout deletes the record's handle,
    # and would leave the live one signed in.
    browser, portals, _ = hop
    old = session_handle(browser)
    sid = _record().sid  # type: ignore[union-attr]
    make_record_stale(gateway, old)
    store = gateway.extensions["sso"].store
    original_load = browser_session.load
    done: list[bool] = []

    def load_then_rotate_elsewhere(h: str) -> Any:
        found = original_load(h)
        if not done:
            done.append(True)
            with gateway.app_context():
                data = store.get(browser_session.KIND, old)
                store.delete(browser_session.KIND, old)
                store.put(browser_session.KIND, "rotated-handle", data, 600)
                db.session.execute(db.update(SessionRecord).filter_by(sid=sid).values(handle="rotated-handle"))
                db.session.commit()
                db.session.remove()
        return found

    monkeypatch.setattr(browser_session, "load", load_then_rotate_elsewhere)
    response = browser.authorize(portals["tax"])
    monkeypatch.undo()
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?interaction=")
    record = _record()
    assert record is not None and record.handle == "rotated-handle" and record.ended_at is None
    assert _stored(gateway, old) is None


@pytest.mark.postgres
@pytest.mark.redis
def test_a_due_hop_whose_record_names_another_handle_syncs_it_as_before(hop: Any, gateway: Flask) -> None:  # noqa: F811
    # The record names a handle the store does not have, the session's own is live: the
    # sync as before (the write-back's, committed after the store took it) puts it right.
    browser, portals, seen = hop
    handle = session_handle(browser)
    _set_record(handle="some-other-handle")
    make_record_stale(gateway, handle)
    seen.reset()
    code_of(browser.authorize(portals["tax"]))
    assert seen.kinds()[:2] == ["WITH SYNCED AS", "UPDATE SESSION_RECORDS SET"] and seen.commits == 1
    record = _record()
    assert record is not None and record.handle == handle and record.ended_at is None
