"""Second factors and step-up: TOTP, recovery codes, SMS codes, the challenge page, acr/amr in ID tokens."""

from __future__ import annotations

import html
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from sso import mfa, throttle
from sso import session as browser_session
from sso.accounts import register_citizen, verify_real_name
from sso.connectors.demo_data import DEMO_CITIZEN
from sso.db import db
from sso.models import Account, AuditEvent, RecoveryCode
from tests.conftest import PASSWORD, USERNAME, csrf_from, form_fields, interaction_from, pkce_pair, query_of, redeem
from tests.tokens_util import verify

CITIZEN_PASSWORD = "Zhang-San-2026"
PHONE = DEMO_CITIZEN.phone  # 13800138000
LOA1, LOA2, LOA3 = "urn:cn:sso:loa:1", "urn:cn:sso:loa:2", "urn:cn:sso:loa:3"
COOKIE = "sso_session"


class Clock:
    """One wall clock for TOTP steps and the throttle, and the store's TTL clock with it."""

    def __init__(self, monkeypatch: Any, app: Any) -> None:
        # The middle of a 30 s step: a test that advances by whole steps stays clear of edges.
        self.wall = (time.time() // 30) * 30 + 15
        self.mono = time.monotonic()
        monkeypatch.setattr(mfa, "_clock", lambda: self.wall)
        monkeypatch.setattr(throttle, "_clock", lambda: self.wall)
        monkeypatch.setattr(app.extensions["sso"].store, "_clock", lambda: self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock(app: Any, monkeypatch: Any) -> Clock:
    return Clock(monkeypatch, app)


@pytest.fixture
def citizen(app: Any) -> Account:
    """张三, registered after real-name verification, phone bound: assurance registry-verified."""
    return register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), CITIZEN_PASSWORD, PHONE)


def give_totp(app: Any, account: Account, clock: Clock) -> tuple[pyotp.TOTP, list[str]]:
    """An authenticator confirmed directly (the pages are tested on their own)."""
    with app.test_request_context():
        enrolment = mfa.start_enrolment(account)
        totp = pyotp.TOTP(enrolment.secret)
        codes = mfa.confirm_enrolment(account, totp.at(clock.wall))
    assert codes is not None
    clock.advance(30)  # the confirming code's step is spent
    return totp, [c.replace(" ", "") for c in codes]


# ---- driving the pages ---------------------------------------------------------------------


def alert(page: Any) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', page.get_data(as_text=True), re.S)
    return html.unescape(found.group(1)).strip() if found else ""


def sign_in(client: Any, username: str, password: str, uid: str = "") -> Any:
    page = client.get("/login", query_string={"interaction": uid} if uid else None)
    return client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "interaction": uid, "username": username, "password": password},
    )


def challenge_page_url(location: str) -> str:
    assert location.startswith("/mfa/challenge"), location
    return location


def submit_code(client: Any, location: str, code: str, method: str | None = None, **extra: str) -> Any:
    page = client.get(location)
    assert page.status_code == 200, page.text
    found = re.search(r'name="method" type="hidden" value="([^"]*)"', page.text)
    query = query_of(location)
    data = {
        "csrf_token": csrf_from(page.text),
        "interaction": query.get("interaction", ""),
        "next": query.get("next", ""),
        "method": method or (found.group(1) if found else ""),
        "code": code,
        "action": "verify",
    }
    data.update(extra)
    return client.post("/mfa/challenge", data=data)


def send_sms(client: Any, location: str) -> Any:
    """Press the page's own "send code" button: the form's fields as the page renders them."""
    page = client.get(location)
    fields = form_fields(page.text, "sms-send-form")
    assert fields.get("csrf_token"), "the send form has no CSRF token"
    return client.post("/mfa/challenge", data={**fields, "action": "send"})


def last_sms_code(app: Any, phone: str = PHONE) -> str:
    messages = app.extensions["sso"].sms.messages(phone)
    assert messages, "no SMS sent"
    return re.search(r"\d{6}", str(messages[-1]["text"])).group(0)  # type: ignore[union-attr]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def authorize(client: Any, portal: Any, **params: str) -> tuple[Any, str]:
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": portal.client_id,
        "redirect_uri": portal.redirect_uri,
        "scope": "openid profile",
        "state": "st-mfa",
        "nonce": "n-mfa",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(params)
    return client.get("/authorize", query_string=query), verifier


def consent_if_asked(client: Any, response: Any) -> Any:
    location = response.headers.get("Location", "")
    if location.startswith("/authorize/resume"):
        response = client.get(location)
        location = response.headers.get("Location", "")
    if location.startswith("/consent"):
        page = client.get(location)
        response = client.post(
            "/consent",
            data={"csrf_token": csrf_from(page.text), "interaction": interaction_from(location), "decision": "allow"},
        )
        response = client.get(response.headers["Location"])
    return response


def id_token_claims(client: Any, portal: Any, response: Any, verifier: str) -> dict[str, Any]:
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    assert location.startswith(portal.redirect_uri), location
    tokens = redeem(client, portal, query_of(location)["code"], verifier).get_json()
    return verify(client, tokens["id_token"], audience=portal.client_id)


def the_session(account_id: str) -> browser_session.BrowserSession:
    [record] = browser_session.sessions_of(account_id)
    session = browser_session.load(record.handle)
    assert session is not None
    return session


def session_cookie(client: Any) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value  # type: ignore[no-any-return]


# ---- enrolment --------------------------------------------------------------------------------


def test_enrolment_shows_a_qr_code_and_the_key_and_confirms_with_a_first_code(app, client, citizen, clock):
    assert sign_in(client, PHONE, CITIZEN_PASSWORD).status_code == 302
    # The account can already prove a factor (its phone): adding one needs it first.
    first = client.get("/mfa/enroll")
    assert first.status_code == 302 and first.headers["Location"] == "/mfa/challenge?next=enroll"
    page = client.get(first.headers["Location"])
    assert "138****8000" in page.text and PHONE not in page.text
    assert send_sms(client, first.headers["Location"]).status_code == 200
    done = submit_code(client, first.headers["Location"], last_sms_code(app))
    assert done.status_code == 302 and done.headers["Location"] == "/mfa/enroll"

    page = client.get("/mfa/enroll")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    body = page.text
    assert re.search(r'<figure class="qr" id="qr"><svg[^>]*viewBox', body) and "<path" in body
    assert "<script" not in body and "http" not in body.split('<figure class="qr"')[1].split("</figure>")[0]
    shown = html.unescape(re.search(r'id="secret"[^>]*>([^<]*)<', body).group(1))  # type: ignore[union-attr]
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", shown)
    secret = shown.replace(" ", "")
    for attribute in ('autocomplete="one-time-code"', 'inputmode="numeric"', '<label for="code">', 'name="csrf_token"'):
        assert attribute in body
    # A reload (or a language switch) shows the same key: a phone that scanned it keeps working.
    assert secret in client.get("/mfa/enroll?lang=en").text.replace(" ", "")
    assert "设置身份验证器应用" in client.get("/mfa/enroll?lang=zh-CN").text

    with app.test_request_context():
        uri = mfa.start_enrolment(db.session.get(Account, citizen.id)).uri
    parsed = urlsplit(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert unquote(parsed.path) == "/统一身份认证:138****8000"
    query = parse_qs(parsed.query)
    assert query["issuer"] == ["统一身份认证"] and query["secret"] == [secret]

    totp = pyotp.TOTP(secret)
    bad = client.post("/mfa/enroll", data={"csrf_token": csrf_from(body), "code": wrong(totp.at(clock.wall))})
    assert bad.status_code == 401 and alert(bad) == "验证码不正确或已失效。"
    assert mfa.confirmed_totp(citizen.id) is None
    clock.advance(5)  # the throttle's free attempts are not in the way; stays in the step
    ok = client.post("/mfa/enroll", data={"csrf_token": csrf_from(body), "code": totp.at(clock.wall)})
    assert ok.status_code == 200 and ok.headers["Cache-Control"] == "no-store"
    codes = re.findall(r"<li><code>([^<]+)</code></li>", ok.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[2-9A-HJ-NP-Z]{5} [2-9A-HJ-NP-Z]{5}", c) for c in codes)

    factor = mfa.confirmed_totp(citizen.id)
    assert factor is not None and factor.last_step == int(clock.wall // 30)
    assert secret.encode() not in factor.secret_sealed
    stored = [r.code_hash for r in RecoveryCode.query.filter_by(account_id=citizen.id)]
    assert len(stored) == 10 and not any(c.replace(" ", "") in h for c in codes for h in stored)
    assert AuditEvent.query.filter_by(event="mfa.enrolled", outcome="success").count() == 1
    # Set up once: the page now sends to the settings.
    assert client.get("/mfa/enroll").headers["Location"] == "/mfa?msg=already"


def test_an_account_without_any_factor_enrols_after_sign_in_only(client, account, clock):
    assert client.get("/mfa/enroll").headers["Location"] == "/login"  # signed-in only
    sign_in(client, USERNAME, PASSWORD)
    page = client.get("/mfa/enroll")
    assert page.status_code == 200 and "<svg" in page.text
    assert unquote(mfa.start_enrolment(account).uri).startswith("otpauth://totp/统一身份认证:alice?")


# ---- TOTP -------------------------------------------------------------------------------------


def test_totp_accepted_once_per_step_and_within_one_step_of_drift(app, citizen, clock):
    totp, _codes = give_totp(app, citizen, clock)
    code = totp.at(clock.wall)
    assert mfa.verify_totp(citizen.id, code)
    assert not mfa.verify_totp(citizen.id, code)  # replay of the same code
    clock.advance(30)
    assert not mfa.verify_totp(citizen.id, totp.at(clock.wall - 60))  # two steps old
    assert not mfa.verify_totp(citizen.id, totp.at(clock.wall + 60))  # two steps ahead
    assert mfa.verify_totp(citizen.id, totp.at(clock.wall + 30))  # one step of drift
    # That step (the next one) is now the last: the current step is no longer accepted.
    assert not mfa.verify_totp(citizen.id, totp.at(clock.wall))
    clock.advance(90)
    assert mfa.verify_totp(citizen.id, totp.at(clock.wall - 30))  # one step late
    assert not mfa.verify_totp(citizen.id, "12345a") and not mfa.verify_totp(citizen.id, "")


def test_a_code_used_for_one_step_up_is_refused_for_the_next(app, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    code = totp.at(clock.wall)
    first = app.test_client()
    assert submit_code(first, at_challenge(first, portal)[0], code).status_code == 302
    second = app.test_client()
    replay = submit_code(second, at_challenge(second, portal)[0], code)
    assert replay.status_code == 401 and alert(replay) == "验证码不正确或已失效。"
    clock.advance(30)
    assert submit_code(second, at_challenge(second, portal)[0], totp.at(clock.wall)).status_code == 302


def test_a_parallel_replay_of_one_totp_code_succeeds_once(app, citizen, clock):
    totp, _codes = give_totp(app, citizen, clock)
    code = totp.at(clock.wall)
    account_id = citizen.id  # read here: the ORM object belongs to this thread's session
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        with app.app_context():
            barrier.wait()
            results.append(mfa.verify_totp(account_id, code))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


# ---- recovery codes ---------------------------------------------------------------------------


def test_recovery_codes_are_single_use_and_go_with_the_authenticator(app, citizen, clock):
    _totp, codes = give_totp(app, citizen, clock)
    assert mfa.recovery_codes_left(citizen.id) == 10
    assert mfa.use_recovery_code(citizen.id, codes[0])
    assert not mfa.use_recovery_code(citizen.id, codes[0])
    assert mfa.use_recovery_code(citizen.id, mfa.normalise_code(" " + codes[1][:5].lower() + "-" + codes[1][5:]))
    assert not mfa.use_recovery_code(citizen.id, "2222222222")
    assert mfa.recovery_codes_left(citizen.id) == 8
    # New codes replace the old ones.
    fresh = mfa.new_recovery_codes(citizen.id)
    assert not mfa.use_recovery_code(citizen.id, codes[2])
    assert mfa.use_recovery_code(citizen.id, fresh[0].replace(" ", ""))
    mfa.remove_totp(citizen.id)
    assert mfa.recovery_codes_left(citizen.id) == 0 and mfa.confirmed_totp(citizen.id) is None


def test_one_recovery_code_used_by_ten_threads_at_once_succeeds_exactly_once(app, citizen, clock):
    _totp, codes = give_totp(app, citizen, clock)
    account_id = citizen.id  # read here: the ORM object belongs to this thread's session
    results: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def attempt() -> None:
        try:
            with app.app_context():
                barrier.wait()
                results.append(mfa.use_recovery_code(account_id, codes[3]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [False] * 9 + [True]
    assert mfa.recovery_codes_left(citizen.id) == 9


def test_recovery_code_on_the_challenge_page(app, client, citizen, clock, portal):
    _totp, codes = give_totp(app, citizen, clock)
    first, _verifier = authorize(client, portal, acr_values=LOA3)
    after_login = sign_in(client, PHONE, CITIZEN_PASSWORD, interaction_from(first.headers["Location"]))
    location = client.get(after_login.headers["Location"]).headers["Location"]
    page = client.get(location)
    assert 'id="use-recovery"' in page.text
    recovery_url = html.unescape(re.search(r'id="use-recovery" href="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    recovery_page = client.get(recovery_url)
    assert 'name="method" type="hidden" value="recovery"' in recovery_page.text
    done = submit_code(client, recovery_url, codes[5].lower())
    assert done.status_code == 302 and done.headers["Location"].startswith("/authorize/resume")
    session = the_session(citizen.id)
    assert session.amr == ["pwd", "otp", "mfa"] and session.acr == LOA3
    assert AuditEvent.query.filter_by(event="mfa.recovery_code_used").count() == 1
    assert mfa.recovery_codes_left(citizen.id) == 9


# ---- SMS codes --------------------------------------------------------------------------------


def at_challenge(client: Any, portal: Any, username: str = PHONE) -> tuple[str, str]:
    """A password-only session of the citizen, stopped at the challenge page: (location, PKCE verifier)."""
    first, verifier = authorize(client, portal, acr_values=LOA3)
    uid = interaction_from(first.headers["Location"])
    resumed = client.get(sign_in(client, username, CITIZEN_PASSWORD, uid).headers["Location"])
    return challenge_page_url(resumed.headers["Location"]), verifier


def sms_challenge(client: Any, portal: Any) -> str:
    return at_challenge(client, portal)[0]


def test_sms_code_to_the_bound_phone_single_use(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    page = client.get(location)
    assert "138****8000" in page.text and PHONE not in page.text
    assert 'name="password"' not in page.text  # only the missing factor, never the password again
    assert not app.extensions["sso"].sms.messages(PHONE)  # a GET sends nothing
    sent = send_sms(client, location)
    assert sent.status_code == 200 and 'autocomplete="one-time-code"' in sent.text
    [message] = app.extensions["sso"].sms.messages(PHONE)
    assert "统一身份认证" in str(message["text"]) and "5分钟" in str(message["text"])
    code = last_sms_code(app)

    bad = submit_code(client, location, wrong(code))
    assert bad.status_code == 401 and alert(bad) == "验证码不正确或已失效。"
    ok = submit_code(client, location, code)
    assert ok.status_code == 302 and ok.headers["Location"].startswith("/authorize/resume")
    session = the_session(citizen.id)
    assert session.amr == ["pwd", "sms", "mfa"] and session.acr == LOA3 and session.second_factor_time

    # Replayed in a new password-only session: refused.
    other = app.test_client()
    location2 = sms_challenge(other, portal)
    replay = submit_code(other, location2, code)
    assert replay.status_code == 401 and alert(replay) == "验证码不正确或已失效。"


def test_sms_code_expires_after_five_minutes_and_resend_waits_a_minute(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    assert send_sms(client, location).status_code == 200
    code = last_sms_code(app)
    again = send_sms(client, location)
    assert again.status_code == 429 and again.headers["Retry-After"] == "60"
    assert len(app.extensions["sso"].sms.messages(PHONE)) == 1
    clock.advance(301)
    expired = submit_code(client, location, code)
    assert expired.status_code == 401 and alert(expired) == "验证码不正确或已失效。"
    assert send_sms(client, location).status_code == 200
    assert len(app.extensions["sso"].sms.messages(PHONE)) == 2
    # A new code replaces the old one.
    assert submit_code(client, location, last_sms_code(app)).status_code == 302


def test_sms_code_dies_after_five_wrong_tries(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    send_sms(client, location)
    code = last_sms_code(app)
    for _ in range(5):
        assert submit_code(client, location, wrong(code)).status_code == 401
        clock.advance(20)  # past the throttle's growing wait
    late = submit_code(client, location, code)
    assert late.status_code == 401 and alert(late) == "验证码不正确或已失效。"


def test_sms_sends_are_capped_per_hour(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    for _ in range(mfa.SMS_MAX_SENDS):
        assert send_sms(client, location).status_code == 200
        clock.advance(61)
    capped = send_sms(client, location)
    assert capped.status_code == 429 and int(capped.headers["Retry-After"]) > 60
    assert len(app.extensions["sso"].sms.messages(PHONE)) == mfa.SMS_MAX_SENDS


# ---- throttling and identical answers ---------------------------------------------------------------


def test_wrong_codes_are_throttled_with_retry_after(app, client, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    first, _verifier = authorize(client, portal, acr_values=LOA3)
    location = client.get(
        sign_in(client, PHONE, CITIZEN_PASSWORD, interaction_from(first.headers["Location"])).headers["Location"]
    ).headers["Location"]
    for _ in range(3):
        assert submit_code(client, location, wrong(totp.at(clock.wall))).status_code == 401
    refused = submit_code(client, location, totp.at(clock.wall))  # even the right code waits
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert 'id="throttled"' in refused.text
    clock.advance(1)
    assert submit_code(client, location, totp.at(clock.wall)).status_code == 302


def test_every_factor_answers_a_wrong_code_the_same_way(app, citizen, clock, portal):
    answers = []
    # SMS (no authenticator yet)
    client = app.test_client()
    location = sms_challenge(client, portal)
    send_sms(client, location)
    response = submit_code(client, location, wrong(last_sms_code(app)))
    answers.append((response.status_code, alert(response)))
    # TOTP and recovery code
    totp, _codes = give_totp(app, citizen, clock)
    client = app.test_client()
    location = sms_challenge(client, portal)
    response = submit_code(client, location, wrong(totp.at(clock.wall)))
    answers.append((response.status_code, alert(response)))
    response = submit_code(client, location, "ABCDE23456", method="recovery")
    answers.append((response.status_code, alert(response)))
    assert answers == [(401, "验证码不正确或已失效。")] * 3


def test_the_authenticator_replaces_sms_on_the_challenge(app, client, citizen, clock, portal):
    give_totp(app, citizen, clock)
    location = sms_challenge(client, portal)
    page = client.get(location)
    assert 'value="totp"' in page.text and "138****8000" not in page.text
    # SMS is not a way around the authenticator once it is set up, even for a forged request.
    query = query_of(location)
    refused = client.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_from(page.text),
            "interaction": query.get("interaction", ""),
            "method": "sms",
            "action": "send",
        },
    )
    assert refused.status_code == 400 and not app.extensions["sso"].sms.messages(PHONE)


# ---- step-up through the authorization endpoint ------------------------------------------------------


def test_step_up_journey_with_totp(app, client, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    # A password-only session: loa:2 for a registry-verified citizen.
    first, verifier = authorize(client, portal)
    uid = interaction_from(first.headers["Location"])
    claims = id_token_claims(
        client, portal, consent_if_asked(client, sign_in(client, PHONE, CITIZEN_PASSWORD, uid)), verifier
    )
    assert claims["acr"] == LOA2 and claims["amr"] == ["pwd"]

    # The portal asks for loa:3: only the second factor is asked for.
    asked, verifier = authorize(client, portal, acr_values=LOA3)
    location = asked.headers["Location"]
    assert location.startswith("/mfa/challenge?interaction=")
    page = client.get(location)
    assert page.status_code == 200
    assert 'name="password"' not in page.text and 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text and "税务服务 Tax portal" in page.text
    before = session_cookie(client)
    done = submit_code(client, location, totp.at(clock.wall))
    assert (
        done.status_code == 302
        and done.headers["Location"] == f"/authorize/resume?interaction={query_of(location)['interaction']}"
    )
    claims = id_token_claims(client, portal, client.get(done.headers["Location"]), verifier)
    assert claims["acr"] == LOA3
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert session_cookie(client) != before

    # The same request again: silent.
    again, verifier = authorize(client, portal, acr_values=LOA3)
    claims = id_token_claims(client, portal, again, verifier)
    assert claims["acr"] == LOA3 and set(claims["amr"]) == {"pwd", "otp", "mfa"}
    event = AuditEvent.query.filter_by(event="mfa.challenge", outcome="success").one()
    assert event.detail["acr"] == LOA3 and event.client_id == portal.client_id


def test_step_up_journey_with_sms(app, client, citizen, clock, portal):
    location, verifier = at_challenge(client, portal)
    send_sms(client, location)
    done = submit_code(client, location, last_sms_code(app))
    claims = id_token_claims(client, portal, consent_if_asked(client, done), verifier)
    assert claims["acr"] == LOA3 and claims["amr"] == ["pwd", "sms", "mfa"]
    again, verifier = authorize(client, portal, acr_values=LOA3)
    assert id_token_claims(client, portal, again, verifier)["amr"] == ["pwd", "sms", "mfa"]


def test_self_asserted_account_is_not_stepped_up_and_gets_its_true_acr(app, client, account, clock, portal):
    give_totp(app, account, clock)  # even with an authenticator: registry verification cannot be added by a login
    first, verifier = authorize(client, portal, acr_values=LOA3)
    response = consent_if_asked(
        client, sign_in(client, USERNAME, PASSWORD, interaction_from(first.headers["Location"]))
    )
    claims = id_token_claims(client, portal, response, verifier)
    assert claims["acr"] == LOA1 and claims["amr"] == ["pwd"]
    assert not AuditEvent.query.filter_by(event="mfa.challenge").count()


def test_max_age_with_step_up_asks_for_the_password_then_the_second_factor(app, client, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    first, verifier = authorize(client, portal, acr_values=LOA3)
    location = client.get(
        sign_in(client, PHONE, CITIZEN_PASSWORD, interaction_from(first.headers["Location"])).headers["Location"]
    ).headers["Location"]
    id_token_claims(
        client, portal, consent_if_asked(client, submit_code(client, location, totp.at(clock.wall))), verifier
    )

    # Ten minutes later a portal wants loa:3 and a sign-in at most 60 s old.
    session = the_session(citizen.id)
    session.auth_time -= 600
    browser_session.save(session)
    clock.advance(30)
    asked, verifier = authorize(client, portal, acr_values=LOA3, max_age="60")
    assert asked.headers["Location"].startswith("/login?interaction=")
    uid = interaction_from(asked.headers["Location"])
    after_login = client.get(sign_in(client, PHONE, CITIZEN_PASSWORD, uid).headers["Location"])
    location = after_login.headers["Location"]
    assert location == f"/mfa/challenge?interaction={uid}"  # the new sign-in has the password only
    done = submit_code(client, location, totp.at(clock.wall))
    claims = id_token_claims(client, portal, client.get(done.headers["Location"]), verifier)
    assert claims["acr"] == LOA3 and claims["amr"] == ["pwd", "otp", "mfa"]
    assert time.time() - claims["auth_time"] < 60


def test_session_handle_rotates_at_step_up_and_the_old_cookie_dies(app, client, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    first, _verifier = authorize(client, portal, acr_values=LOA3)
    location = client.get(
        sign_in(client, PHONE, CITIZEN_PASSWORD, interaction_from(first.headers["Location"])).headers["Location"]
    ).headers["Location"]
    before = session_cookie(client)
    old = the_session(citizen.id)
    submit_code(client, location, totp.at(clock.wall))
    after = session_cookie(client)
    assert after != before and after.split(".")[0] != before.split(".")[0]
    new = the_session(citizen.id)
    assert new.sid == old.sid and new.handle != old.handle

    stale = app.test_client()
    stale.set_cookie(COOKIE, before)
    response, _verifier = authorize(stale, portal, prompt="none")
    assert query_of(response.headers["Location"])["error"] == "login_required"
    fresh = app.test_client()
    fresh.set_cookie(COOKIE, after)
    response, _verifier = authorize(fresh, portal, prompt="none", acr_values=LOA3)
    assert query_of(response.headers["Location"])["error"] == "consent_required"  # signed in, at loa:3


def test_prompt_none_needing_a_second_factor_is_interaction_required(app, client, citizen, clock, portal):
    first, _verifier = authorize(client, portal)
    consent_if_asked(client, sign_in(client, PHONE, CITIZEN_PASSWORD, interaction_from(first.headers["Location"])))
    response, _verifier = authorize(client, portal, prompt="none", acr_values=LOA3)
    assert response.status_code == 302 and response.headers["Location"].startswith(portal.redirect_uri)
    query = query_of(response.headers["Location"])
    assert query["error"] == "interaction_required"
    assert query["state"] == "st-mfa" and query["iss"] == app.extensions["sso"].settings.issuer


def test_cancel_on_the_challenge_returns_access_denied_to_the_portal(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    page = client.get(location)
    response = client.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_from(page.text), "interaction": query_of(location)["interaction"], "action": "cancel"},
    )
    query = query_of(response.headers["Location"])
    assert query["error"] == "access_denied" and query["state"] == "st-mfa"


def test_an_account_with_no_second_factor_is_told_so_and_can_go_back(app, client, citizen, clock, portal):
    citizen.phone = None
    db.session.commit()
    location, _verifier = at_challenge(client, portal, username=DEMO_CITIZEN.id_number)
    page = client.get(location)
    assert page.status_code == 403 and 'id="mfa-unavailable"' in page.text and 'name="code"' not in page.text
    # Nothing to send a code to, nothing to verify.
    uid = query_of(location)["interaction"]
    for method, action in (("sms", "send"), ("totp", "verify"), ("recovery", "verify")):
        data = {
            "csrf_token": csrf_from(page.text),
            "interaction": uid,
            "method": method,
            "action": action,
            "code": "123456",
        }
        assert client.post("/mfa/challenge", data=data).status_code == 400
    assert not app.extensions["sso"].sms.messages()
    response = client.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_from(page.text), "interaction": query_of(location)["interaction"], "action": "cancel"},
    )
    assert query_of(response.headers["Location"])["error"] == "access_denied"


# ---- managing factors --------------------------------------------------------------------------------


def test_removing_the_authenticator_needs_a_fresh_second_factor(app, client, citizen, clock):
    totp, _codes = give_totp(app, citizen, clock)
    sign_in(client, PHONE, CITIZEN_PASSWORD)
    page = client.get("/mfa")
    assert page.status_code == 200 and 'id="remove-totp"' in page.text and "138****8000" in page.text
    assert "10" in re.search(r'id="factor-recovery">(.*?)</li>', page.text, re.S).group(1)  # type: ignore[union-attr]
    refused = client.post("/mfa/remove", data={"csrf_token": csrf_from(page.text)})
    assert refused.status_code == 302 and refused.headers["Location"] == "/mfa/challenge?next=manage"
    assert mfa.confirmed_totp(citizen.id) is not None
    back = submit_code(client, "/mfa/challenge?next=manage", totp.at(clock.wall))
    assert back.headers["Location"] == "/mfa"
    # The proof goes stale after a while.
    clock.advance(mfa.FRESH_SECONDS + 1)
    page = client.get("/mfa")
    stale = client.post("/mfa/remove", data={"csrf_token": csrf_from(page.text)})
    assert stale.headers["Location"] == "/mfa/challenge?next=manage"
    submit_code(client, "/mfa/challenge?next=manage", totp.at(clock.wall))
    page = client.get("/mfa")
    removed = client.post("/mfa/remove", data={"csrf_token": csrf_from(page.text)})
    assert removed.headers["Location"] == "/mfa?msg=removed"
    assert mfa.confirmed_totp(citizen.id) is None and mfa.recovery_codes_left(citizen.id) == 0
    page = client.get("/mfa?msg=removed")
    assert 'id="enroll-link"' in page.text and "身份验证器应用已移除。" in page.text
    assert AuditEvent.query.filter_by(event="mfa.removed").count() == 1


def test_new_recovery_codes_replace_the_old_ones(app, client, citizen, clock):
    totp, codes = give_totp(app, citizen, clock)
    sign_in(client, PHONE, CITIZEN_PASSWORD)
    submit_code(client, "/mfa/challenge?next=manage", totp.at(clock.wall))
    page = client.get("/mfa")
    response = client.post("/mfa/recovery-codes", data={"csrf_token": csrf_from(page.text)})
    fresh = re.findall(r"<li><code>([^<]+)</code></li>", response.text)
    assert response.status_code == 200 and len(fresh) == 10
    assert not mfa.use_recovery_code(citizen.id, codes[0])
    assert mfa.use_recovery_code(citizen.id, fresh[0].replace(" ", ""))


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_gets_a_clear_answer_never_a_500(app, client, citizen, clock, portal):
    totp, _codes = give_totp(app, citizen, clock)
    location = sms_challenge(client, portal)
    for code, expected in (
        ("12a456", "请输入6位数字验证码。"),
        ("１２３", "请输入6位数字验证码。"),
        ("1234567", "请输入6位数字验证码。"),
        ("", "请输入6位数字验证码。"),
        ("9" * 5000, "请输入6位数字验证码。"),
        ("٣٣٣٣٣٣", "请输入6位数字验证码。"),  # digits, but not ASCII ones
    ):
        response = submit_code(client, location, code)
        assert response.status_code == 400 and alert(response) == expected, code
    assert submit_code(client, location, "!!", method="recovery").status_code == 400
    assert submit_code(client, location, "123456", method="carrier-pigeon").status_code == 400
    # Full-width digits from an IME are accepted as digits.
    fullwidth = totp.at(clock.wall).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert submit_code(client, location, fullwidth).status_code == 302

    uid = query_of(location)["interaction"]
    no_csrf = client.post("/mfa/challenge", data={"interaction": uid, "method": "totp", "code": "123456"})
    assert no_csrf.status_code == 400 and "CSRF" in no_csrf.get_data(as_text=True)
    assert client.post("/mfa/enroll", data={"code": "123456"}).status_code == 400
    assert client.post("/mfa/remove").status_code == 400

    assert client.get("/mfa/challenge").status_code == 400
    assert client.get("/mfa/challenge?next=elsewhere").status_code == 400
    assert client.get("/mfa/challenge?interaction=" + "x" * 65).status_code == 400
    assert client.get("/mfa/challenge?interaction=unknown").status_code == 400
    oversized = client.post("/mfa/challenge", data={"code": "1" * (2 * 1024 * 1024)})
    assert oversized.status_code in (400, 413)
    stranger = app.test_client()
    assert stranger.get(location).headers["Location"] == f"/login?interaction={uid}"
    assert stranger.get("/mfa").headers["Location"] == "/login"


def test_pages_in_english(app, client, citizen, clock, portal):
    location = sms_challenge(client, portal)
    page = client.get(location + "&lang=en")
    assert "Additional verification" in page.text and "138****8000" in page.text
    assert "附加验证" in client.get(location + "&lang=zh-CN").text
