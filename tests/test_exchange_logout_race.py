"""A code exchange and a logout of the same session, at the same time, on PostgreSQL.

A logout first marks the session record ended, then revokes the session's grants, in
one transaction (sso.logout.end_session).  An exchange that read the record between
those two statements used to insert a grant that the logout's revocation could not
see: a session logged out with a live refresh token.  The exchange now reads the
record FOR SHARE, so the two are ordered whichever comes first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from flask import Flask

from sso.db import db
from sso.models import Grant
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.conftest import redeem
from tests.test_refresh_postgres import pg_app, setup  # noqa: F401  (fixtures)

pytestmark = pytest.mark.postgres


def _driver_url(pg_app: Flask) -> str:  # noqa: F811
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _session_of(pg_app: Flask) -> str:  # noqa: F811
    with pg_app.app_context():
        return db.session.execute(db.text("SELECT sid FROM session_records")).scalar_one()  # type: ignore[no-any-return]


def test_an_exchange_waits_for_a_logout_in_progress_and_gets_no_grant(pg_app: Flask, setup: Any) -> None:  # noqa: F811
    client, portal, browser = setup
    code, verifier = browser.code_for(portal)
    sid = _session_of(pg_app)
    answers: list[Any] = []
    with psycopg.connect(_driver_url(pg_app)) as logout:
        # A logout's first statement, not yet committed.
        logout.execute("UPDATE session_records SET ended_at = now(), end_reason = 'test' WHERE sid = %s", (sid,))
        exchange = threading.Thread(target=lambda: answers.append(redeem(client, portal, code, verifier)))
        exchange.start()
        time.sleep(0.5)
        assert exchange.is_alive(), "the exchange did not wait for the logout in progress"
        # Its second statement sees no grant yet (none was made), then it commits.
        revoked = logout.execute(
            "UPDATE grants SET revoked_at = now(), revoked_reason = 'logout' WHERE sid = %s AND revoked_at IS NULL",
            (sid,),
        ).rowcount
        assert revoked == 0
        logout.commit()
        exchange.join(10)
    assert not exchange.is_alive()
    (answer,) = answers
    assert answer.status_code == 400, answer.text
    assert answer.get_json()["error"] == "invalid_grant"
    with pg_app.app_context():
        live = db.session.execute(db.select(Grant).where(Grant.sid == sid, Grant.revoked_at.is_(None))).all()
    assert live == []  # nothing the logout missed

