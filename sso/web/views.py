"""Pages: sign-in, consent and the gateway's home page."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape

from .. import assurance, audit, consent, throttle
from .. import session as browser_session
from ..connectors.local import LocalAccounts
from ..db import close_own_connection, db, open_own_connection
from ..errors import error_page
from ..identifiers import InvalidIdentifier, validate_resident_id
from ..models import Account, Client
from ..oidc import authorize as authorize_flow
from ..oidc.authorize import INTERACTION
from . import lang_url, request_interaction
from .forms import ConsentForm, LoginFields, LoginForm

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static")

# Plain-language descriptions of each scope, shown on the consent page.
SCOPE_TEXT = {
    "openid": _l("Confirm that you are signed in (an identifier unique to this portal)"),
    "profile": _l("Your name, gender and date of birth"),
    "phone": _l("Your mobile phone number"),
    "address": _l("Your registered address"),
    "cn_identity": _l("Your resident identity number, masked (only the first 6 and last 4 characters)"),
    "cn_legal_person": _l("The enterprise you act for, and your role for it"),
}
# Shown instead when an administrator approved the portal for the full number.
FULL_ID_TEXT = _l("Your full resident identity number")


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def _page_client(interaction: dict | None) -> Client | None:  # type: ignore[type-arg]
    """The portal of a stored authorization request, for the login and consent pages.

    From the per-process portal cache, which /authorize has usually just filled (a
    snapshot at most ``client_cache_ttl`` old, as the protocol endpoints use); on a
    miss the lookup fills it for the next page of the flow.  A disabled portal is
    still found, from the database, as ``interaction_client`` finds it.
    """
    client_id = next((v for k, v in (interaction or {}).get("args", []) if k == "client_id"), None)
    if client_id is not None:
        server = _gateway().server
        client = server.client_cache.get(client_id) or server.query_client(client_id)
        if client is not None:
            return client  # type: ignore[no-any-return]
    return authorize_flow.interaction_client(interaction)


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html")


@bp.get("/")
def home() -> Response:
    current = browser_session.current()
    account = db.session.get(Account, current.account_id) if current else None
    return _html(render_template("home.html", account=account))


def _echo_safe(login_name: str | None) -> str:
    """A login name that may be shown back in the page: never a resident identity number."""
    value = (login_name or "").strip()
    if len(value) > 64 or any(ord(ch) < 32 for ch in value):
        return ""
    try:
        validate_resident_id(value)
    except InvalidIdentifier:
        return value
    return ""


def _login_hint(interaction: dict | None) -> str:  # type: ignore[type-arg]
    """OIDC Core §3.1.2.1 login_hint pre-fills the login name (unless it is an identity number)."""
    hint = next((v for k, v in (interaction or {}).get("args", []) if k == "login_hint"), "")
    return _echo_safe(hint)


# ---- the login page: a skeleton per process, the request's values filled in ----------

# Everything on the login page but a few values is the same for every request with
# the same language, portal name, tab and error message: Jinja renders that once per
# process (a "skeleton", with a marker where each value goes) and each request fills
# in its values, escaped exactly as the template's autoescape would escape them.
_MARK = "\x00"
_LOGIN_FIELDS = ("csrf_token", "interaction", "username", "personal_href", "legal_href", "register_href")
_LANG_SLOT = "lang:"
_SKELETONS_KEPT = 256


@dataclass(frozen=True)
class _Skeleton:
    pieces: tuple[tuple[str, str | None], ...]  # (text, the slot that follows it or None)
    template: Any  # the Template objects it was rendered from (a reloaded one is another)
    base: Any


def _login_hrefs(uid: str | None) -> tuple[str, str, str]:
    """The page's three links: ``url_for`` of the login (personal, legal) and registration pages.

    Werkzeug builds ``path?interaction=<uid>[&principal=legal]`` (parameters in the
    order given, quoted by ``urlencode`` with the URL standard's safe characters);
    the two paths are asked of ``url_for`` once per script root and process, and
    the query is written the same way here: three ``url_for`` calls were ~50 us.
    """
    kept: dict[str, tuple[str, str]] = current_app.extensions.setdefault("sso_login_paths", {})
    paths = kept.get(request.script_root)
    if paths is None:
        if len(kept) >= _SKELETONS_KEPT:  # script roots come from the server: a bound all the same
            kept.clear()
        paths = kept[request.script_root] = (url_for("web.login"), url_for("register.start"))
    login_path, register_path = paths
    if not uid:
        return login_path, login_path + "?principal=legal", register_path
    query = "?" + urlencode([("interaction", uid)], safe=_QUERY_SAFE)
    return login_path + query, login_path + query + "&principal=legal", register_path + query


_QUERY_SAFE = "!$'()*,/:;?@"  # werkzeug.urls._urlencode's


def _login_fields(form: LoginFields | LoginForm) -> dict[str, str]:
    """The per-request values of the login page (the template's ``fields``)."""
    uid = form.interaction.data
    personal, legal, register = _login_hrefs(uid)
    return {
        "csrf_token": form.csrf_token.current_token,
        "interaction": uid or "",
        "username": form.username.data or "",
        "personal_href": personal,
        "legal_href": legal,
        "register_href": register,
    }


def _login_skeleton(client: Client | None, error: str | None) -> _Skeleton | None:
    """The login page's skeleton for this request's language, portal, tab and message."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    env = app.jinja_env
    legal = request.values.get("principal") == "legal"  # the template's legal_login
    name = None if client is None else client.name
    key = (str(get_locale()), client is not None, name, legal, error, request.script_root)
    if any(isinstance(part, str) and _MARK in part for part in key):
        return None  # cannot be told from a marker: rendered in full
    template = env.get_template("login.html")
    base = env.get_template("base.html") if env.auto_reload else None
    kept: dict[Any, _Skeleton] = app.extensions.setdefault("sso_login_skeletons", {})
    skeleton = kept.get(key)
    if skeleton is not None and skeleton.template is template and skeleton.base is base:
        return skeleton
    markers = {field: Markup(_MARK + field + _MARK) for field in _LOGIN_FIELDS}  # noqa: S704 - constants

    def lang_marker(lang: str) -> Markup:
        return Markup(_MARK + _LANG_SLOT + lang + _MARK)  # noqa: S704 - the templates' own constants

    parts = render_template("login.html", fields=markers, lang_url=lang_marker, client=client, error=error).split(_MARK)
    slots = parts[1::2]
    if len(parts) % 2 == 0 or any(s not in _LOGIN_FIELDS and not s.startswith(_LANG_SLOT) for s in slots):
        return None  # (never: the key rules markers out of the text) rendered in full
    pieces = tuple(zip(parts[0::2], [*slots, None], strict=True))
    if len(kept) >= _SKELETONS_KEPT:
        kept.clear()
    skeleton = kept[key] = _Skeleton(pieces, template, base)
    return skeleton


def _login_html(form: LoginFields | LoginForm, client: Client | None, error: str | None) -> str:
    """The login page: the same bytes as rendering login.html, from the skeleton."""
    fields = _login_fields(form)
    skeleton = _login_skeleton(client, error)
    if skeleton is None:
        return render_template("login.html", fields=fields, client=client, error=error)
    out = []
    for text, slot in skeleton.pieces:
        out.append(text)
        if slot is not None:
            value = lang_url(slot[len(_LANG_SLOT) :]) if slot.startswith(_LANG_SLOT) else fields[slot]
            out.append(escape(value))
    return "".join(out)


_INTERACTION_ID_LONGEST = 64  # sso.oidc.authorize.load_interaction's bound on a stored request's id


def _expired(form: LoginFields) -> Response:
    """The answer to a sign-in whose stored authorization request is gone."""
    form.csrf_token.current_token  # noqa: B018 - as before: the CSRF secret is set for the next page
    return error_page(400, "invalid_request", _("This sign-in request has expired. Start again from the portal."))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    form = LoginFields()  # LoginForm's reading, checks and token, without building a WTForms form
    uid = request.values.get("interaction") or None
    if request.method != "GET" and form.validate_on_submit():  # no I/O: the fields and the CSRF token
        return _submit(form, uid)
    interaction = request_interaction(uid)
    if uid and interaction is None:
        return _expired(form)
    if request.method == "GET":
        form.interaction.data = uid or ""
        form.username.data = _login_hint(interaction)
        return _html(_login_html(form, _page_client(interaction), None))
    return _html(_login_html(form, _page_client(interaction), _("Please fill in both fields.")), 400)


def _submit(form: LoginFields, uid: str | None) -> Response:
    """A sign-in whose fields and CSRF token are right: its request still stored, the throttle, the password."""
    connector = _gateway().connectors.default
    # Checked before the password, keyed by the name as typed: an unknown name
    # is throttled exactly like a real account.  The stored authorization request
    # the sign-in is for is read first (gone: nothing is counted), on Redis in the
    # throttle's own round trip.
    if uid is None:
        interaction = None
        verdict = throttle.guard("password", form.username.data)
    elif len(uid) > _INTERACTION_ID_LONGEST:  # as load_interaction: never stored, not looked up
        return _expired(form)
    else:
        interaction, found = throttle.guard_for_entry("password", form.username.data, (INTERACTION, uid))
        if found is None:
            return _expired(form)
        verdict = found
    if not verdict.allowed:
        back = url_for("web.login", interaction=uid) if uid else url_for("web.login")
        return throttle.too_many(verdict, back_url=back)
    # On PostgreSQL + psycopg the sign-in's database work (the account's read, the
    # session's record, the audit row and their commit; a rehash commits on its own)
    # runs on a Core connection of the request's own, in one transaction, not
    # through the ORM Session: the record is one INSERT statement, not an object
    # flushed by the unit of work (sso.db.open_own_connection, as the SSO hop).
    # Always given back, rolled back unless committed.  Elsewhere (SQLite, another
    # connector, the Session already in a transaction): the Session, as before.
    connection = open_own_connection() if isinstance(connector, LocalAccounts) else None
    try:
        return _sign_in(form, connector, verdict, uid, interaction)
    finally:
        close_own_connection(connection)


def _sign_in(
    form: LoginFields,
    connector: Any,
    verdict: throttle.Verdict,
    uid: str | None,
    interaction: dict | None,  # type: ignore[type-arg]
) -> Response:
    """The password check and what follows it: the session and its audit row, or the failure."""
    identity = connector.login(form.username.data, form.password.data)
    if identity is None:
        throttle.failure(verdict)
        audit.record("login", outcome="failure", connector=connector.id)
        # One message for unknown account and wrong password: no account enumeration.
        message = _("The username or password is incorrect.")
        form.username.data = _echo_safe(form.username.data)
        return _html(_login_html(form, _page_client(interaction), message), 401)
    throttle.success(verdict)
    new_session = browser_session.BrowserSession(
        account_id=identity.subject,
        connector_id=identity.connector_id,
        auth_time=int(time.time()),
        amr=["pwd"],
        acr=assurance.current_level(["pwd"], identity.assurance).acr,
    )
    target = url_for("oidc.authorize_resume", interaction=uid) if uid else url_for("web.home")
    if request.form.get("principal") == "legal":  # "Sign in for an enterprise": choose it first
        target = url_for("enterprise.select", interaction=uid) if uid else url_for("enterprise.select")
    response = redirect(target)
    # One transaction, one commit: the session's record, then the audit row.
    browser_session.start(new_session, response, commit=False)
    audit.record("login", actor=identity.subject, connector=identity.connector_id, sid=new_session.sid)
    return response  # type: ignore[return-value]


@bp.route("/consent", methods=["GET", "POST"], endpoint="consent")
def consent_page() -> Response:
    form = ConsentForm()
    uid = request.values.get("interaction") or ""
    interaction = request_interaction(uid)
    current = browser_session.current()
    if interaction is None:
        return error_page(400, "invalid_request", _("This sign-in request has expired. Start again from the portal."))
    if current is None:
        return redirect(url_for("web.login", interaction=uid))  # type: ignore[return-value]
    client = _page_client(interaction)
    if client is None:
        return error_page(400, "invalid_client", _("This portal is not available."))
    scopes = next((v for k, v in interaction["args"] if k == "scope"), "").split()
    scopes = client.get_allowed_scope(" ".join(scopes)).split()
    if request.method == "POST":
        if not form.validate_on_submit():
            return error_page(400, "invalid_request", _("The form has expired. Please try again."))
        decision = request.form.get("decision")
        if decision == "allow":
            consent.remember(current.account_id, client.client_id, scopes)
            audit.record("consent.granted", actor=current.account_id, client_id=client.client_id, scopes=scopes)
            interaction["consented"] = True
            authorize_flow.update_interaction(uid, interaction)
            return redirect(url_for("oidc.authorize_resume", interaction=uid))  # type: ignore[return-value]
        if decision == "deny":
            audit.record("consent.denied", actor=current.account_id, client_id=client.client_id)
            return authorize_flow.deny(uid)
        return error_page(400, "invalid_request", _("Choose to allow or deny."))
    form.interaction.data = uid
    items = [
        (s, str(FULL_ID_TEXT if s == "cn_identity" and client.full_id_number_allowed else SCOPE_TEXT.get(s, s)))
        for s in scopes
    ]
    return _html(render_template("consent.html", form=form, client=client, scopes=items))
