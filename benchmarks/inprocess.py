"""Per request, in one process and one thread: CPU time, SQL statements, pool checkouts, pings, commits.

    .venv/bin/python benchmarks/inprocess.py [SCENARIO ...] [--requests N] [--profile SCENARIO]

Seeds a throw-away PostgreSQL database and a private redis-server exactly as
benchmarks/run.py does, then calls the gateway through Flask's test client (no
HTTP server, no other thread), so the figures are the gateway's own work per
request: CPU microseconds (client side of the test client included, ~50 us) and
the database round trips it makes.  Quieter than a load test on a shared machine:
use it to see what an optimisation changed.  ``--profile SCENARIO`` prints
cProfile's top functions for that scenario.  Stops by itself; asserts nothing.

``login`` is the password login flow of a new browser, as ``run.py``'s
``LoginFlow`` makes it: ``GET /authorize`` -> ``GET /login`` (the CSRF form) ->
``POST /login`` (argon2id) -> ``GET /authorize/resume`` -> code -> ``POST /token``,
with the test client's cookie jar (emptied before each flow) and the page's CSRF
token.  Its figures are per FLOW, then per step, with argon2's share (the time
inside ``PasswordHasher.verify``) apart: ``beside argon2`` is what the rest of the
flow costs.  ``--requests N`` is N flows (each ~20 ms of argon2).  Argon2 moves
19 MiB through the CPU caches, which slows the Python that follows it (the rest
of the POST and the next requests: ~1-2 ms per flow here); ``--no-argon2``
answers the password check without it, to measure the rest of the flow alone.

``--due`` makes every ``sso_hop`` request's session due its record sync (its stored
``synced_at`` set back past sso.session.RECORD_SYNC, as tests/conftest.make_record_stale
does), as most hops are in real use (a person moves to another portal minutes after
the last sync); without it the seeded sessions were just synced and no hop syncs.

By default nothing configures logging, so log lines (the access line of every
request included) are made and dropped by the logging package's last resort;
``--log-json`` configures it as ``sso serve`` does (``sso.logs.configure``, JSON, INFO)
with the lines going to /dev/null, so their formatting and writing count as in a
serving process.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import pstats
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402 - benchmarks/run.py, beside this file

SCENARIOS = ["jwks", "client_credentials", "introspection", "userinfo", "refresh", "sso_hop", "login"]
LOGIN_STEPS = ["authorize", "login page", "login POST", "resume", "token"]
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", choices=SCENARIOS)
    parser.add_argument("--profile-file", type=Path, help="also save the raw cProfile stats there (pstats format)")
    parser.add_argument(
        "--no-argon2",
        action="store_true",
        help="login: the password check answers 'right' without running argon2 (the rest of the flow alone, "
        "without argon2's 19 MiB passing through the CPU caches; never a security setting, a measurement)",
    )
    parser.add_argument(
        "--due",
        action="store_true",
        help="sso_hop: every hop's session is due its record sync (as most hops are in real use)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log as `sso serve` does (JSON lines at INFO), into /dev/null: their cost counts as when serving",
    )
    args = parser.parse_args()
    unknown = set(args.scenario) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="sso-inprocess-"))
    gw = run.prepare_gateway("production", workdir, sessions=args.requests * 2 + 50, chains=4)
    try:
        if args.log_json:
            import os

            from sso import logs

            logs.configure("json", "INFO", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
        measure(
            gw, args.scenario or SCENARIOS, args.requests, args.profile, args.profile_file, args.no_argon2, args.due
        )
    finally:
        run.stop(gw.redis)
        import psycopg

        with psycopg.connect(run.PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{gw.db_name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def measure(
    gw: run.Gateway,
    scenarios: list[str],
    n: int,
    profile: str | None,
    profile_file: Path | None = None,
    no_argon2: bool = False,
    due: bool = False,
) -> None:
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
    if due and hops:
        make_due(app, hops)

    def refresh() -> Any:
        r = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": state["refresh"]}, headers=portal)
        state["refresh"] = r.get_json()["refresh_token"]
        return r

    def hop() -> Any:
        cookie, path = hops[state["hop"]].split("\t")
        state["hop"] += 1
        return http.get(path, headers={"Cookie": cookie})

    # The password login: a browser with a cookie jar, CPU per step and inside argon2.
    from sso.connectors import local

    browser = app.test_client()  # keeps cookies: the CSRF session cookie, then the SSO session
    steps = dict.fromkeys(LOGIN_STEPS, 0.0)
    step_sql = dict.fromkeys(LOGIN_STEPS, 0)
    step_commits = dict.fromkeys(LOGIN_STEPS, 0)
    argon = {"cpu": 0.0, "calls": 0}
    real_hasher = local.PASSWORDS

    class TimedHasher:
        """The connector's PasswordHasher, with the CPU time of each verify counted."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_hasher, name)

        def verify(self, *a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            try:
                return True if no_argon2 else real_hasher.verify(*a, **kw)
            finally:
                argon["cpu"] += time.process_time() - t0
                argon["calls"] += 1

    local.PASSWORDS = TimedHasher()  # type: ignore[assignment]
    users = gw.accounts
    login_state = {"i": 0}

    def step(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        sql, commits = counts["sql"], counts["commit"]
        t0 = time.process_time()
        r = fn(*a, **kw)
        steps[name] += time.process_time() - t0
        step_sql[name] += counts["sql"] - sql
        step_commits[name] += counts["commit"] - commits
        return r

    def login_flow() -> Any:
        browser._cookies.clear()  # a new browser
        username = users[login_state["i"] % len(users)]
        login_state["i"] += 1
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode(
            {
                "client_id": gw.app_client[0],
                "redirect_uri": run.REDIRECT_URI,
                "response_type": "code",
                "scope": "openid profile",
                "state": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        r = step("authorize", browser.get, "/authorize?" + query)
        if r.status_code != 302:
            return r
        login_url = r.location
        r = step("login page", browser.get, login_url)
        match = CSRF.search(r.get_data(as_text=True))
        if r.status_code != 200 or match is None:
            return r
        interaction = parse_qs(urlsplit(login_url).query)["interaction"][0]
        r = step(
            "login POST",
            browser.post,
            "/login",
            data={
                "csrf_token": match.group(1) or match.group(2),
                "interaction": interaction,
                "username": username,
                "password": run.PASSWORD,
            },
        )
        if r.status_code != 302:
            return r
        r = step("resume", browser.get, r.location)
        code = parse_qs(urlsplit(r.location or "").query).get("code")
        if not code:
            return r
        r = step(
            "token",
            browser.post,
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code[0],
                "redirect_uri": run.REDIRECT_URI,
                "code_verifier": verifier,
            },
            headers=portal,
        )
        if r.status_code != 200 or "id_token" not in (r.get_json() or {}):
            return r
        return _FlowDone

    calls = {
        "jwks": lambda: http.get("/jwks"),
        "client_credentials": lambda: http.post("/token", data={"grant_type": "client_credentials"}, headers=cc),
        "introspection": lambda: http.post("/introspect", data={"token": gw.access_token}, headers=portal),
        "userinfo": lambda: http.get("/userinfo", headers={"Authorization": "Bearer " + gw.access_token}),
        "refresh": refresh,
        "sso_hop": hop,
        "login": login_flow,
    }
    print(f"| scenario | CPU us/request | SQL | checkouts | pings | commits |  ({n} requests, one thread)")
    print("|---|---|---|---|---|---|")
    for name in scenarios:
        call = calls[name]
        for _ in range(5):  # warm: first-use paths, statement caches, the client cache
            response = call()
        if name == "login" and response is not _FlowDone:
            print(f"| {name} | answered {response.status_code} {response.location or ''} |")
            continue
        if name != "login" and (
            response.status_code not in (200, 302) or (name == "sso_hop" and "code=" not in response.location)
        ):
            print(f"| {name} | answered {response.status_code} {response.location or ''} |")
            continue
        for key in counts:
            counts[key] = 0
        for key in steps:
            steps[key], step_sql[key], step_commits[key] = 0.0, 0, 0
        argon.update(cpu=0.0, calls=0)
        started = time.process_time()
        for _ in range(n):
            if call() is not _FlowDone and name == "login":
                raise SystemExit("login flow failed during the measurement")
        cpu = (time.process_time() - started) / n
        print(
            f"| {name} | {cpu * 1e6:,.0f} | {counts['sql'] / n:.1f} | {counts['checkout'] / n:.1f} | "
            f"{counts['ping'] / n:.1f} | {counts['commit'] / n:.1f} |",
            flush=True,
        )
        if name == "login":
            beside = cpu - argon["cpu"] / n
            print(
                f"|   login: argon2 {argon['cpu'] / n * 1e6:,.0f} us/flow ({argon['calls'] / n:.0f} verify, "
                f"{argon['cpu'] / n / cpu:.0%}); beside argon2 {beside * 1e6:,.0f} us/flow "
                f"(flows per CPU-second {1 / cpu:.1f}) |"
            )
            for key, total in steps.items():
                print(
                    f"|   login step: {key} | {total / n * 1e6:,.0f} | {step_sql[key] / n:.1f} | | | "
                    f"{step_commits[key] / n:.1f} |"
                )
    if profile:
        argon.update(cpu=0.0, calls=0)
        profiler = cProfile.Profile(time.process_time)  # CPU, not waiting on the database
        profiler.enable()
        for _ in range(n):
            calls[profile]()
        profiler.disable()
        stats = pstats.Stats(profiler)
        if profile_file:
            stats.dump_stats(profile_file)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(50)


def make_due(app: Any, hops: list[str]) -> None:
    """Each hop's session due its record sync: its stored ``synced_at`` set back past RECORD_SYNC."""
    from sso import session as browser_session

    with app.app_context():
        store = app.extensions["sso"].store
        ttl = app.extensions["sso"].settings.session_idle_timeout
        back = int(time.time()) - browser_session.RECORD_SYNC - 5
        for handle in {line.split("\t")[0].split("=", 1)[1].split(".")[0] for line in hops}:
            data = store.get(browser_session.KIND, handle)
            if data is not None:
                data["synced_at"] = back
                store.put(browser_session.KIND, handle, data, ttl)


class _FlowDone:
    """What ``login_flow`` returns when the flow reached its tokens."""

    status_code = 200
    location = ""


if __name__ == "__main__":
    main()
