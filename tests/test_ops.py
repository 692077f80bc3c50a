"""Operations: /healthz, /readyz, /metrics, request ids, JSON logs and what they never contain."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from sso import create_app, logs, ops
from sso.bootstrap import prepare
from sso.storage import StoreUnavailable
from tests.conftest import PASSWORD, USERNAME, IsolatedClient, basic, make_settings, redeem
from tests.test_registration import PASSWORD as CITIZEN_PASSWORD
from tests.test_registration import PHONE, ZHANG, last_code, login, register


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics_app(tmp_path: Any) -> Iterator[Flask]:
    application = create_app(make_settings(tmp_path, metrics_enabled=True, metrics_token="m" * 24))
    application.test_client_class = IsolatedClient
    prepare(application)
    with application.app_context():
        yield application


# ---- probes -------------------------------------------------------------------------------


def test_healthz_touches_no_dependency(app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise StoreUnavailable("redis: connection refused")

    monkeypatch.setattr(app.extensions["sso"].store, "ping", down)
    monkeypatch.setitem(ops.CHECKS, "database", lambda app: (_ for _ in ()).throw(OSError("database down")))
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_ready(client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok", "store": "ok"}}


def test_readyz_names_the_failed_check(app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise StoreUnavailable("redis: connection refused")

    monkeypatch.setattr(app.extensions["sso"].store, "ping", down)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "checks": {"database": "ok", "store": "unavailable"}}
    assert "redis" not in response.text  # the detail goes to the log only


def test_readyz_never_hangs(app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setitem(ops.CHECKS, "database", lambda app: release.wait(30))
    monkeypatch.setattr(ops, "CHECK_TIMEOUT", 0.5)
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 2
        assert response.status_code == 503
        assert response.get_json()["checks"] == {"database": "timeout", "store": "ok"}
        # The stuck check is not started again: the next probe answers at once.
        started = time.monotonic()
        assert client.get("/readyz").get_json()["checks"]["database"] == "timeout"
        assert time.monotonic() - started < 0.4
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "readiness did not come back"
        time.sleep(0.05)


# ---- metrics --------------------------------------------------------------------------------


def test_metrics_off_by_default(client: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_metrics_need_the_bearer_token(metrics_app: Flask) -> None:
    client = metrics_app.test_client()
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 24})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    right = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24})
    assert right.status_code == 200 and right.mimetype == "text/plain"
    assert "sso_http_requests_total" in right.text


def test_request_metrics_use_endpoint_names_not_paths(metrics_app: Flask) -> None:
    client = metrics_app.test_client()
    before = sample("sso_http_requests_total", endpoint="oidc.jwks", method="GET", status="200")
    unknown = sample("sso_http_requests_total", endpoint="none", method="GET", status="404")
    client.get("/jwks")
    client.get("/no/such/path/" + "x" * 40)
    assert sample("sso_http_requests_total", endpoint="oidc.jwks", method="GET", status="200") == before + 1
    assert sample("sso_http_requests_total", endpoint="none", method="GET", status="404") == unknown + 1
    assert sample("sso_http_request_duration_seconds_count", endpoint="oidc.jwks", method="GET") >= 1
    text = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24}).text
    assert "/no/such/path" not in text and 'endpoint="/' not in text


def test_login_and_token_metrics(client: Any, portal: Any, account: Any, browser: Any) -> None:
    failures = sample("sso_logins_total", result="failure", connector="accounts")
    successes = sample("sso_logins_total", result="success", connector="accounts")
    cc = sample("sso_tokens_issued_total", grant_type="client_credentials", portal=portal.client_id)
    ac = sample("sso_tokens_issued_total", grant_type="authorization_code", portal=portal.client_id)
    assert login(client, USERNAME, "not the password").status_code == 401
    code, verifier = browser.code_for(portal)
    assert redeem(client, portal, code, verifier).status_code == 200
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))
    assert response.status_code == 200
    assert sample("sso_logins_total", result="failure", connector="accounts") == failures + 1
    assert sample("sso_logins_total", result="success", connector="accounts") == successes + 1
    assert sample("sso_tokens_issued_total", grant_type="client_credentials", portal=portal.client_id) == cc + 1
    assert sample("sso_tokens_issued_total", grant_type="authorization_code", portal=portal.client_id) == ac + 1


def test_logout_delivery_metric(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from sso import logout
    from sso.clients import create_client
    from sso.connectors.local import create_account
    from sso.db import db
    from sso.models import LogoutDelivery

    reg = create_client(
        name="Notified portal",
        redirect_uris=["https://n.example.gov.cn/cb"],
        backchannel_logout_uri="https://n.example.gov.cn/bc",
    )
    person = create_account("metrics-user", "a long enough password", "M")
    for _ in range(2):
        sid = "s-" + os.urandom(4).hex()
        db.session.add(LogoutDelivery(sid=sid, client_id=reg.client.client_id, account_id=person.id))
    db.session.commit()
    outcomes = iter([(True, "HTTP 200"), (False, "HTTP 500")])
    monkeypatch.setattr(logout, "post_logout_token", lambda uri, token, timeout: next(outcomes))
    delivered = sample("sso_logout_deliveries_total", result="delivered")
    retry = sample("sso_logout_deliveries_total", result="retry")
    assert logout.deliver_due() == 2
    assert sample("sso_logout_deliveries_total", result="delivered") == delivered + 1
    assert sample("sso_logout_deliveries_total", result="retry") == retry + 1


def test_multiprocess_metrics_add_up_every_process(tmp_path: Any) -> None:
    """PROMETHEUS_MULTIPROC_DIR set before import: each process writes, /metrics adds up."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = textwrap.dedent(
        """
        from sso import metrics
        metrics.token_issued("client_credentials", "tax-portal")
        metrics.observe_request("oidc.token", "POST", 200, 0.01)
        """
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    reader = "from sso import metrics; import sys; sys.stdout.write(metrics.exposition().decode())"
    out = subprocess.run(
        [sys.executable, "-c", reader], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert 'sso_tokens_issued_total{grant_type="client_credentials",portal="tax-portal"} 2.0' in out.stdout
    assert 'sso_http_requests_total{endpoint="oidc.token",method="POST",status="200"} 2.0' in out.stdout


# ---- request ids and JSON lines --------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The serving processes' log configuration, into a buffer, at DEBUG."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("sso").level, logging.getLogger("werkzeug").level)
    logs.configure("json", "DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("sso").setLevel(saved[2])
        logging.getLogger("werkzeug").setLevel(saved[3])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_request_id_accepted_when_well_formed_else_replaced(client: Any, captured: io.StringIO) -> None:
    ok = client.get("/healthz", headers={"X-Request-Id": "lb-7f3a-0001"})
    assert ok.headers["X-Request-Id"] == "lb-7f3a-0001"
    for bad in ("x" * 65, "has space", "semi;colon", "", "换行"):
        rid = client.get("/healthz", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert rid != bad and len(rid) == 32 and rid.isalnum()
    first = client.get("/healthz").headers["X-Request-Id"]
    assert first != client.get("/healthz").headers["X-Request-Id"]
    [access] = [e for e in lines(captured) if e.get("request_id") == "lb-7f3a-0001"]
    assert access["logger"] == "sso.access" and access["level"] == "DEBUG"  # probes are quiet
    assert access["method"] == "GET" and access["endpoint"] == "ops.healthz" and access["status"] == 200
    assert isinstance(access["duration_ms"], float) and access["ts"].endswith("Z")


def test_unusual_methods_are_one_label_and_one_word(metrics_app: Flask, captured: io.StringIO) -> None:
    # A client picks the method: it must not mint metric series or put its text in logs.
    client = metrics_app.test_client()
    before = sample("sso_http_requests_total", endpoint="none", method="OTHER", status="405") or 0
    response = client.open("/healthz", method="BREW-eyJhbGciOi.secret.x")
    assert response.status_code == 405
    assert sample("sso_http_requests_total", endpoint="none", method="OTHER", status="405") == before + 1
    text = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24}).text
    assert "BREW" not in text
    [access] = [e for e in lines(captured) if e.get("status") == 405]
    assert access["method"] == "OTHER" and access["message"] == "OTHER none 405"
    assert "BREW" not in captured.getvalue()


def test_every_line_written_during_a_request_carries_its_id(client: Any, captured: io.StringIO) -> None:
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers={"X-Request-Id": "r-42"})
    assert response.status_code == 401
    mine = [e for e in lines(captured) if e.get("request_id") == "r-42"]
    assert mine and mine[-1]["logger"] == "sso.access" and mine[-1]["level"] == "INFO"
    assert mine[-1]["endpoint"] == "oidc.token" and mine[-1]["status"] == 401
    for entry in lines(captured):
        assert set(entry) >= {"ts", "level", "logger", "message"}


def test_redaction() -> None:
    number = ZHANG.id_number
    cases = {
        f"Authorization: Basic dGF4LXBvcnRhbDpzM2NyZXQ= for {number}": ["dGF4LXBvcnRhbDpzM2NyZXQ=", number],
        "{'Authorization': 'Bearer abc.def.ghi'}": ["abc.def.ghi"],
        "password=hunter2-long&username=bob": ["hunter2-long"],
        '{"client_secret": "s3cr3t-value", "refresh_token": "r3fr3sh"}': ["s3cr3t-value", "r3fr3sh"],
        "ImmutableMultiDict([('password', 'two words'), ('code', 'abcdef')])": ["two words", "abcdef"],
        "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end": ["eyJzdWIiOiJ4In0"],
        "credit 91110105MA01B2C3D4 old 110101800101123": ["91110105MA01B2C3D4", "110101800101123"],
    }
    for text, secrets in cases.items():
        out = logs.redact(text)
        for secret in secrets:
            assert secret not in out, (text, out)
    assert logs.redact(f"张三 {number}，登录") == f"张三 {number[:6]}{'*' * 8}{number[-4:]}，登录"
    # Hashes and other long runs are not mistaken for numbers; ordinary text is kept.
    digest = "a" * 20 + "1" * 44
    assert logs.redact(f"grant {digest} POST oidc.token 200") == f"grant {digest} POST oidc.token 200"


def test_the_field_pattern_redacts_what_it_did_before_it_started_only_at_word_starts() -> None:
    # The pattern before the (?<![\w-]) anchor, which made it retry at every character
    # of every word (~90 us per audit line); the anchored one must rewrite alike.
    unanchored = re.compile(
        rf"""(?ix) (["']?{logs._SENSITIVE}["']?) (\s*[:=]\s*) (["']?) (?!\[redacted\]) [^\s&"',;)}}\]]+ """
    )
    words = ["token", "Access_Token", "x-token", "mytoken", "codec", "code", "passcode", "password", "pass"]
    words += ["otp", "client_secret", "Authorization", "Set-Cookie", "code_verifier", "assertion"]
    words += ["abc", "a-b", "é", "名字", "_"]
    glue = ["=", ":", " = ", ": ", '="', "='", " ", "&", ",", ";", ")", "}", "]", ".", '"', "'", "", "\t", "[redacted]"]
    values = ["abc", "123", "eyJx.y.z", "[redacted]", "a b", "v&w", "ключ", "x'y", "1;2"]
    pieces = words + glue + values
    rng = random.Random(5)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(20_000)]
    texts.append("audit authorize.code_issued outcome=success actor=ab5f5e6a27a34a87a43c858dfc61609f client=hop-0")
    changed = 0
    for text in texts:
        expected = unanchored.sub(r"\1\2\3[redacted]", text)
        assert logs._SENSITIVE_FIELD.sub(r"\1\2\3[redacted]", text) == expected, text
        changed += expected != text
    assert changed > 1000  # the generated lines do exercise the redaction


def test_no_secret_reaches_the_log(
    app: Flask, client: Any, portal: Any, account: Any, browser: Any, captured: io.StringIO
) -> None:
    """A wrong password, a registration, tokens: nothing secret in any line, even at DEBUG."""
    wrong = "Wrong-Password-0001"
    assert login(client, USERNAME, wrong).status_code == 401
    assert login(client, ZHANG.id_number, wrong).status_code == 401
    registered = register(app.test_client(), app)
    assert registered.status_code == 302
    code_sms = last_code(app, PHONE)
    code, verifier = browser.code_for(portal)
    tokens = redeem(client, portal, code, verifier).get_json()
    refreshed = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(portal),
    ).get_json()
    cc = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).get_json()
    # Someone logs what they should not: the filter is the net.
    logging.getLogger("sso.test").warning(
        "debug dump Authorization: %s form=%s", basic(portal)["Authorization"], {"password": wrong, "code": code}
    )
    logging.getLogger("sso.test").error("registry said %s", ZHANG.id_number)
    text = captured.getvalue()
    assert text, "nothing was logged"
    secrets = {
        "wrong password": wrong,
        "account password": PASSWORD,
        "citizen password": CITIZEN_PASSWORD,
        "client secret": portal.secret,
        "basic credentials": basic(portal)["Authorization"].split()[1],
        "authorization code": code,
        "code verifier": verifier,
        "sms code": f"code={code_sms}",
        "full id number": ZHANG.id_number,
    }
    for response in (tokens, refreshed, cc):
        for field in ("access_token", "refresh_token", "id_token"):
            if field in response:
                secrets[field] = response[field]
    for what, value in secrets.items():
        assert value not in text, f"{what} appears in the log"
    assert ZHANG.id_number[:6] + "*" * 8 + ZHANG.id_number[-4:] in text  # masked, still useful
    assert "Authorization: [redacted]" in text and "'password': '[redacted]'" in text
    entries = lines(captured)
    assert {e["endpoint"] for e in entries if e["logger"] == "sso.access"} >= {"web.login", "oidc.token"}


# ---- sso serve --production ------------------------------------------------------------------


def test_production_refuses_the_embedded_backends(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sso import server
    from sso.cli import main

    for name in [k for k in os.environ if k.startswith("SSO_")]:
        monkeypatch.delenv(name)
    served: list[Any] = []
    monkeypatch.setattr(server, "run", lambda *args, **kwargs: served.append(kwargs))
    env = {"SSO_ISSUER": "https://sso.example.gov.cn", "SSO_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--production"], env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot share the embedded in-process store: set redis_url" in result.output
    assert "set database_url (SSO_DATABASE_URL) to PostgreSQL" in result.output
    assert "--allow-embedded" in result.output
    # A configuration problem stops it before anything starts, with the same message format.
    both = runner.invoke(main, ["serve", "--production"], env={**env, "SSO_ACCESS_TOKEN_TTL": "0"})
    assert both.exit_code == 2 and "access_token_ttl must be positive" in both.output
    several = runner.invoke(main, ["serve", "--production", "--allow-embedded", "--workers", "2"], env=env)
    assert several.exit_code == 2 and "use --workers 1 or set redis_url" in several.output
    assert runner.invoke(main, ["serve", "--workers", "2"], env=env).exit_code == 2
    assert served == []
    ok = runner.invoke(main, ["serve", "--production", "--allow-embedded", "--port", "5123"], env=env)
    assert ok.exit_code == 0, ok.output
    assert served == [{"host": "127.0.0.1", "port": 5123, "workers": 1, "threads": 4, "timeout": 30}]
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # the private folder is gone with the server
