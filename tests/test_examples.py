"""The example portals (examples/) against a real gateway: single sign-on and single logout.

Real processes over real HTTP: ``sso serve`` with the demo data (张三 and his
password), and the tax and social-security portals, each registered with the
``sso`` CLI on a free port and started as ``python examples/.../app.py``.  A
``requests.Session`` is the browser.  The portals' logout-token checks are also
tested in-process against tokens signed with a key of the test's own.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from joserfc import jws
from joserfc.jwk import RSAKey

from sso.bootstrap import DEMO_CITIZEN_PASSWORDS, DEMO_PORTAL_SCOPE
from sso.connectors.demo_data import DEMO_CITIZEN
from tests.e2e.conftest import Gateway, free_port, parse_form, start_gateway
from tests.e2e.conftest import _stop as stop_process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 15
ISSUER = "http://127.0.0.1:5999"
EVENT = "http://schemas.openid.net/event/backchannel-logout"


def _load_kit() -> Any:
    spec = importlib.util.spec_from_file_location("examples_portal_kit", EXAMPLES / "portal_kit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


kit = _load_kit()


# ---- processes ----------------------------------------------------------------------------------


@dataclass
class Portal:
    client_id: str
    base: str
    log: Path

    def page(self, browser: requests.Session) -> requests.Response:
        return browser.get(self.base + "/", timeout=TIMEOUT)


def _ready(proc: Popen[bytes], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            requests.get(url, allow_redirects=False, timeout=1)
            return True
        except requests.RequestException:
            time.sleep(0.1)
    return False


def start_portal(gateway: Gateway, app: str, client_id: str, logs: Path, procs: list[Popen[bytes]]) -> Portal:
    """Register ``client_id`` for a free port (the CLI, as the README says) and start the portal there."""
    secret = None
    for attempt in range(3):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        uris = ["--redirect-uri", base + "/callback", "--post-logout-redirect-uri", base + "/"]
        uris += ["--backchannel-logout-uri", base + "/backchannel-logout"]
        if secret is None:
            create = ["clients", "create", "--client-id", client_id, "--name", app, "--scope", DEMO_PORTAL_SCOPE]
            secret = json.loads(gateway.cli(*create, *uris, "--json"))["client_secret"]
        else:  # the port was taken meanwhile: follow the new one
            gateway.cli("clients", "update", client_id, *uris)
        log = logs / f"{client_id}-{attempt}.log"
        command = [sys.executable, str(EXAMPLES / app / "app.py"), "--issuer", gateway.issuer,
                   "--client-id", client_id, "--port", str(port)]
        env = {**gateway.env, "PORTAL_CLIENT_SECRET": secret}  # not on the command line
        with log.open("wb") as out_file:
            proc = Popen(command, env=env, stdin=DEVNULL, stdout=out_file, stderr=STDOUT)
        procs.append(proc)
        if _ready(proc, base + "/backchannel-logout", time.monotonic() + 30):
            return Portal(client_id, base, log)
        stop_process(proc)
        if "Address already in use" not in log.read_text(errors="replace"):
            pytest.fail(f"{app} did not start:\n{log.read_text(errors='replace')[-3000:]}")
    pytest.fail(f"no free port for {app} after 3 attempts")


@pytest.fixture(scope="module")
def portals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Portal, Portal]]:
    instance = tmp_path_factory.mktemp("examples")
    proc, gateway = start_gateway(instance, {"SSO_DEMO": "true"})  # `sso serve`: its notifier delivers logouts
    procs = [proc]
    try:
        tax = start_portal(gateway, "tax_portal", "tax-test", instance, procs)
        social = start_portal(gateway, "social_portal", "social-test", instance, procs)
        yield gateway, tax, social
    finally:
        for running in reversed(procs):
            stop_process(running)


# ---- the browser ----------------------------------------------------------------------------------


def submit(browser: requests.Session, page: requests.Response, form_id: str, **values: str) -> requests.Response:
    action, fields = parse_form(page.text, form_id)
    assert fields.get("csrf_token") and fields.get("interaction"), fields
    return browser.post(urljoin(page.url, action), data={**fields, **values}, timeout=TIMEOUT)


def signed_in_as(page: requests.Response) -> str | None:
    """The name a portal page shows, or None when it shows nobody signed in."""
    state = re.search(r'id="who" data-signed-in="(yes|no)"', page.text)
    assert state, f"not a portal page: {page.url}\n{page.text[:1500]}"
    name = re.search(r'<dd id="name">([^<]*)</dd>', page.text)
    return name.group(1) if state.group(1) == "yes" and name else None


def visited_paths(page: requests.Response) -> list[str]:
    return [urlsplit(r.url).netloc + urlsplit(r.url).path for r in [*page.history, page]]


def test_single_sign_on_and_single_logout_across_the_example_portals(
    portals: tuple[Gateway, Portal, Portal],
) -> None:
    gateway, tax, social = portals
    gateway_host = urlsplit(gateway.issuer).netloc
    browser = requests.Session()

    # Nobody is signed in: the tax portal checks silently (prompt=none) and offers the sign-in.
    assert signed_in_as(tax.page(browser)) is None

    # Sign in at the tax portal: the gateway's login form with 张三's identity number, then consent.
    page = browser.get(tax.base + "/login", timeout=TIMEOUT)
    assert urlsplit(page.url).path == "/login" and urlsplit(page.url).netloc == gateway_host
    page = submit(browser, page, "login-form", username=DEMO_CITIZEN.id_number,
                  password=DEMO_CITIZEN_PASSWORDS[DEMO_CITIZEN.name])
    page = submit(browser, page, "consent-form", decision="allow")
    assert page.url == tax.base + "/"
    assert signed_in_as(page) == DEMO_CITIZEN.name
    assert "urn:cn:sso:loa:2" in page.text and "二级" in page.text  # acr with its label

    # The social-security portal: through the gateway and back, no login form; consent once.
    page = social.page(browser)
    assert f"{gateway_host}/login" not in visited_paths(page), visited_paths(page)
    assert 'id="login-form"' not in page.text
    page = submit(browser, page, "consent-form", decision="allow")
    assert signed_in_as(page) == DEMO_CITIZEN.name
    # Once agreed, opening it again needs nothing at all.
    assert signed_in_as(social.page(browser)) == DEMO_CITIZEN.name

    # Sign out at the social portal (RP-initiated logout, back to its registered page).
    page = browser.post(social.base + "/logout", timeout=TIMEOUT)
    assert f"{gateway_host}/logout" in visited_paths(page)
    assert page.url.startswith(social.base + "/?state=")
    assert signed_in_as(page) is None and "已退出登录" in page.text

    # The gateway tells the tax portal by back-channel: its session ends within seconds.
    deadline = time.monotonic() + 15
    while signed_in_as(tax.page(browser)) is not None:
        assert time.monotonic() < deadline, "the tax portal still shows 张三 signed in"
        time.sleep(0.25)
    assert "ended 1 session(s)" in tax.log.read_text(errors="replace")
    # And the gateway session is gone: signing in asks for the password again.
    page = browser.get(social.base + "/login", timeout=TIMEOUT)
    assert urlsplit(page.url).path == "/login" and 'id="login-form"' in page.text


def test_tax_portal_asks_for_two_factors_and_for_an_enterprise(portals: tuple[Gateway, Portal, Portal]) -> None:
    gateway, tax, _ = portals
    browser = requests.Session()
    for kind, expected in (("two-factors", {"acr_values": "urn:cn:sso:loa:3"}), ("enterprise", {})):
        response = browser.get(f"{tax.base}/login?as={kind}", allow_redirects=False, timeout=TIMEOUT)
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(gateway.issuer + "/authorize?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"]
        assert query.items() >= expected.items()
        assert ("cn_legal_person" in query["scope"].split()) == (kind == "enterprise")


def test_a_forged_logout_token_gets_400(portals: tuple[Gateway, Portal, Portal]) -> None:
    gateway, tax, _ = portals
    forger = RSAKey.generate_key(2048, parameters={"kid": "forged"})
    claims = _logout_claims(gateway.issuer, "tax-test")
    for token in (_sign(claims, forger), "not-a-jwt", ""):
        response = requests.post(tax.base + "/backchannel-logout", data={"logout_token": token}, timeout=TIMEOUT)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
        assert response.headers["Cache-Control"] == "no-store"


# ---- the logout token checks in-process (Back-Channel Logout 1.0 §2.6) ------------------------------


class FakeGateway:
    """What the validator uses of Authlib's client: metadata, the JWKS, the client id."""

    client_id = "tax-portal"

    def __init__(self, key: RSAKey) -> None:
        self.jwks = {"keys": [key.as_dict(private=False)]}

    def load_server_metadata(self) -> dict[str, Any]:
        return {"issuer": ISSUER, "id_token_signing_alg_values_supported": ["RS256", "ES256"]}

    def fetch_jwk_set(self, force: bool = False) -> dict[str, Any]:
        return self.jwks


def _logout_claims(issuer: str, audience: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "exp": now + 120, "jti": f"jti-{time.monotonic_ns()}",
              "sub": "pairwise-sub", "sid": "sid-1", "events": {EVENT: {}}}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: RSAKey, **header: Any) -> str:
    fields = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt", **header}
    fields = {k: v for k, v in fields.items() if v is not None}
    # jws, not jwt.encode, which would add typ "JWT" where there is none
    return jws.serialize_compact(fields, json.dumps(claims), key)


@pytest.fixture(scope="module")
def gateway_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "gateway"})


def test_a_valid_logout_token_is_accepted_once(gateway_key: RSAKey) -> None:
    validator = kit.LogoutTokenValidator(FakeGateway(gateway_key))
    token = _sign(_logout_claims(ISSUER, "tax-portal"), gateway_key)
    assert validator.validate(token)["sid"] == "sid-1"
    with pytest.raises(kit.LogoutTokenError, match="replay"):
        validator.validate(token)
    # sub alone (no sid) is enough, and so is a token without typ.
    token = _sign(_logout_claims(ISSUER, "tax-portal", sid=None), gateway_key, typ=None)
    assert validator.validate(token)["sub"] == "pairwise-sub"


@pytest.mark.parametrize(
    ("changes", "header", "reason"),
    [
        ({"iss": "https://evil.example"}, {}, "iss"),
        ({"aud": "social-portal"}, {}, "aud"),
        ({"exp": int(time.time()) - 600}, {}, "exp"),
        ({"iat": None}, {}, "iat"),
        ({"jti": None}, {}, "jti"),
        ({"events": None}, {}, "event"),
        ({"events": {"http://example.com/other": {}}}, {}, "event"),
        ({"sid": None, "sub": None}, {}, "sid nor sub"),
        ({"nonce": "n-1"}, {}, "nonce"),
        ({}, {"typ": "JWT"}, "typ"),
    ],
)
def test_an_invalid_logout_token_is_refused(
    gateway_key: RSAKey, changes: dict[str, Any], header: dict[str, Any], reason: str
) -> None:
    validator = kit.LogoutTokenValidator(FakeGateway(gateway_key))
    token = _sign(_logout_claims(ISSUER, "tax-portal", **changes), gateway_key, **header)
    with pytest.raises(kit.LogoutTokenError, match=reason):
        validator.validate(token)


def test_logout_ends_only_the_sessions_of_that_gateway_session() -> None:
    store = kit.SessionStore("test")
    for key, sid, sub in (("a", "sid-1", "u1"), ("b", "sid-1", "u1"), ("c", "sid-2", "u1"), ("d", "sid-3", "u2")):
        session = kit.PortalSession(key, new=False)
        session["user"] = {"sid": sid, "sub": sub}
        store._sessions[key] = session
    assert store.end(sid="sid-1", sub="u1") == 2
    assert sorted(store._sessions) == ["c", "d"]
    assert store.end(sid=None, sub="u1") == 1
    assert sorted(store._sessions) == ["d"]


def test_a_portal_reads_its_secret_and_the_issuer_from_demo_clients(tmp_path: Path) -> None:
    saved = {"tax-portal": {"client_id": "tax-portal", "client_secret": "s3cret", "issuer": ISSUER + "/"}}
    path = tmp_path / "demo-clients.json"
    path.write_text(json.dumps(saved))
    portal = kit.Portal(client_id="tax-portal", name="电子税务局", name_en="Tax service", port=5001, colour="#000")
    config = kit.parse_args(portal, ["--demo-clients", str(path), "--port", "5101"])
    assert (config.issuer, config.client_secret, config.base_url) == (ISSUER, "s3cret", "http://127.0.0.1:5101")
    config = kit.parse_args(portal, ["--demo-clients", str(path), "--issuer", "https://sso.example.gov.cn"])
    assert config.issuer == "https://sso.example.gov.cn" and config.client_secret == "s3cret"
