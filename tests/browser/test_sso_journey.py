"""What a citizen sees, in real headless Chromium, against real processes over real HTTP.

``sso serve`` (demo data, SQLite + the embedded store, its background notifier
waking every second) and both example portals (examples/tax_portal and
examples/social_portal), registered with the ``sso`` CLI for their free ports and
back-channel URIs (tests/browser/live.py).  Each test has its own browser
context; gateways are shared where the tests cannot disturb each other:

* ``site``: the single sign-on journey (张三), silent sign-on (赵敏), a disabled portal (a third portal);
* ``second_site``: step-up (张三 sets up an authenticator) and a portal that is down (赵敏; the social portal is
  stopped) — apart from ``site`` because 张三's consent to the tax portal must be new for the journey;
* ``idle_site``: a 3-second idle timeout.

Screenshots of every gateway page met go to test-artifacts/screenshots/journey-*.png.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest
import requests

from tests.browser.conftest import screenshot
from tests.browser.live import (
    TIMEOUT,
    ZHANG_SAN,
    ZHAO_MIN,
    Citizen,
    LivePortal,
    Requests,
    Site,
    allow,
    path_of,
    query_of,
    sign_in,
    signed_in_as,
    start_site,
    wait_signed_out,
)
from tests.e2e.conftest import verify_id_token

pytestmark = pytest.mark.browser

PHONE_WIDTH = 375
LOA2, LOA3 = "urn:cn:sso:loa:2", "urn:cn:sso:loa:3"


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("journey"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def second_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("journey-second"))
    yield running
    running.close()


@pytest.fixture
def idle_site(tmp_path: Path) -> Iterator[Site]:
    running = start_site(tmp_path, SSO_SESSION_IDLE_TIMEOUT="3")
    yield running
    running.close()


# ---- helpers ------------------------------------------------------------------------------------


def on_gateway(site: Site, path: str) -> Any:
    """A wait_for_url predicate: the tab shows the gateway page ``path``."""
    return lambda url: url.startswith(site.issuer + "/") and path_of(url) == path


def sign_in_at(page: Any, site: Site, portal: LivePortal, who: Citizen) -> None:
    """Open ``portal``, Sign in, the gateway's password form, its consent page when asked."""
    page.goto(portal.home)
    page.click("#sign-in")
    page.wait_for_url(on_gateway(site, "/login"))
    sign_in(page, who.id_number, who.password)
    if path_of(page.url) == "/consent":
        allow(page)
    page.wait_for_url(portal.home)
    assert signed_in_as(page) == who.name


def consent_if_asked(page: Any, site: Site, portal: LivePortal, who: Citizen) -> None:
    """Open ``portal`` while signed in at the gateway: its consent page at most, then signed in."""
    page.goto(portal.home)
    if page.url.startswith(site.issuer + "/"):
        assert path_of(page.url) == "/consent", page.url
        allow(page)
    page.wait_for_url(portal.home)
    assert signed_in_as(page) == who.name


def portal_claims(page: Any) -> dict[str, Any]:
    """The ID token claims the portal page lists (its 'ID token and UserInfo claims' box)."""
    return json.loads(page.locator("#who details pre").text_content())["id_token"]  # type: ignore[no-any-return]


def no_horizontal_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH, page.url


def silent_authorize(page: Any, site: Site, portal: LivePortal) -> tuple[dict[str, str], dict[str, str]]:
    """Navigate to /authorize with prompt=none for ``portal``; what came back to its redirect URI.

    Proves the gateway answered with one redirect straight to the redirect URI (no
    page of its own in between).  What the portal then makes of a response it did
    not ask for is its business (it refuses the unknown state).  Returns the
    parameters the redirect carried and those the request was made with
    (state, nonce and the PKCE code_verifier).
    """
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    sent = {
        "client_id": portal.client_id,
        "response_type": "code",
        "redirect_uri": portal.callback,
        "scope": "openid profile",
        "state": secrets.token_urlsafe(12),
        "nonce": secrets.token_urlsafe(12),
        "prompt": "none",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    made: list[Any] = []

    def record(request: Any) -> None:
        made.append(request)

    page.on("request", record)
    try:
        page.goto(site.issuer + "/authorize?" + urlencode(sent))
    finally:
        page.remove_listener("request", record)
    back = next(r for r in made if r.url.startswith(portal.callback + "?"))
    hop = back.redirected_from  # the request the browser was redirected from
    assert hop is not None and hop.redirected_from is None, "more than one hop to the redirect URI"
    assert hop.url.startswith(site.issuer + "/authorize?") and hop.response().status == 302
    return query_of(back.url), {**sent, "code_verifier": verifier}


# ---- 1. the journey -------------------------------------------------------------------------------


def test_single_sign_on_and_single_logout_across_both_portals(site: Site, page: Any) -> None:
    tax, social = site.tax, site.social
    seen = Requests(page)

    # The tax portal checks silently (prompt=none) and offers Sign in: no gateway page was shown.
    page.goto(tax.home)
    assert signed_in_as(page) is None
    assert seen.urls(site.issuer, "/authorize") and seen.pages_shown(site.issuer) == []
    screenshot(page, "journey-01-tax-portal-signed-out")

    # Sign in: the gateway's login page, naming the portal.
    page.click("#sign-in")
    page.wait_for_url(on_gateway(site, "/login"))
    assert tax.name in page.locator("body").inner_text()
    assert page.locator("form#login-form input[type=password]").is_visible()
    screenshot(page, "journey-02-gateway-login")
    sign_in(page, ZHANG_SAN.id_number, ZHANG_SAN.password)

    # First time at this portal: the consent page, for the scopes it asked (openid profile).
    assert path_of(page.url) == "/consent"
    assert tax.name in page.locator("h1").inner_text()
    assert sorted(page.locator("ul.scopes li").evaluate_all("els => els.map(e => e.dataset.scope)")) == [
        "openid",
        "profile",
    ]
    screenshot(page, "journey-03-gateway-consent-tax")
    allow(page)

    # Back at the tax portal: 张三, registry-verified password sign-in (loa:2).
    page.wait_for_url(tax.home)
    assert signed_in_as(page) == ZHANG_SAN.name
    claims = portal_claims(page)
    assert claims["acr"] == LOA2 and claims["amr"] == ["pwd"]
    assert LOA2 in page.locator("#who").inner_text() and "二级" in page.locator("#who").inner_text()
    screenshot(page, "journey-04-tax-portal-signed-in")

    # The social-security portal: to the gateway and back without the login form; consent, this first time.
    seen.clear()
    page.goto(social.home)
    page.wait_for_url(on_gateway(site, "/consent"))
    assert social.name in page.locator("h1").inner_text()
    assert page.locator("form#login-form").count() == 0
    screenshot(page, "journey-05-gateway-consent-social")
    allow(page)
    page.wait_for_url(social.home)
    assert signed_in_as(page) == ZHANG_SAN.name
    assert seen.urls(site.issuer, "/login") == [], "the gateway's login page was asked for"
    assert [path_of(u) for u in seen.pages_shown(site.issuer)] == ["/consent"]
    assert portal_claims(page)["sid"] == claims["sid"]  # the same gateway session
    screenshot(page, "journey-06-social-portal-signed-in")

    # Sign out at the social portal: RP-initiated logout, back to its page at once.
    seen.clear()
    page.click("#sign-out")
    page.wait_for_url(lambda url: url.startswith(social.home + "?state="))
    assert signed_in_as(page) is None and "已退出登录" in page.locator("#notice").inner_text()
    assert seen.urls(site.issuer, "/logout") and seen.pages_shown(site.issuer) == []
    screenshot(page, "journey-07-social-portal-signed-out")

    # The tax portal hears of it by back-channel logout (asynchronous): signed out within seconds.
    wait_signed_out(page, tax, seconds=5)
    assert "ended 1 session(s)" in tax.log.read_text(errors="replace")
    screenshot(page, "journey-08-tax-portal-signed-out-by-back-channel")


# ---- 2. silent sign-on: prompt=none -------------------------------------------------------------


def test_prompt_none_answers_without_showing_a_page(site: Site, phone_page: Any, page: Any) -> None:
    tax, social = site.tax, site.social
    phone = phone_page

    # 赵敏 signs in at the tax portal on a phone: the login and consent pages fit its width.
    phone.goto(tax.home)
    phone.click("#sign-in")
    phone.wait_for_url(on_gateway(site, "/login"))
    no_horizontal_scroll(phone)
    screenshot(phone, "journey-phone-gateway-login")
    sign_in(phone, ZHAO_MIN.id_number, ZHAO_MIN.password)
    assert path_of(phone.url) == "/consent"
    no_horizontal_scroll(phone)
    screenshot(phone, "journey-phone-gateway-consent")
    allow(phone)
    phone.wait_for_url(tax.home)
    assert signed_in_as(phone) == ZHAO_MIN.name
    sid = portal_claims(phone)["sid"]

    # Signed in, but never agreed to the social portal: consent_required, straight back, no page.
    params, sent = silent_authorize(phone, site, social)
    assert params == {"error": "consent_required", "state": sent["state"], "iss": site.issuer}

    # The portal then starts an ordinary request: the gateway's consent page, this first time only.
    phone.wait_for_url(on_gateway(site, "/consent"))
    allow(phone)
    phone.wait_for_url(social.home)
    assert signed_in_as(phone) == ZHAO_MIN.name

    # Once agreed, prompt=none returns a code straight to its redirect URI.
    params, sent = silent_authorize(phone, site, social)
    assert params.keys() == {"code", "state", "iss"}
    assert params["state"] == sent["state"] and params["iss"] == site.issuer
    # A real code of this session: the portal's registration redeems it (PKCE) for 赵敏's ID token.
    meta = requests.get(site.issuer + "/.well-known/openid-configuration", timeout=TIMEOUT).json()
    token = requests.post(
        meta["token_endpoint"],
        auth=(social.client_id, social.secret),
        timeout=TIMEOUT,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": social.callback,
            "code_verifier": sent["code_verifier"],
        },
    )
    assert token.status_code == 200, token.text
    id_token = verify_id_token(meta, token.json()["id_token"], client_id=social.client_id)
    assert (id_token["nonce"], id_token["sid"]) == (sent["nonce"], sid)

    # Without a gateway session (another browser): login_required, with state and iss, no page either.
    params, sent = silent_authorize(page, site, tax)
    assert params == {"error": "login_required", "state": sent["state"], "iss": site.issuer}


# ---- 3. step-up ----------------------------------------------------------------------------------


def test_step_up_asks_only_for_the_second_factor(second_site: Site, page: Any) -> None:
    site, tax = second_site, second_site.tax

    # 张三 signs in at the gateway itself and opens his security settings.
    page.goto(site.issuer + "/")
    screenshot(page, "journey-mfa-01-gateway-home")
    page.click("a[href='/login']")
    page.wait_for_url(on_gateway(site, "/login"))
    sign_in(page, ZHANG_SAN.id_number, ZHANG_SAN.password)
    page.wait_for_url(on_gateway(site, "/"))
    assert ZHANG_SAN.name in page.locator("body").inner_text()
    page.goto(site.issuer + "/account")
    screenshot(page, "journey-mfa-02-account")
    page.click("a[href='/mfa']")
    page.wait_for_url(on_gateway(site, "/mfa"))
    screenshot(page, "journey-mfa-03-security-settings")

    # Adding a factor needs one he has: an SMS code to his bound phone first.
    page.click("#enroll-link")
    page.wait_for_url(on_gateway(site, "/mfa/challenge"))
    screenshot(page, "journey-mfa-04-sms-challenge")
    page.click("#sms-send-form button[type=submit]")
    page.wait_for_load_state()
    screenshot(page, "journey-mfa-05-sms-code-sent")
    page.fill("#sms-form input[name=code]", site.sms_code(ZHANG_SAN.phone))
    page.click("#sms-form button[type=submit]")

    # The authenticator: a QR code and the key by hand; an app's code confirms it.
    page.wait_for_url(on_gateway(site, "/mfa/enroll"))
    assert page.locator("#qr svg").is_visible()
    screenshot(page, "journey-mfa-06-enrol-qr")
    totp = pyotp.TOTP(page.locator("#secret").inner_text().replace(" ", ""))
    page.fill("#enroll-form input[name=code]", totp.now())
    page.click("#enroll-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#mfa-done").is_visible()
    assert page.locator("#recovery-codes li").count() == 10
    screenshot(page, "journey-mfa-07-recovery-codes")

    # Sign out of the gateway (no portal asked: it asks to confirm), so the next session has a password only.
    page.goto(site.issuer + "/logout")
    screenshot(page, "journey-mfa-08-logout-confirm")
    page.click("#logout-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#logged-out").is_visible()
    screenshot(page, "journey-mfa-09-logged-out")

    # An ordinary sign-in at the tax portal: password only, loa:2.
    sign_in_at(page, site, tax, ZHANG_SAN)
    assert portal_claims(page)["acr"] == LOA2

    # "Sign in with two factors": the gateway asks for the authenticator code and nothing else.
    seen = Requests(page)
    page.click("a[href='/login?as=two-factors']")
    page.wait_for_url(on_gateway(site, "/mfa/challenge"))
    assert page.locator("#totp-form input[name=code]").is_visible()
    assert page.locator("input[type=password]").count() == 0 and page.locator("form#login-form").count() == 0
    assert tax.name in page.locator("body").inner_text()
    screenshot(page, "journey-mfa-10-step-up-challenge")
    # The code of the next time step: the enrolment used this one, and a code counts once.
    page.fill("#totp-form input[name=code]", totp.at(time.time() + 30))
    page.click("#totp-form button[type=submit]")
    page.wait_for_url(tax.home)
    assert seen.urls(site.issuer, "/login") == []

    assert signed_in_as(page) == ZHANG_SAN.name and page.locator("#notice").count() == 0
    claims = portal_claims(page)
    assert claims["acr"] == LOA3
    assert {"pwd", "otp", "mfa"} <= set(claims["amr"]) and "sms" not in claims["amr"]
    assert LOA3 in page.locator("#who").inner_text() and "三级" in page.locator("#who").inner_text()
    screenshot(page, "journey-mfa-11-tax-portal-two-factors")


# ---- 4. idle timeout --------------------------------------------------------------------------------


def test_an_idle_session_ends_and_the_portal_is_told(idle_site: Site, page: Any) -> None:
    site, tax, social = idle_site, idle_site.tax, idle_site.social
    sign_in_at(page, site, tax, ZHANG_SAN)
    last_use = time.monotonic()
    sid = portal_claims(page)["sid"]

    time.sleep(max(0.0, last_use + 5 - time.monotonic()))  # the timeout is 3 s; nobody touches the gateway

    # The other portal: its silent check finds no session; Sign in shows the login page again.
    page.goto(social.home)
    assert signed_in_as(page) is None
    page.click("#sign-in")
    page.wait_for_url(on_gateway(site, "/login"))
    assert page.locator("form#login-form input[type=password]").is_visible()
    screenshot(page, "journey-idle-gateway-login-again")

    # The sweeper ended the session as idle and told the tax portal by back-channel.
    wait_signed_out(page, tax, seconds=5)
    assert site.query("SELECT end_reason FROM session_records WHERE sid = ?", sid) == [{"end_reason": "idle_timeout"}]
    assert [d["status"] for d in site.deliveries(tax.client_id)] == ["delivered"]
    assert "ended 1 session(s)" in tax.log.read_text(errors="replace")


# ---- 5. logout while a portal is down ------------------------------------------------------------


def wait_for_row(site: Site, client_id: str, sid: str, ready: Any, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        rows = [d for d in site.deliveries(client_id) if d["sid"] == sid]
        if rows and ready(rows[0]):
            return rows[0]
        assert time.monotonic() < deadline, f"delivery to {client_id}: {rows}"
        time.sleep(0.1)


def test_logout_is_not_held_up_by_a_portal_that_is_down(second_site: Site, page: Any) -> None:
    site, tax, social = second_site, second_site.tax, second_site.social
    sign_in_at(page, site, tax, ZHAO_MIN)
    consent_if_asked(page, site, social, ZHAO_MIN)
    sid = portal_claims(page)["sid"]
    page.goto(tax.home)
    social.stop()

    # Sign out at the tax portal: the gateway only queues the back-channel logouts, so no waiting.
    started = time.monotonic()
    page.click("#sign-out")
    page.wait_for_url(lambda url: url.startswith(tax.home + "?state="))
    took = time.monotonic() - started
    assert took < 2, f"the sign-out took {took:.1f} s"
    assert signed_in_as(page) is None and "已退出登录" in page.locator("#notice").inner_text()

    # The tax portal was told; the social portal's delivery failed once and waits for its retry.
    assert wait_for_row(site, tax.client_id, sid, lambda d: d["status"] == "delivered", 5)["attempts"] == 1
    first = wait_for_row(site, social.client_id, sid, lambda d: d["last_error"] is not None, 5)
    assert (first["status"], first["attempts"]) == ("pending", 1), first
    assert "refused" in first["last_error"].lower(), first

    # SSO_LOGOUT_MAX_ATTEMPTS=2: the retry (after RETRY_DELAYS[0] = 5 s) fails too, and it is given up, recorded.
    final = wait_for_row(site, social.client_id, sid, lambda d: d["status"] != "pending", 10)
    assert (final["status"], final["attempts"]) == ("failed", 2), final
    assert "refused" in final["last_error"].lower() and final["delivered_at"] is None
    events = site.query("SELECT client_id, outcome FROM audit_events WHERE event = 'logout.delivery_failed'")
    assert {"client_id": social.client_id, "outcome": "failure"} in events


# ---- 6. a disabled portal -----------------------------------------------------------------------------


def test_a_disabled_portal_gets_the_error_page_never_a_redirect(site: Site, page: Any) -> None:
    portal = site.start_portal("disabled", "social_portal", "disabled-journey", name="停用的门户 Disabled portal")
    page.goto(portal.home)  # its silent check: login_required, Sign in offered
    assert signed_in_as(page) is None

    site.gateway.cli("clients", "disable", portal.client_id)
    seen = Requests(page)
    page.click("#sign-in")
    page.wait_for_url(lambda url: url.startswith(site.issuer + "/authorize?"))
    assert page.locator("#error-code").inner_text() == "invalid_client"
    assert seen.documents[-1][0] == 400
    screenshot(page, "journey-error-disabled-portal")
    page.wait_for_timeout(500)
    assert page.url.startswith(site.issuer + "/authorize?")
    assert seen.urls(portal.base, "/callback") == [], "the gateway sent the browser back to a disabled portal"

    # A first visit to it (its silent check) ends on the same page.
    page.context.clear_cookies()
    page.goto(portal.home)
    assert page.url.startswith(site.issuer + "/") and page.locator("#error-code").inner_text() == "invalid_client"
