"""Per request, in one process and one thread: CPU time, SQL statements, pool checkouts, pings, commits.

    .venv/bin/python benchmarks/inprocess.py [SCENARIO ...] [--requests N] [--profile SCENARIO]

Seeds a throw-away PostgreSQL database and a private redis-server exactly as
benchmarks/run.py does, then calls the gateway through Flask's test client (no
HTTP server, no other thread), so the figures are the gateway's own work per
request: CPU microseconds (client side of the test client included, ~50 us) and
the database round trips it makes.  Quieter than a load test on a shared machine:
use it to see what an optimisation changed.  ``--profile SCENARIO`` prints
cProfile's top functions for that scenario.  Stops by itself; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402 - benchmarks/run.py, beside this file

SCENARIOS = ["jwks", "client_credentials", "introspection", "userinfo", "refresh", "sso_hop"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", choices=SCENARIOS)
    args = parser.parse_args()
    unknown = set(args.scenario) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="sso-inprocess-"))
    gw = run.prepare_gateway("production", workdir, sessions=args.requests * 2 + 50, chains=4)
    try:
        measure(gw, args.scenario or SCENARIOS, args.requests, args.profile)
    finally:
        run.stop(gw.redis)
        import psycopg

        with psycopg.connect(run.PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{gw.db_name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def measure(gw: run.Gateway, scenarios: list[str], n: int, profile: str | None) -> None:
    from sqlalchemy import event

    from sso import create_app
    from sso.config import load_settings
    from sso.db import db

    app = create_app(load_settings(environ=gw.env))
    with app.app_context():
        engine = db.engine
    counts = {"sql": 0, "checkout": 0, "ping": 0, "commit": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _sql(*_: Any) -> None:
        counts["sql"] += 1

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        counts["checkout"] += 1

    @event.listens_for(engine, "commit")
    def _commit(*_: Any) -> None:
        counts["commit"] += 1

    real_ping = engine.dialect.do_ping

    def ping(conn: Any) -> Any:
        counts["ping"] += 1
        return real_ping(conn)

    engine.dialect.do_ping = ping  # type: ignore[method-assign]
    http = app.test_client(use_cookies=False)
    cc = {"Authorization": run.basic(*gw.cc)}
    portal = {"Authorization": run.basic(*gw.app_client)}
    hops = (gw.hops_file.read_text() if gw.hops_file else "").splitlines()
    state: dict[str, Any] = {"refresh": gw.refresh_tokens[0], "hop": 0}

    def refresh() -> Any:
        r = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": state["refresh"]}, headers=portal)
        state["refresh"] = r.get_json()["refresh_token"]
        return r

    def hop() -> Any:
        cookie, path = hops[state["hop"]].split("\t")
        state["hop"] += 1
        return http.get(path, headers={"Cookie": cookie})

    calls = {
        "jwks": lambda: http.get("/jwks"),
        "client_credentials": lambda: http.post("/token", data={"grant_type": "client_credentials"}, headers=cc),
        "introspection": lambda: http.post("/introspect", data={"token": gw.access_token}, headers=portal),
        "userinfo": lambda: http.get("/userinfo", headers={"Authorization": "Bearer " + gw.access_token}),
        "refresh": refresh,
        "sso_hop": hop,
    }
    print(f"| scenario | CPU us/request | SQL | checkouts | pings | commits |  ({n} requests, one thread)")
    print("|---|---|---|---|---|---|")
    for name in scenarios:
        call = calls[name]
        for _ in range(5):  # warm: first-use paths, statement caches, the client cache
            response = call()
        if response.status_code not in (200, 302) or (name == "sso_hop" and "code=" not in response.location):
            print(f"| {name} | answered {response.status_code} {response.location or ''} |")
            continue
        for key in counts:
            counts[key] = 0
        started = time.process_time()
        for _ in range(n):
            call()
        cpu = (time.process_time() - started) / n
        print(
            f"| {name} | {cpu * 1e6:,.0f} | {counts['sql'] / n:.1f} | {counts['checkout'] / n:.1f} | "
            f"{counts['ping'] / n:.1f} | {counts['commit'] / n:.1f} |",
            flush=True,
        )
    if profile:
        profiler = cProfile.Profile(time.process_time)  # CPU, not waiting on the database
        profiler.enable()
        for _ in range(n):
            calls[profile]()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(50)


if __name__ == "__main__":
    main()
