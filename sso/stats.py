"""Usage statistics from the audit trail and the session index.

A sign-in at a portal is an authorization code it redeemed (the
``authorize.code_redeemed`` audit event, which also names the assurance level and
whether the person acted for themselves or for an enterprise; rows written before
2026-12 are ``authorize.code_issued``, at the code's issue, and count the same).  Days are
calendar days in China Standard Time (UTC+8, no daylight saving), the
programme's reporting day; timestamps in the database are naive UTC.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from . import audit
from .db import db
from .models import AuditEvent, Client, Consent, SessionRecord, utcnow

SIGN_IN_EVENTS = (audit.SIGN_IN_EVENT, audit.SIGN_IN_EVENT_UNTIL_2026_12)
REPORT_OFFSET = timedelta(hours=8)
REPORT_TZ = timezone(REPORT_OFFSET, "UTC+08:00")
MAX_DAYS = 366
PRINCIPALS = ("natural", "legal")


@dataclass
class PortalCount:
    client_id: str
    name: str
    total: int = 0
    per_day: dict[date, int] = field(default_factory=dict)
    consents: int = 0


@dataclass
class Stats:
    days: list[date]
    portals: list[PortalCount]
    per_day: dict[date, int]
    by_principal: dict[str, int]
    by_acr: dict[str, int]
    active_sessions: int
    generated_at: datetime

    @property
    def total(self) -> int:
        return sum(self.per_day.values())

    @property
    def total_consents(self) -> int:
        return sum(p.consents for p in self.portals)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.days[0].isoformat(),
            "to": self.days[-1].isoformat(),
            "days": len(self.days),
            "timezone": str(REPORT_TZ),
            "generated_at": self.generated_at.isoformat() + "Z",
            "sign_ins": {
                "total": self.total,
                "per_day": [{"date": d.isoformat(), "count": self.per_day.get(d, 0)} for d in self.days],
                "per_portal": [
                    {
                        "client_id": p.client_id,
                        "name": p.name,
                        "total": p.total,
                        "per_day": [{"date": d.isoformat(), "count": p.per_day.get(d, 0)} for d in self.days],
                    }
                    for p in self.portals
                ],
                "by_principal": self.by_principal,
                "by_acr": self.by_acr,
            },
            "active_sessions": self.active_sessions,
            "consents": {
                "total": self.total_consents,
                "per_portal": [{"client_id": p.client_id, "name": p.name, "count": p.consents} for p in self.portals],
            },
        }


def report_day(at: datetime) -> date:
    """The China Standard Time calendar day of a naive-UTC timestamp."""
    return (at + REPORT_OFFSET).date()


def compute(days: int = 14, now: datetime | None = None) -> Stats:
    """Statistics over the last ``days`` reporting days, today included."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}")
    now = now or utcnow()
    today = report_day(now)
    window = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    start = datetime.combine(window[0], datetime.min.time()) - REPORT_OFFSET

    names = dict(db.session.execute(select(Client.client_id, Client.name)).all())
    portals: dict[str, PortalCount] = {cid: PortalCount(cid, name) for cid, name in names.items()}

    def portal(client_id: str) -> PortalCount:
        # A portal deleted since still counts, under its id.
        if client_id not in portals:
            portals[client_id] = PortalCount(client_id, client_id)
        return portals[client_id]

    per_day: Counter[date] = Counter()
    by_principal: Counter[str] = Counter({p: 0 for p in PRINCIPALS})
    by_acr: Counter[str] = Counter()
    rows = db.session.execute(
        select(AuditEvent.at, AuditEvent.client_id, AuditEvent.detail)
        .where(AuditEvent.event.in_(SIGN_IN_EVENTS), AuditEvent.outcome == "success")
        .where(AuditEvent.at >= start, AuditEvent.at <= now)
        .execution_options(yield_per=1000)
    )
    counts: dict[str, Counter[date]] = defaultdict(Counter)
    for at, client_id, detail in rows:
        day = report_day(at)
        detail = detail if isinstance(detail, dict) else {}
        per_day[day] += 1
        counts[client_id or "?"][day] += 1
        by_principal[str(detail.get("principal") or "natural")] += 1
        by_acr[str(detail.get("acr") or "?")] += 1
    for client_id, per in counts.items():
        entry = portal(client_id)
        entry.per_day = dict(per)
        entry.total = sum(per.values())

    for client_id, count in db.session.execute(
        select(Consent.client_id, func.count()).group_by(Consent.client_id)
    ).all():
        portal(client_id).consents = int(count)

    active = db.session.execute(
        select(func.count())
        .select_from(SessionRecord)
        .where(SessionRecord.ended_at.is_(None))
        .where(SessionRecord.expires_at > now, SessionRecord.absolute_expires_at > now)
    ).scalar_one()

    ordered = sorted(portals.values(), key=lambda p: (-p.total, -p.consents, p.client_id))
    return Stats(
        days=window,
        portals=ordered,
        per_day={d: per_day.get(d, 0) for d in window},
        by_principal=dict(by_principal),
        by_acr=dict(sorted(by_acr.items())),
        active_sessions=int(active),
        generated_at=now,
    )


def as_text(stats: Stats) -> str:
    """A plain table for the terminal: one line per day, one column per portal."""
    lines = [
        f"Sign-ins per portal per day, {stats.days[0]} to {stats.days[-1]} ({REPORT_TZ}): {stats.total}",
    ]
    ids = [p.client_id for p in stats.portals if p.total]
    widths = [max(len(cid), 5) for cid in ids]
    lines.append("  " + "  ".join(["date      ", *(cid.rjust(w) for cid, w in zip(ids, widths, strict=True)), "total"]))
    by_id = {p.client_id: p for p in stats.portals}
    for day in stats.days:
        cells = [str(by_id[cid].per_day.get(day, 0)).rjust(w) for cid, w in zip(ids, widths, strict=True)]
        lines.append("  " + "  ".join([day.isoformat(), *cells, str(stats.per_day.get(day, 0)).rjust(5)]))
    lines.append("")
    lines.append("By principal type: " + ", ".join(f"{k} {v}" for k, v in stats.by_principal.items()))
    lines.append("By assurance level (acr): " + (", ".join(f"{k} {v}" for k, v in stats.by_acr.items()) or "none"))
    lines.append(f"Active sessions: {stats.active_sessions}")
    lines.append(f"Consents per portal: {stats.total_consents}")
    for p in stats.portals:
        if p.consents:
            lines.append(f"  {p.client_id}  {p.consents}  {p.name}")
    return "\n".join(lines)
