"""The per-process portal cache (sso.oidc.server.ClientCache) and its staleness bound.

A change made through ``sso.clients`` in the same process takes effect at once; one
made by another process (``sso clients ...``, another instance) within
``client_cache_ttl`` seconds — a disabled portal is refused, a rotated secret stops
working, a deleted portal is gone.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask

from sso import create_app
from sso.bootstrap import prepare
from sso.clients import create_client, delete_client, disable_client, rotate_secret, update_client
from sso.db import db

from .conftest import IsolatedClient, make_settings

TTL = 5


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _token(http: Any, client_id: str, secret: str) -> int:
    response = http.post("/token", data={"grant_type": "client_credentials"}, headers=_basic(client_id, secret))
    return int(response.status_code)


@pytest.fixture
def two(tmp_path: Any) -> tuple[Flask, Flask]:
    """Two gateway processes on one database: ``serving`` answers, ``admin`` changes portals."""
    settings = make_settings(tmp_path, client_cache_ttl=TTL)
    serving, admin = create_app(settings), create_app(settings)
    serving.test_client_class = IsolatedClient
    prepare(serving)
    return serving, admin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _service(admin: Flask) -> tuple[str, str]:
    with admin.app_context():
        reg = create_client(name="Batch service", redirect_uris=[], grant_types=["client_credentials"], scope="profile")
        return reg.client.client_id, reg.client_secret or ""


def _clocked(serving: Flask) -> Clock:
    clock = Clock()
    serving.extensions["sso"].server.client_cache._clock = clock
    return clock


@pytest.mark.parametrize("change", ["disable", "delete", "rotate"])
def test_a_change_elsewhere_takes_effect_within_the_ttl(two: tuple[Flask, Flask], change: str) -> None:
    serving, admin = two
    clock = _clocked(serving)
    client_id, secret = _service(admin)
    http = serving.test_client()
    assert _token(http, client_id, secret) == 200  # looked up once, now cached
    with admin.app_context():
        {"disable": disable_client, "delete": delete_client, "rotate": rotate_secret}[change](client_id)
    clock.now += TTL - 0.5
    assert _token(http, client_id, secret) == 200  # still inside the bound: the cached copy
    clock.now += 0.5
    assert _token(http, client_id, secret) == 401  # the bound has passed: refused


def test_a_change_in_the_same_process_takes_effect_at_once(app: Flask, client: Any) -> None:
    assert app.extensions["sso"].settings.client_cache_ttl > 0  # the default caches
    reg = create_client(name="Batch service", redirect_uris=[], grant_types=["client_credentials"], scope="profile")
    client_id, secret = reg.client.client_id, reg.client_secret or ""
    assert _token(client, client_id, secret) == 200
    assert app.extensions["sso"].server.client_cache.get(client_id) is not None
    new_secret = rotate_secret(client_id)
    assert _token(client, client_id, secret) == 401
    assert _token(client, client_id, new_secret) == 200
    disable_client(client_id)
    assert _token(client, client_id, new_secret) == 401
    update_client(client_id, enable=True)
    assert _token(client, client_id, new_secret) == 200


def test_unknown_ids_are_not_cached_and_new_portals_work_at_once(two: tuple[Flask, Flask]) -> None:
    serving, admin = two
    http = serving.test_client()
    assert _token(http, "not-yet", "x") == 401
    assert serving.extensions["sso"].server.client_cache.get("not-yet") is None
    with admin.app_context():
        reg = create_client(
            name="Late", redirect_uris=[], grant_types=["client_credentials"], scope="profile", client_id="not-yet"
        )
    assert _token(http, "not-yet", reg.client_secret or "") == 200


def test_ttl_zero_reads_the_registration_every_time(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, client_cache_ttl=0)
    serving, admin = create_app(settings), create_app(settings)
    serving.test_client_class = IsolatedClient
    prepare(serving)
    client_id, secret = _service(admin)
    http = serving.test_client()
    assert _token(http, client_id, secret) == 200
    with admin.app_context():
        disable_client(client_id)
    assert _token(http, client_id, secret) == 401


def test_cached_portals_are_detached_and_survive_commits(two: tuple[Flask, Flask]) -> None:
    """A commit later in the request (refresh, code redemption) cannot expire the cached copy."""
    serving, admin = two
    client_id, secret = _service(admin)
    http = serving.test_client()
    assert _token(http, client_id, secret) == 200
    with serving.app_context():
        cached = serving.extensions["sso"].server.client_cache.get(client_id)
        assert cached is not None and cached not in db.session
        db.session.commit()
        assert cached.client_id == client_id and cached.grant_types == ["client_credentials"]


def test_the_setting_is_bounded(tmp_path: Any) -> None:
    from sso.config import ConfigError

    with pytest.raises(ConfigError, match="client_cache_ttl"):
        make_settings(tmp_path, client_cache_ttl=61)
