"""Configuration: defaults, TOML, SSO_* environment; every problem reported at once."""

from __future__ import annotations

import pytest

from sso.config import ConfigError, load_settings


def test_defaults_are_valid_in_development():
    settings = load_settings(overrides={"development": True}, environ={})
    assert settings.access_token_ttl == 600
    assert settings.authorization_code_ttl == 60
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "sso.toml"
    path.write_text('issuer = "https://sso.example.gov.cn"\naccess_token_ttl = 300\n')
    settings = load_settings(path, environ={"SSO_ACCESS_TOKEN_TTL": "120", "SSO_REDIS_URL": "redis://r:6379/0"})
    assert settings.issuer == "https://sso.example.gov.cn"
    assert settings.access_token_ttl == 120
    assert settings.redis_url == "redis://r:6379/0"


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "sso.toml"
    path.write_text('isuer = "typo"\naccess_token_ttl = "ten"\nredis_url = "http://nope"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"SSO_BOGUS": "1", "SSO_ID_TOKEN_TTL": "-5"})
    problems = "\n".join(info.value.problems)
    assert "unknown key in" in problems and "isuer" in problems
    assert "access_token_ttl: expected int" in problems
    assert "redis_url must be" in problems
    assert "unknown environment variable: SSO_BOGUS" in problems
    assert "id_token_ttl must be positive" in problems
    # issuer defaults to http://127.0.0.1:5000, which needs development mode
    assert "issuer must use https outside development" in problems


@pytest.mark.parametrize(
    "issuer, message",
    [
        ("sso.example.gov.cn", "issuer must be an absolute URL"),
        ("https://sso.example.gov.cn/?a=1", "issuer must not have a query or fragment"),
        ("https://sso.example.gov.cn/", "issuer must not end with '/'"),
    ],
)
def test_issuer_rules(issuer, message):
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"issuer": issuer}, environ={})
    assert any(message in p for p in info.value.problems)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("issuer = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})


def test_bad_kek_is_a_clear_error(tmp_path):
    from sso.crypto import KeyEncryptionKeyError, load_or_create_kek

    with pytest.raises(KeyEncryptionKeyError, match="32 bytes"):
        load_or_create_kek("c2hvcnQ", str(tmp_path))


def test_trusted_proxy_gives_the_client_address_but_never_the_host(tmp_path):
    from sso import create_app
    from sso.bootstrap import prepare
    from sso.db import db
    from sso.models import AuditEvent
    from tests.conftest import ISSUER, csrf_from, make_settings

    app = create_app(make_settings(tmp_path, trusted_proxies=1))
    prepare(app)
    client = app.test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil.example", "Host": "evil.example"}
    meta = client.get("/.well-known/openid-configuration", headers=forwarded).get_json()
    assert meta["issuer"] == ISSUER and "evil" not in str(meta)
    page = client.get("/login", headers=forwarded)
    client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "username": "nobody", "password": "x" * 8},
        headers=forwarded,
    )
    with app.app_context():
        event = db.session.execute(db.select(AuditEvent).filter_by(event="login")).scalars().first()
        assert event is not None and event.ip == "203.0.113.7"
