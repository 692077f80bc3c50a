"""The code exchange (grant_type=authorization_code at /token): CPU and SQL per request.

    .venv/bin/python benchmarks/code_exchange.py [--requests N]

Like ``inprocess.py`` (same throw-away PostgreSQL database and private redis-server,
Flask's test client in one thread), for the one token response it has no scenario
for: codes are put straight into the short-lived store, as ``/authorize`` would,
then redeemed by the confidential bench portal (access token, ID token, refresh
token).  Prints CPU microseconds, SQL statements and commits per redemption.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402 - benchmarks/run.py, beside this file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sso-code-exchange-"))
    gw = run.prepare_gateway("production", workdir, sessions=0, chains=1)
    try:
        measure(gw, args.requests)
    finally:
        run.stop(gw.redis)
        import psycopg

        with psycopg.connect(run.PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{gw.db_name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def measure(gw: run.Gateway, n: int) -> None:
    from sqlalchemy import event

    from sso import create_app
    from sso.config import load_settings
    from sso.crypto import new_token
    from sso.db import db
    from sso.models import Account

    app = create_app(load_settings(environ=gw.env))
    warm = 5
    with app.app_context():
        engine = db.engine
        account_id = db.session.execute(db.select(Account.id).limit(1)).scalar_one()
        store = app.extensions["sso"].store
        codes = []
        for _ in range(n + warm):
            code = new_token(32)
            payload = {
                "client_id": gw.app_client[0],
                "redirect_uri": run.REDIRECT_URI,
                "scope": "openid profile",
                "account_id": account_id,
                "nonce": None,
                "code_challenge": None,
                "code_challenge_method": None,
                "auth_time": int(time.time()),
                "acr": "1",
                "amr": ["pwd"],
                "sid": None,
                "acting": None,
                "claims": None,
            }
            store.put("code", code, payload, 3600)
            codes.append(code)
    counts = {"sql": 0, "commit": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _sql(*_: Any) -> None:
        counts["sql"] += 1

    @event.listens_for(engine, "commit")
    def _commit(*_: Any) -> None:
        counts["commit"] += 1

    http = app.test_client(use_cookies=False)
    headers = {"Authorization": run.basic(*gw.app_client)}

    def redeem(code: str) -> None:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": run.REDIRECT_URI}
        response = http.post("/token", data=data, headers=headers)
        assert response.status_code == 200, response.text

    for code in codes[:warm]:
        redeem(code)
    counts.update(sql=0, commit=0)
    started = time.process_time()
    for code in codes[warm:]:
        redeem(code)
    cpu = (time.process_time() - started) / n
    print(f"| scenario | CPU us/request | SQL | commits |  ({n} requests, one thread)")
    print("|---|---|---|---|")
    print(f"| code_exchange | {cpu * 1e6:,.0f} | {counts['sql'] / n:.1f} | {counts['commit'] / n:.1f} |")


if __name__ == "__main__":
    main()
