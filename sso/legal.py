"""Legal-person login: whom a person may act for, the choice, agent authorisations.

A person acts for an enterprise in one of two roles:

* ``legal_representative``: the enterprise registry names them, matched by the
  full resident identity number (keyed hash against the account's) *and* the
  name; only a registry-verified account can match;
* ``agent``: the legal representative granted an :class:`AgentAuthorisation`
  (roles from :data:`ROLES`, a validity period), and the agent confirmed it.

Only an *active* enterprise can be acted for.  Everything is re-checked against
the registry when the person chooses (:func:`choose`) and on every later use
(:func:`still_valid`: refresh, introspection, userinfo, the next authorization),
so a revoked authorisation, a passed ``valid_until``, a new legal representative
or a revoked business licence stop at once.

Plain functions, no pages: errors are :class:`LegalPersonError` with a
machine-readable ``code`` (pages translate :data:`ERRORS`).  Audit details hold
masked credit codes and never an identity number.
"""

from __future__ import annotations

import hmac
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from flask import current_app

from . import audit
from .connectors.base import EnterpriseLookup, EnterpriseRecord, RegistryUnavailable
from .db import db
from .identifiers import InvalidIdentifier, mask_credit_code, validate_credit_code, validate_resident_id
from .models import Account, AgentAuthorisation, Grant, utcnow

LEGAL_REPRESENTATIVE = "legal_representative"
AGENT = "agent"

# What an agent may be authorised for (documented in docs/claims.md).  Portals
# decide what each role allows; "general" is every matter the portal offers.
ROLES: tuple[str, ...] = ("tax_filing", "social_security", "licence_application", "general")

# An authorisation lasts at most three years (then the representative renews it).
MAX_VALIDITY = timedelta(days=3 * 365 + 1)
# Dates on the pages are Beijing dates; rows and claims are UTC.
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")

# Authorisation states (models.AgentAuthorisation).
PENDING, ACTIVE, REVOKED, DECLINED = "pending", "active", "revoked", "declined"

ERRORS = {
    # the credit code (typed, or from a tampered request)
    "code_format": "A unified social credit code has 18 characters: digits and capital letters except I, O, Z, S, V.",
    "code_region": "Characters 3 to 8 of the credit code are not a valid region code.",
    "code_check_char": "The last character of the credit code does not match: please check it for typing errors.",
    # the enterprise
    "enterprise_unknown": "The enterprise registry has no enterprise with this credit code.",
    "enterprise_revoked": "This enterprise's business licence is revoked: nobody can act for it.",
    "enterprise_cancelled": "This enterprise is deregistered: nobody can act for it.",
    "enterprise_inactive": "This enterprise is not active in the registry: nobody can act for it.",
    "not_verified": "Only an account verified against the population registry can act for an enterprise.",
    "not_representative": "The enterprise registry does not name you as this enterprise's legal representative.",
    # the authorisation
    "authorisation_unknown": "There is no such authorisation for you.",
    "authorisation_pending": "This authorisation is waiting for the agent's confirmation.",
    "authorisation_revoked": "This authorisation has been revoked.",
    "authorisation_declined": "This authorisation was declined.",
    "authorisation_expired": "This authorisation has expired.",
    "authorisation_not_yet_valid": "This authorisation is not valid yet.",
    "not_pending": "Only an authorisation waiting for confirmation can be confirmed or declined.",
    "not_revocable": "This authorisation has already ended.",
    "grantor_replaced": "The person who granted this authorisation is no longer the legal representative.",
    # a new authorisation
    "roles_required": "Choose at least one matter the agent may handle.",
    "role_unknown": "One of the chosen matters is not offered.",
    "dates_invalid": "Enter both dates as year-month-day.",
    "dates_order": "The end date must be after the start date.",
    "from_past": "The authorisation cannot start before today.",
    "until_past": "The end date must be in the future.",
    "too_long": "An authorisation can last at most three years.",
    "agent_id_format": "The agent's identity number must have 18 characters: 17 digits and a final digit or X.",
    "agent_id_region": "The first six digits of the agent's identity number are not a valid region code.",
    "agent_id_birth_date": "Digits 7 to 14 of the agent's identity number are not a valid date of birth.",
    "agent_id_check_char": "The last character of the agent's identity number does not match: please check it.",
    # one message for "no account" and "name does not match": no enumeration of who has an account
    "agent_not_found": (
        "No verified account matches this name and identity number. "
        "The agent must first register with exactly this name and number."
    ),
    "agent_not_eligible": "This person cannot be authorised: the population registry does not record them as living.",
    "agent_is_self": "You cannot authorise yourself: you already act as the legal representative.",
    "already_authorised": "This person already has a pending or active authorisation for this enterprise.",
    "registry_unavailable": "The enterprise registry cannot be reached now. Please try again later.",
}


class LegalPersonError(Exception):
    """A refused legal-person action; ``code`` is a key of :data:`ERRORS`."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.message = ERRORS[code]
        super().__init__(self.message)


@dataclass(frozen=True)
class Choice:
    """One enterprise a person may (or, when ``available`` is false, may no longer) act for."""

    role: str  # legal_representative | agent
    credit_code: str
    enterprise_name: str
    enterprise_status: str  # active | revoked | cancelled | unknown
    available: bool
    reason: str | None = None  # an ERRORS key when not available
    authorisation_id: str | None = None
    roles: tuple[str, ...] = ()
    valid_from: datetime | None = None  # naive UTC
    valid_until: datetime | None = None

    @property
    def credit_code_masked(self) -> str:
        return mask_credit_code(self.credit_code)


def now() -> datetime:
    """The clock (naive UTC, like the rows); tests monkeypatch ``sso.legal.now``."""
    return utcnow()


def today() -> date:
    """The calendar day in China: authorisations start and end on whole China days."""
    return now().replace(tzinfo=UTC).astimezone(CHINA).date()


# ---- helpers -------------------------------------------------------------------------


def _gateway() -> Any:
    return current_app.extensions["sso"]


def _registry() -> EnterpriseLookup:
    registry = _gateway().connectors.enterprise_registry
    if registry is None:
        raise LegalPersonError("registry_unavailable")
    return registry  # type: ignore[no-any-return]


def _find(credit_code: str) -> EnterpriseRecord | None:
    try:
        return _registry().find_enterprise(credit_code)
    except RegistryUnavailable:
        raise LegalPersonError("registry_unavailable") from None


def _parse_code(credit_code: object) -> str:
    text = unicodedata.normalize("NFKC", credit_code) if isinstance(credit_code, str) else credit_code
    try:
        return validate_credit_code(text).number  # type: ignore[arg-type]
    except InvalidIdentifier as exc:
        raise LegalPersonError(f"code_{exc.code}") from None


def name_of(account: Account) -> str:
    """The registry-verified name (what the registry's legal_rep_name is compared with)."""
    return str((account.verified_attributes or {}).get("name") or account.display_name)


def _verified(account: Account | None) -> bool:
    return bool(
        account is not None
        and account.status == "active"
        and account.assurance == "registry-verified"
        and account.id_number_hmac
    )


def _is_representative(account: Account, record: EnterpriseRecord) -> bool:
    """Number (keyed hash, constant time) and name both match the registry entry."""
    if not _verified(account):
        return False
    digest = _gateway().vault.lookup_hash(record.legal_rep_id_number)
    return hmac.compare_digest(digest, account.id_number_hmac) and record.legal_rep_name == name_of(account)


def _status_reason(record: EnterpriseRecord | None) -> str | None:
    if record is None:
        return "enterprise_unknown"
    if record.is_active:
        return None
    return {"revoked": "enterprise_revoked", "cancelled": "enterprise_cancelled"}.get(
        record.status, "enterprise_inactive"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


_STATUS_REASONS = {
    PENDING: "authorisation_pending",
    REVOKED: "authorisation_revoked",
    DECLINED: "authorisation_declined",
}


def _authorisation_reason(row: AgentAuthorisation, now: datetime) -> str | None:
    """Why an authorisation cannot be used now, or None."""
    if row.status != ACTIVE:
        return _STATUS_REASONS.get(row.status, "authorisation_revoked")
    if now >= row.valid_until:
        return "authorisation_expired"
    if now < row.valid_from:
        return "authorisation_not_yet_valid"
    return None


def _get_authorisation(authorisation_id: object) -> AgentAuthorisation | None:
    if not isinstance(authorisation_id, str) or not authorisation_id or len(authorisation_id) > 32:
        return None
    return db.session.get(AgentAuthorisation, authorisation_id)  # type: ignore[no-any-return]


def _audit(event: str, actor: Account, credit_code: str, outcome: str = "success", **detail: Any) -> None:
    audit.record(f"legal.{event}", outcome=outcome, actor=actor.id, credit_code=mask_credit_code(credit_code), **detail)


# ---- what a person may act for ---------------------------------------------------------


def enterprises_for(account: Account) -> list[Choice]:
    """Enterprises the registry names this person legal representative of, plus live agent roles.

    Unavailable entries (revoked or cancelled enterprise, authorisation not valid
    yet) are listed with their reason; ended authorisations are left out.
    Raises ``LegalPersonError("registry_unavailable")`` when the registry is down.
    """
    if not _verified(account):
        return []
    from .accounts import id_number_of

    id_number = id_number_of(account)
    choices: list[Choice] = []
    if id_number:
        try:
            records = _registry().represented_by(id_number)
        except RegistryUnavailable:
            raise LegalPersonError("registry_unavailable") from None
        name = name_of(account)
        for record in records:
            if record.legal_rep_name != name:
                continue
            reason = _status_reason(record)
            choices.append(
                Choice(LEGAL_REPRESENTATIVE, record.credit_code, record.name, record.status, reason is None, reason)
            )
    moment = now()
    rows = db.session.execute(
        db.select(AgentAuthorisation)
        .filter(
            AgentAuthorisation.agent_account_id == account.id,
            AgentAuthorisation.status == ACTIVE,
            AgentAuthorisation.valid_until > moment,
        )
        .order_by(AgentAuthorisation.valid_from)
    ).scalars()
    for row in rows:
        record = _find(row.credit_code)
        reason = _status_reason(record) or _authorisation_reason(row, moment)
        choices.append(
            Choice(
                AGENT,
                row.credit_code,
                record.name if record else row.enterprise_name,
                record.status if record else "unknown",
                reason is None,
                reason,
                authorisation_id=row.id,
                roles=tuple(row.roles or ()),
                valid_from=row.valid_from,
                valid_until=row.valid_until,
            )
        )
    choices.sort(key=lambda c: (not c.available, c.role != LEGAL_REPRESENTATIVE, c.enterprise_name))
    return choices


def choose(account: Account, credit_code: str, authorisation_id: str | None = None) -> dict[str, Any]:
    """The acting context for this person and enterprise, checked against the registry now.

    Without ``authorisation_id`` the person must be the registered legal
    representative; with it, the active, currently valid authorisation must be
    theirs and for this enterprise.  Raises :class:`LegalPersonError`.
    """
    code = _parse_code(credit_code)
    if account.status != "active":
        raise LegalPersonError("not_verified")
    moment = now()
    row = None
    if authorisation_id is not None:
        row = _get_authorisation(authorisation_id)
        if row is None or row.agent_account_id != account.id or row.credit_code != code:
            raise LegalPersonError("authorisation_unknown")
        reason = _authorisation_reason(row, moment)
        if reason:
            raise LegalPersonError(reason)
    elif not _verified(account):
        raise LegalPersonError("not_verified")
    record = _find(code)
    if record is None:
        raise LegalPersonError("enterprise_unknown")
    if row is None and not _is_representative(account, record):
        raise LegalPersonError("not_representative")
    reason = _status_reason(record)
    if reason:
        raise LegalPersonError(reason)
    return {
        "credit_code": record.credit_code,
        "enterprise_name": record.name,
        "role": AGENT if row else LEGAL_REPRESENTATIVE,
        "authorisation_id": row.id if row else None,
        "roles": list(row.roles or []) if row else [],
        "valid_from": _iso(row.valid_from) if row else None,
        "valid_until": _iso(row.valid_until) if row else None,
        # Not in any claim: who chose, so that still_valid() can re-check the person.
        "account_id": account.id,
        "chosen_at": int(moment.replace(tzinfo=UTC).timestamp()),
    }


def still_valid(acting: dict[str, Any] | None) -> bool:
    """Whether an acting context (of a session or a grant) may still be used, now.

    The account is still active; for an agent, the authorisation is active, theirs,
    and ``valid_from <= now < valid_until``; the enterprise is still active in the
    registry; a legal representative is still the registered one.  Database checks
    come first, then exactly one registry lookup.  Raises
    :class:`~sso.connectors.base.RegistryUnavailable` when the registry is down,
    so a caller can fail closed without treating an outage as a revocation.
    """
    if not isinstance(acting, dict):
        return False
    account_id, code, role = acting.get("account_id"), acting.get("credit_code"), acting.get("role")
    if not isinstance(account_id, str) or not isinstance(code, str):
        return False
    account = db.session.get(Account, account_id)
    if account is None or account.status != "active":
        return False
    if role == AGENT:
        row = _get_authorisation(acting.get("authorisation_id"))
        if row is None or row.agent_account_id != account.id or row.credit_code != code:
            return False
        if _authorisation_reason(row, now()) is not None:
            return False
    elif role != LEGAL_REPRESENTATIVE or not _verified(account):
        return False
    registry = _gateway().connectors.enterprise_registry
    if registry is None:
        raise RegistryUnavailable("no enterprise registry is configured")
    record = registry.find_enterprise(code)
    if record is None or not record.is_active:
        return False
    return role == AGENT or _is_representative(account, record)


# ---- authorisation lifecycle -----------------------------------------------------------


def _bounds(valid_from: date | datetime, valid_until: date | datetime) -> tuple[datetime, datetime]:
    """Naive UTC bounds: a date is a Beijing day (from its start, until its end)."""

    def utc(moment: date | datetime, end_of_day: bool) -> datetime:
        if isinstance(moment, datetime):
            if moment.tzinfo is not None:
                return moment.astimezone(UTC).replace(tzinfo=None)
            return moment
        if not isinstance(moment, date):
            raise LegalPersonError("dates_invalid")
        day = moment + timedelta(days=1) if end_of_day else moment
        try:
            local = datetime.combine(day, time(0), tzinfo=CHINA)
        except OverflowError:
            raise LegalPersonError("dates_invalid") from None
        return local.astimezone(UTC).replace(tzinfo=None)

    try:
        return utc(valid_from, False), utc(valid_until, True)
    except (OverflowError, ValueError):
        raise LegalPersonError("dates_invalid") from None


def _start_of_today() -> datetime:
    start = datetime.combine(today(), time(0), tzinfo=CHINA)
    return start.astimezone(UTC).replace(tzinfo=None)


def _check_roles(roles: Iterable[str] | None) -> list[str]:
    chosen = [r for r in (roles or []) if r]
    if not chosen:
        raise LegalPersonError("roles_required")
    if any(r not in ROLES for r in chosen):
        raise LegalPersonError("role_unknown")
    return [r for r in ROLES if r in chosen]  # the documented order, no duplicates


def grant_authorisation(
    grantor: Account,
    credit_code: str,
    agent_id_number: str,
    agent_name: str,
    roles: Iterable[str],
    valid_from: date | datetime,
    valid_until: date | datetime,
) -> AgentAuthorisation:
    """The current legal representative of an active enterprise authorises an agent (pending).

    The agent must have a registry-verified account matching both the name and
    the identity number; the authorisation waits for the agent's confirmation.
    """
    code = _parse_code(credit_code)
    if not _verified(grantor):
        raise LegalPersonError("not_verified")
    record = _find(code)
    if record is None:
        raise LegalPersonError("enterprise_unknown")
    if not _is_representative(grantor, record):
        _audit("authorisation_granted", grantor, code, outcome="failure", reason="not_representative")
        raise LegalPersonError("not_representative")
    reason = _status_reason(record)
    if reason:
        raise LegalPersonError(reason)
    chosen = _check_roles(roles)
    start, end = _bounds(valid_from, valid_until)
    if start >= end:
        raise LegalPersonError("dates_order")
    if end <= now():
        raise LegalPersonError("until_past")
    if start < _start_of_today():
        raise LegalPersonError("from_past")
    if end - start > MAX_VALIDITY:
        raise LegalPersonError("too_long")
    agent = _agent_account(agent_id_number, agent_name)
    if agent.id == grantor.id:
        raise LegalPersonError("agent_is_self")
    existing = db.session.execute(
        db.select(AgentAuthorisation.id).filter(
            AgentAuthorisation.credit_code == code,
            AgentAuthorisation.agent_account_id == agent.id,
            AgentAuthorisation.status.in_((PENDING, ACTIVE)),
            AgentAuthorisation.valid_until > now(),
        )
    ).first()
    if existing is not None:
        raise LegalPersonError("already_authorised")
    row = AgentAuthorisation(
        credit_code=code,
        enterprise_name=record.name,
        grantor_account_id=grantor.id,
        agent_account_id=agent.id,
        roles=chosen,
        valid_from=start,
        valid_until=end,
        status=PENDING,
        created_at=now(),
    )
    db.session.add(row)
    db.session.flush()
    _audit(
        "authorisation_granted",
        grantor,
        code,
        commit=False,
        authorisation=row.id,
        agent=agent.id,
        agent_id_number=agent.id_number_masked,
        roles=chosen,
        valid_from=_iso(start),
        valid_until=_iso(end),
    )
    db.session.commit()
    return row


def _agent_account(agent_id_number: str, agent_name: str) -> Account:
    from .accounts import VerificationFailed, find_by_id_number, verify_real_name

    number = "".join(unicodedata.normalize("NFKC", agent_id_number or "").split()).upper()
    try:
        number = validate_resident_id(number).number
    except InvalidIdentifier as exc:
        raise LegalPersonError(f"agent_id_{exc.code}") from None
    name = (agent_name or "").strip()
    agent = find_by_id_number(number)
    if not _verified(agent) or name_of(agent) != name:  # type: ignore[arg-type]
        raise LegalPersonError("agent_not_found")
    try:
        verify_real_name(name, number)  # still living, still this name in the population registry
    except VerificationFailed as exc:
        if exc.code == "registry_unavailable":
            raise LegalPersonError("registry_unavailable") from None
        if exc.code == "not_matched":
            raise LegalPersonError("agent_not_found") from None
        raise LegalPersonError("agent_not_eligible") from None
    return agent  # type: ignore[return-value]


def authorisations_granted(account: Account, choices: list[Choice] | None = None) -> list[AgentAuthorisation]:
    """Authorisations for the enterprises this person currently represents (any grantor).

    ``choices``: the result of :func:`enterprises_for`, when the caller has it already.
    """
    if choices is None:
        choices = enterprises_for(account)
    codes = [c.credit_code for c in choices if c.role == LEGAL_REPRESENTATIVE]
    if not codes:
        return []
    return list(
        db.session.execute(
            db.select(AgentAuthorisation)
            .filter(AgentAuthorisation.credit_code.in_(codes))
            .order_by(AgentAuthorisation.created_at.desc())
        ).scalars()
    )


def authorisations_received(account: Account) -> list[AgentAuthorisation]:
    return list(
        db.session.execute(
            db.select(AgentAuthorisation)
            .filter(AgentAuthorisation.agent_account_id == account.id)
            .order_by(AgentAuthorisation.created_at.desc())
        ).scalars()
    )


def confirm(agent: Account, authorisation_id: str) -> AgentAuthorisation:
    """The agent accepts a pending authorisation; the grantor must still be the representative."""
    row = _get_authorisation(authorisation_id)
    if row is None or row.agent_account_id != agent.id:
        raise LegalPersonError("authorisation_unknown")
    if row.status != PENDING:
        raise LegalPersonError("not_pending")
    if now() >= row.valid_until:
        raise LegalPersonError("authorisation_expired")
    record = _find(row.credit_code)
    reason = _status_reason(record)
    if reason:
        raise LegalPersonError(reason)
    grantor = db.session.get(Account, row.grantor_account_id)
    if grantor is None or not _is_representative(grantor, record):  # type: ignore[arg-type]
        raise LegalPersonError("grantor_replaced")
    row.status = ACTIVE
    row.confirmed_at = now()
    _audit("authorisation_confirmed", agent, row.credit_code, commit=False, authorisation=row.id)
    db.session.commit()
    return row


def decline(agent: Account, authorisation_id: str) -> AgentAuthorisation:
    row = _get_authorisation(authorisation_id)
    if row is None or row.agent_account_id != agent.id:
        raise LegalPersonError("authorisation_unknown")
    if row.status != PENDING:
        raise LegalPersonError("not_pending")
    row.status = DECLINED
    row.revoked_at = now()
    row.revoked_by = agent.id
    _audit("authorisation_declined", agent, row.credit_code, commit=False, authorisation=row.id)
    db.session.commit()
    return row


def revoke(actor: Account, authorisation_id: str) -> AgentAuthorisation:
    """Either side ends an authorisation (pending or active): the agent, the grantor, or the
    enterprise's current legal representative.  The agent's grants acting under it are
    revoked at once (refresh tokens and access tokens of those grants stop working)."""
    from .oidc import tokens

    row = _get_authorisation(authorisation_id)
    if row is None:
        raise LegalPersonError("authorisation_unknown")
    if actor.id not in (row.agent_account_id, row.grantor_account_id):
        # A successor representative may end what a predecessor granted.
        record = _find(row.credit_code)
        if record is None or not _is_representative(actor, record):
            raise LegalPersonError("authorisation_unknown")
    if row.status not in (PENDING, ACTIVE):
        raise LegalPersonError("not_revocable")
    row.status = REVOKED
    row.revoked_at = now()
    row.revoked_by = actor.id
    side = "agent" if actor.id == row.agent_account_id else "enterprise"
    _audit("authorisation_revoked", actor, row.credit_code, commit=False, authorisation=row.id, by=side)
    db.session.commit()
    grants = db.session.execute(
        db.select(Grant).filter(Grant.account_id == row.agent_account_id, Grant.revoked_at.is_(None))
    ).scalars()
    for grant in list(grants):
        if isinstance(grant.acting, dict) and grant.acting.get("authorisation_id") == row.id:
            tokens.revoke_grant(grant.id, "authorisation_revoked")
    return row
