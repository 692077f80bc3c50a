"""Citizen registration with real-name verification against the population registry.

Three steps, each a POST that renders the next page:

1. name + resident identity number, checked by ``verify_real_name``;
2. a mobile phone number, proven by a 6-digit SMS code;
3. the code, a password and its confirmation: the account is created and the
   browser signed in (or sent back to the portal's authorization request).

The state between steps lives in the short-lived store under a random id that
the pages carry in a hidden field (never in Flask's cookie session): it is the
only place, besides the sealed column, that holds the full identity number, and
it expires after 15 minutes.  Pages show the number masked, audit events too.
Verification attempts and code checks are throttled per IP and per identity
number (scope "register"), code sends per IP ("register-sms").
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import time
import unicodedata
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from .. import assurance, audit, throttle
from .. import session as browser_session
from ..accounts import PHONE, VerificationFailed, find_by_id_number, register_citizen, verify_real_name
from ..crypto import new_token
from ..db import db
from ..errors import error_page
from ..identifiers import mask_phone, mask_resident_id
from ..models import Account, Client
from ..oidc import authorize as authorize_flow

bp = Blueprint("register", __name__, template_folder="templates")

STATE = "register"  # the registration in progress, under its random id
CODE = "register-code"  # the SMS code sent for a registration (hashed)
CODE_TRIES = "register-code-tries"  # wrong entries of one code
RESEND = "register-resend"  # one code per phone per RESEND_INTERVAL
SENDS = "register-sends"  # codes sent for one registration

STATE_TTL = 15 * 60
CODE_TTL = 5 * 60
CODE_MAX_TRIES = 5
RESEND_INTERVAL = 60
MAX_SENDS = 5
PASSWORD_MIN, PASSWORD_MAX = 8, 128

# The messages for accounts.VERIFICATION_ERRORS, translatable; same English text.
VERIFICATION_MESSAGES = {
    "format": _l("The identity number must have 18 characters: 17 digits and a final digit or X."),
    "region": _l("The first six digits are not a valid region code."),
    "birth_date": _l("Digits 7 to 14 are not a valid date of birth."),
    "check_char": _l("The last character does not match: please check the number for typing errors."),
    "not_matched": _l("The name and identity number do not match the population registry."),
    "deceased": _l("This identity cannot be registered: the registry records the person as deceased."),
    "cancelled": _l("This identity cannot be registered: its household registration is cancelled."),
    "already_registered": _l("An account already exists for this identity. Sign in or reset the password."),
    "registry_unavailable": _l("The population registry cannot be reached now. Please try again later."),
}


# ---- forms -------------------------------------------------------------------------


class IdentityForm(FlaskForm):
    interaction = HiddenField(validators=[Length(max=64)])
    name = StringField(validators=[DataRequired(), Length(max=50)])
    id_number = StringField(validators=[DataRequired(), Length(max=32)])


class PhoneForm(FlaskForm):
    interaction = HiddenField(validators=[Length(max=64)])
    state = HiddenField(validators=[DataRequired(), Length(max=64)])
    phone = StringField(validators=[DataRequired(), Length(max=20)])


class CompleteForm(FlaskForm):
    interaction = HiddenField(validators=[Length(max=64)])
    state = HiddenField(validators=[DataRequired(), Length(max=64)])
    code = StringField(validators=[DataRequired(), Length(max=16)])
    # No length limit here: password_problem() says what the limit is (the
    # request size limit bounds what reaches us).
    password = PasswordField(validators=[DataRequired()])
    confirm = PasswordField(validators=[DataRequired()])


# ---- helpers -----------------------------------------------------------------------


def _gateway() -> Any:
    return current_app.extensions["sso"]


def _store() -> Any:
    return _gateway().store


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    if headers:
        response.headers.update(headers)
    return response


def normalise_id_number(value: str) -> str:
    # People type spaces, full-width digits (IME) and a lowercase x; validation does the rest.
    return "".join(unicodedata.normalize("NFKC", value or "").split()).upper()


def normalise_phone(value: str) -> str:
    text = re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", value or ""))
    if text.startswith("+86"):
        text = text[3:]
    return text


def password_problem(password: str, *, id_number: str, phone: str) -> str | None:
    """Why the password is refused, or None."""
    if len(password) < PASSWORD_MIN:
        return _("The password must have at least %(num)d characters.", num=PASSWORD_MIN)
    if len(password) > PASSWORD_MAX:
        return _("The password must have at most %(num)d characters.", num=PASSWORD_MAX)
    kinds = (
        any(c.isalpha() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    if sum(kinds) < 2:
        return _("The password must mix at least two of: letters, digits, symbols.")
    folded = password.casefold()
    if id_number.casefold() in folded or phone in folded:
        return _("The password must not contain your identity number or phone number.")
    return None


def _interaction(uid: str | None) -> tuple[dict[str, Any] | None, Client | None]:
    interaction = authorize_flow.load_interaction(uid) if uid else None
    if not interaction:
        return None, None
    client_id = next((v for k, v in interaction["args"] if k == "client_id"), None)
    client = None
    if client_id is not None:
        client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
    return interaction, client


def _load_state(sid: str | None) -> dict[str, Any] | None:
    if not sid or len(sid) > 64:
        return None
    return _store().get(STATE, sid)  # type: ignore[no-any-return]


def _save_state(sid: str, state: dict[str, Any]) -> None:
    # The 15 minutes run from step 1: later steps do not extend them.
    remaining = int(state["created"] + STATE_TTL - time.time())
    if remaining >= 1:
        _store().put(STATE, sid, state, remaining)


def _code_hash(sid: str, code: str) -> str:
    # Keyed: a six-digit code under a plain hash is found by trying all of them.
    return _gateway().secret_hasher.hash(f"register-code\x00{sid}\x00{code}")  # type: ignore[no-any-return]


def _back_to_login(uid: str | None) -> str:
    return url_for("web.login", interaction=uid) if uid else url_for("web.login")


def _identity_page(
    form: IdentityForm, *, error: str | None = None, entered: str | None = None, status: int = 200
) -> Response:
    _interaction_data, client = _interaction(form.interaction.data)
    # Never echo the number: the field stays empty, the masked form is shown.
    form.id_number.data = ""
    return _html(
        render_template("register.html", form=form, client=client, error=error, entered=entered),
        status,
    )


def _phone_page(
    state: dict[str, Any],
    sid: str,
    *,
    step: str,
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    phone_form = PhoneForm()
    phone_form.state.data = sid
    phone_form.interaction.data = state.get("interaction") or ""
    phone_form.phone.data = state.get("phone") or phone_form.phone.data or ""
    complete_form = CompleteForm()
    complete_form.state.data = sid
    complete_form.interaction.data = state.get("interaction") or ""
    complete_form.code.data = ""
    body = render_template(
        "register_phone.html",
        step=step,
        phone_form=phone_form,
        complete_form=complete_form,
        name=state["name"],
        masked_id=mask_resident_id(state["id_number"]),
        phone=state.get("phone") or "",
        masked_phone=mask_phone(state.get("phone") or ""),
        code_minutes=CODE_TTL // 60,
        error=error,
    )
    return _html(body, status, headers)


def _restart() -> Response:
    """A GET on a later step (language switch, reload): back to step 1, keeping lang and interaction."""
    args = {k: v for k, v in request.args.items() if k in ("lang", "interaction") and len(v) <= 64}
    return redirect(url_for("register.start", **args))  # type: ignore[return-value]


def _expired(uid: str | None = None) -> Response:
    form = IdentityForm(formdata=None)
    form.interaction.data = uid or ""
    return _identity_page(form, error=_("This registration has expired. Please start again."), status=400)


# ---- step 1: name and identity number --------------------------------------------


@bp.route("/register", methods=["GET", "POST"], endpoint="start")
def start() -> Response:
    form = IdentityForm()
    uid = request.values.get("interaction") or None
    if uid and authorize_flow.load_interaction(uid) is None:
        return error_page(400, "invalid_request", _("This sign-in request has expired. Start again from the portal."))
    if request.method == "GET":
        form.interaction.data = uid or ""
        return _identity_page(form)
    if not form.validate_on_submit():
        message = _("Please enter your name and your 18-character identity number.")
        return _identity_page(form, error=message, status=400)
    name = form.name.data.strip()
    id_number = normalise_id_number(form.id_number.data)
    masked = mask_resident_id(id_number)
    verdict = throttle.guard("register", id_number)
    if not verdict.allowed:
        audit.record("register.verify", outcome="throttled", id_number=masked)
        return throttle.too_many(verdict, back_url=url_for("register.start", interaction=uid) if uid else None)
    try:
        person = verify_real_name(name, id_number)
        if find_by_id_number(person.record.id_number) is not None:
            raise VerificationFailed("already_registered")
    except VerificationFailed as exc:
        if exc.code != "registry_unavailable":  # our outage is not the person's failure
            throttle.failure(verdict)
        audit.record("register.verify", outcome="failure", reason=exc.code, id_number=masked)
        status = 503 if exc.code == "registry_unavailable" else 400
        # The masked form of what was typed, when it looks like a number at all.
        entered = masked if re.fullmatch(r"[0-9X]{18}", id_number) else None
        return _identity_page(form, error=str(VERIFICATION_MESSAGES[exc.code]), entered=entered, status=status)
    throttle.success(verdict)
    sid = new_token(32)
    state = {
        "name": name,
        "id_number": person.record.id_number,
        "interaction": uid or "",
        "created": int(time.time()),
        "phone": None,
    }
    _store().put(STATE, sid, state, STATE_TTL)
    audit.record("register.verify", id_number=masked)
    return _phone_page(state, sid, step="phone")


# ---- step 2: phone number and SMS code ------------------------------------------------


@bp.route("/register/phone", methods=["GET", "POST"], endpoint="phone")
def phone() -> Response:
    if request.method == "GET":  # e.g. the language switch: the state is not in the URL
        return _restart()
    form = PhoneForm()
    sid = form.state.data or ""
    state = _load_state(sid)
    if state is None:
        return _expired()
    if not form.validate_on_submit():
        return _phone_page(state, sid, step="phone", error=_("Please enter your mobile phone number."), status=400)
    number = normalise_phone(form.phone.data)
    if not PHONE.fullmatch(number) or not number.isascii():
        message = _("Enter a mainland China mobile number: 11 digits starting with 1.")
        return _phone_page(state, sid, step="phone", error=message, status=400)
    masked_id = mask_resident_id(state["id_number"])
    # Per IP: codes sent, and "is this number taken?" answers (an enumeration oracle otherwise).
    verdict = throttle.guard("register-sms", None)
    if not verdict.allowed:
        return throttle.too_many(verdict)
    taken = db.session.execute(db.select(Account.id).filter_by(phone=number)).first()
    if taken is not None:
        throttle.failure(verdict)
        audit.record("register.phone", outcome="failure", reason="phone_taken", id_number=masked_id)
        return _phone_page(
            state, sid, step="phone", error=_("This phone number is already bound to another account."), status=400
        )
    t = throttle.now()
    if not _store().add(RESEND, number, {"at": t}, RESEND_INTERVAL):
        previous = _store().get(RESEND, number) or {"at": t}
        wait = max(1, math.ceil(previous["at"] + RESEND_INTERVAL - t))
        state_for_page = {**state, "phone": state.get("phone") or number}
        return _phone_page(
            state_for_page,
            sid,
            step="code" if state.get("phone") else "phone",
            error=_("Please wait %(num)d seconds before requesting another code.", num=wait),
            status=429,
            headers={"Retry-After": str(wait)},
        )
    if _store().incr(SENDS, sid, STATE_TTL) > MAX_SENDS:
        _store().delete(STATE, sid)
        audit.record("register.phone", outcome="failure", reason="too_many_codes", id_number=masked_id)
        form_1 = IdentityForm(formdata=None)
        form_1.interaction.data = state.get("interaction") or ""
        return _identity_page(form_1, error=_("Too many codes were requested. Please start again."), status=429)
    code = f"{secrets.randbelow(10**6):06d}"
    _store().put(CODE, sid, {"hash": _code_hash(sid, code), "phone": number, "nonce": new_token(12)}, CODE_TTL)
    state["phone"] = number
    _save_state(sid, state)
    throttle.failure(verdict)  # every code sent spends the IP's budget
    text = _(
        "[Unified Identity Authentication] Your registration code is %(code)s, valid for %(num)d minutes. "
        "Do not tell it to anyone.",
        code=code,
        num=CODE_TTL // 60,
    )
    try:
        _gateway().sms.send(number, text)
    except Exception:
        current_app.logger.exception("SMS sending failed")
        _store().delete(CODE, sid)
        _store().delete(RESEND, number)
        return _phone_page(
            state, sid, step="phone", error=_("The code could not be sent. Please try again later."), status=503
        )
    audit.record("register.sms_sent", phone=mask_phone(number), id_number=masked_id)
    return _phone_page(state, sid, step="code")


# ---- step 3: code, password, account ------------------------------------------------------


@bp.route("/register/complete", methods=["GET", "POST"], endpoint="complete")
def complete() -> Response:
    if request.method == "GET":
        return _restart()
    form = CompleteForm()
    sid = form.state.data or ""
    state = _load_state(sid)
    if state is None or not state.get("phone"):
        return _expired(state.get("interaction") if state else None)
    if not form.validate_on_submit():
        return _phone_page(state, sid, step="code", error=_("Please fill in every field."), status=400)
    problem = password_problem(form.password.data, id_number=state["id_number"], phone=state["phone"])
    if problem is None and form.password.data != form.confirm.data:
        problem = _("The two passwords do not match.")
    if problem is not None:  # checked first: a weak password does not use up a code attempt
        return _phone_page(state, sid, step="code", error=problem, status=400)

    masked_id = mask_resident_id(state["id_number"])
    verdict = throttle.guard("register", state["id_number"])
    if not verdict.allowed:
        audit.record("register.code", outcome="throttled", id_number=masked_id)
        return throttle.too_many(verdict)
    entry = _store().get(CODE, sid)
    if entry is None:
        return _phone_page(
            state, sid, step="code", error=_("The code has expired or was already used. Request a new one."), status=400
        )
    if _store().incr(CODE_TRIES, entry["nonce"], CODE_TTL) > CODE_MAX_TRIES:
        _store().delete(CODE, sid)
        throttle.failure(verdict)
        audit.record("register.code", outcome="failure", reason="too_many_tries", id_number=masked_id)
        return _phone_page(state, sid, step="code", error=_("Too many wrong codes. Request a new one."), status=400)
    code = "".join(unicodedata.normalize("NFKC", form.code.data or "").split())  # full-width digits from an IME
    if not hmac.compare_digest(_code_hash(sid, code), entry["hash"]):
        throttle.failure(verdict)
        audit.record("register.code", outcome="failure", reason="wrong_code", id_number=masked_id)
        return _phone_page(state, sid, step="code", error=_("The code is incorrect."), status=400)
    used = _store().consume(CODE, sid)  # single use: of two parallel submissions one wins
    if used is None or used["nonce"] != entry["nonce"]:
        return _phone_page(
            state, sid, step="code", error=_("The code has expired or was already used. Request a new one."), status=400
        )
    throttle.success(verdict)

    # The registry is asked again: the status may have changed since step 1.
    try:
        person = verify_real_name(state["name"], state["id_number"])
        account = register_citizen(person, form.password.data, used["phone"])
    except VerificationFailed as exc:
        db.session.rollback()
        audit.record("register.complete", outcome="failure", reason=exc.code, id_number=masked_id)
        _store().delete(STATE, sid)
        retry = IdentityForm(formdata=None)
        retry.interaction.data = state.get("interaction") or ""
        status = 503 if exc.code == "registry_unavailable" else 400
        return _identity_page(retry, error=str(VERIFICATION_MESSAGES[exc.code]), entered=masked_id, status=status)
    except IntegrityError:
        # Another registration took the number or the phone meanwhile.
        db.session.rollback()
        audit.record("register.complete", outcome="failure", reason="conflict", id_number=masked_id)
        _store().delete(STATE, sid)
        retry = IdentityForm(formdata=None)
        retry.interaction.data = state.get("interaction") or ""
        return _identity_page(
            retry, error=_("This identity or phone number was registered meanwhile. Sign in instead."), status=409
        )
    _store().delete(STATE, sid)
    _store().delete(SENDS, sid)

    amr = ["pwd"]
    new_session = browser_session.BrowserSession(
        account_id=account.id,
        connector_id=account.connector_id,
        auth_time=int(time.time()),
        amr=amr,
        acr=assurance.current_level(amr, account.assurance).acr,
    )
    uid = state.get("interaction") or None
    if uid and authorize_flow.load_interaction(uid) is not None:
        target = url_for("oidc.authorize_resume", interaction=uid)
    else:
        target = url_for("register.done")
    response = redirect(target)
    browser_session.start(new_session, response)
    audit.record(
        "register.complete",
        actor=account.id,
        id_number=masked_id,
        phone=mask_phone(used["phone"]),
        sid=new_session.sid,
    )
    return response  # type: ignore[return-value]


@bp.get("/register/done", endpoint="done")
def done() -> Response:
    current = browser_session.current()
    account = db.session.get(Account, current.account_id) if current else None
    if account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    return _html(
        render_template(
            "register_done.html",
            account=account,
            masked_phone=mask_phone(account.phone or ""),
        )
    )
