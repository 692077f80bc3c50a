"""Pages for the legal-person login: choosing whom to act for, and agent authorisations.

* ``/enterprise/select`` (``enterprise.select``): the enterprises the person may
  act for, chosen explicitly for this browser session.  Choosing, switching and
  "act as myself" each rotate the session handle (no fixation).  With
  ``?interaction=`` it serves an authorization request and resumes it.
* ``/enterprise/authorisations``: a legal representative grants and revokes agent
  authorisations; an agent confirms, declines or revokes them.

The rules live in :mod:`sso.legal`; these views only translate its errors.
Pages never carry a full credit code or identity number: a choice is posted as
an opaque keyed token, and codes are shown masked.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import Length

from .. import audit, legal
from .. import session as browser_session
from ..connectors.base import RegistryUnavailable
from ..db import db
from ..errors import error_page
from ..identifiers import mask_credit_code, mask_resident_id
from ..models import Account, AgentAuthorisation
from ..oidc import authorize as authorize_flow

bp = Blueprint("enterprise", __name__, template_folder="templates", url_prefix="/enterprise")

# The texts of legal.ERRORS, translatable; same English text.
MESSAGES = {
    "code_format": _l(
        "A unified social credit code has 18 characters: digits and capital letters except I, O, Z, S, V."
    ),
    "code_region": _l("Characters 3 to 8 of the credit code are not a valid region code."),
    "code_check_char": _l("The last character of the credit code does not match: please check it for typing errors."),
    "enterprise_unknown": _l("The enterprise registry has no enterprise with this credit code."),
    "enterprise_revoked": _l("This enterprise's business licence is revoked: nobody can act for it."),
    "enterprise_cancelled": _l("This enterprise is deregistered: nobody can act for it."),
    "enterprise_inactive": _l("This enterprise is not active in the registry: nobody can act for it."),
    "not_verified": _l("Only an account verified against the population registry can act for an enterprise."),
    "not_representative": _l("The enterprise registry does not name you as this enterprise's legal representative."),
    "authorisation_unknown": _l("There is no such authorisation for you."),
    "authorisation_pending": _l("This authorisation is waiting for the agent's confirmation."),
    "authorisation_revoked": _l("This authorisation has been revoked."),
    "authorisation_declined": _l("This authorisation was declined."),
    "authorisation_expired": _l("This authorisation has expired."),
    "authorisation_not_yet_valid": _l("This authorisation is not valid yet."),
    "not_pending": _l("Only an authorisation waiting for confirmation can be confirmed or declined."),
    "not_revocable": _l("This authorisation has already ended."),
    "grantor_replaced": _l("The person who granted this authorisation is no longer the legal representative."),
    "roles_required": _l("Choose at least one matter the agent may handle."),
    "role_unknown": _l("One of the chosen matters is not offered."),
    "dates_invalid": _l("Enter both dates as year-month-day."),
    "dates_order": _l("The end date must be after the start date."),
    "from_past": _l("The authorisation cannot start before today."),
    "until_past": _l("The end date must be in the future."),
    "too_long": _l("An authorisation can last at most three years."),
    "agent_id_format": _l("The agent's identity number must have 18 characters: 17 digits and a final digit or X."),
    "agent_id_region": _l("The first six digits of the agent's identity number are not a valid region code."),
    "agent_id_birth_date": _l("Digits 7 to 14 of the agent's identity number are not a valid date of birth."),
    "agent_id_check_char": _l("The last character of the agent's identity number does not match: please check it."),
    "agent_not_found": _l(
        "No verified account matches this name and identity number. "
        "The agent must first register with exactly this name and number."
    ),
    "agent_not_eligible": _l(
        "This person cannot be authorised: the population registry does not record them as living."
    ),
    "agent_is_self": _l("You cannot authorise yourself: you already act as the legal representative."),
    "already_authorised": _l("This person already has a pending or active authorisation for this enterprise."),
    "registry_unavailable": _l("The enterprise registry cannot be reached now. Please try again later."),
}

ACTING_ROLE_TEXT = {
    legal.LEGAL_REPRESENTATIVE: _l("Legal representative"),
    legal.AGENT: _l("Authorised agent"),
}
ROLE_TEXT = {
    "tax_filing": _l("Tax filing"),
    "social_security": _l("Social security"),
    "licence_application": _l("Licence applications"),
    "general": _l("All matters (general)"),
}
STATUS_TEXT = {
    legal.PENDING: _l("Waiting for the agent's confirmation"),
    legal.ACTIVE: _l("Active"),
    legal.REVOKED: _l("Revoked"),
    legal.DECLINED: _l("Declined"),
    "expired": _l("Expired"),
}
DONE_TEXT = {
    "granted": _l("The authorisation was created. The agent must now confirm it."),
    "confirmed": _l("You accepted the authorisation."),
    "declined": _l("You declined the authorisation."),
    "revoked": _l("The authorisation was revoked."),
}
FORM_EXPIRED = _l("The form has expired. Please try again.")
EXPIRED_REQUEST = _l("This sign-in request has expired. Start again from the portal.")


class PageForm(FlaskForm):
    """CSRF for every form on these pages; the other fields are read per action."""

    interaction = HiddenField(validators=[Length(max=64)])


# ---- helpers -------------------------------------------------------------------------


def _gateway() -> Any:
    return current_app.extensions["sso"]


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html")


def message(code: str) -> str:
    return str(MESSAGES.get(code, MESSAGES["registry_unavailable"]))


def _status_for(code: str) -> int:
    return 503 if code == "registry_unavailable" else 400


def choice_token(account_id: str, choice: legal.Choice) -> str:
    """An opaque, keyed name for a choice: the page never carries the credit code."""
    parts = ("enterprise-choice", account_id, choice.role, choice.credit_code, choice.authorisation_id or "")
    raw = "\x00".join(parts)
    return str(_gateway().secret_hasher.hash(raw)).rsplit("$", 1)[-1][:32]


def beijing_date(moment: datetime | None, *, end: bool = False) -> str:
    """A naive-UTC bound as the Beijing date a person reads (an end bound is exclusive)."""
    if moment is None:
        return ""
    local = moment + timedelta(hours=8) - (timedelta(seconds=1) if end else timedelta(0))
    return local.date().isoformat()


def _to_login(uid: str | None) -> Response:
    args: dict[str, str] = {"principal": "legal"}
    if uid:
        args["interaction"] = uid
    return redirect(url_for("web.login", **args))  # type: ignore[return-value]


def _needs_legal_scope(interaction: dict[str, Any] | None) -> bool:
    if not interaction:
        return False
    return "cn_legal_person" in next((v for k, v in interaction["args"] if k == "scope"), "").split()


def _choice_view(account: Account, choice: legal.Choice, acting: dict[str, Any] | None = None) -> dict[str, Any]:
    current = bool(
        acting
        and acting.get("credit_code") == choice.credit_code
        and acting.get("role") == choice.role
        and acting.get("authorisation_id") == choice.authorisation_id
    )
    return {
        "current": current,
        "token": choice_token(account.id, choice),
        "name": choice.enterprise_name,
        "code": choice.credit_code_masked,
        "role": choice.role,
        "role_text": str(ACTING_ROLE_TEXT[choice.role]),
        "available": choice.available,
        "reason": message(choice.reason) if choice.reason else "",
        "roles": [str(ROLE_TEXT.get(r, r)) for r in choice.roles],
        "valid_from": beijing_date(choice.valid_from),
        "valid_until": beijing_date(choice.valid_until, end=True),
    }


def _acting_view(acting: dict[str, Any] | None) -> dict[str, Any] | None:
    if not acting:
        return None
    try:
        ended = not legal.still_valid(acting)
    except RegistryUnavailable:  # a display hint only; the protocol checks fail closed
        ended = False
    return {
        "name": acting.get("enterprise_name", ""),
        "code": mask_credit_code(acting.get("credit_code")),
        "role_text": str(ACTING_ROLE_TEXT.get(acting.get("role", ""), "")),
        "roles": [str(ROLE_TEXT.get(r, r)) for r in acting.get("roles") or []],
        "ended": ended,
    }


# ---- choosing whom to act for ------------------------------------------------------------


@bp.route("/select", methods=["GET", "POST"], endpoint="select")
def select() -> Response:
    form = PageForm()
    uid = request.values.get("interaction") or None
    interaction = authorize_flow.load_interaction(uid) if uid else None
    if uid and interaction is None:
        return error_page(400, "invalid_request", str(EXPIRED_REQUEST))
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return _to_login(uid)

    def page(error: str | None = None, status: int = 200, choices: list[legal.Choice] | None = None) -> Response:
        if choices is None:
            try:
                choices = legal.enterprises_for(account)
            except legal.LegalPersonError as exc:
                choices, error, status = [], message(exc.code), _status_for(exc.code)
        form.interaction.data = uid or ""
        body = render_template(
            "enterprise_select.html",
            form=form,
            client=authorize_flow.interaction_client(interaction),
            interaction=uid,
            needs_legal=_needs_legal_scope(interaction),
            choices=[_choice_view(account, c, current.acting) for c in choices],
            current=_acting_view(current.acting),
            error=error,
        )
        return _html(body, status)

    if request.method == "GET":
        return page()
    if not form.validate_on_submit():
        return page(str(FORM_EXPIRED), 400)
    action = request.form.get("action") or "choose"
    target = url_for("oidc.authorize_resume", interaction=uid) if uid else url_for("enterprise.select")
    if action == "cancel" and uid:
        audit.record("legal.selection_cancelled", actor=account.id, sid=current.sid)
        return authorize_flow.deny(uid)
    if action == "clear":
        response = redirect(target)
        if current.acting:
            previous = current.acting
            current.acting = None
            browser_session.rotate(current, response)
            audit.record(
                "legal.acting_cleared",
                actor=account.id,
                sid=current.sid,
                credit_code=mask_credit_code(previous.get("credit_code")),
            )
        return response  # type: ignore[return-value]
    if action != "choose":
        return page(_("Choose an enterprise or act as yourself."), 400)
    try:
        choices = legal.enterprises_for(account)
    except legal.LegalPersonError as exc:
        return page(message(exc.code), _status_for(exc.code), choices=[])
    token = request.form.get("choice") or ""
    chosen = next((c for c in choices if choice_token(account.id, c) == token), None)
    if chosen is None:
        return page(_("This choice is not available any more. Choose again."), 400, choices)
    try:
        acting = legal.choose(account, chosen.credit_code, chosen.authorisation_id)
    except legal.LegalPersonError as exc:
        audit.record(
            "legal.enterprise_chosen",
            outcome="failure",
            actor=account.id,
            reason=exc.code,
            credit_code=chosen.credit_code_masked,
        )
        return page(message(exc.code), _status_for(exc.code), choices)
    switched = bool(current.acting)
    current.acting = acting
    response = redirect(target)
    browser_session.rotate(current, response)
    audit.record(
        "legal.enterprise_switched" if switched else "legal.enterprise_chosen",
        actor=account.id,
        sid=current.sid,
        credit_code=chosen.credit_code_masked,
        role=acting["role"],
        authorisation=acting["authorisation_id"],
    )
    return response  # type: ignore[return-value]


# ---- agent authorisations --------------------------------------------------------------------


def _row_view(row: AgentAuthorisation, person: Account | None) -> dict[str, Any]:
    now = legal.now()
    status = row.status
    if status in (legal.PENDING, legal.ACTIVE) and now >= row.valid_until:
        status = "expired"
    return {
        "id": row.id,
        "enterprise": row.enterprise_name,
        "code": mask_credit_code(row.credit_code),
        "person": person.display_name if person else "",
        "person_id": (person.id_number_masked or "") if person else "",
        "roles": [str(ROLE_TEXT.get(r, r)) for r in row.roles or []],
        "valid_from": beijing_date(row.valid_from),
        "valid_until": beijing_date(row.valid_until, end=True),
        "status": status,
        "status_text": str(STATUS_TEXT.get(status, status)),
        "revocable": status in (legal.PENDING, legal.ACTIVE),
        "pending": status == legal.PENDING,
    }


def _accounts(ids: set[str]) -> dict[str, Account]:
    if not ids:
        return {}
    rows = db.session.execute(db.select(Account).filter(Account.id.in_(ids))).scalars()
    return {a.id: a for a in rows}


@bp.route("/authorisations", methods=["GET", "POST"], endpoint="authorisations")
def authorisations() -> Response:
    form = PageForm()
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return _to_login(None)
    entered: dict[str, Any] = {}

    def page(error: str | None = None, status: int = 200) -> Response:
        try:
            choices = legal.enterprises_for(account)
        except legal.LegalPersonError as exc:
            choices, error, status = [], message(exc.code), _status_for(exc.code)
        represented = [c for c in choices if c.role == legal.LEGAL_REPRESENTATIVE]
        granted = legal.authorisations_granted(account, represented) if represented else []
        received = legal.authorisations_received(account)
        people = _accounts({r.agent_account_id for r in granted} | {r.grantor_account_id for r in received})
        today = legal.today()
        body = render_template(
            "enterprise_authorisations.html",
            form=form,
            enterprises=[
                {"token": choice_token(account.id, c), "name": c.enterprise_name, "code": c.credit_code_masked}
                for c in represented
                if c.available
            ],
            granted=[_row_view(r, people.get(r.agent_account_id)) for r in granted],
            received=[_row_view(r, people.get(r.grantor_account_id)) for r in received],
            roles=[(r, str(ROLE_TEXT[r])) for r in legal.ROLES],
            entered={
                "valid_from": today.isoformat(),
                "valid_until": (today + timedelta(days=365)).isoformat(),
                "roles": [],
                **entered,
            },
            done=str(DONE_TEXT[request.args["done"]]) if request.args.get("done") in DONE_TEXT else None,
            error=error,
        )
        return _html(body, status)

    if request.method == "GET":
        return page()
    if not form.validate_on_submit():
        return page(str(FORM_EXPIRED), 400)
    action = request.form.get("action")
    try:
        if action == "grant":
            entered.update(
                agent_name=(request.form.get("agent_name") or "")[:50],
                agent_id_masked=mask_resident_id((request.form.get("agent_id_number") or "").strip().upper()),
                roles=request.form.getlist("roles"),
                valid_from=(request.form.get("valid_from") or "")[:10],
                valid_until=(request.form.get("valid_until") or "")[:10],
            )
            represented = [c for c in legal.enterprises_for(account) if c.role == legal.LEGAL_REPRESENTATIVE]
            if not represented:
                return page(_("Only the legal representative of an active enterprise can authorise agents."), 403)
            token = request.form.get("enterprise") or ""
            chosen = next((c for c in represented if choice_token(account.id, c) == token), None)
            if chosen is None:
                return page(_("Choose one of the enterprises you represent."), 400)
            try:
                valid_from = date.fromisoformat(request.form.get("valid_from") or "")
                valid_until = date.fromisoformat(request.form.get("valid_until") or "")
            except ValueError:
                raise legal.LegalPersonError("dates_invalid") from None
            legal.grant_authorisation(
                account,
                chosen.credit_code,
                (request.form.get("agent_id_number") or "")[:32],
                (request.form.get("agent_name") or "")[:50],
                request.form.getlist("roles"),
                valid_from,
                valid_until,
            )
            done = "granted"
        elif action in ("confirm", "decline", "revoke"):
            authorisation_id = (request.form.get("authorisation") or "")[:32]
            if action == "confirm":
                legal.confirm(account, authorisation_id)
                done = "confirmed"
            elif action == "decline":
                legal.decline(account, authorisation_id)
                done = "declined"
            else:
                legal.revoke(account, authorisation_id)
                done = "revoked"
        else:
            return page(_("Choose what to do."), 400)
    except legal.LegalPersonError as exc:
        return page(message(exc.code), _status_for(exc.code))
    response = redirect(url_for("enterprise.authorisations", done=done))
    if (
        action == "revoke"
        and current.acting
        and current.acting.get("authorisation_id") == (request.form.get("authorisation") or "")[:32]
    ):
        # The agent ended the authorisation this session acts under: act as themself again.
        current.acting = None
        browser_session.rotate(current, response)
        audit.record("legal.acting_cleared", actor=account.id, sid=current.sid, reason="authorisation_revoked")
    return response  # type: ignore[return-value]
