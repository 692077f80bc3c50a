"""The audit trail as a hash chain: append under a lock, verify, export.

Every audit row carries ``prev_hash`` (the ``row_hash`` of the row before it;
row 1 chains from :data:`GENESIS`) and ``row_hash``, the SHA-256 (hex) of its
canonical form: the JSON object

    {"actor", "at", "client_id", "detail", "event", "id", "ip", "outcome", "prev_hash"}

with keys sorted at every level, separators ``,`` and ``:``, non-ASCII escaped
(``\\uXXXX``), and ``at`` written ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC).  An
export line holds exactly these fields plus ``row_hash``, so anyone can recheck
an export without this code.

Appends are serialised on the single row of ``audit_chain_head``: an append
first updates that row (``seq = seq + 1``), which takes its row lock on
PostgreSQL (other appenders wait until this transaction ends, then see its
result under READ COMMITTED) and the database write lock on SQLite (one writer
at a time, across processes too).  The event's ``id`` is that ``seq``, so ids
run 1, 2, 3 ... and a deleted row leaves a gap.  The lock is held until the
caller's transaction ends: an append with ``commit=False`` must be followed
promptly by the commit, never by slow work.

On PostgreSQL an append is one statement (one round trip instead of three): a
data-modifying ``WITH`` query locks the head row (``SELECT ... FOR UPDATE``), takes
the event's time from the database clock once it holds the lock, computes the
row's hash with the built-in ``sha256()`` (PostgreSQL 11+) over the same canonical
bytes (Python builds everything but ``at``, ``id`` and ``prev_hash``, which are
only known under the lock), inserts the row and moves the head.  ``sso audit
verify`` rechecks those hashes in Python like any other; with psycopg the statement
goes straight to the driver, in the session's transaction (``sso.db.driver_execute``).
SQLite takes the write lock with the head's ``UPDATE``, then Python computes the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, NamedTuple

from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, object_session

from .db import DriverSQL, driver_connection, driver_execute, own_connection
from .models import AuditChainHead, AuditEvent, utcnow

log = logging.getLogger("sso.audit")

GENESIS = "0" * 64
HEAD_ID = 1
CHAINED_FIELDS = ("id", "at", "event", "outcome", "actor", "client_id", "ip", "detail", "prev_hash")
READ_BATCH = 1000


class AppendOnly(RuntimeError):
    """An audit row was about to be changed or deleted through the ORM."""


@sa_event.listens_for(AuditEvent, "before_update")
def _no_update(mapper: Any, connection: Any, target: AuditEvent) -> None:
    session = object_session(target)
    if session is None or session.is_modified(target):
        raise AppendOnly(f"audit event {target.id} cannot be changed: the audit trail is append-only")


@sa_event.listens_for(AuditEvent, "before_delete")
def _no_delete(mapper: Any, connection: Any, target: AuditEvent) -> None:
    raise AppendOnly(f"audit event {target.id} cannot be deleted: the audit trail is append-only")


def format_at(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes a row's hash is computed over (see the module docstring)."""
    data = {name: fields[name] for name in CHAINED_FIELDS}
    if isinstance(data["at"], datetime):
        data["at"] = format_at(data["at"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def hash_fields(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in CHAINED_FIELDS}


# ---- append --------------------------------------------------------------------------


def _lock_head(session: Session) -> tuple[int, str]:
    """Take the chain lock; return the new event's id and the hash it chains from."""
    head = AuditChainHead.__table__
    step = update(head).where(head.c.id == HEAD_ID).values(seq=head.c.seq + 1).returning(head.c.seq, head.c.last_hash)
    row = session.execute(step).first()
    if row is None:
        _create_head(session)
        row = session.execute(step).one()
    return int(row.seq), str(row.last_hash)


def _create_head(session: Session | Connection) -> None:
    """The first append on a database (or one whose head row went missing).

    ``session``: the Session, or the connection the append runs on (in its transaction).
    """
    last = session.execute(select(AuditEvent.id, AuditEvent.row_hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    if last is not None:
        log.warning("audit chain head missing: continuing from row %s", last.id)
    values = {"id": HEAD_ID, "seq": last.id if last else 0, "last_hash": last.row_hash if last else GENESIS}
    dialect = session.dialect.name if isinstance(session, Connection) else session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(AuditChainHead.__table__).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(AuditChainHead.__table__).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - the gateway supports SQLite and PostgreSQL
        session.execute(insert(AuditChainHead.__table__).values(**values))


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True), with the
# encoder built once (json.dumps builds one per call when given options).
_dump = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


# The canonical form with its keys in sorted order (actor, at, client_id, detail,
# event, id, ip, outcome, prev_hash): Python writes the three pieces around the
# values only known under the lock.  Kept equal to canonical() by the tests.
_PG_APPEND = text(
    """
WITH head AS MATERIALIZED (
    SELECT seq, last_hash FROM audit_chain_head WHERE id = :head_id FOR UPDATE
), next AS MATERIALIZED (
    SELECT seq + 1 AS seq, last_hash AS prev_hash,
           CAST(clock_timestamp() AT TIME ZONE 'UTC' AS timestamp(6)) AS at
    FROM head
), hashed AS MATERIALIZED (
    SELECT seq, prev_hash, at,
           encode(sha256(convert_to(
               CAST(:before_at AS text) || to_char(at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || CAST(:before_id AS text) || CAST(seq AS text)
               || CAST(:before_prev AS text) || prev_hash || '"}',
               'UTF8')), 'hex') AS row_hash
    FROM next
), moved AS (
    UPDATE audit_chain_head SET seq = hashed.seq, last_hash = hashed.row_hash
    FROM hashed WHERE audit_chain_head.id = :head_id
), written AS (
    INSERT INTO audit_events (id, at, event, outcome, actor, client_id, ip, detail, prev_hash, row_hash)
    SELECT seq, at, :event, :outcome, :actor, :client_id, :ip, CAST(:detail AS json), prev_hash, row_hash
    FROM hashed
)
SELECT seq, at, prev_hash, row_hash FROM hashed
"""
)


class Appended(NamedTuple):
    """Where an event went in the chain."""

    id: int
    at: datetime
    prev_hash: str
    row_hash: str


# The same statement as psycopg takes it, for the driver path (sso.db.driver_execute).
# SQLAlchemy's rule for a bind name (not after ':' or a word character), so the
# to_char() pattern's ":MI" and ":SS" stay as they are.
_PG_APPEND_DRIVER = DriverSQL(re.sub(r"(?<![:\w\\]):(\w+)(?!:)", r"%(\1)s", _PG_APPEND.text))


def _pg_append_params(fields: dict[str, Any]) -> dict[str, Any]:
    """The statement's parameters: the canonical form's pieces around what the database fills in."""
    return {
        "head_id": HEAD_ID,
        "before_at": '{"actor":' + _dump(fields["actor"]) + ',"at":"',
        "before_id": '","client_id":'
        + _dump(fields["client_id"])
        + ',"detail":'
        + _dump(fields["detail"])
        + ',"event":'
        + _dump(fields["event"])
        + ',"id":',
        "before_prev": ',"ip":' + _dump(fields["ip"]) + ',"outcome":' + _dump(fields["outcome"]) + ',"prev_hash":"',
        "detail": json.dumps(fields["detail"]),
        **{name: fields[name] for name in ("event", "outcome", "actor", "client_id", "ip")},
    }


def _append_postgresql(
    session: Session | Connection, fields: dict[str, Any], connection: Connection | None = None
) -> Appended:
    """One statement; on ``connection`` (psycopg: the session's, or the request's own
    connection, sso.db.open_own_connection) straight on the driver.  ``session``: where
    the rare path (no head row yet) runs, in the same transaction."""
    params = _pg_append_params(fields)
    if connection is not None:
        found = driver_execute(connection, _PG_APPEND_DRIVER, params).fetchone()
        if found is not None:
            return Appended(int(found[0]), found[1], found[2], found[3])
    else:
        row = session.execute(_PG_APPEND, params).first()
        if row is not None:
            return Appended(int(row.seq), row.at, row.prev_hash, row.row_hash)
    _create_head(session)
    row = session.execute(_PG_APPEND, params).one()
    return Appended(int(row.seq), row.at, row.prev_hash, row.row_hash)


def _has_pending(session: Any) -> bool:
    """Whether ``session`` holds changes not flushed (without making a scoped one exist)."""
    registry = getattr(session, "registry", None)
    if registry is not None:
        if not registry.has():
            return False
        session = session()
    return bool(session.new or session.dirty or session.deleted)


def append(
    session: Session,
    *,
    event: str,
    outcome: str,
    actor: str | None,
    client_id: str | None,
    ip: str | None,
    detail: dict[str, Any],
) -> Appended:
    """Add one event at the end of the chain, in the session's transaction (not committed)."""
    # The caller's own changes first: every transaction then locks its rows before
    # the chain head, never after it, so two cannot wait on each other.
    own = own_connection()
    if own is not None:
        # The request's own connection (sso.db.open_own_connection): the append, and
        # the head row's creation if need be, in its transaction.  The caller's changes
        # are in it already (statements, not Session objects: the Session held none
        # when the connection was opened, and is not used for writes while it is).
        if _has_pending(session):
            raise RuntimeError("an audit append on the request's own connection with Session changes pending")
        fields = {"event": event, "outcome": outcome, "actor": actor, "client_id": client_id, "ip": ip}
        return _append_postgresql(own, {**fields, "detail": detail}, own)
    session.flush()
    connection = driver_connection(session)
    if connection is not None or session.get_bind().dialect.name == "postgresql":
        fields = {"event": event, "outcome": outcome, "actor": actor, "client_id": client_id, "ip": ip}
        return _append_postgresql(session, {**fields, "detail": detail}, connection)
    seq, prev_hash = _lock_head(session)
    row = AuditEvent(
        id=seq,
        at=utcnow(),  # taken under the lock, so time never runs backwards along the chain
        event=event,
        outcome=outcome,
        actor=actor,
        client_id=client_id,
        ip=ip,
        detail=detail,
        prev_hash=prev_hash,
    )
    row.row_hash = hash_fields(_fields(row))
    session.add(row)
    head = AuditChainHead.__table__
    session.execute(update(head).where(head.c.id == HEAD_ID).values(last_hash=row.row_hash))
    return Appended(seq, row.at, prev_hash, row.row_hash)


# ---- verify --------------------------------------------------------------------------


@dataclass
class Break:
    """The first place the chain does not hold."""

    row_id: int | None
    kind: str  # altered | gap | link | unchained | head
    message: str


@dataclass
class Verification:
    count: int  # rows checked and found intact before the first break (all of them if none)
    head_seq: int
    head_hash: str
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ok": self.ok,
            "count": self.count,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
        }
        if self.broken is not None:
            data["broken"] = {"row_id": self.broken.row_id, "kind": self.broken.kind, "message": self.broken.message}
        return data


def _missing(first: int, last: int) -> str:
    return f"row {first} is missing" if first == last else f"rows {first}-{last} are missing"


def _rows(session: Session, upto: int) -> Iterator[Any]:
    columns = [getattr(AuditEvent, name) for name in (*CHAINED_FIELDS, "row_hash")]
    result = session.execute(
        select(*columns).where(AuditEvent.id <= upto).order_by(AuditEvent.id).execution_options(yield_per=READ_BATCH)
    )
    yield from result


def verify(session: Session) -> Verification:
    """Recompute the chain from row 1 to the head; stop at the first break."""
    head = session.execute(select(AuditChainHead).where(AuditChainHead.id == HEAD_ID)).scalar_one_or_none()
    if head is None:
        present = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
        if not present:
            return Verification(0, 0, GENESIS)
        return Verification(0, 0, GENESIS, Break(None, "head", "the chain head (audit_chain_head) is missing"))
    seq, head_hash = head.seq, head.last_hash
    count, expected, prev = 0, 1, GENESIS
    result = Verification(0, seq, head_hash)
    try:
        for row in _rows(session, seq):
            broken = _check(row, expected, prev)
            if broken is not None:
                result.count, result.broken = count, broken
                return result
            count, expected, prev = count + 1, expected + 1, row.row_hash
    except ValueError as exc:  # a detail column that is no longer JSON
        result.count = count
        result.broken = Break(expected, "altered", f"row {expected} cannot be read ({exc}): it was altered")
        return result
    result.count = count
    if expected <= seq:
        result.broken = Break(expected, "gap", f"{_missing(expected, seq)} at the end of the chain (deleted)")
    elif prev != head_hash:
        result.broken = Break(seq, "head", f"the chain head's hash does not match row {seq}")
    else:
        # Anything beyond the head was written around the chain (rows appended in
        # the meantime move the head first: read the highest id, then the head).
        highest = session.execute(select(func.max(AuditEvent.id))).scalar_one() or 0
        now_seq = session.execute(select(AuditChainHead.seq).where(AuditChainHead.id == HEAD_ID)).scalar_one()
        if highest > now_seq:
            result.broken = Break(
                highest, "head", f"row {highest} lies beyond the chain head ({now_seq}): inserted outside the chain"
            )
    return result


def _check(row: Any, expected: int, prev: str) -> Break | None:
    if row.id != expected:
        return Break(row.id, "gap", f"{_missing(expected, row.id - 1)} before row {row.id} (deleted)")
    if not row.prev_hash or not row.row_hash:
        return Break(row.id, "unchained", f"row {row.id} has no hash: it was not written through the chain")
    if row.prev_hash != prev:
        return Break(
            row.id,
            "link",
            f"row {row.id}'s prev_hash does not match the hash of row {row.id - 1}: broken link "
            f"(row {row.id - 1} was rewritten, or this link was altered)",
        )
    if hash_fields(row._asdict()) != row.row_hash:
        return Break(row.id, "altered", f"row {row.id} does not match its hash: it was altered after it was written")
    return None


# ---- export --------------------------------------------------------------------------


def export_line(row: Any) -> str:
    data = {name: getattr(row, name) for name in (*CHAINED_FIELDS, "row_hash")}
    data["at"] = format_at(data["at"])
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def export(session: Session, out: IO[str], since: datetime | None = None, until: datetime | None = None) -> int:
    """Write events (``since`` <= at < ``until``, naive UTC) as JSON lines; return how many."""
    columns = [getattr(AuditEvent, name) for name in (*CHAINED_FIELDS, "row_hash")]
    query = select(*columns).order_by(AuditEvent.id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    count = 0
    for row in session.execute(query.execution_options(yield_per=READ_BATCH)):
        out.write(export_line(row) + "\n")
        count += 1
    return count
