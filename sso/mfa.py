"""Second factors: TOTP authenticators, recovery codes and SMS one-time codes.

* TOTP (RFC 6238: 30 s steps, 6 digits, one step of clock drift either way).
  The secret is sealed under the gateway's factor key, bound to its account.
  A code is accepted only from a time step later than the last one accepted
  (RFC 6238 §5.2), moved forward by one conditional UPDATE, so neither a
  replay nor two parallel submissions of one code both succeed.
* Recovery codes: ten, shown once, stored as keyed hashes, each used once
  (one conditional UPDATE: of N parallel uses exactly one wins).  They belong
  to the authenticator and go when it is removed.
* SMS codes to the account's bound phone: six digits, a keyed hash in the
  short-lived store for 5 minutes, consumed on use, at most 5 tries per code,
  a new code at most once a minute and 10 an hour.

Brute force is the caller's business (``sso.throttle``, one scope per factor);
this module answers "is this code right" and keeps each code single-use.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyotp
import segno
from flask import current_app
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import delete, func, select, update

from .db import db
from .identifiers import mask_phone
from .models import Account, RecoveryCode, SecondFactor

ISSUER = "统一身份认证"  # the name authenticator apps show next to the account
DIGITS = 6
INTERVAL = 30  # seconds per TOTP time step
VALID_WINDOW = 1  # steps of drift accepted on either side
ENROLMENT_TTL = 10 * 60  # an unconfirmed authenticator is offered again for this long
FRESH_SECONDS = 10 * 60  # removing or adding a factor needs a second factor this recent

RECOVERY_COUNT = 10
RECOVERY_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read off paper
RECOVERY_LENGTH = 10  # 50 bits each

SMS_CODE = "mfa-sms"  # the code sent to an account's phone (keyed hash)
SMS_TRIES = "mfa-sms-tries"  # wrong entries of one code
SMS_RESEND = "mfa-sms-resend"  # one code per account per SMS_RESEND_INTERVAL
SMS_SENDS = "mfa-sms-sends"  # codes sent per account per SMS_SENDS_WINDOW
SMS_TTL = 5 * 60
SMS_MAX_TRIES = 5
SMS_RESEND_INTERVAL = 60
SMS_MAX_SENDS = 10
SMS_SENDS_WINDOW = 3600

SIX_DIGITS = re.compile(r"[0-9]{6}")
RECOVERY_FORMAT = re.compile(rf"[{RECOVERY_ALPHABET}]{{{RECOVERY_LENGTH}}}")

# Wall clock (epoch seconds), a module attribute so that tests can move time.
_clock = time.time


def now() -> float:
    return _clock()


def _gateway() -> Any:
    return current_app.extensions["sso"]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


# ---- presentation helpers -----------------------------------------------------------


def account_label(account: Account) -> str:
    """How the account is named in an authenticator app: masked, never in full."""
    if account.phone:
        return mask_phone(account.phone)
    if account.id_number_masked:
        return account.id_number_masked
    return account.username or account.display_name


def normalise_code(raw: str | None) -> str:
    """What people type: full-width digits (IME), spaces, dashes, lowercase letters."""
    text = unicodedata.normalize("NFKC", raw or "")
    return "".join(c for c in text if not c.isspace() and c != "-").upper()


def well_formed(method: str, code: str) -> bool:
    if method == "recovery":
        return bool(RECOVERY_FORMAT.fullmatch(code))
    return bool(SIX_DIGITS.fullmatch(code))


def grouped(text: str, size: int = 4) -> str:
    """A secret or code in groups, for typing by hand."""
    return " ".join(text[i : i + size] for i in range(0, len(text), size))


# ---- which factor an account can prove ------------------------------------------------


def confirmed_totp(account_id: str) -> SecondFactor | None:
    return db.session.execute(
        select(SecondFactor)
        .filter_by(account_id=account_id, kind="totp")
        .where(SecondFactor.confirmed_at.is_not(None))
        .order_by(SecondFactor.id)
        .limit(1)
    ).scalar_one_or_none()


def method_for(account: Account) -> str | None:
    """The second factor a challenge asks for: the authenticator if set up, else SMS, else none."""
    if confirmed_totp(account.id) is not None:
        return "totp"
    if account.phone:
        return "sms"
    return None


def is_fresh(second_factor_time: int | None) -> bool:
    return second_factor_time is not None and now() - second_factor_time <= FRESH_SECONDS


# ---- TOTP -------------------------------------------------------------------------------


def _associated(account_id: str) -> str:
    return "totp:" + account_id


def _seal(account_id: str, secret: str) -> bytes:
    return _gateway().factor_box.seal(secret.encode("ascii"), _associated(account_id))  # type: ignore[no-any-return]


def _secret(factor: SecondFactor) -> str:
    return _gateway().factor_box.open(factor.secret_sealed, _associated(factor.account_id)).decode("ascii")  # type: ignore[no-any-return]


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)


def _matching_step(secret: str, code: str, after: int) -> int | None:
    """The time step (within the window) whose code is ``code`` and is later than ``after``."""
    if not SIX_DIGITS.fullmatch(code):
        return None
    totp = _totp(secret)
    current = int(now() // INTERVAL)
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        # Compare every candidate (constant work), keep the latest match.
        if hmac.compare_digest(totp.at(step * INTERVAL), code) and step > after:
            found = step
    return found


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str

    @property
    def secret_groups(self) -> str:
        return grouped(self.secret)

    @property
    def qr_svg(self) -> Markup:
        """The provisioning URI as an inline SVG QR code (server-side: no script, no CDN)."""
        qr = segno.make(self.uri, error="m")
        svg = qr.svg_inline(scale=4, border=4, omitsize=True, light="#fff", dark="#000", title=_("QR code"))
        return Markup(svg)  # noqa: S704 - segno's own markup for a URI we built


def _pending(account_id: str) -> SecondFactor | None:
    return db.session.execute(
        select(SecondFactor)
        .filter_by(account_id=account_id, kind="totp", confirmed_at=None)
        .order_by(SecondFactor.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _enrolment(account: Account, secret: str) -> Enrolment:
    uri = _totp(secret).provisioning_uri(name=account_label(account), issuer_name=ISSUER)
    return Enrolment(secret, uri)


def start_enrolment(account: Account) -> Enrolment:
    """The authenticator being set up: the one offered in the last minutes, or a new one.

    Reusing it keeps the QR code the same across a reload or a language switch,
    so a phone that already scanned it still produces valid codes.
    """
    pending = _pending(account.id)
    if pending is not None and _utc(now() - ENROLMENT_TTL) < pending.created_at:
        return _enrolment(account, _secret(pending))
    db.session.execute(delete(SecondFactor).filter_by(account_id=account.id, confirmed_at=None))
    secret = pyotp.random_base32()  # 160 bits, as RFC 4226 §4 recommends
    db.session.add(
        SecondFactor(
            account_id=account.id, kind="totp", secret_sealed=_seal(account.id, secret), created_at=_utc(now())
        )
    )
    db.session.commit()
    return _enrolment(account, secret)


def confirm_enrolment(account: Account, code: str) -> list[str] | None:
    """The first code from the app confirms the authenticator; returns new recovery codes.

    None when the code is wrong, the offer expired, or an authenticator is already set up.
    """
    pending = _pending(account.id)
    if pending is None or pending.created_at <= _utc(now() - ENROLMENT_TTL) or confirmed_totp(account.id):
        return None
    step = _matching_step(_secret(pending), code, pending.last_step)
    if step is None:
        return None
    done = db.session.execute(
        update(SecondFactor)
        .where(SecondFactor.id == pending.id, SecondFactor.confirmed_at.is_(None))
        .values(confirmed_at=_utc(now()), last_step=step)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return None
    db.session.execute(delete(SecondFactor).filter_by(account_id=account.id, confirmed_at=None))
    return new_recovery_codes(account.id)  # commits


def verify_totp(account_id: str, code: str) -> bool:
    """A right code from a time step after the last one accepted; that step becomes the last."""
    factor = confirmed_totp(account_id)
    if factor is None:
        return False
    step = _matching_step(_secret(factor), code, factor.last_step)
    if step is None:
        return False
    moved = db.session.execute(
        update(SecondFactor).where(SecondFactor.id == factor.id, SecondFactor.last_step < step).values(last_step=step)
    )
    db.session.commit()
    return moved.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def remove_totp(account_id: str) -> bool:
    """Remove the authenticator (and the recovery codes that stand in for it)."""
    removed = db.session.execute(delete(SecondFactor).filter_by(account_id=account_id))
    db.session.execute(delete(RecoveryCode).filter_by(account_id=account_id))
    db.session.commit()
    return bool(removed.rowcount)  # type: ignore[attr-defined]


# ---- recovery codes ---------------------------------------------------------------------


def _recovery_hash(account_id: str, code: str) -> str:
    # Keyed, like client secrets: the codes are random, the key keeps a dump useless.
    return _gateway().secret_hasher.hash(f"recovery\x00{account_id}\x00{code}")  # type: ignore[no-any-return]


def new_recovery_codes(account_id: str) -> list[str]:
    """Ten fresh codes (replacing any earlier ones); shown once, stored hashed."""
    codes = ["".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH)) for _ in range(RECOVERY_COUNT)]
    db.session.execute(delete(RecoveryCode).filter_by(account_id=account_id))
    db.session.add_all(RecoveryCode(account_id=account_id, code_hash=_recovery_hash(account_id, c)) for c in codes)
    db.session.commit()
    return [grouped(c, 5) for c in codes]


def use_recovery_code(account_id: str, code: str) -> bool:
    """Spend a recovery code: True for exactly one caller, however many try it at once."""
    if not RECOVERY_FORMAT.fullmatch(code):
        return False
    spent = db.session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.account_id == account_id,
            RecoveryCode.code_hash == _recovery_hash(account_id, code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=_utc(now()))
    )
    db.session.commit()
    return spent.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def recovery_codes_left(account_id: str) -> int:
    return int(
        db.session.execute(
            select(func.count()).select_from(RecoveryCode).filter_by(account_id=account_id, used_at=None)
        ).scalar_one()
    )


# ---- SMS codes ----------------------------------------------------------------------------


def _sms_hash(account_id: str, nonce: str, code: str) -> str:
    # Keyed: a six-digit code under a plain hash is found by trying all of them.
    return _gateway().secret_hasher.hash(f"mfa-sms\x00{account_id}\x00{nonce}\x00{code}")  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SmsResult:
    outcome: str  # sent | wait | limit | failed
    retry_after: int = 0


def sms_code_pending(account_id: str) -> bool:
    return _gateway().store.get(SMS_CODE, account_id) is not None


def send_sms_code(account: Account) -> SmsResult:
    """Send a new code to the account's bound phone (replacing any earlier code)."""
    store = _gateway().store
    if not account.phone:
        return SmsResult("failed")
    t = now()
    if not store.add(SMS_RESEND, account.id, {"at": t}, SMS_RESEND_INTERVAL):
        previous = store.get(SMS_RESEND, account.id) or {"at": t}
        return SmsResult("wait", max(1, math.ceil(previous["at"] + SMS_RESEND_INTERVAL - t)))
    if store.incr(SMS_SENDS, account.id, SMS_SENDS_WINDOW) > SMS_MAX_SENDS:
        return SmsResult("limit", SMS_SENDS_WINDOW)
    code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
    nonce = secrets.token_urlsafe(12)
    store.put(SMS_CODE, account.id, {"hash": _sms_hash(account.id, nonce, code), "nonce": nonce}, SMS_TTL)
    text = _(
        "[Unified Identity Authentication] Your verification code is %(code)s, valid for %(num)d minutes. "
        "Do not tell it to anyone.",
        code=code,
        num=SMS_TTL // 60,
    )
    try:
        _gateway().sms.send(account.phone, text)
    except Exception:
        current_app.logger.exception("SMS sending failed")
        store.delete(SMS_CODE, account.id)
        store.delete(SMS_RESEND, account.id)
        return SmsResult("failed")
    return SmsResult("sent")


def check_sms_code(account_id: str, code: str) -> bool:
    """The code last sent to the account: right, unexpired, within its tries, not used yet."""
    store = _gateway().store
    entry = store.get(SMS_CODE, account_id)
    if entry is None or not SIX_DIGITS.fullmatch(code):
        return False
    if store.incr(SMS_TRIES, entry["nonce"], SMS_TTL) > SMS_MAX_TRIES:
        store.delete(SMS_CODE, account_id)
        return False
    if not hmac.compare_digest(_sms_hash(account_id, entry["nonce"], code), entry["hash"]):
        return False
    used = store.consume(SMS_CODE, account_id)  # single use: of two parallel submissions one wins
    return used is not None and used["nonce"] == entry["nonce"]
