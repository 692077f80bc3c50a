"""Discovery (OIDC Discovery §3, RFC 8414), JWKS, and the key manager's lifecycle."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from sso import create_app
from sso.bootstrap import prepare
from sso.db import db
from sso.models import SigningKey, utcnow
from tests.conftest import ISSUER, basic, make_settings, redeem


def test_discovery_advertises_exactly_what_works(client):
    response = client.get("/.well-known/openid-configuration")
    meta = response.get_json()
    assert meta["issuer"] == ISSUER
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token", "client_credentials"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    }
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    # Nothing advertised that is not implemented.
    assert meta["backchannel_logout_supported"] is True and meta["frontchannel_logout_session_supported"] is True
    for absent in ("registration_endpoint", "device_authorization_endpoint", "pushed_authorization_request_endpoint"):
        assert absent not in meta
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ):
        path = meta[key].removeprefix(ISSUER)
        assert client.open(path, method="OPTIONS").status_code != 404, key


def test_rfc8414_metadata_is_served_too(client):
    assert client.get("/.well-known/oauth-authorization-server").get_json()["issuer"] == ISSUER


def test_discovery_and_jwks_have_etags(client):
    for path in ("/.well-known/openid-configuration", "/jwks"):
        first = client.get(path)
        etag = first.headers["ETag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, path
        assert "max-age" in first.headers["Cache-Control"]


@pytest.mark.parametrize("header", ["Host", "X-Forwarded-Host"])
def test_spoofed_host_changes_nothing(client, portal, header):
    spoofed = client.get("/.well-known/openid-configuration", headers={header: "evil.example"}).get_json()
    assert spoofed["issuer"] == ISSUER
    assert all("evil" not in str(v) for v in spoofed.values())
    login = client.get(
        "/authorize",
        query_string={
            "client_id": portal.client_id,
            "response_type": "code",
            "redirect_uri": portal.redirect_uri,
            "scope": "openid",
            "state": "s",
        },
        headers={header: "evil.example"},
    )
    assert "evil" not in login.headers["Location"]


def test_jwks_publishes_only_public_parts(client):
    keys = client.get("/jwks").get_json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES256"}
    for key in keys:
        assert key["use"] == "sig" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_private_keys_are_encrypted_at_rest(app, tmp_path):
    rows = db.session.execute(db.select(SigningKey)).scalars().all()
    raw = (
        sqlite3.connect(str(tmp_path / "instance" / "sso.sqlite3"))
        .execute("SELECT private_key_sealed FROM signing_keys")
        .fetchall()
    )
    assert len(rows) == 2
    for (sealed,) in raw:
        assert b"PRIVATE KEY" not in sealed
    kek = tmp_path / "instance" / "key-encryption-key"
    assert kek.stat().st_mode & 0o777 == 0o600


def test_rotation_publishes_before_signing(app, browser, client, portal, account):
    keys = app.extensions["sso"].keys
    old_kid = keys.signing_key("RS256").kid
    new = keys.rotate("RS256", activate_in=600)
    published = {k["kid"] for k in client.get("/jwks").get_json()["keys"]}
    assert {old_kid, new.kid} <= published
    token = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).get_json()[
        "access_token"
    ]
    import jwt as pyjwt

    assert pyjwt.get_unverified_header(token)["kid"] == old_kid
    assert [s.state for s in keys.statuses() if s.kid == new.kid] == ["next"]


def test_activated_key_signs_and_retired_key_stays_published_until_tokens_expire(
    app, browser, client, portal, account, monkeypatch
):
    import jwt as pyjwt

    keys = app.extensions["sso"].keys
    code, verifier = browser.code_for(portal)
    before = redeem(client, portal, code, verifier).get_json()
    old_kid = pyjwt.get_unverified_header(before["id_token"])["kid"]
    new = keys.rotate("RS256", activate_in=0)
    token = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).get_json()[
        "access_token"
    ]
    assert pyjwt.get_unverified_header(token)["kid"] == new.kid
    published = {k["kid"] for k in client.get("/jwks").get_json()["keys"]}
    assert old_kid in published
    # Tokens signed by the retired key still verify (introspection stays active).
    assert (
        client.post("/introspect", data={"token": before["access_token"]}, headers=basic(portal)).get_json()["active"]
        is True
    )
    # Once every token it signed has expired, the retired key leaves the JWKS.
    later = utcnow() + timedelta(seconds=3601)  # the longest token lifetime has passed
    monkeypatch.setattr("sso.keys.utcnow", lambda: later)
    keys.reload()
    assert old_kid not in {k["kid"] for k in client.get("/jwks").get_json()["keys"]}
    assert [s.state for s in keys.statuses() if s.kid == old_kid] == ["expired"]


def test_a_rotation_reaches_another_process(tmp_path):
    """Two app instances on one database: a key rotated through one is used by both."""
    settings = make_settings(tmp_path, key_refresh_interval=1)
    first, second = create_app(settings), create_app(settings)
    prepare(first)
    with second.app_context():
        second.extensions["sso"].keys.reload()
        old = second.extensions["sso"].keys.signing_key("ES256").kid
    with first.app_context():
        new = first.extensions["sso"].keys.rotate("ES256", activate_in=0)
    with second.app_context():
        keys = second.extensions["sso"].keys
        keys._loaded_at -= 2  # the refresh interval has passed
        assert keys.signing_key("ES256").kid == new.kid != old
        doc, _ = keys.jwks_document()
        assert new.kid.encode() in doc


def test_wrong_kek_cannot_open_the_keys(tmp_path):
    settings = make_settings(tmp_path)
    prepare(create_app(settings))
    other = make_settings(tmp_path, key_encryption_key="A" * 43)
    from cryptography.exceptions import InvalidTag

    app = create_app(other)
    with app.app_context(), pytest.raises(InvalidTag):
        app.extensions["sso"].keys.reload()
