"""The mock population and enterprise registries written by scripts/generate_registries.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

from sso import regions
from sso.connectors import demo_data
from sso.identifiers import (
    BUSINESS_ORG_TYPES,
    organisation_code_check_char,
    validate_credit_code,
    validate_resident_id,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generate_registries.py"
PEOPLE, ENTERPRISES, SEED = 2000, 200, 42


def load_script() -> ModuleType:
    # scripts/ is not a package: load the file itself, as the CLI runs it.
    spec = importlib.util.spec_from_file_location("generate_registries", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses resolve string annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def db_path(script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registries") / "registries.sqlite3"
    script.generate(path, PEOPLE, ENTERPRISES, SEED)
    return path


@pytest.fixture()
def db(db_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    yield connection
    connection.close()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("people", "enterprises", "registry_meta")
        }


def test_counts_include_demo_records(db: sqlite3.Connection) -> None:
    assert db.execute("SELECT count(*) FROM people").fetchone()[0] == PEOPLE + len(demo_data.DEMO_PEOPLE)
    assert db.execute("SELECT count(*) FROM enterprises").fetchone()[0] == ENTERPRISES + len(demo_data.DEMO_ENTERPRISES)


def test_every_person_is_valid_and_consistent(db: sqlite3.Connection) -> None:
    rows = db.execute("SELECT * FROM people").fetchall()
    for id_number, name, sex, birth, region_code, phone, address, status in rows:
        parsed = validate_resident_id(id_number)
        assert parsed.sex == sex
        assert parsed.birth_date.isoformat() == birth
        assert parsed.region_code == region_code
        assert 2 <= len(name) <= 4 and not re.search(r"[\sA-Za-z0-9]", name)
        assert re.fullmatch(r"1[3-9][0-9]{9}", phone)
        county = regions.county(region_code)
        assert county is not None and address.startswith(county.full_name)
        assert status in {"normal", "deceased", "cancelled"}
    generated = [row for row in rows if row[0] not in {p.id_number for p in demo_data.DEMO_PEOPLE}]
    assert all(date(1930, 1, 1) <= date.fromisoformat(r[3]) <= date(2008, 12, 31)
               for r in generated)
    assert not any(regions.county(r[4]).functional_zone for r in generated)  # type: ignore[union-attr]
    statuses = [r[7] for r in generated]
    assert statuses.count("normal") > 0.95 * len(statuses)
    sexes = [r[2] for r in generated]
    assert 0.4 < sexes.count("male") / len(sexes) < 0.6


def test_every_enterprise_is_valid_and_consistent(db: sqlite3.Connection) -> None:
    for code, name, org_type, region_code, _, _, status, registered in db.execute(
        "SELECT * FROM enterprises"
    ):
        parsed = validate_credit_code(code)
        assert parsed.registration_authority == "9"
        assert BUSINESS_ORG_TYPES[parsed.organisation_type] == org_type
        assert parsed.region_code == region_code and regions.is_county(region_code)
        org = parsed.organisation_code
        assert organisation_code_check_char(org[:8]) == org[8]
        assert name and status in {"active", "revoked", "cancelled"}
        assert date(1993, 1, 1) <= date.fromisoformat(registered) <= date(2025, 6, 30)


def test_legal_representatives_exist_with_the_same_name(db: sqlite3.Connection) -> None:
    mismatched = db.execute(
        """SELECT e.credit_code FROM enterprises e
           LEFT JOIN people p ON p.id_number = e.legal_rep_id_number
           WHERE p.id_number IS NULL OR p.name != e.legal_rep_name"""
    ).fetchall()
    assert mismatched == []
    # Generated companies are represented by living adults (at registration).
    demo_codes = {e.credit_code for e in demo_data.DEMO_ENTERPRISES}
    for code, status, born, registered in db.execute(
        """SELECT e.credit_code, p.status, p.birth_date, e.registered_on
           FROM enterprises e JOIN people p ON p.id_number = e.legal_rep_id_number"""
    ):
        if code not in demo_codes:
            assert status == "normal"
            assert date.fromisoformat(registered) >= date.fromisoformat(born).replace(
                year=int(born[:4]) + 18, day=1
            )
    distinct = db.execute("SELECT count(DISTINCT legal_rep_id_number) FROM enterprises")
    assert distinct.fetchone()[0] > ENTERPRISES // 2  # drawn from the population, not one person


def test_demo_records_are_present_and_valid(db: sqlite3.Connection) -> None:
    for person in demo_data.DEMO_PEOPLE:
        row = db.execute("SELECT * FROM people WHERE id_number = ?", (person.id_number,))
        assert row.fetchone() == dataclasses.astuple(person)
        parsed = validate_resident_id(person.id_number)
        assert (parsed.sex, parsed.birth_date.isoformat(), parsed.region_code) == (
            person.sex, person.birth_date, person.region_code)
    for enterprise in demo_data.DEMO_ENTERPRISES:
        row = db.execute("SELECT * FROM enterprises WHERE credit_code = ?",
                         (enterprise.credit_code,))
        assert row.fetchone() == dataclasses.astuple(enterprise)
        assert validate_credit_code(enterprise.credit_code).region_code == enterprise.region_code
    assert demo_data.DEMO_ENTERPRISE.legal_rep_id_number == demo_data.DEMO_CITIZEN.id_number
    assert {p.status for p in demo_data.DEMO_PEOPLE} == {"normal", "deceased", "cancelled"}
    assert {e.status for e in demo_data.DEMO_ENTERPRISES} == {"active", "revoked", "cancelled"}


def test_lookups_are_index_seeks(db: sqlite3.Connection) -> None:
    plan = db.execute("EXPLAIN QUERY PLAN SELECT * FROM people WHERE id_number = ?", ("x",))
    details = [row[3] for row in plan.fetchall()]
    assert details == ["SEARCH people USING PRIMARY KEY (id_number=?)"]
    plan = db.execute("EXPLAIN QUERY PLAN SELECT * FROM enterprises WHERE credit_code = ?", ("x",))
    assert [row[3] for row in plan.fetchall()] == [
        "SEARCH enterprises USING PRIMARY KEY (credit_code=?)"]
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM enterprises WHERE legal_rep_id_number = ?", ("x",))
    (detail,) = [row[3] for row in plan.fetchall()]
    assert detail.startswith("SEARCH") and "enterprises_legal_rep" in detail


def test_same_seed_same_data(script: ModuleType, db_path: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.sqlite3"
    script.generate(again, PEOPLE, ENTERPRISES, SEED, batch_size=333)  # batching is invisible
    assert dump(again) == dump(db_path)
    other = tmp_path / "other.sqlite3"
    script.generate(other, PEOPLE, ENTERPRISES, SEED + 1)
    assert dump(other)["people"] != dump(db_path)["people"]


def test_tiny_runs(script: ModuleType, tmp_path: Path) -> None:
    # No random people: every enterprise falls back to the demo citizen.
    path = tmp_path / "tiny.sqlite3"
    script.generate(path, 0, 5, 1)
    tables = dump(path)
    assert len(tables["people"]) == len(demo_data.DEMO_PEOPLE) and len(tables["enterprises"]) == 8
    script.generate(path, 10, 0, 1)  # overwrites in place
    assert len(dump(path)["people"]) == 10 + len(demo_data.DEMO_PEOPLE)
    assert not list(tmp_path.glob("*.partial"))


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli.sqlite3"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--people", "300", "--enterprises", "20",
         "--out", str(out), "--seed", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{300 + len(demo_data.DEMO_PEOPLE)} people and 23 enterprises" in result.stdout
    meta = dict(dump(out)["registry_meta"])
    assert meta["seed"] == "5" and meta["people"] == "300"
