"""Second-factor pages: the step-up challenge, authenticator set-up, and factor management.

The challenge asks only for what is missing: the password was proven at sign-in,
so the page asks for the authenticator code when one is set up (or a recovery
code instead), otherwise an SMS code to the bound phone.  Success adds the
factor to the session's ``amr`` (RFC 8176: "otp" or "sms", then "mfa"),
recomputes ``acr`` from what the session has proven and the account's identity
assurance, and gives the session a new handle (no fixation) before resuming the
authorization request.

Every code check is throttled per account, one scope per factor, and every
wrong code gets the same answer whatever the factor.  Adding or removing a
factor needs a second factor proven in the last minutes (``mfa.FRESH_SECONDS``);
the challenge then returns to the page that asked (``next``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length

from .. import assurance, audit, mfa, throttle
from .. import session as browser_session
from ..errors import error_page
from ..models import Account
from ..oidc import authorize as authorize_flow

bp = Blueprint("mfa", __name__, template_folder="templates")

# Pages the challenge may return to when it does not serve an authorization request.
NEXT_PAGES = {"enroll": "mfa.enroll", "manage": "mfa.manage"}
THROTTLE_SCOPES = {"totp": "totp", "recovery": "recovery", "sms": "sms"}
AMR = {"totp": "otp", "recovery": "otp", "sms": "sms"}  # RFC 8176 §2: a recovery code is a one-time password
MAX_CODE_FIELD = 64


class ChallengeForm(FlaskForm):
    interaction = HiddenField(validators=[Length(max=64)])
    next = HiddenField(validators=[Length(max=16)])
    method = HiddenField(validators=[Length(max=16)])
    code = StringField(validators=[Length(max=MAX_CODE_FIELD)])


class EnrolForm(FlaskForm):
    code = StringField(validators=[Length(max=MAX_CODE_FIELD)])


class ActionForm(FlaskForm):
    """Remove the authenticator, new recovery codes: buttons, CSRF only."""


# ---- helpers -------------------------------------------------------------------------


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # codes, secrets and QR codes stay out of caches
    if headers:
        response.headers.update(headers)
    return response


def wrong_code_message() -> str:
    # One answer for every wrong, expired, replayed or used-up code, whatever the factor.
    return _("The code is incorrect or no longer valid.")


def _format_message(method: str) -> str:
    if method == "recovery":
        return _("Enter a recovery code as shown on your list: 10 letters and digits.")
    return _("Enter the 6-digit code.")


def _login_url(uid: str) -> str:
    return url_for("web.login", interaction=uid) if uid else url_for("web.login")


def _target(uid: str, nxt: str) -> str:
    if uid:
        return url_for("oidc.authorize_resume", interaction=uid)
    return url_for(NEXT_PAGES.get(nxt, "mfa.manage"))


def _challenge_url(uid: str, nxt: str, **extra: str) -> str:
    if uid:
        return url_for("mfa.challenge", interaction=uid, **extra)
    return url_for("mfa.challenge", next=nxt, **extra)


# ---- the challenge -------------------------------------------------------------------------


@bp.route("/mfa/challenge", methods=["GET", "POST"], endpoint="challenge")
def challenge() -> Response:
    form = ChallengeForm()
    source = request.form if request.method == "POST" else request.args
    uid = source.get("interaction") or ""
    nxt = source.get("next") or ""
    interaction = None
    if uid:
        interaction = authorize_flow.load_interaction(uid)
        if interaction is None:
            return error_page(
                400, "invalid_request", _("This sign-in request has expired. Start again from the portal.")
            )
    elif nxt not in NEXT_PAGES:
        return error_page(400, "invalid_request", _("Open this page from a portal or from your security settings."))
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(_login_url(uid))  # type: ignore[return-value]
    method = mfa.method_for(account)
    client = authorize_flow.interaction_client(interaction)

    def page(
        shown: str | None, *, error: str | None = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        form.interaction.data = uid
        form.next.data = "" if uid else nxt
        form.method.data = shown or ""
        form.code.data = ""
        body = render_template(
            "mfa_challenge.html",
            form=form,
            method=shown,
            client=client,
            masked_phone=mfa.mask_phone(account.phone),
            sms_sent=shown == "sms" and mfa.sms_code_pending(account.id),
            sms_minutes=mfa.SMS_TTL // 60,
            error=error,
            recovery_url=_challenge_url(uid, nxt, use="recovery"),
            totp_url=_challenge_url(uid, nxt),
        )
        return _html(body, status, headers)

    if request.method == "GET":
        done = assurance.has_second_factor(current.amr) if uid else mfa.is_fresh(current.second_factor_time)
        if done:
            # Already proven (back button, a second tab): nothing to ask.
            return redirect(_target(uid, nxt))  # type: ignore[return-value]
        if method is None:
            return page(None, status=403)
        shown = "recovery" if method == "totp" and request.args.get("use") == "recovery" else method
        return page(shown)

    action = request.form.get("action") or "verify"
    if action == "cancel" and uid:
        audit.record(
            "mfa.challenge", outcome="cancelled", actor=account.id, client_id=client.client_id if client else None
        )
        return authorize_flow.deny(uid)
    submitted = form.method.data or ""
    allowed = {"totp": {"totp", "recovery"}, "sms": {"sms"}}.get(method or "", set())
    if submitted not in allowed:
        # A form from before the authenticator was added or removed: show the right one.
        return page(method, error=_("Please verify with the method shown."), status=400)
    if not form.validate_on_submit():
        return page(submitted, error=_format_message(submitted), status=400)

    if submitted == "sms" and action == "send":
        return _send_sms(account, page)

    code = mfa.normalise_code(form.code.data)
    if not mfa.well_formed(submitted, code):
        return page(submitted, error=_format_message(submitted), status=400)
    verdict = throttle.guard(THROTTLE_SCOPES[submitted], account.id)
    if not verdict.allowed:
        audit.record("mfa.challenge", outcome="throttled", actor=account.id, method=submitted)
        return throttle.too_many(verdict, back_url=_challenge_url(uid, nxt))
    checks = {"totp": mfa.verify_totp, "recovery": mfa.use_recovery_code, "sms": mfa.check_sms_code}
    if not checks[submitted](account.id, code):
        throttle.failure(verdict)
        audit.record("mfa.challenge", outcome="failure", actor=account.id, method=submitted)
        return page(submitted, error=wrong_code_message(), status=401)
    throttle.success(verdict)

    current.amr = assurance.amr_with_mfa([*current.amr, AMR[submitted]])
    current.second_factor_time = int(mfa.now())
    current.acr = assurance.current_level(current.amr, account.assurance).acr
    response = redirect(_target(uid, nxt))
    browser_session.rotate(current, response)  # a new handle once the session is stronger
    audit.record(
        "mfa.challenge",
        actor=account.id,
        client_id=client.client_id if client else None,
        method=submitted,
        acr=current.acr,
        amr=current.amr,
        sid=current.sid,
    )
    if submitted == "recovery":
        audit.record("mfa.recovery_code_used", actor=account.id, left=mfa.recovery_codes_left(account.id))
    return response  # type: ignore[return-value]


def _send_sms(account: Account, page: Any) -> Response:
    result = mfa.send_sms_code(account)
    if result.outcome == "wait":
        message = _("Please wait %(num)d seconds before requesting another code.", num=result.retry_after)
        return page("sms", error=message, status=429, headers={"Retry-After": str(result.retry_after)})  # type: ignore[no-any-return]
    if result.outcome == "limit":
        audit.record("mfa.sms_sent", outcome="blocked", actor=account.id)
        message = _("Too many codes were requested. Please try again later.")
        return page("sms", error=message, status=429, headers={"Retry-After": str(result.retry_after)})  # type: ignore[no-any-return]
    if result.outcome == "failed":
        return page("sms", error=_("The code could not be sent. Please try again later."), status=503)  # type: ignore[no-any-return]
    audit.record("mfa.sms_sent", actor=account.id, phone=mfa.mask_phone(account.phone))
    return page("sms")  # type: ignore[no-any-return]


# ---- setting up an authenticator ------------------------------------------------------------


def _needs_step_up_to_change(current: browser_session.BrowserSession, account: Account) -> bool:
    """Changing factors needs a recent second factor, when the account has one to prove.

    Otherwise someone holding only the password could add their own authenticator
    and then pass every step-up.
    """
    return mfa.method_for(account) is not None and not mfa.is_fresh(current.second_factor_time)


@bp.route("/mfa/enroll", methods=["GET", "POST"], endpoint="enroll")
def enroll() -> Response:
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    if mfa.confirmed_totp(account.id) is not None:
        return redirect(url_for("mfa.manage", msg="already"))  # type: ignore[return-value]
    if _needs_step_up_to_change(current, account):
        return redirect(url_for("mfa.challenge", next="enroll"))  # type: ignore[return-value]
    form = EnrolForm()

    def page(error: str | None = None, status: int = 200) -> Response:
        form.code.data = ""
        enrolment = mfa.start_enrolment(account)
        body = render_template("mfa_enroll.html", form=form, enrolment=enrolment, error=error)
        return _html(body, status)

    if request.method == "GET":
        return page()
    if not form.validate_on_submit():
        return page(_format_message("totp"), 400)
    code = mfa.normalise_code(form.code.data)
    if not mfa.well_formed("totp", code):
        return page(_format_message("totp"), 400)
    verdict = throttle.guard("totp", account.id)
    if not verdict.allowed:
        return throttle.too_many(verdict, back_url=url_for("mfa.enroll"))
    codes = mfa.confirm_enrolment(account, code)
    if codes is None:
        throttle.failure(verdict)
        audit.record("mfa.enrolled", outcome="failure", actor=account.id, kind="totp")
        return page(wrong_code_message(), 401)
    throttle.success(verdict)
    audit.record("mfa.enrolled", actor=account.id, kind="totp")
    return _html(render_template("mfa_recovery_codes.html", codes=codes, enrolled=True))


# ---- managing factors -----------------------------------------------------------------------


@bp.get("/mfa", endpoint="manage")
def manage() -> Response:
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    messages = {
        "removed": _("The authenticator app was removed."),
        "already": _("An authenticator app is already set up. Remove it first to set up another."),
    }
    totp = mfa.confirmed_totp(account.id)
    body = render_template(
        "mfa_manage.html",
        totp=totp,
        masked_phone=mfa.mask_phone(account.phone) if account.phone else None,
        recovery_left=mfa.recovery_codes_left(account.id) if totp else 0,
        message=messages.get(request.args.get("msg", "")),
    )
    return _html(body)


def _changed_factor_guard() -> tuple[Response | None, Account | None]:
    current, account = browser_session.signed_in()
    if current is None or account is None:
        return redirect(url_for("web.login")), None  # type: ignore[return-value]
    if not ActionForm().validate_on_submit():
        return error_page(400, "invalid_request", _("The form has expired. Please try again.")), None
    if _needs_step_up_to_change(current, account):
        return redirect(url_for("mfa.challenge", next="manage")), None  # type: ignore[return-value]
    return None, account


@bp.post("/mfa/remove", endpoint="remove")
def remove() -> Response:
    refused, account = _changed_factor_guard()
    if refused is not None or account is None:
        return refused  # type: ignore[return-value]
    if mfa.remove_totp(account.id):
        audit.record("mfa.removed", actor=account.id, kind="totp")
    return redirect(url_for("mfa.manage", msg="removed"))  # type: ignore[return-value]


@bp.post("/mfa/recovery-codes", endpoint="recovery_codes")
def recovery_codes() -> Response:
    refused, account = _changed_factor_guard()
    if refused is not None or account is None:
        return refused  # type: ignore[return-value]
    if mfa.confirmed_totp(account.id) is None:
        return redirect(url_for("mfa.manage"))  # type: ignore[return-value]
    codes = mfa.new_recovery_codes(account.id)
    audit.record("mfa.recovery_codes", actor=account.id)
    return _html(render_template("mfa_recovery_codes.html", codes=codes, enrolled=False))
