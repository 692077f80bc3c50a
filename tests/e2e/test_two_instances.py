"""Two gateway processes sharing PostgreSQL and Redis behave as one (the production topology).

Both serve the same issuer, as they would behind a load balancer; the test talks
to each one directly.  Cookies are per host, not per port, so the browser's
session cookie reaches both — as it would through the balancer.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any

import jwt
import pytest
import requests

from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures: a fresh database, a flushed Redis DB)
from tests.e2e.conftest import (
    PASSWORD,
    SSO,
    TIMEOUT,
    USERNAME,
    Browser,
    Gateway,
    _clean_env,
    _stop,
    free_port,
    query_of,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class Instance:
    def __init__(self, proc: Popen[bytes], url: str, gateway: Gateway) -> None:
        self.proc, self.url, self.gateway = proc, url, gateway


def _start(instance_dir: Path, issuer: str, port: int, shared: dict[str, str]) -> Instance:
    instance_dir.mkdir(parents=True, exist_ok=True)
    env = _clean_env({"SSO_ISSUER": issuer, "SSO_INSTANCE_PATH": str(instance_dir), **shared})
    gateway = Gateway(issuer, env, instance_dir / "serve.log")
    with gateway.log.open("wb") as log:
        proc = Popen([str(SSO), "serve", "--port", str(port)], env=env, stdin=DEVNULL, stdout=log, stderr=STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"instance on {port} exited:\n{gateway.log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url + "/jwks", timeout=1).status_code == 200:
                return Instance(proc, url, gateway)
        except requests.RequestException:
            pass
        time.sleep(0.1)
    _stop(proc)
    pytest.fail(f"instance on {port} did not start")


@pytest.fixture
def pair(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Instance, Instance]]:  # noqa: F811
    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"  # the balancer's address; here instance A's
    shared = {
        "SSO_DEVELOPMENT": "true",
        # A database of its own: keys sealed under this fleet's KEK, nobody else's.
        "SSO_DATABASE_URL": pg_url,
        "SSO_REDIS_URL": redis_url,
        # One key-encryption key for the fleet: each instance opens the same keys.
        "SSO_KEY_ENCRYPTION_KEY": secrets.token_urlsafe(32)[:43],
        "SSO_KEY_PUBLISH_LEAD": "0",
        "SSO_KEY_REFRESH_INTERVAL": "1",
        "SSO_BACKGROUND_INTERVAL": "1",
    }
    a = _start(tmp_path / "a", issuer, port_a, shared)
    try:
        b = _start(tmp_path / "b", issuer, port_b, shared)
        try:
            yield a, b
        finally:
            _stop(b.proc)
    finally:
        _stop(a.proc)


def _register(a: Instance) -> dict[str, Any]:
    name = "portal-" + secrets.token_hex(3)
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    out = a.gateway.cli(
        "clients",
        "create",
        "--name",
        name,
        "--json",
        "--redirect-uri",
        redirect,
        "--post-logout-redirect-uri",
        redirect.replace("/callback", "/bye"),
    )
    client = json.loads(out)
    client["redirect_uri"] = redirect
    return client


def _authorize_url(base: str, client: dict[str, Any], **extra: str) -> tuple[str, str]:
    import base64
    import hashlib

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uri"],
        "scope": "openid profile",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return base + "/authorize?" + requests.compat.urlencode(params), verifier


def _redeem(base: str, client: dict[str, Any], code: str, verifier: str) -> dict[str, Any]:
    response = requests.post(
        base + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uri"],
            "code_verifier": verifier,
        },
        auth=(client["client_id"], client["client_secret"]),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _silent(browser: Browser, base: str, client: dict[str, Any]) -> dict[str, str]:
    url, _ = _authorize_url(base, client, prompt="none")
    response = browser.get(url)
    assert response.status_code == 302, response.text[:500]
    return query_of(response.headers["Location"])


def test_two_instances_behave_as_one(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    a.gateway.cli("accounts", "create", "--username", USERNAME, "--name", "双实例", "--password", PASSWORD)
    client = _register(a)
    browser = Browser(a.gateway.issuer)

    # Sign in through instance A (login + consent there).
    url, verifier = _authorize_url(a.url, client)
    location = browser.authorize(url, client["redirect_uri"])
    tokens = _redeem(a.url, client, query_of(location)["code"], verifier)

    # SSO through instance B: the session lives in the shared Redis.
    url, verifier = _authorize_url(b.url, client, prompt="none")
    params = query_of(browser.get(url).headers["Location"])
    assert "code" in params, params
    from_b = _redeem(b.url, client, params["code"], verifier)
    assert jwt.decode(from_b["id_token"], options={"verify_signature": False})["iss"] == a.gateway.issuer

    # A refresh token from A rotates at B, and the old one is then refused at A.
    rotated = requests.post(
        b.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(client["client_id"], client["client_secret"]),
        timeout=TIMEOUT,
    )
    assert rotated.status_code == 200
    reuse = requests.post(
        a.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(client["client_id"], client["client_secret"]),
        timeout=TIMEOUT,
    )
    assert reuse.json()["error"] == "invalid_grant"

    # A key rotated through one instance is published and used by both.
    new_kid = json.loads(a.gateway.cli("keys", "rotate", "--alg", "RS256", "--activate-in", "0", "--json"))["kid"]
    deadline = time.monotonic() + 10
    seen: dict[str, str] = {}
    while time.monotonic() < deadline and len(seen) < 2:
        for inst in (a, b):
            kids = {k["kid"] for k in requests.get(inst.url + "/jwks", timeout=TIMEOUT).json()["keys"]}
            url, verifier = _authorize_url(inst.url, client, prompt="none")
            code = query_of(browser.get(url).headers["Location"])["code"]
            signed = jwt.get_unverified_header(_redeem(inst.url, client, code, verifier)["id_token"])["kid"]
            if new_kid in kids and signed == new_kid:
                seen[inst.url] = signed
        time.sleep(0.5)
    assert set(seen) == {a.url, b.url}, f"rotation not picked up by both: {seen}"

    # Logout through B ends the session on A too.
    hint = from_b["id_token"]
    bye = browser.get(b.url + "/logout?" + requests.compat.urlencode({"id_token_hint": hint}))
    assert bye.status_code in (200, 302)
    assert _silent(browser, a.url, client)["error"] == "login_required"
