"""Statistics: sign-ins per portal and day, by principal type and level; sessions; consents; the admin page."""

from __future__ import annotations

import json
import os
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from sso import audit_chain, stats
from sso import session as browser_session
from sso.accounts import register_citizen, verify_real_name
from sso.cli import main
from sso.clients import create_client
from sso.connectors.demo_data import DEMO_CITIZEN, DEMO_ENTERPRISES
from sso.db import db
from sso.logout import end_session
from sso.models import Account, AuditEvent, Grant, SessionRecord, utcnow
from tests.conftest import ISSUER, USERNAME, Browser, Portal, pkce_pair, redeem

CITIZEN_PASSWORD = "Zhang-San-2026"
SOCIAL = "https://social.example.gov.cn/cb"


@pytest.fixture
def social(app: Flask) -> Portal:
    reg = create_client(name="社保服务 Social portal", client_id="social-portal", redirect_uris=[SOCIAL])
    return Portal(reg.client.client_id, reg.client_secret, SOCIAL)


def signs_in_at(browser: Browser, portal: Portal) -> None:
    """A sign-in at ``portal``: its code, redeemed (the moment the statistics count)."""
    assert redeem(browser.client, portal, *browser.code_for(portal)).status_code == 200


def sign_in_citizen(client: FlaskClient, portal: Portal) -> Browser:
    browser = Browser(client)
    verifier, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    response = browser.login(first.headers["Location"], username=DEMO_CITIZEN.phone, password=CITIZEN_PASSWORD)
    code = browser.follow_to_client(response, portal.redirect_uri)["code"]
    assert redeem(client, portal, code, verifier).status_code == 200
    return browser


def act_for_enterprise(client: FlaskClient) -> None:
    """Put a legal-person context on the browser's session, as choosing an enterprise does."""
    cookie = client.get_cookie("sso_session")
    assert cookie is not None
    handle = cookie.value.split(".")[0]
    current = browser_session.load(handle)
    assert current is not None
    current.acting = {
        "account_id": current.account_id,
        "credit_code": DEMO_ENTERPRISES[0].credit_code,
        "role": "legal_representative",
    }
    browser_session.save(current)


@pytest.fixture
def scenario(app: Flask, portal: Portal, social: Portal, account: Any) -> dict[str, Any]:
    """Alice: tax, social, tax again (one session). 张三: social, then social as an enterprise."""
    register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), CITIZEN_PASSWORD, DEMO_CITIZEN.phone)
    alice = Browser(app.test_client())
    for target in (portal, social, portal):
        signs_in_at(alice, target)
    alice.code_for(social)  # a code never redeemed: the portal never learnt who it was for
    zhang_client = app.test_client()
    sign_in_citizen(zhang_client, social)
    act_for_enterprise(zhang_client)
    signs_in_at(Browser(zhang_client), social)
    return {"alice": alice, "zhang": zhang_client}


def test_sign_ins_per_portal_principal_and_level(scenario: dict[str, Any]) -> None:
    result = stats.compute(7)
    by_id = {p.client_id: p for p in result.portals}
    today = stats.report_day(utcnow())
    assert result.days[-1] == today and len(result.days) == 7
    assert (by_id["tax-portal"].total, by_id["social-portal"].total) == (2, 3)
    assert by_id["tax-portal"].per_day == {today: 2}
    assert result.per_day[today] == 5 and result.total == 5
    assert result.by_principal == {"natural": 4, "legal": 1}
    # Alice's account is self-asserted (level 1), 张三 registry-verified (level 2).
    assert result.by_acr == {"urn:cn:sso:loa:1": 3, "urn:cn:sso:loa:2": 2}
    # Consents: Alice allowed both portals, 张三 the social portal.
    assert (by_id["tax-portal"].consents, by_id["social-portal"].consents) == (1, 2)
    assert result.active_sessions == 2
    assert [p.client_id for p in result.portals] == ["social-portal", "tax-portal"]


def test_code_redeemed_events_carry_what_the_statistics_need(scenario: dict[str, Any]) -> None:
    events = (
        db.session.execute(db.select(AuditEvent).filter_by(event="authorize.code_redeemed").order_by(AuditEvent.id))
        .scalars()
        .all()
    )
    alice = db.session.execute(db.select(Account).filter_by(username=USERNAME)).scalar_one()
    assert [e.client_id for e in events] == ["tax-portal", "social-portal", "tax-portal"] + ["social-portal"] * 2
    assert events[0].actor == alice.id
    assert events[0].detail["acr"] == "urn:cn:sso:loa:1" and events[0].detail["principal"] == "natural"
    assert events[-1].detail["principal"] == "legal" and events[-1].detail["sid"]
    # Each names the grant the code opened (revocations of it name the same grant).
    grants = {row.id: row.client_id for row in db.session.execute(db.select(Grant)).scalars()}
    assert [grants[e.detail["grant"]] for e in events] == [e.client_id for e in events]


def test_ended_and_expired_sessions_are_not_active(scenario: dict[str, Any]) -> None:
    records = db.session.execute(db.select(SessionRecord).order_by(SessionRecord.created_at)).scalars().all()
    assert stats.compute(1).active_sessions == 2
    end_session(records[0].sid, "logout")
    assert stats.compute(1).active_sessions == 1
    records[1].expires_at = utcnow() - timedelta(seconds=1)  # idle timeout passed, not yet noticed
    db.session.commit()
    assert stats.compute(1).active_sessions == 0


def test_days_follow_china_standard_time_and_the_window(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from sso import audit

    assert stats.report_day(datetime(2026, 5, 1, 15, 59)) == date(2026, 5, 1)
    assert stats.report_day(datetime(2026, 5, 1, 16, 0)) == date(2026, 5, 2)  # midnight in Beijing
    now = datetime(2026, 5, 10, 4, 0)  # 12:00 in Beijing
    moments = [
        datetime(2026, 5, 10, 1, 0),  # today
        datetime(2026, 5, 9, 16, 30),  # today (00:30 in Beijing)
        datetime(2026, 5, 9, 15, 30),  # yesterday (23:30 in Beijing)
        datetime(2026, 5, 4, 16, 0),  # 2026-05-05, the first day of a 6-day window
        datetime(2026, 5, 4, 15, 59),  # 2026-05-04: outside it
    ]
    clock = iter(moments)
    monkeypatch.setattr(audit_chain, "utcnow", lambda: next(clock))
    for n, _ in enumerate(moments):
        # Rows written before 2026-12, at the code's issue, count as sign-ins too.
        event = audit.SIGN_IN_EVENT if n % 2 else audit.SIGN_IN_EVENT_UNTIL_2026_12
        audit.record(event, client_id="tax-portal", acr="urn:cn:sso:loa:1", principal="natural")
    result = stats.compute(6, now=now)
    assert result.days[0] == date(2026, 5, 5) and result.days[-1] == date(2026, 5, 10)
    assert result.per_day == {
        date(2026, 5, 5): 1,
        date(2026, 5, 6): 0,
        date(2026, 5, 7): 0,
        date(2026, 5, 8): 0,
        date(2026, 5, 9): 1,
        date(2026, 5, 10): 2,
    }
    assert result.portals[0].client_id == "tax-portal" and result.portals[0].name == "tax-portal"  # deleted portal
    with pytest.raises(ValueError):
        stats.compute(0)


# ---- sso stats -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("SSO_"):
            monkeypatch.delenv(key)
    # The same instance folder as the app fixture: same database, same key-encryption key.
    return {"SSO_INSTANCE_PATH": str(tmp_path / "instance"), "SSO_ISSUER": ISSUER, "SSO_DEVELOPMENT": "true"}


def run(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_stats_command_json_and_table(scenario: dict[str, Any], cli_env: dict[str, str]) -> None:
    data = json.loads(run(cli_env, "stats", "--days", "3", "--json").stdout)
    assert data["days"] == 3 and data["timezone"] == "UTC+08:00"
    assert data["sign_ins"]["total"] == 5
    per_portal = {p["client_id"]: p for p in data["sign_ins"]["per_portal"]}
    assert per_portal["tax-portal"]["total"] == 2 and per_portal["tax-portal"]["per_day"][-1]["count"] == 2
    assert [d["count"] for d in data["sign_ins"]["per_day"]] == [0, 0, 5]
    assert data["sign_ins"]["by_principal"] == {"natural": 4, "legal": 1}
    assert data["sign_ins"]["by_acr"] == {"urn:cn:sso:loa:1": 3, "urn:cn:sso:loa:2": 2}
    assert data["active_sessions"] == 2
    assert data["consents"]["total"] == 3

    text = run(cli_env, "stats", "--days", "2").stdout
    today = stats.report_day(utcnow()).isoformat()
    assert re.search(r"date\s+social-portal\s+tax-portal\s+total", text), text
    assert re.search(rf"{today}\s+3\s+2\s+5", text), text
    assert "By principal type: natural 4, legal 1" in text
    assert "By assurance level (acr): urn:cn:sso:loa:1 3, urn:cn:sso:loa:2 2" in text
    assert "Active sessions: 2" in text
    assert "Consents per portal: 3" in text
    assert "--days" in run(cli_env, "stats", "--days", "0", code=2).output


def test_accounts_create_admin_and_grant_admin(app: Flask, account: Any, cli_env: dict[str, str]) -> None:
    args = ("--username", "root", "--name", "Root", "--password", "pw-12345678", "--admin")
    out = run(cli_env, "accounts", "create", *args)
    assert "root created (administrator)" in out.stdout
    register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), CITIZEN_PASSWORD, DEMO_CITIZEN.phone)
    assert "now an administrator" in run(cli_env, "accounts", "grant-admin", USERNAME).stdout
    assert "now an administrator" in run(cli_env, "accounts", "grant-admin", DEMO_CITIZEN.phone).stdout
    assert "already an administrator" in run(cli_env, "accounts", "grant-admin", "root").stdout
    assert "no account" in run(cli_env, "accounts", "grant-admin", "nobody", code=1).output
    db.session.expire_all()
    admins = db.session.execute(db.select(Account).filter_by(is_admin=True)).scalars().all()
    assert len(admins) == 3
    granted = db.session.execute(db.select(AuditEvent).filter_by(event="account.admin_granted")).scalars().all()
    assert {e.detail["account"] for e in granted} == {a.id for a in admins}
    assert audit_chain.verify(db.session).ok


def test_revoke_admin_takes_the_pages_away_at_once_and_is_audited(
    app: Flask, account: Any, cli_env: dict[str, str]
) -> None:
    run(cli_env, "accounts", "grant-admin", USERNAME)
    client = signed_in(app)
    assert client.get("/admin/stats").status_code == 200
    assert "no longer an administrator" in run(cli_env, "accounts", "revoke-admin", USERNAME).stdout
    assert "not an administrator" in run(cli_env, "accounts", "revoke-admin", USERNAME).stdout
    assert "no account" in run(cli_env, "accounts", "revoke-admin", "nobody", code=1).output
    # The same browser session, still signed in: no more admin pages.
    assert client.get("/admin/stats").status_code == 403
    db.session.expire_all()
    assert db.session.execute(db.select(Account).filter_by(username=USERNAME)).scalar_one().is_admin is False
    revoked = db.session.execute(db.select(AuditEvent).filter_by(event="account.admin_revoked")).scalars().all()
    assert [e.detail["account"] for e in revoked] == [account.id]
    assert audit_chain.verify(db.session).ok


# ---- /admin/stats -------------------------------------------------------------------------


def signed_in(app: Flask, username: str = USERNAME, password: str | None = None) -> FlaskClient:
    client = app.test_client()
    kwargs = {"username": username} if password is None else {"username": username, "password": password}
    response = Browser(client).login("/login", **kwargs)
    assert response.status_code == 302, response.text
    return client


def make_admin(username: str = USERNAME) -> None:
    db.session.execute(db.update(Account).where(Account.username == username).values(is_admin=True))
    db.session.commit()


def test_signed_out_goes_to_login(client: FlaskClient) -> None:
    response = client.get("/admin/stats")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_normal_account_gets_403_in_both_languages(app: Flask, account: Any) -> None:
    client = signed_in(app)
    page = client.get("/admin/stats")
    assert page.status_code == 403
    assert "仅限网关管理员" in page.text and "access_denied" in page.text
    english = client.get("/admin/stats?lang=en")
    assert english.status_code == 403 and "for gateway administrators only" in english.text
    assert "<svg" not in english.text


def test_a_disabled_admin_gets_403(app: Flask, account: Any) -> None:
    make_admin()
    client = signed_in(app)
    db.session.execute(db.update(Account).values(status="disabled"))
    db.session.commit()
    assert client.get("/admin/stats").status_code == 403


def table(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'id="{table_id}"')[1].split("</table>")[0].split("<tbody>")[1]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_an_admin_sees_charts_and_tables(app: Flask, scenario: dict[str, Any]) -> None:
    make_admin()
    client = signed_in(app)
    page = client.get("/admin/stats?days=7")
    assert page.status_code == 200
    html = page.text
    assert 'lang="zh-CN"' in html and "统计" in html and "每日登录次数" in html
    # Server-rendered and accessible: no script, an image role with title and description per chart.
    assert "<script" not in html and "http://www.w3.org/2000/svg" in html
    for chart in ("chart-per-day", "chart-per-portal", "chart-principal", "chart-acr", "chart-consents"):
        assert f'id="{chart}" role="img" aria-labelledby="{chart}-title {chart}-desc"' in html
        assert f'<title id="{chart}-title">' in html and f'<desc id="{chart}-desc">' in html
    assert "<title>社保服务 Social portal: 3</title>" in html
    assert html.count("<circle") == 7 * 3  # all portals + two portal lines, seven days
    assert 'id="total-sign-ins">5<' in html and 'id="total-consents">3<' in html
    assert 'id="active-sessions">3<' in html  # Alice, 张三, and the administrator's own session

    today = stats.report_day(utcnow()).isoformat()
    per_day = table(html, "table-per-day")
    assert len(per_day) == 7 and per_day[-1] == [today, "3", "2", "5"] and per_day[0][1:] == ["0", "0", "0"]
    assert table(html, "table-per-portal") == [
        ["社保服务 Social portal", "social-portal", "3"],
        ["税务服务 Tax portal", "tax-portal", "2"],
    ]
    assert table(html, "table-principal") == [["自然人", "4"], ["法人（代表企业办事）", "1"]]
    acr = table(html, "table-acr")
    assert [row[1:] for row in acr] == [["urn:cn:sso:loa:1", "3"], ["urn:cn:sso:loa:2", "2"]]
    assert acr[0][0].startswith("一级")
    assert table(html, "table-consents") == [
        ["社保服务 Social portal", "social-portal", "2"],
        ["税务服务 Tax portal", "tax-portal", "1"],
    ]
    assert 'aria-current="page">近 7 天' in html


def test_the_admin_page_in_english(app: Flask, scenario: dict[str, Any]) -> None:
    make_admin()
    client = signed_in(app)
    html = client.get("/admin/stats?lang=en").text
    assert 'html lang="en"' in html
    for text in (
        "Statistics",
        "Sign-ins per day",
        "Sign-ins per portal",
        "Sign-ins by principal type",
        "Sign-ins by assurance level",
        "Consents per portal",
        "Active sessions",
    ):
        assert text in html
    assert table(html, "table-principal") == [["Natural person", "4"], ["Legal person (acting for an enterprise)", "1"]]
    assert 'aria-current="page">Last 14 days' in html  # the default period
    assert len(table(html, "table-per-day")) == 14
    # An unknown period falls back to the default rather than failing.
    assert len(table(client.get("/admin/stats?days=abc&lang=en").text, "table-per-day")) == 14
    assert len(table(client.get("/admin/stats?days=100000&lang=en").text, "table-per-day")) == 14
    assert len(table(client.get("/admin/stats?days=30&lang=en").text, "table-per-day")) == 30


def test_an_admin_page_with_no_data(app: Flask, account: Any) -> None:
    make_admin()
    html = signed_in(app).get("/admin/stats?lang=en").text
    assert 'id="total-sign-ins">0<' in html and "No sign-ins in this period." in html
    assert 'id="active-sessions">1<' in html  # the admin's own session
