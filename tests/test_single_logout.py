"""Single logout: back-channel (OIDC Back-Channel Logout 1.0) and front-channel notifications."""

from __future__ import annotations

import socket
from datetime import timedelta

import jwt as pyjwt
import pytest

from sso import logout
from sso.clients import create_client
from sso.db import db
from sso.models import AuditEvent, LogoutDelivery, SessionRecord, utcnow
from tests.conftest import Portal, basic, pkce_pair, query_of, redeem
from tests.portal_receiver import LogoutReceiver
from tests.tokens_util import verify

EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture
def receiver():
    server = LogoutReceiver()
    yield server
    server.close()


def portal_with(client_id, host, **extra):
    reg = create_client(
        name=client_id,
        client_id=client_id,
        redirect_uris=[f"https://{host}/cb"],
        post_logout_redirect_uris=[f"https://{host}/bye"],
        **extra,
    )
    return Portal(client_id, reg.client_secret, f"https://{host}/cb")


def sign_in_both(browser, client, a, b):
    code, verifier = browser.code_for(a)
    tokens_a = redeem(client, a, code, verifier).get_json()
    code, verifier = browser.code_for(b)  # SSO: no second login
    tokens_b = redeem(client, b, code, verifier).get_json()
    return tokens_a, tokens_b


def run_notifier(app):
    app.extensions["sso_notifier"].run_once()


def test_logout_at_one_portal_notifies_every_portal(app, browser, client, account, receiver):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    b = portal_with("social", "social.example.gov.cn", backchannel_logout_uri=receiver.url)
    tokens_a, tokens_b = sign_in_both(browser, client, a, b)
    sid = pyjwt.decode(tokens_a["id_token"], options={"verify_signature": False})["sid"]
    # The hops wrote no record (its sync was not due): the portals are found by their grants.
    assert db.session.get(SessionRecord, sid).clients == []
    response = client.get(
        "/logout",
        query_string={
            "id_token_hint": tokens_a["id_token"],
            "post_logout_redirect_uri": "https://tax.example.gov.cn/bye",
        },
    )
    assert response.status_code == 302  # the user never waits on the portals
    assert receiver.received == []
    run_notifier(app)
    tokens = receiver.tokens()
    assert len(tokens) == 2
    audiences = set()
    for token in tokens:
        header = pyjwt.get_unverified_header(token)
        assert header["typ"] == "logout+jwt"
        claims = verify(client, token)
        assert claims["sid"] == sid and EVENT in claims["events"] and "nonce" not in claims
        assert claims["jti"] and claims["exp"] > claims["iat"]
        audiences.add(claims["aud"])
    assert audiences == {"tax", "social"}
    assert receiver.received[0]["content_type"] == "application/x-www-form-urlencoded"
    deliveries = db.session.execute(db.select(LogoutDelivery)).scalars().all()
    assert {d.status for d in deliveries} == {"delivered"}


def test_logout_token_sub_is_the_portals_pairwise_sub(app, browser, client, account, receiver):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    code, verifier = browser.code_for(a)
    id_token = redeem(client, a, code, verifier).get_json()["id_token"]
    client.get("/logout", query_string={"id_token_hint": id_token})
    run_notifier(app)
    [token] = receiver.tokens()
    assert verify(client, token)["sub"] == pyjwt.decode(id_token, options={"verify_signature": False})["sub"]


def test_logout_ends_the_session_and_its_refresh_tokens(app, browser, client, account, receiver):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    b = portal_with("social", "social.example.gov.cn")
    tokens_a, tokens_b = sign_in_both(browser, client, a, b)
    client.get("/logout", query_string={"id_token_hint": tokens_b["id_token"]})
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens_a["refresh_token"]}, headers=basic(a)
    )
    assert refreshed.get_json()["error"] == "invalid_grant"
    _, challenge = pkce_pair()
    silent = browser.authorize(a, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert query_of(silent.headers["Location"])["error"] == "login_required"


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/backchannel-logout"


def test_a_portal_that_is_down_is_retried_then_recorded(app, browser, client, account, receiver, monkeypatch):
    down = portal_with("down", "down.example.gov.cn", backchannel_logout_uri=closed_port_url())
    up = portal_with("up", "up.example.gov.cn", backchannel_logout_uri=receiver.url)
    tokens, _ = sign_in_both(browser, client, down, up)
    client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    run_notifier(app)
    assert len(receiver.tokens()) == 1  # the healthy portal is not held up
    delivery = db.session.execute(db.select(LogoutDelivery).filter_by(client_id="down")).scalar_one()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_error
    for attempt in range(2, app.extensions["sso"].settings.logout_max_attempts + 1):
        later = utcnow() + timedelta(hours=attempt)
        monkeypatch.setattr("sso.logout.utcnow", lambda later=later: later)
        run_notifier(app)
        db.session.expire_all()
        assert db.session.get(LogoutDelivery, delivery.id).attempts == attempt
    final = db.session.get(LogoutDelivery, delivery.id)
    assert final.status == "failed"
    failures = db.session.execute(db.select(AuditEvent).filter_by(event="logout.delivery_failed")).scalars().all()
    assert [f.client_id for f in failures] == ["down"]


def test_redirects_from_portals_are_not_followed(app, browser, client, account):
    redirecting = LogoutReceiver(status=302)
    try:
        a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=redirecting.url)
        code, verifier = browser.code_for(a)
        id_token = redeem(client, a, code, verifier).get_json()["id_token"]
        client.get("/logout", query_string={"id_token_hint": id_token})
        run_notifier(app)
        assert [r["path"] for r in redirecting.received] == ["/backchannel-logout"]
        delivery = db.session.execute(db.select(LogoutDelivery)).scalar_one()
        assert delivery.status == "pending" and delivery.last_error == "HTTP 302"
    finally:
        redirecting.close()


def test_idle_expiry_ends_the_session_and_notifies(app, browser, client, account, receiver, monkeypatch):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    code, verifier = browser.code_for(a)
    redeem(client, a, code, verifier)
    [record] = db.session.execute(db.select(SessionRecord)).scalars().all()
    app.extensions["sso"].store.delete("session", record.handle)  # the store forgot it: idle timeout
    later = utcnow() + timedelta(seconds=app.extensions["sso"].settings.session_idle_timeout + 5)
    monkeypatch.setattr("sso.logout.utcnow", lambda: later)
    run_notifier(app)
    db.session.expire_all()
    assert db.session.get(SessionRecord, record.sid).end_reason == "idle_timeout"
    assert len(receiver.tokens()) == 1


def test_a_live_session_is_not_ended_by_a_stale_record(app, browser, client, account, receiver, monkeypatch):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    redeem(client, a, *browser.code_for(a))
    [record] = db.session.execute(db.select(SessionRecord)).scalars().all()
    later = utcnow() + timedelta(seconds=app.extensions["sso"].settings.session_idle_timeout + 5)
    monkeypatch.setattr("sso.logout.utcnow", lambda: later)
    run_notifier(app)  # the store still has it: someone kept using it
    db.session.expire_all()
    assert db.session.get(SessionRecord, record.sid).ended_at is None
    assert receiver.tokens() == []


def test_revoking_a_session_notifies(app, browser, client, account, receiver):
    from sso.session import revoke

    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    redeem(client, a, *browser.code_for(a))
    [record] = db.session.execute(db.select(SessionRecord)).scalars().all()
    assert revoke(account.id, record.sid) is True
    assert revoke(account.id, record.sid) is False  # ended once
    run_notifier(app)
    assert len(receiver.tokens()) == 1


def test_two_instances_end_a_session_once(app, browser, client, account, receiver):
    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    redeem(client, a, *browser.code_for(a))
    [record] = db.session.execute(db.select(SessionRecord)).scalars().all()
    assert logout.end_session(record.sid, "revoked") is True
    assert logout.end_session(record.sid, "idle_timeout") is False
    run_notifier(app)
    run_notifier(app)
    assert len(receiver.tokens()) == 1


def test_front_channel_logout_iframes(app, browser, client, account):
    a = portal_with("tax", "tax.example.gov.cn", frontchannel_logout_uri="https://tax.example.gov.cn/fc-logout")
    code, verifier = browser.code_for(a)
    id_token = redeem(client, a, code, verifier).get_json()["id_token"]
    sid = pyjwt.decode(id_token, options={"verify_signature": False})["sid"]
    response = client.get(
        "/logout",
        query_string={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": "https://tax.example.gov.cn/bye",
            "state": "x",
        },
    )
    assert response.status_code == 200
    assert (
        f'src="https://tax.example.gov.cn/fc-logout?iss=http%3A%2F%2F127.0.0.1%3A5000&amp;sid={sid}"' in response.text
    )
    assert "frame-src https://tax.example.gov.cn" in response.headers["Content-Security-Policy"]
    assert "url=https://tax.example.gov.cn/bye?state=x" in response.text


def test_logout_uris_are_validated_at_registration(app):
    from sso.clients import ClientError

    with pytest.raises(ClientError, match="back-channel logout URI must use https"):
        portal_with("x", "x.example.gov.cn", backchannel_logout_uri="http://x.example.gov.cn/logout")
    with pytest.raises(ClientError, match="must not contain a fragment"):
        portal_with("y", "y.example.gov.cn", frontchannel_logout_uri="https://y.example.gov.cn/logout#f")


def test_a_silent_hop_with_a_stale_record_still_reaches_every_portal_at_logout(app, browser, client, account, receiver):
    # The hop writes the session once (the store and the record together, even when the
    # record's sync is due): the record must still name the portal that joined.
    from sso import consent
    from sso import session as browser_session

    a = portal_with("tax", "tax.example.gov.cn", backchannel_logout_uri=receiver.url)
    b = portal_with("social", "social.example.gov.cn", backchannel_logout_uri=receiver.url)
    code, verifier = browser.code_for(a)
    tokens_a = redeem(client, a, code, verifier).get_json()
    consent.remember(account.id, "social", ["openid", "profile"])
    handle = client.get_cookie("sso_session").value.split(".")[0]
    store = app.extensions["sso"].store
    data = store.get(browser_session.KIND, handle)
    data["synced_at"] -= browser_session.RECORD_SYNC + 5
    store.put(browser_session.KIND, handle, data, 600)
    _, challenge = pkce_pair()
    hop = browser.authorize(b, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert "code" in query_of(hop.headers["Location"])
    db.session.expire_all()
    assert db.session.execute(db.select(SessionRecord)).scalar_one().clients == ["tax", "social"]
    client.get("/logout", query_string={"id_token_hint": tokens_a["id_token"]})
    run_notifier(app)
    assert {verify(client, token)["aud"] for token in receiver.tokens()} == {"tax", "social"}
