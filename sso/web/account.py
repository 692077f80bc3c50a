"""The account page: profile, portals and consents, enterprises, sessions, recent sign-ins."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.routing import BuildError

from .. import audit
from .. import session as browser_session
from ..assurance import BY_ACR, current_level
from ..db import db
from ..errors import error_page
from ..identifiers import mask_phone
from ..models import Account, AuditEvent, Client, Consent, Grant, utcnow
from .forms import ActionForm
from .views import SCOPE_TEXT

bp = Blueprint("account", __name__)

RECENT_SIGN_INS = 10

# The assurance levels in plain words (sso/assurance.py has the definitions).
LEVEL_TEXT = {
    "urn:cn:sso:loa:1": _l("password; self-asserted identity"),
    "urn:cn:sso:loa:2": _l("password; identity verified against the population registry"),
    "urn:cn:sso:loa:3": _l("password and a second factor; registry-verified identity"),
}


def _optional_url(endpoint: str) -> str | None:
    """A link to a page another module provides, if that module is mounted."""
    try:
        return url_for(endpoint)
    except BuildError:
        return None


def _consents(account: Account) -> list[dict[str, Any]]:
    rows = db.session.execute(
        db.select(Consent, Client)
        .join(Client, Client.client_id == Consent.client_id)
        .where(Consent.account_id == account.id)
        .order_by(Consent.granted_at.desc())
    ).all()
    return [
        {
            "client_id": client.client_id,
            "name": client.name,
            "granted_at": consent.granted_at,
            "scopes": [str(SCOPE_TEXT.get(s, s)) for s in consent.scopes if s != "openid"],
        }
        for consent, client in rows
    ]


def _recent_sign_ins(account: Account) -> list[AuditEvent]:
    return list(
        db.session.execute(
            db.select(AuditEvent)
            .where(AuditEvent.actor == account.id, AuditEvent.event == "login")
            .order_by(AuditEvent.at.desc())
            .limit(RECENT_SIGN_INS)
        ).scalars()
    )


@bp.get("/account")
def overview() -> Response:
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    level = BY_ACR.get(current.acr) or current_level(current.amr, account.assurance)
    body = render_template(
        "account.html",
        account=account,
        phone=mask_phone(account.phone) if account.phone else None,
        level=level,
        level_text=str(LEVEL_TEXT.get(level.acr, level.description)),
        session=current,
        consents=_consents(account),
        sessions=browser_session.sessions_of(account.id),
        sign_ins=_recent_sign_ins(account),
        form=ActionForm(),
        mfa_url=_optional_url("mfa.manage"),
        enterprise_url=_optional_url("enterprise.authorisations"),
    )
    return Response(body, mimetype="text/html")


def _checked_post() -> tuple[browser_session.BrowserSession, Account] | Response:
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    if not ActionForm().validate_on_submit():
        return error_page(400, "invalid_request", _("The form has expired. Please try again."))
    return current, account


@bp.post("/account/consents/revoke")
def revoke_consent() -> Response:
    checked = _checked_post()
    if isinstance(checked, Response):
        return checked
    _, account = checked
    client_id = request.form.get("client_id", "")[:64]
    consent = db.session.execute(
        db.select(Consent).filter_by(account_id=account.id, client_id=client_id)
    ).scalar_one_or_none()
    if consent is None:
        return error_page(400, "invalid_request", _("There is no such consent."))
    db.session.delete(consent)
    # Withdrawing consent ends what it allowed: that portal's refresh tokens die too.
    revoked = db.session.execute(
        db.update(Grant)
        .where(Grant.account_id == account.id, Grant.client_id == client_id, Grant.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="consent_revoked")
    ).rowcount
    db.session.commit()
    audit.record("consent.revoked", actor=account.id, client_id=client_id, grants_revoked=revoked)
    return redirect(url_for("account.overview") + "#portals")  # type: ignore[return-value]


@bp.post("/account/sessions/revoke")
def revoke_session() -> Response:
    checked = _checked_post()
    if isinstance(checked, Response):
        return checked
    current, account = checked
    sid = request.form.get("sid", "")[:64]
    if not browser_session.revoke(account.id, sid):
        return error_page(400, "invalid_request", _("There is no such session."))
    if sid == current.sid:
        response = redirect(url_for("web.home"))
        browser_session.end(response, reason="revoked")
        return response  # type: ignore[return-value]
    current_app.logger.info("session revoked from the account page")
    return redirect(url_for("account.overview") + "#sessions")  # type: ignore[return-value]
