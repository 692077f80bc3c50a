"""The login page's per-request work: what is the same on every request is done once.

* WTForms' message catalogue is read from disk once per locale per process
  (Flask-WTF reads it on every request that builds a form), with the same strings;
* the portal named on the page comes from the per-process portal cache that
  /authorize has just filled, not from another query;
* the stored authorization request is read from the store once per request, though
  both the page and the choice of its language need it.
"""

from __future__ import annotations

from typing import Any

import pytest
from babel import support
from flask import Flask
from flask_wtf.i18n import translations as flask_wtf_translations
from sqlalchemy import event
from wtforms import StringField
from wtforms.validators import DataRequired

from sso.db import db
from sso.oidc.authorize import INTERACTION
from sso.web import forms

from .conftest import PASSWORD, USERNAME, csrf_from


@pytest.fixture
def wtforms_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a WTForms catalogue from disk (by locale), from an empty cache."""
    monkeypatch.setattr(forms._WTFormsTranslations, "_catalogues", {})
    real = support.Translations.load
    loads: list[str] = []

    def load(cls: Any, dirname: Any = None, locales: Any = None, domain: Any = None) -> Any:
        if domain == "wtforms":
            loads.append(str(locales[0]))
        return real(dirname, locales, domain)

    monkeypatch.setattr(support.Translations, "load", classmethod(load))
    return loads


def test_wtforms_catalogue_is_read_once_per_locale(app: Flask, client, wtforms_loads):
    for _ in range(3):
        assert client.get("/login").status_code == 200
    assert wtforms_loads == []  # the page itself needs no WTForms message
    token = csrf_from(client.get("/login").get_data(as_text=True))
    for _ in range(2):  # nor does a sign-in, even a refused one: no WTForms form is built for it
        assert client.post("/login", data={"csrf_token": token, "username": ""}).status_code == 400
    assert wtforms_loads == []

    class Required(forms.PageForm):
        class Meta:
            csrf = False

        name = StringField(validators=[DataRequired()])

    # A validator's message needs the catalogue: read once per locale (a request of its own each).
    for _ in range(3):
        with app.app_context(), app.test_request_context("/consent", method="POST", data={"name": ""}):
            assert not Required().validate_on_submit()
    assert len(wtforms_loads) == 1 and wtforms_loads[0].startswith("zh")
    for _ in range(2):
        with app.app_context(), app.test_request_context("/consent?lang=en", method="POST", data={"name": ""}):
            assert not Required().validate_on_submit()
    assert wtforms_loads[1:] == ["en"]


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_wtforms_messages_are_the_ones_flask_wtf_gives(app: Flask, lang: str):
    messages = ["This field is required.", "Invalid input.", "Not a valid integer value."]
    with app.test_request_context(f"/login?lang={lang}"):
        form = forms.LoginForm(formdata=None)
        translations = form.meta.get_translations(form)
        assert translations is not flask_wtf_translations
        for message in messages:
            assert translations.gettext(message) == flask_wtf_translations.gettext(message)
        assert translations.ngettext("%(num)d", "%(num)ds", 2) == flask_wtf_translations.ngettext(
            "%(num)d", "%(num)ds", 2
        )
    if lang == "zh-CN":  # really translated, not passed through
        with app.test_request_context("/login"):
            form = forms.LoginForm(formdata=None)
            assert form.meta.get_translations(form).gettext("This field is required.") != "This field is required."


def test_wtf_i18n_disabled_still_means_wtforms_own(app: Flask):
    app.config["WTF_I18N_ENABLED"] = False
    with app.test_request_context("/login"):
        form = forms.LoginForm(formdata=None)
        assert not isinstance(form.meta.get_translations(form), forms._WTFormsTranslations)


def test_login_page_reads_portal_and_interaction_once(app, client, browser, portal, monkeypatch):
    location = browser.authorize(portal).headers["Location"]  # /authorize caches the portal
    assert location.startswith("/login?interaction=")

    statements: list[str] = []

    def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    store = app.extensions["sso"].store
    real_get = store.get
    interaction_reads: list[str] = []

    def get(kind: str, key: str) -> Any:
        if kind == INTERACTION:
            interaction_reads.append(key)
        return real_get(kind, key)

    monkeypatch.setattr(store, "get", get)
    event.listen(db.engine, "before_cursor_execute", on_sql)
    try:
        page = client.get(location)
    finally:
        event.remove(db.engine, "before_cursor_execute", on_sql)
    assert page.status_code == 200
    assert "税务服务 Tax portal" in page.text  # the heading still names the portal
    assert not [s for s in statements if "clients" in s], statements
    assert len(interaction_reads) == 1


def test_login_page_names_a_portal_missing_from_the_cache(app, client, browser, portal):
    location = browser.authorize(portal).headers["Location"]
    cache = app.extensions["sso"].server.client_cache
    cache.invalidate()
    page = client.get(location)
    assert page.status_code == 200
    assert "税务服务 Tax portal" in page.text
    assert cache.get(portal.client_id) is not None  # filled for the login POST


def test_login_page_still_names_a_disabled_portal(app, client, browser, portal):
    from sso.clients import disable_client

    location = browser.authorize(portal).headers["Location"]
    disable_client(portal.client_id)
    page = client.get(location)
    assert page.status_code == 200
    assert "税务服务 Tax portal" in page.text


def _login_post(client: Any, browser: Any, portal: Any) -> tuple[str, dict[str, str]]:
    location = browser.authorize(portal).headers["Location"]
    page = client.get(location)
    uid = location.split("interaction=")[1]
    return "/login", {
        "csrf_token": csrf_from(page.text),
        "interaction": uid,
        "username": USERNAME,
        "password": PASSWORD,
    }


def test_login_commits_the_session_record_and_its_audit_row_once(app, client, browser, portal, account):
    path, form = _login_post(client, browser, portal)
    commits: list[int] = []

    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(db.engine, "commit", on_commit)
    try:
        response = client.post(path, data=form)
    finally:
        event.remove(db.engine, "commit", on_commit)
    assert response.status_code == 302 and "/authorize/resume" in response.headers["Location"]
    assert len(commits) == 1


def test_login_without_its_audit_row_leaves_no_session_record(app, client, browser, portal, account, monkeypatch):
    from sso import audit_chain
    from sso.models import AuditEvent, SessionRecord

    path, form = _login_post(client, browser, portal)
    records = db.session.query(SessionRecord).count()
    events = db.session.query(AuditEvent).count()

    def broken_append(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("audit store down")

    monkeypatch.setattr(audit_chain, "append", broken_append)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post(path, data=form)
    assert response.status_code == 500
    assert "sso_session" not in response.headers.get("Set-Cookie", "")
    db.session.rollback()
    assert db.session.query(SessionRecord).count() == records
    assert db.session.query(AuditEvent).count() == events


def test_login_inserts_the_new_session_record_without_trying_an_update(app, client, browser, portal, account):
    from sso.models import SessionRecord

    path, form = _login_post(client, browser, portal)
    statements: list[str] = []

    def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", on_sql)
    try:
        response = client.post(path, data=form)
    finally:
        event.remove(db.engine, "before_cursor_execute", on_sql)
    assert response.status_code == 302
    table = SessionRecord.__tablename__
    touching = [s.split()[0] for s in statements if f" {table} " in f" {s} ".replace("(", " ")]
    assert touching == ["INSERT"], statements


def test_page_strings_find_their_catalogue_once_per_request(client, monkeypatch):
    from flask_babel import Domain

    real = Domain.get_translations
    lookups: list[int] = []

    def counted(self: Any) -> Any:
        lookups.append(1)
        return real(self)

    monkeypatch.setattr(Domain, "get_translations", counted)
    page = client.get("/login")
    assert page.status_code == 200 and "登录" in page.text
    assert 1 <= len(lookups) <= 2  # the page has a dozen _() calls
    english = client.get("/login?lang=en")
    assert "Sign in" in english.text and "登录" not in english.text


def test_templates_follow_force_locale(app):
    from flask import render_template_string
    from flask_babel import force_locale

    with app.test_request_context("/login"):
        chinese = render_template_string("{{ _('Sign in') }}")
        with force_locale("en"):
            assert render_template_string("{{ _('Sign in') }}") == "Sign in"
        assert render_template_string("{{ _('Sign in') }}") == chinese != "Sign in"


def test_a_sign_in_that_redirects_never_chooses_a_page_language(app, client, browser, portal, account, monkeypatch):
    """A successful POST answers with a redirect: no text, so no locale to select (it read the store, too)."""
    import sso.web

    location = browser.authorize(portal).headers["Location"]
    page = client.get(location)
    token = csrf_from(page.get_data(as_text=True))
    uid = location.split("interaction=")[1]
    chosen: list[str] = []
    real = sso.web.select_locale

    def select_locale() -> str:
        chosen.append(real())
        return chosen[-1]

    monkeypatch.setattr(sso.web, "select_locale", select_locale)
    response = client.post(
        "/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert chosen == []
    # A failed one renders the page again: in its language, as before.
    page = client.get(location)
    token = csrf_from(page.get_data(as_text=True))
    chosen.clear()
    wrong = client.post(
        "/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME, "password": "no"}
    )
    assert wrong.status_code == 401 and chosen == ["zh_CN"]


def test_the_interaction_field_label_is_the_default_one(app):
    with app.test_request_context("/login"):
        assert forms.LoginForm(formdata=None).interaction.label.text == "Interaction"
