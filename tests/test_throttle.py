"""Brute-force protection: progressive delay, lockout, per-IP limit, no account enumeration, no races."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Any

import pytest

from sso import throttle
from sso.models import AuditEvent
from tests.conftest import PASSWORD, USERNAME, csrf_from

WRONG = "not the password"


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


def small_policy(monkeypatch: Any, scope: str = "password", **numbers: int) -> throttle.Policy:
    policy = throttle.Policy(**numbers)
    monkeypatch.setitem(throttle.POLICIES, scope, policy)
    return policy


def login(client: Any, username: str, password: str, ip: str | None = None) -> Any:
    environ = {"REMOTE_ADDR": ip} if ip else {}
    page = client.get("/login", environ_base=environ)
    return client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "interaction": "", "username": username, "password": password},
        environ_base=environ,
    )


def normalised(response: Any, username: str) -> str:
    body = response.get_data(as_text=True).replace(username, "<name>")
    return re.sub(r'name="csrf_token" type="hidden" value="[^"]*"', "csrf", body)


# ---- the policy -------------------------------------------------------------------------


def test_default_policy_numbers():
    policy = throttle.policy_for("password")
    assert [policy.delay_after(n) for n in range(11)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert (policy.account_limit, policy.ip_limit, policy.window, policy.lockout) == (10, 50, 900, 900)
    assert throttle.policy_for("totp") == throttle.DEFAULT_POLICY  # any factor gets the default
    assert throttle.policy_for("register").ip_limit == 20


def test_policy_refuses_a_window_longer_than_the_lockout():
    with pytest.raises(ValueError):
        throttle.Policy(window=1000, lockout=900)


# ---- password login -----------------------------------------------------------------------


def test_progressive_delay_then_lockout(client, account, clock):
    for _ in range(3):  # attempts 1-3 are free
        assert login(client, USERNAME, WRONG).status_code == 401
    # After failed attempt 3: wait 2^0 = 1 s.  Even the right password waits.
    refused = login(client, USERNAME, PASSWORD)  # attempt 4
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    clock.advance(0.5)
    assert login(client, USERNAME, WRONG).headers["Retry-After"] == "1"  # 5: the wait is not lengthened
    clock.advance(0.5)
    assert login(client, USERNAME, WRONG).status_code == 401  # 6: next wait 2^3 = 8 s
    assert login(client, USERNAME, WRONG).headers["Retry-After"] == "8"  # 7
    clock.advance(7.5)
    assert login(client, USERNAME, WRONG).headers["Retry-After"] == "1"  # 8
    clock.advance(0.5)
    assert login(client, USERNAME, WRONG).status_code == 401  # 9: 2^6 s, capped at 60
    assert login(client, USERNAME, WRONG).headers["Retry-After"] == "60"  # 10
    clock.advance(60)
    locked = login(client, USERNAME, PASSWORD)  # 11: over the limit of 10 in 15 minutes
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "900"
    assert "15 分钟" in locked.text and "尝试次数过多" in locked.text
    assert locked.headers["Cache-Control"] == "no-store"
    clock.advance(899)
    assert login(client, USERNAME, PASSWORD).headers["Retry-After"] == "1"
    clock.advance(1)
    assert login(client, USERNAME, PASSWORD).status_code == 302
    assert AuditEvent.query.filter_by(event="throttle.locked").count() == 1


def test_waits_without_early_retries(client, account, clock):
    """A patient person gets failures 4-10 through after 1, 2, 4 ... 60 s; the 10th locks."""
    for _ in range(3):
        assert login(client, USERNAME, WRONG).status_code == 401
    for wait in (1, 2, 4, 8, 16, 32, 60):
        clock.advance(wait)
        assert login(client, USERNAME, WRONG).status_code == 401
    assert login(client, USERNAME, PASSWORD).headers["Retry-After"] == "900"


def test_a_client_ignoring_retry_after_uses_up_its_attempts(app, account, clock):
    patient, impatient = app.test_client(), app.test_client()
    for client, name in ((patient, USERNAME), (impatient, "bob")):
        for _ in range(3):
            login(client, name, WRONG)
    for _ in range(6):  # attempts 4-9, all refused: the wait stays 1 s
        assert login(patient, USERNAME, WRONG).headers["Retry-After"] == "1"
    for _ in range(7):  # attempts 4-10
        assert login(impatient, "bob", WRONG).headers["Retry-After"] == "1"
    clock.advance(1)
    assert login(patient, USERNAME, PASSWORD).status_code == 302  # attempt 10: still allowed
    locked = login(impatient, "bob", WRONG)  # attempt 11
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "900"


def test_429_page_in_english(client, account, clock):
    client.get("/login?lang=en")
    for _ in range(3):
        login(client, USERNAME, WRONG)
    page = login(client, USERNAME, WRONG)
    assert page.status_code == 429
    assert "Too many attempts. For your security, please wait 1 second before trying again." in page.text
    assert 'href="/login"' in page.text


def test_success_resets_the_account_counter(client, account, clock):
    for _ in range(3):
        assert login(client, USERNAME, WRONG).status_code == 401
    clock.advance(1)
    assert login(client, USERNAME, PASSWORD).status_code == 302
    for _ in range(3):  # three free failures again, no delay
        assert login(client, USERNAME, WRONG).status_code == 401
    assert login(client, USERNAME, WRONG).status_code == 429


def test_variants_of_a_login_name_share_one_counter(client, app, clock):
    for name in ("11010119900307123x", "11010119900307123X", " 11010119900307123X "):
        assert login(client, name, WRONG).status_code == 401
    # NFKC: full-width digits (an IME) are the same name.
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "11010119900307123") + "X"
    assert login(client, full_width, WRONG).status_code == 429


def same_headers(response):
    """The headers, less the per-request X-Request-Id (random for every request alike)."""
    return {k: v for k, v in response.headers.items() if k != "X-Request-Id"}


def test_unknown_and_existing_account_look_the_same(app, account, clock, verifications, monkeypatch):
    small_policy(monkeypatch, free_failures=1, account_limit=3)
    unknown = "bobby"
    assert len(unknown) == len(USERNAME)
    names = (USERNAME, unknown)
    clients = {name: app.test_client() for name in names}
    wrong = {name: login(clients[name], name, WRONG) for name in names}
    clock.advance(1)
    assert {login(clients[name], name, WRONG).status_code for name in names} == {401}
    clock.advance(2)
    assert {login(clients[name], name, WRONG).status_code for name in names} == {401}  # failure 3: locked
    # Wrong password and unknown name: same status, headers, page, and both ran argon2.
    a, b = wrong[USERNAME], wrong[unknown]
    assert (a.status_code, same_headers(a)) == (b.status_code, same_headers(b)) == (401, same_headers(a))
    assert normalised(a, USERNAME) == normalised(b, unknown)
    assert len(verifications) == 6
    # Locked: byte-identical answers, and no password check at all.
    locked = {name: login(app.test_client(), name, PASSWORD) for name in (USERNAME, unknown)}
    a, b = locked[USERNAME], locked[unknown]
    assert a.status_code == b.status_code == 429
    assert same_headers(a) == same_headers(b)
    assert a.get_data() == b.get_data()
    assert len(verifications) == 6


def test_per_ip_limit(app, account, clock, monkeypatch):
    small_policy(monkeypatch, ip_limit=5)
    attacker, neighbour = "203.0.113.7", "198.51.100.20"
    client = app.test_client()
    for i in range(5):  # password spraying: one try per name
        assert login(client, f"user{i}", WRONG, ip=attacker).status_code == 401
    refused = login(client, "someone-new", WRONG, ip=attacker)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "900"
    # The whole IP is locked, even for a right password; other IPs are not.
    assert login(client, USERNAME, PASSWORD, ip=attacker).status_code == 429
    assert login(app.test_client(), USERNAME, PASSWORD, ip=neighbour).status_code == 302
    clock.advance(900)
    assert login(client, USERNAME, PASSWORD, ip=attacker).status_code == 302


def test_successes_do_not_count_against_the_ip(app, account, monkeypatch):
    small_policy(monkeypatch, ip_limit=3)
    office = "192.0.2.50"
    for _ in range(6):  # a shared office NAT: many people sign in
        assert login(app.test_client(), USERNAME, PASSWORD, ip=office).status_code == 302


def test_ipv6_clients_are_grouped_by_64(app):
    with app.test_request_context(environ_base={"REMOTE_ADDR": "2001:db8:1:2:aaaa::1"}):
        first = throttle.client_ip()
    with app.test_request_context(environ_base={"REMOTE_ADDR": "2001:db8:1:2:bbbb::9"}):
        assert throttle.client_ip() == first == "2001:db8:1:2::/64"
    with app.test_request_context(environ_base={"REMOTE_ADDR": "::ffff:192.0.2.1"}):
        assert throttle.client_ip() == "192.0.2.1"


def test_parallel_attempts_are_counted_exactly(app, account, verifications):
    workers = 30
    clients = [app.test_client() for _ in range(workers)]
    tokens = [csrf_from(c.get("/login").text) for c in clients]
    barrier = threading.Barrier(workers)
    statuses: list[int] = []

    def attempt(i: int) -> None:
        barrier.wait()
        response = clients[i].post(
            "/login", data={"csrf_token": tokens[i], "interaction": "", "username": USERNAME, "password": WRONG}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == workers and set(statuses) <= {401, 429}
    let_through = statuses.count(401)
    assert 1 <= let_through <= throttle.DEFAULT_POLICY.free_failures
    assert len(verifications) == let_through
    # The counter holds exactly one count per attempt (the next incr says 31).
    key = throttle._key("password", "account", throttle.login_key(USERNAME))
    assert app.extensions["sso"].store.incr(throttle.COUNT, key, 900) == workers + 1


def test_guard_serialises_attempts_in_the_delay_regime(app, clock):
    """Attempt n may run only after attempt n-1 finished: two in flight never both pass."""
    with app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.9"}):
        for _ in range(3):
            throttle.failure(throttle.guard("totp", "account-1"))
        clock.advance(1)
        first = throttle.guard("totp", "account-1")
        second = throttle.guard("totp", "account-1")  # while the first is still being checked
        assert first.allowed and not second.allowed
        throttle.failure(first)
        clock.advance(60)
        # The early attempt finished after the refused one and overwrote its
        # record: that costs one more refusal, which records itself ...
        assert not throttle.guard("totp", "account-1").allowed
        clock.advance(60)
        # ... and the queue moves on.
        assert throttle.guard("totp", "account-1").allowed


def test_helper_for_other_factors(app, clock):
    with app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.10"}):
        for _ in range(3):
            verdict = throttle.guard("totp", "acct-42")
            assert verdict.allowed
            throttle.failure(verdict)
        refused = throttle.guard("totp", "acct-42")
        assert not refused.allowed and refused.retry_after == 1
        # Scopes are independent: the password scope of the same key is untouched.
        assert throttle.guard("password", "acct-42").allowed
        response = throttle.too_many(refused, back_url="/mfa")
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert 'href="/mfa"' in response.get_data(as_text=True)
        clock.advance(1)
        ok = throttle.guard("totp", "acct-42")
        assert ok.allowed
        throttle.success(ok)
        for _ in range(3):
            assert throttle.guard("totp", "acct-42").allowed  # reservations only; no failure recorded
        # No account key (e.g. before the person is known): the IP alone.
        assert throttle.guard("totp", None).allowed
        # success/failure of a refused verdict are no-ops.
        throttle.failure(refused)
        throttle.success(refused)


def test_store_and_logs_never_hold_the_login_name(app, client, clock, caplog):
    number = "110101199003071233"
    caplog.set_level("DEBUG")
    for _ in range(4):
        login(client, number, WRONG)
    store = app.extensions["sso"].store
    dump = repr(store._data)
    assert number not in dump and hashlib.sha256(number.encode()).hexdigest() not in dump
    assert number not in caplog.text
    for event in AuditEvent.query.all():
        assert number not in repr(event.detail)
