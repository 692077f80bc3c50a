"""The test suite's own Redis databases: one per test process on this machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import backends

ROOT = Path(__file__).resolve().parents[1]


def _db_of_another_process(worker: str) -> int:
    code = "from tests.backends import _worker_db; print(_worker_db())"
    env = {"PYTEST_XDIST_WORKER": worker, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_test_run_beside_this_one_gets_another_database() -> None:
    mine = backends._worker_db()
    assert mine in backends.TEST_DBS
    # Another process claiming to be the same xdist worker (a second test run at once)
    # does not get this process's database, which stays held.
    worker = f"gw{backends.TEST_DBS.index(mine)}"
    theirs = _db_of_another_process(worker)
    assert theirs in backends.TEST_DBS and theirs != mine
    assert backends._worker_db() == mine
