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
