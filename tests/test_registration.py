"""Citizen registration: real-name verification, SMS code, password, session; privacy and abuse cases."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask_babel import force_locale

from sso import session as browser_session
from sso import throttle
from sso.accounts import VERIFICATION_ERRORS
from sso.connectors.base import RegistryUnavailable
from sso.connectors.demo_data import DEMO_AGENT, DEMO_CANCELLED, DEMO_CITIZEN, DEMO_DECEASED
from sso.identifiers import resident_id_check_char
from sso.models import Account, AuditEvent
from sso.web import register as register_module
from tests.conftest import csrf_from, interaction_from, pkce_pair

ZHANG = DEMO_CITIZEN
PHONE = "13912345678"
PASSWORD = "Zhang-San-2026"


def valid_number(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


UNKNOWN_PERSON = valid_number("11010119900307125")  # valid, not in the registry


class Clock:
    """Moves the throttle's wall clock and the memory store's TTL clock together."""

    def __init__(self, monkeypatch: Any, app: Any) -> None:
        self.wall = time.time()
        self.mono = time.monotonic()
        monkeypatch.setattr(throttle, "_clock", lambda: self.wall)
        monkeypatch.setattr(app.extensions["sso"].store, "_clock", lambda: self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock(app: Any, monkeypatch: Any) -> Clock:
    return Clock(monkeypatch, app)


# ---- driving the pages ------------------------------------------------------------------


def alert(page: Any) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', page.get_data(as_text=True), re.S)
    return html.unescape(found.group(1)).strip() if found else ""


def hidden(page: Any, name: str) -> str:
    found = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page.get_data(as_text=True))
    assert found, f"no hidden {name}"
    return html.unescape(found.group(1))


def verify(client: Any, name: str, id_number: str, interaction: str = "", **extra: str) -> Any:
    page = client.get("/register", query_string={"interaction": interaction} if interaction else None)
    data = {"csrf_token": csrf_from(page.text), "interaction": interaction, "name": name, "id_number": id_number}
    data.update(extra)
    return client.post("/register", data=data)


def send_code(client: Any, page: Any, phone: str = PHONE) -> Any:
    return client.post(
        "/register/phone",
        data={"csrf_token": csrf_from(page.text), "state": hidden(page, "state"), "phone": phone},
    )


def complete(client: Any, page: Any, code: str, password: str = PASSWORD, confirm: str | None = None) -> Any:
    return client.post(
        "/register/complete",
        data={
            "csrf_token": csrf_from(page.text),
            "state": hidden(page, "state"),
            "code": code,
            "password": password,
            "confirm": password if confirm is None else confirm,
        },
    )


def outbox(app: Any, phone: str = PHONE) -> list[dict[str, Any]]:
    return app.extensions["sso"].sms.messages(phone)


def last_code(app: Any, phone: str = PHONE) -> str:
    text = outbox(app, phone)[-1]["text"]
    return re.search(r"\d{6}", text).group(0)  # type: ignore[union-attr]


def register(client: Any, app: Any, person: Any = ZHANG, phone: str = PHONE, password: str = PASSWORD) -> Any:
    step1 = verify(client, person.name, person.id_number)
    assert step1.status_code == 200, alert(step1)
    step2 = send_code(client, step1, phone)
    assert step2.status_code == 200, alert(step2)
    return complete(client, step2, last_code(app, phone), password)


def login(client: Any, username: str, password: str) -> Any:
    page = client.get("/login")
    return client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "interaction": "", "username": username, "password": password},
    )


def wrong_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# ---- the happy path --------------------------------------------------------------------------


def test_zhang_san_registers_and_signs_in_with_number_and_phone(app, client):
    bodies: list[bytes] = []
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    bodies.append(step1.get_data())
    assert step1.status_code == 200
    assert "110101********1233" in step1.text and "第2步" in step1.text
    step2 = send_code(client, step1)
    bodies.append(step2.get_data())
    assert step2.status_code == 200 and "139****5678" in step2.text
    [sms] = outbox(app)
    assert sms["to"] == PHONE and "统一身份认证" in sms["text"] and "5分钟" in sms["text"]
    done = complete(client, step2, last_code(app))
    assert done.status_code == 302 and done.headers["Location"] == "/register/done"
    page = client.get("/register/done")
    bodies.append(page.get_data())
    assert page.status_code == 200 and "注册成功" in page.text and "110101********1233" in page.text

    account = Account.query.filter_by(phone=PHONE).one()
    assert account.assurance == "registry-verified" and account.verification_source == "population-registry"
    assert account.display_name == ZHANG.name and account.id_number_masked == "110101********1233"
    assert account.verified_attributes["birthdate"] == ZHANG.birth_date
    [record] = browser_session.sessions_of(account.id)
    session = browser_session.load(record.handle)
    assert session.amr == ["pwd"] and session.acr == "urn:cn:sso:loa:2"

    # No page, cookie, short-lived store entry or database byte holds the full number.
    assert ZHANG.id_number not in repr(app.extensions["sso"].store._data)
    for body in bodies:
        assert ZHANG.id_number.encode() not in body
    assert all(ZHANG.id_number not in cookie.value for cookie in client._cookies.values())
    instance = Path(app.extensions["sso"].settings.instance_path)
    for path in instance.glob("sso.sqlite3*"):
        assert ZHANG.id_number.encode() not in path.read_bytes(), path
    for event in AuditEvent.query.filter(AuditEvent.event.like("register.%")).all():
        assert ZHANG.id_number not in json.dumps(event.detail, ensure_ascii=False)
    assert {e.event for e in AuditEvent.query.all()} >= {"register.verify", "register.sms_sent", "register.complete"}

    # Sign in with the identity number (lowercase x would do too) and with the phone.
    for username in (ZHANG.id_number, PHONE):
        response = login(app.test_client(), username, PASSWORD)
        assert response.status_code == 302, username


def test_registration_from_an_authorization_request_continues_to_the_portal(app, browser, portal):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    uid = interaction_from(first.headers["Location"])
    login_page = browser.client.get(first.headers["Location"])
    assert f'href="/register?interaction={uid}"' in login_page.text
    register_page = browser.client.get(f"/register?interaction={uid}")
    assert "税务服务 Tax portal" in register_page.text
    assert f'href="/login?interaction={uid}"' in register_page.text
    step1 = verify(browser.client, ZHANG.name, ZHANG.id_number, interaction=uid)
    step2 = send_code(browser.client, step1)
    done = complete(browser.client, step2, last_code(app))
    assert done.status_code == 302
    assert done.headers["Location"] == f"/authorize/resume?interaction={uid}"
    assert browser.client.get(done.headers["Location"]).headers["Location"].startswith("/consent")


def test_pages_link_to_each_other_and_label_every_input(client):
    assert 'href="/register"' in client.get("/login").text
    page = client.get("/register").text
    assert 'href="/login"' in page
    for field in ("name", "id_number"):
        assert f'<label for="{field}">' in page and f'id="{field}"' in page
    assert 'autocomplete="name"' in page and 'autocomplete="off"' in page


def test_english_pages(client):
    page = client.get("/register?lang=en")
    assert "Register" in page.text and "Resident identity number" in page.text
    failed = verify(client, ZHANG.name, UNKNOWN_PERSON)
    assert alert(failed) == VERIFICATION_ERRORS["not_matched"]


# ---- verification errors -----------------------------------------------------------------------


ERROR_CASES = [
    ("format", ZHANG.name, "11010119900307123"),
    ("format", ZHANG.name, "11010119900307123Y"),
    ("region", ZHANG.name, valid_number("99999919900307123")),
    ("birth_date", ZHANG.name, valid_number("11010119901307123")),
    ("birth_date", ZHANG.name, valid_number("11010118500307123")),
    ("check_char", ZHANG.name, "110101199003071234"),
    ("not_matched", ZHANG.name, UNKNOWN_PERSON),
    ("not_matched", "李雷", ZHANG.id_number),
    ("deceased", DEMO_DECEASED.name, DEMO_DECEASED.id_number),
    ("cancelled", DEMO_CANCELLED.name, DEMO_CANCELLED.id_number),
]


@pytest.mark.parametrize(("code", "name", "number"), ERROR_CASES)
def test_each_verification_error_has_its_message(client, code, name, number):
    client.get("/register?lang=en")
    response = verify(client, name, number)
    assert response.status_code == 400
    assert alert(response) == VERIFICATION_ERRORS[code]
    # The number is never echoed: the field is empty, the masked form is shown.
    assert number not in response.text
    assert 'id="id_number"' in response.text and 'name="id_number" value' not in response.text
    if re.fullmatch(r"[0-9X]{18}", number):
        assert f"Number entered: {number[:6]}********{number[-4:]}" in response.text


@pytest.mark.parametrize("code", sorted(VERIFICATION_ERRORS))
def test_verification_messages_are_translated(app, code):
    with app.test_request_context("/"):
        with force_locale("en"):
            assert str(register_module.VERIFICATION_MESSAGES[code]) == VERIFICATION_ERRORS[code]
        with force_locale("zh_CN"):
            chinese = str(register_module.VERIFICATION_MESSAGES[code])
        assert chinese != VERIFICATION_ERRORS[code] and re.search(r"[\u4e00-\u9fff]", chinese)


def test_unknown_person_and_name_mismatch_look_the_same(app):
    unknown = verify(app.test_client(), "张三", UNKNOWN_PERSON)
    mismatch = verify(app.test_client(), "李雷", ZHANG.id_number)
    assert unknown.status_code == mismatch.status_code == 400
    assert alert(unknown) == alert(mismatch) == "姓名与身份证号码未通过人口基础信息库核验。"


def test_already_registered(app, client):
    assert register(client, app).status_code == 302
    again = verify(app.test_client(), ZHANG.name, ZHANG.id_number)
    assert again.status_code == 400
    assert alert(again) == "该身份已注册账号，请直接登录或重置密码。"


def test_registry_unavailable(app, client, monkeypatch):
    registry = app.extensions["sso"].connectors.person_registry

    def down(id_number: str) -> None:
        raise RegistryUnavailable("timeout")

    monkeypatch.setattr(registry, "find_person", down)
    client.get("/register?lang=en")
    response = verify(client, ZHANG.name, ZHANG.id_number)
    assert response.status_code == 503 and alert(response) == VERIFICATION_ERRORS["registry_unavailable"]


def test_full_width_digits_and_lowercase_x_are_accepted(app, client):
    number = DEMO_AGENT.id_number.lower()
    full_width = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in number)
    step1 = verify(client, DEMO_AGENT.name, f" {full_width} ")
    assert step1.status_code == 200 and "440305********2029" in step1.text


# ---- the SMS code -------------------------------------------------------------------------------


def test_wrong_code_then_right_code(app, client):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    wrong = complete(client, step2, wrong_code(code))
    assert wrong.status_code == 400 and alert(wrong) == "验证码不正确。"
    assert complete(client, step2, code).status_code == 302


def test_five_wrong_codes_use_the_code_up(app, client, clock):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    for _ in range(5):
        assert alert(complete(client, step2, wrong_code(code))) == "验证码不正确。"
        clock.advance(10)  # past the throttle's waits, within the code's 5 minutes
    used_up = complete(client, step2, code)
    assert used_up.status_code == 400 and alert(used_up) == "验证码错误次数过多，请重新获取。"
    assert Account.query.count() == 0


def test_expired_code(app, client, clock):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    clock.advance(5 * 60 + 1)
    expired = complete(client, step2, last_code(app))
    assert expired.status_code == 400 and alert(expired) == "验证码已过期或已被使用，请重新获取。"


def test_replayed_code_and_form(app, client):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    assert complete(client, step2, code).status_code == 302
    replay = complete(app.test_client(), step2, code)  # csrf of another browser is refused...
    assert replay.status_code == 400
    replay = complete(client, step2, code)  # ... and the same browser finds the registration gone
    assert replay.status_code == 400 and alert(replay) == "本次注册已过期，请重新开始。"
    assert Account.query.count() == 1


def test_code_is_single_use_even_before_the_account_exists(app, client, monkeypatch):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    store = app.extensions["sso"].store
    sid = hidden(step2, "state")
    real_consume = store.consume
    # Another submission consumed the code between the check and this one's consume.
    monkeypatch.setattr(store, "consume", lambda kind, key: (real_consume(kind, key), None)[1])
    raced = complete(client, step2, code)
    assert raced.status_code == 400 and alert(raced) == "验证码已过期或已被使用，请重新获取。"
    assert store.get(register_module.CODE, sid) is None
    assert Account.query.count() == 0


def test_resend_once_per_minute_and_the_new_code_replaces_the_old(app, client, clock):
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    step2 = send_code(client, step1)
    first = last_code(app)
    too_soon = send_code(client, step2)
    assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "60"
    assert alert(too_soon) == "请等待 60 秒后再获取新的验证码。"
    assert len(outbox(app)) == 1
    clock.advance(61)
    again = send_code(client, step2)
    assert again.status_code == 200 and len(outbox(app)) == 2
    second = last_code(app)
    if second != first:
        assert alert(complete(client, again, first)) == "验证码不正确。"
    assert complete(client, again, second).status_code == 302


def test_bad_or_taken_phone_numbers(app, client):
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    for bad in ("12345678901", "1380013800", "138001380001", "+1 555 0100", "１３８００１３８０００x"):
        response = send_code(client, step1, bad)
        assert response.status_code == 400 and alert(response).startswith("请输入中国大陆手机号码"), bad
    assert outbox(app) == []
    # Separators and +86 are fine.
    assert send_code(client, step1, "+86 139-1234-5678").status_code == 200
    other = app.test_client()
    assert register(other, app, DEMO_AGENT, phone="13600136000").status_code == 302
    taken = send_code(client, step1, "13600136000")
    assert taken.status_code == 400 and alert(taken) == "该手机号码已绑定其他账号。"


# ---- passwords ---------------------------------------------------------------------------------


WEAK = [
    ("Ab1!xyz", None, "密码至少需要 8 个字符。"),
    ("Ab1!" * 33, None, "密码最多 128 个字符。"),
    ("abcdefghij", None, "密码须至少包含字母、数字、符号中的两类。"),
    ("1234567890", None, "密码须至少包含字母、数字、符号中的两类。"),
    ("张三的密码很长很长", None, "密码须至少包含字母、数字、符号中的两类。"),
    ("pw" + ZHANG.id_number, None, "密码不能包含您的身份证号码或手机号码。"),
    ("pw" + ZHANG.id_number.lower(), None, "密码不能包含您的身份证号码或手机号码。"),
    ("pw" + PHONE, None, "密码不能包含您的身份证号码或手机号码。"),
    (PASSWORD, PASSWORD + "x", "两次输入的密码不一致。"),
]


@pytest.mark.parametrize(("password", "confirm", "message"), WEAK)
def test_weak_passwords_are_refused_without_using_the_code(app, client, password, confirm, message):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    for _ in range(6):  # more than the 5 code attempts: a weak password does not spend one
        refused = complete(client, step2, code, password, confirm)
        assert refused.status_code == 400 and alert(refused) == message
    assert complete(client, step2, code).status_code == 302


def test_password_policy_accepts_two_kinds():
    ok = register_module.password_problem
    assert ok("correct horse", id_number=ZHANG.id_number, phone=PHONE) is None  # letters + space
    assert ok("abcd1234", id_number=ZHANG.id_number, phone=PHONE) is None
    assert ok("1234-5678", id_number=ZHANG.id_number, phone=PHONE) is None


# ---- hostile input ------------------------------------------------------------------------------


def test_csrf_is_required_on_every_step(app, client):
    assert client.post("/register", data={"name": ZHANG.name, "id_number": ZHANG.id_number}).status_code == 400
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    sid = hidden(step1, "state")
    assert client.post("/register/phone", data={"state": sid, "phone": PHONE}).status_code == 400
    assert outbox(app) == []
    step2 = send_code(client, step1)
    data = {"state": sid, "code": last_code(app), "password": PASSWORD, "confirm": PASSWORD}
    assert client.post("/register/complete", data=data).status_code == 400
    assert Account.query.count() == 0
    assert complete(client, step2, last_code(app)).status_code == 302


def test_oversized_and_odd_inputs_never_give_a_500(app, client):
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    step2 = send_code(client, step1)
    token = csrf_from(step1.text)
    sid = hidden(step1, "state")
    huge = "9" * 10_000
    cases = [
        ("/register", {"name": "张" * 5000, "id_number": ZHANG.id_number}),
        ("/register", {"name": ZHANG.name, "id_number": huge}),
        ("/register", {"name": "\x00\u202e", "id_number": "\x00" * 18}),
        ("/register", {"name": ZHANG.name, "id_number": ZHANG.id_number, "interaction": "x" * 500}),
        ("/register/phone", {"state": sid, "phone": huge}),
        ("/register/phone", {"state": "s" * 5000, "phone": PHONE}),
        ("/register/phone", {"state": "", "phone": PHONE}),
        ("/register/complete", {"state": sid, "code": huge, "password": PASSWORD, "confirm": PASSWORD}),
        ("/register/complete", {"state": sid, "code": "12345", "password": "p" * 60_000, "confirm": "x"}),
        ("/register/complete", {"state": sid, "code": "１２３４５６", "password": PASSWORD, "confirm": PASSWORD}),
    ]
    for path, data in cases:
        response = client.post(path, data={"csrf_token": token, **data})
        assert 400 <= response.status_code < 500, (path, response.status_code)
    too_big = client.post("/register", data={"csrf_token": token, "name": "x" * 100_000, "id_number": "1"})
    assert too_big.status_code == 413
    # Repeated fields and a GET on a later step.
    repeated = client.post("/register", data={"csrf_token": token, "name": ["a", "b"], "id_number": ["1", "2"]})
    assert repeated.status_code == 400
    assert client.get("/register/phone?lang=en&state=leak").headers["Location"] == "/register?lang=en"
    assert client.get("/register/done").status_code == 302
    # The registration still works after all that.
    assert complete(client, step2, last_code(app)).status_code == 302


# ---- throttling ------------------------------------------------------------------------------------


def test_registration_is_throttled_per_identity_number(app, clock):
    for i in range(3):  # guessing the name that goes with a number
        assert verify(app.test_client(), f"王{i}", ZHANG.id_number).status_code == 400
    refused = verify(app.test_client(), ZHANG.name, ZHANG.id_number)  # even the right name waits
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert "尝试次数过多" in refused.text and ZHANG.id_number not in refused.text
    # Another number is not affected; spelling variants of this one are.
    assert verify(app.test_client(), DEMO_AGENT.name, DEMO_AGENT.id_number).status_code == 200
    assert verify(app.test_client(), ZHANG.name, " " + ZHANG.id_number.lower()).status_code == 429
    clock.advance(1)
    assert verify(app.test_client(), ZHANG.name, ZHANG.id_number).status_code == 200


def test_registration_is_throttled_per_ip(app, clock, monkeypatch):
    monkeypatch.setitem(throttle.POLICIES, "register", throttle.Policy(ip_limit=4))
    guesser = app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "203.0.113.66"
    for i in range(4):  # one try per number: only the IP sees them all
        assert verify(guesser, "张三", valid_number(f"1101011990030713{i}")).status_code == 400
    refused = verify(guesser, ZHANG.name, ZHANG.id_number)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "900"
    assert verify(app.test_client(), ZHANG.name, ZHANG.id_number).status_code == 200  # another IP
    assert AuditEvent.query.filter_by(event="throttle.locked").count() == 1
    clock.advance(900)
    assert verify(guesser, ZHANG.name, ZHANG.id_number).status_code == 200


def test_wrong_codes_count_against_the_identity_number(app, client, clock):
    step2 = send_code(client, verify(client, ZHANG.name, ZHANG.id_number))
    code = last_code(app)
    for _ in range(3):
        complete(client, step2, wrong_code(code))
    refused = complete(client, step2, code)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    clock.advance(1)
    assert complete(client, step2, code).status_code == 302


def test_code_sending_is_limited_per_ip(app, clock, monkeypatch):
    monkeypatch.setitem(throttle.POLICIES, "register-sms", throttle.Policy(ip_limit=2))
    client = app.test_client()
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    assert send_code(client, step1, "13911111111").status_code == 200
    assert send_code(client, step1, "13922222222").status_code == 200
    bombing = send_code(client, step1, "13933333333")
    assert bombing.status_code == 429 and outbox(app, "13933333333") == []


def test_asking_whether_phone_numbers_are_taken_is_limited_per_ip(app, clock, monkeypatch):
    monkeypatch.setitem(throttle.POLICIES, "register-sms", throttle.Policy(ip_limit=3))
    assert register(app.test_client(), app, DEMO_AGENT, phone="13600136000").status_code == 302  # 1 code sent
    client = app.test_client()
    step1 = verify(client, ZHANG.name, ZHANG.id_number)
    assert alert(send_code(client, step1, "13600136000")) == "该手机号码已绑定其他账号。"
    assert alert(send_code(client, step1, "13600136000")) == "该手机号码已绑定其他账号。"
    assert send_code(client, step1, "13600136000").status_code == 429
    assert send_code(client, step1, PHONE).status_code == 429
