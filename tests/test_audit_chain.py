"""The hash-chained audit trail: integrity, tamper detection, concurrency, the guard, export."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from sso import audit, audit_chain, create_app
from sso.bootstrap import prepare
from sso.cli import main
from sso.config import load_settings
from sso.connectors.demo_data import DEMO_CITIZEN, DEMO_ENTERPRISES
from sso.db import db
from sso.identifiers import mask_credit_code, mask_resident_id
from sso.models import AuditChainHead, AuditEvent
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.conftest import make_settings, redeem

ID_NUMBER = DEMO_CITIZEN.id_number  # 110101199003071233, a valid resident identity number
CREDIT_CODE = DEMO_ENTERPRISES[0].credit_code
ROOT = Path(__file__).resolve().parents[1]


def rows() -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id)).scalars())


def independent_hash(row: AuditEvent) -> str:
    """The documented canonical form, computed without sso.audit_chain."""
    data = {
        "id": row.id,
        "at": row.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": row.event,
        "outcome": row.outcome,
        "actor": row.actor,
        "client_id": row.client_id,
        "ip": row.ip,
        "detail": row.detail,
        "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def assert_intact(count: int) -> None:
    chain = rows()
    assert [r.id for r in chain] == list(range(1, count + 1))
    prev = audit_chain.GENESIS
    for row in chain:
        assert row.prev_hash == prev
        assert row.row_hash == independent_hash(row)
        prev = row.row_hash
    head = db.session.get(AuditChainHead, audit_chain.HEAD_ID)
    assert head is not None and (head.seq, head.last_hash) == (count, prev)
    result = audit_chain.verify(db.session)
    assert result.ok and result.count == count, result


# ---- the chain ---------------------------------------------------------------------


def test_events_are_chained_from_the_genesis_value(app: Flask) -> None:
    audit.record("test.one", actor="a1", client_id="tax-portal", n=1)
    audit.record("test.two", outcome="failure", reason="测试", nested={"b": [1, 2], "a": None})
    audit.record("test.three")
    chain = rows()
    assert chain[0].prev_hash == "0" * 64
    assert chain[1].detail == {"reason": "测试", "nested": {"b": [1, 2], "a": None}}
    assert_intact(3)


def test_a_rolled_back_append_leaves_no_trace_in_the_chain(app: Flask) -> None:
    audit.record("test.kept")
    audit.record("test.dropped", commit=False)
    db.session.rollback()
    audit.record("test.kept_too")
    assert [r.event for r in rows()] == ["test.kept", "test.kept_too"]
    assert_intact(2)


def test_events_of_a_real_flow_are_chained(app: Flask, browser: Any, portal: Any, account: Any) -> None:
    assert redeem(browser.client, portal, *browser.code_for(portal)).status_code == 200
    events = [r.event for r in rows()]
    assert {"client.created", "login", "consent.granted", "authorize.code_redeemed"} <= set(events)
    assert_intact(len(events))


def test_rows_cannot_be_changed_or_deleted_through_the_orm(app: Flask) -> None:
    audit.record("test.one")
    row = rows()[0]
    row.detail = {"changed": True}
    with pytest.raises(audit_chain.AppendOnly):
        db.session.commit()
    db.session.rollback()
    db.session.delete(rows()[0])
    with pytest.raises(audit_chain.AppendOnly):
        db.session.commit()
    db.session.rollback()
    assert_intact(1)


def test_a_missing_head_row_is_recreated_from_the_last_event(app: Flask) -> None:
    audit.record("test.one")
    audit.record("test.two")
    db.session.execute(db.delete(AuditChainHead))
    db.session.commit()
    broken = audit_chain.verify(db.session).broken
    assert broken is not None and broken.kind == "head"
    audit.record("test.three")
    assert_intact(3)


# ---- the guard: no secrets, no full identifiers -------------------------------------


def test_full_identity_numbers_and_credit_codes_are_masked_everywhere(app: Flask) -> None:
    lower_x = "11010119900307002x"  # check character X, typed in lowercase
    audit.record(
        "test.guard",
        actor=ID_NUMBER,
        id_number=ID_NUMBER,
        credit_code=CREDIT_CODE,
        note=f"registry said no for {ID_NUMBER}, enterprise {CREDIT_CODE}.",
        people=[ID_NUMBER, {"inner": CREDIT_CODE}, lower_x],
        as_int=int(ID_NUMBER),
        **{ID_NUMBER: "as a key"},
    )
    row = rows()[0]
    assert row.actor == mask_resident_id(ID_NUMBER)
    assert row.detail["id_number"] == mask_resident_id(ID_NUMBER) == "110101********1233"
    assert row.detail["credit_code"] == mask_credit_code(CREDIT_CODE)
    assert row.detail["note"] == (
        f"registry said no for {mask_resident_id(ID_NUMBER)}, enterprise {mask_credit_code(CREDIT_CODE)}."
    )
    assert row.detail["people"] == [
        mask_resident_id(ID_NUMBER),
        {"inner": mask_credit_code(CREDIT_CODE)},
        mask_resident_id(lower_x.upper()),
    ]
    assert row.detail["as_int"] == mask_resident_id(ID_NUMBER)
    assert row.detail[mask_resident_id(ID_NUMBER)] == "as a key"
    stored = json.dumps([row.actor, row.detail])
    assert ID_NUMBER not in stored and CREDIT_CODE not in stored and lower_x not in stored.lower()
    assert_intact(1)


def test_values_that_only_look_like_identifiers_are_kept(app: Flask) -> None:
    wrong_check = ID_NUMBER[:17] + ("0" if ID_NUMBER[17] != "0" else "1")
    longer = ID_NUMBER + "7"  # 19 digits: not an identity number
    masked = mask_resident_id(ID_NUMBER)
    audit.record("test.guard", a=wrong_check, b=longer, c=masked, d="a" * 18, e=123456789012345670)
    assert rows()[0].detail == {"a": wrong_check, "b": longer, "c": masked, "d": "a" * 18, "e": 123456789012345670}


def test_keys_named_like_credentials_are_dropped(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    audit.record(
        "test.guard",
        password="hunter2-hunter2",
        client_secret="s3cr3t-value",
        access_token="eyJ-token-value",
        refreshToken="r-token-value",
        nested={"new_password": "p4ss-value", "kept": 1},
        kind="refresh_token",  # a value naming a token type is fine
    )
    row = rows()[0]
    assert row.detail == {
        "nested": {"kept": 1},
        "kind": "refresh_token",
        "redacted_keys": ["access_token", "client_secret", "new_password", "password", "refreshToken"],
    }
    raw = json.dumps(row.detail)
    for value in ("hunter2", "s3cr3t", "eyJ-token", "r-token-value", "p4ss-value"):
        assert value not in raw and value not in caplog.text
    assert "dropped" in caplog.text
    assert_intact(1)


def test_odd_detail_values_are_stored_as_text(app: Flask) -> None:
    when = datetime(2026, 5, 1, 8, 0)
    audit.record("test.types", when=when, pair=(1, 2), number=1.5)
    assert rows()[0].detail == {"when": str(when), "pair": [1, 2], "number": 1.5}
    assert_intact(1)


class _Text(str):
    pass


@pytest.mark.parametrize(
    "detail",
    [
        {"acr": "urn:cn:loa:2", "principal": "natural", "sid": "s" * 22},  # the hop's
        {"n": 110101199003074477, "b": True, "none": None, "i": 7, "id": "110101199003074477"},
        {"token": "t", "client_secret": "x", "kept": "k"},
        {"pair": (1, 2), "f": 1.5, "s": _Text("sub")},
        {"nested": {"password": "p", "v": ["110101199003074477"]}},
    ],
)
def test_a_plain_detail_is_stored_as_its_json_round_trip_would_be(detail: dict[str, Any]) -> None:
    # safe_detail skips the round trip for a detail of plain values: same result.
    dropped: list[str] = []
    expected = audit.scrub(json.loads(json.dumps(detail, default=str)), dropped)
    if dropped:
        expected["redacted_keys"] = sorted(dropped)
    got = audit.safe_detail(dict(detail))
    assert got == expected and json.dumps(got) == json.dumps(expected)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


# ---- concurrency ------------------------------------------------------------------------


def append_in_threads(app: Flask, threads: int, each: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            with app.app_context():
                start.wait()
                for i in range(each):
                    audit.record("test.concurrent", actor=f"thread-{n}", i=i)
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors


def test_threads_appending_at_once_keep_one_chain_on_sqlite(app: Flask) -> None:
    append_in_threads(app, threads=8, each=25)
    assert_intact(200)
    per_thread = {f"thread-{n}": 0 for n in range(8)}
    for row in rows():
        per_thread[row.actor] += 1
    assert set(per_thread.values()) == {25}


@pytest.fixture
def pg_app(tmp_path: Path, pg_url: str) -> Any:  # noqa: F811
    application = create_app(make_settings(tmp_path, database_url=pg_url))
    prepare(application)
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


def test_threads_appending_at_once_keep_one_chain_on_postgresql(pg_app: Flask) -> None:
    append_in_threads(pg_app, threads=8, each=25)
    assert_intact(200)


APPENDER = """
import sys
from sso import audit, create_app
from sso.config import load_settings
from sso.db import db

settings = load_settings(overrides={"instance_path": sys.argv[1], "database_url": sys.argv[2],
                                    "issuer": "http://127.0.0.1:5000", "development": True}, environ={})
app = create_app(settings)
with app.app_context():
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(int(sys.argv[3])):
        audit.record("test.process", actor=sys.argv[4], i=i)
"""


def append_in_processes(instance: Path, url: str, processes: int, each: int) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SSO_")}, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(instance), url, str(each), f"process-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


def test_processes_appending_at_once_keep_one_chain_on_sqlite(app: Flask, tmp_path: Path) -> None:
    url = app.extensions["sso"].settings.resolved_database_url
    append_in_processes(tmp_path / "instance", url, processes=3, each=30)
    assert_intact(90)


def test_processes_appending_at_once_keep_one_chain_on_postgresql(pg_app: Flask, tmp_path: Path) -> None:
    url = pg_app.extensions["sso"].settings.resolved_database_url
    append_in_processes(tmp_path / "instance", url, processes=3, each=30)
    assert_intact(90)


def test_tampering_is_found_on_postgresql_too(pg_app: Flask) -> None:
    for i in range(4):
        audit.record("test.pg", i=i)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET detail = '{\"i\": 9}' WHERE id = 2")
    broken = audit_chain.verify(db.session).broken
    assert broken is not None and (broken.row_id, broken.kind) == (2, "altered")


def test_threads_on_postgresql_take_the_time_under_the_lock(pg_app: Flask) -> None:
    append_in_threads(pg_app, threads=6, each=10)
    times = [row.at for row in rows()]
    assert len(times) == 60 and times == sorted(times)  # time never runs backwards along the chain


def test_postgresql_hashes_every_kind_of_value_like_the_documented_form(pg_app: Flask) -> None:
    # The hash is computed by the database there: it must match canonical() byte for byte.
    audit.record("test.one", actor="a1", client_id="tax-portal", n=1)
    audit.record(
        "test.two",
        outcome="failure",
        reason='测试 "quoted" \\ back\nslash \u2028 😀',
        nested={"b": [1, 2.5, True, None], "a": None, "é": {"z": [], "y": {}}},
        big=2**53 + 1,
    )
    audit.record("test.three")
    audit.record("test.types", when=datetime(2026, 5, 1, 8, 0), pair=(1, 2), number=1.5)
    chain = rows()
    assert chain[0].prev_hash == audit_chain.GENESIS
    assert chain[1].detail["nested"] == {"b": [1, 2.5, True, None], "a": None, "é": {"z": [], "y": {}}}
    assert chain[1].ip is None and chain[2].actor is None
    assert_intact(4)


def test_postgresql_appends_in_one_statement(pg_app: Flask) -> None:
    from sqlalchemy import event

    audit.record("test.first")  # creates the head row
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        audit.record("test.second", actor="a1", n=2)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1 and "FOR UPDATE" in statements[0]
    assert_intact(2)


def test_postgresql_rolled_back_append_and_missing_head(pg_app: Flask) -> None:
    audit.record("test.kept")
    audit.record("test.dropped", commit=False)
    db.session.rollback()
    audit.record("test.kept_too")
    assert [r.event for r in rows()] == ["test.kept", "test.kept_too"]
    db.session.execute(db.delete(AuditChainHead))
    db.session.commit()
    broken = audit_chain.verify(db.session).broken
    assert broken is not None and broken.kind == "head"
    audit.record("test.three")
    assert_intact(3)


def test_the_hash_pieces_sent_to_postgresql_rebuild_the_canonical_form() -> None:
    # What _append_postgresql sends, joined with the values the database fills in.
    fields = {
        "id": 7,
        "at": datetime(2026, 5, 1, 8, 0, 0, 1234),
        "event": "e",
        "outcome": "success",
        "actor": None,
        "client_id": "c",
        "ip": "::1",
        "detail": {"b": [1, {"d": None, "c": "测"}], "a": '"'},
        "prev_hash": "ab" * 32,
    }
    captured: dict[str, Any] = {}

    class Recorder:
        def execute(self, statement: Any, params: dict[str, Any]) -> Any:
            captured.update(params)
            raise StopIteration

    with pytest.raises(StopIteration):
        given = {k: fields[k] for k in ("event", "outcome", "actor", "client_id", "ip", "detail")}
        audit_chain._append_postgresql(Recorder(), given)  # type: ignore[arg-type]
    rebuilt = (
        captured["before_at"]
        + audit_chain.format_at(fields["at"])
        + captured["before_id"]
        + str(fields["id"])
        + captured["before_prev"]
        + fields["prev_hash"]
        + '"}'
    )
    assert rebuilt.encode("ascii") == audit_chain.canonical(fields)


# ---- sso audit verify / export (CLI) --------------------------------------------------------


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.env = {
            "SSO_INSTANCE_PATH": str(tmp_path),
            "SSO_ISSUER": "http://127.0.0.1:5000",
            "SSO_DEVELOPMENT": "true",
        }
        self.db_file = tmp_path / "sso.sqlite3"
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(main, list(args), env=self.env)
        assert result.exit_code == code, (result.output, result.exception)
        if code:
            assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        return result

    def sql(self, statement: str) -> None:
        with sqlite3.connect(self.db_file) as conn:
            conn.execute(statement)

    def app(self) -> Flask:
        application = create_app(load_settings(environ=self.env))
        prepare(application)
        return application


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for key in list(os.environ):
        if key.startswith("SSO_"):
            monkeypatch.delenv(key)
    return Cli(tmp_path)


def five_events(cli: Cli) -> None:
    with cli.app().app_context():
        for i in range(1, 6):
            audit.record("test.event", actor=f"actor-{i}", n=i)


def test_verify_says_ok_with_the_count(cli: Cli) -> None:
    assert cli("audit", "verify").stdout.startswith("OK: 0 events")
    five_events(cli)
    out = cli("audit", "verify").stdout
    assert out.startswith("OK: 5 events, chain intact (head 5 ")
    data = json.loads(cli("audit", "verify", "--json").stdout)
    assert data["ok"] is True and data["count"] == 5 and data["head"]["seq"] == 5


def test_verify_names_an_altered_row(cli: Cli) -> None:
    five_events(cli)
    cli.sql("""UPDATE audit_events SET detail = '{"n": 30}' WHERE id = 3""")
    result = cli("audit", "verify", code=1)
    assert "BROKEN at row 3 (altered)" in result.stdout and "2 events intact" in result.stdout
    data = json.loads(cli("audit", "verify", "--json", code=1).stdout)
    assert data["ok"] is False and data["broken"]["row_id"] == 3 and data["broken"]["kind"] == "altered"


@pytest.mark.parametrize("column", ["actor", "event", "at", "ip"])
def test_verify_notices_a_change_to_any_column(cli: Cli, column: str) -> None:
    five_events(cli)
    value = "'2020-01-01 00:00:00.000000'" if column == "at" else "'forged'"
    cli.sql(f"UPDATE audit_events SET {column} = {value} WHERE id = 4")
    assert "BROKEN at row 4 (altered)" in cli("audit", "verify", code=1).stdout


def test_verify_names_a_deleted_middle_row(cli: Cli) -> None:
    five_events(cli)
    cli.sql("DELETE FROM audit_events WHERE id = 3")
    out = cli("audit", "verify", code=1).stdout
    assert "BROKEN at row 4 (gap): row 3 is missing before row 4 (deleted)" in out


def test_verify_names_rows_deleted_from_the_end(cli: Cli) -> None:
    five_events(cli)
    cli.sql("DELETE FROM audit_events WHERE id >= 4")
    out = cli("audit", "verify", code=1).stdout
    assert "BROKEN at row 4 (gap): rows 4-5 are missing at the end of the chain" in out


def test_verify_names_a_broken_link_when_a_row_was_rewritten_with_a_fresh_hash(cli: Cli) -> None:
    five_events(cli)
    with cli.app().app_context():
        row = db.session.get(AuditEvent, 2)
        assert row is not None
        fields = {name: getattr(row, name) for name in audit_chain.CHAINED_FIELDS}
        fields["detail"] = {"n": 20}
        forged = audit_chain.hash_fields(fields)
    cli.sql(f"""UPDATE audit_events SET detail = '{{"n": 20}}', row_hash = '{forged}' WHERE id = 2""")
    out = cli("audit", "verify", code=1).stdout
    assert "BROKEN at row 3 (link)" in out and "row 2 was rewritten" in out


def test_verify_names_a_row_written_around_the_chain(cli: Cli) -> None:
    five_events(cli)
    cli.sql(
        "INSERT INTO audit_events (id, at, event, outcome, detail, prev_hash, row_hash) "
        "VALUES (6, '2026-01-01 00:00:00.000000', 'forged', 'success', '{}', 'x', 'y')"
    )
    out = cli("audit", "verify", code=1).stdout
    assert "BROKEN at row 6 (head)" in out


def test_export_writes_one_json_line_per_event_with_hashes(cli: Cli, tmp_path: Path) -> None:
    five_events(cli)
    lines = cli("audit", "export").stdout.splitlines()
    assert len(lines) == 5
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5]
    assert set(events[0]) == {*audit_chain.CHAINED_FIELDS, "row_hash"}
    prev = "0" * 64
    for e in events:
        # Each line is enough to recheck the chain without the gateway.
        assert e["prev_hash"] == prev
        canonical = {k: e[k] for k in audit_chain.CHAINED_FIELDS}
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert digest == e["row_hash"]
        prev = e["row_hash"]
    out = tmp_path / "audit.jsonl"
    result = cli("audit", "export", "--out", str(out))
    assert "5 events written" in result.output
    assert out.read_text(encoding="utf-8").splitlines() == lines


def test_export_filters_by_time(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    base = datetime(2026, 5, 1, 0, 0)
    moments = iter([base + timedelta(hours=h) for h in (0, 6, 12, 18, 24)])
    monkeypatch.setattr(audit_chain, "utcnow", lambda: next(moments))
    five_events(cli)

    def ids(*args: str) -> list[int]:
        return [json.loads(line)["id"] for line in cli("audit", "export", *args).stdout.splitlines()]

    assert ids("--since", "2026-05-01T06:00:00") == [2, 3, 4, 5]
    assert ids("--until", "2026-05-01T12:00:00Z") == [1, 2]
    assert ids("--since", "2026-05-01T06:00:00", "--until", "2026-05-02") == [2, 3, 4]
    # An offset is honoured: 14:00 in Beijing is 06:00 UTC.
    assert ids("--since", "2026-05-01T14:00:00+08:00", "--until", "2026-05-01T21:00:00+08:00") == [2, 3]
    assert ids("--since", "2027-01-01") == []
    assert "--since must be an ISO 8601" in cli("audit", "export", "--since", "yesterday", code=2).output
