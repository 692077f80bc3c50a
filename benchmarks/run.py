"""The gateway's benchmark: every protocol scenario, per core, beside node-oidc-provider 9.

    .venv/bin/python benchmarks/run.py [--scenario NAME ...] [--duration S] [--backend production|embedded]

What it does, and then stops by itself (loopback only, every run bounded in time):

1. sets up a throw-away backend: a new PostgreSQL database and a private
   ``redis-server`` on a free port (``--backend production``), or a SQLite file
   and the in-process store (``--backend embedded``, one worker);
2. migrates, makes keys, registers 10 portals, creates accounts, consents,
   sessions, refresh-token chains and access tokens, in this process, through the
   gateway's own code (the sessions straight into the store: 20,000 of them, which
   also measures Redis memory per session);
3. starts ``sso serve --production --workers 1 --threads N`` pinned to core 1
   (``taskset -c 1``) and drives each scenario from core 0 with wrk (Lua scripts
   in ``benchmarks/wrk/``) or, for the password login, a small Python load
   generator (CSRF form, cookies and redirects);
4. does the same against node-oidc-provider 9 (``benchmarks/node/provider.mjs``,
   installed with npm into a temporary folder outside the repository), also on
   core 1, with the same wrk scripts, unless ``--no-node``;
5. prints a table: requests (or flows) per second of the one server core, per
   CPU-second of the server process, p50 and p99 latency, errors; and the
   target of issue 5.  It asserts nothing.

Scenarios (``--scenario``, repeatable; default all but ``portals``):

* ``discovery``, ``jwks``: GET of the static documents;
* ``client_credentials``: POST /token, client_secret_basic, an RS256 JWT;
* ``introspection``: POST /introspect of a user's access token by its portal;
* ``userinfo``: GET /userinfo with that token;
* ``refresh``: refresh with rotation, each connection following its own chain
  (wrk ``-tN -cN``: one Lua state per connection holds its current token);
* ``sso_hop``: a browser with a session asks a portal it has not visited yet for
  a code (GET /authorize -> 302 with code; pre-consented portals);
* ``login``: the full code + PKCE flow of a new browser with a password login
  (argon2id at its real cost): authorize, login page, login POST, resume, code,
  token exchange;
* ``portals``: client_credentials and introspection with 10 portals registered,
  then with 10,000: the ratio shows whether cost grows with the registry.

``--profile DIR`` records each scenario's server worker with py-spy (collapsed
stacks in DIR/<scenario>.txt, and the top frames printed).

Needs: wrk (``apt-get install wrk``), taskset, PostgreSQL at 127.0.0.1:5432 (user
postgres, trust; ``BENCH_PG_ADMIN``), ``redis-server`` on the PATH, Node.js + npm
for the reference (optional), py-spy for ``--profile``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WRK_DIR = ROOT / "benchmarks" / "wrk"
NODE_DIR = ROOT / "benchmarks" / "node"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVER_CORE, LOAD_CORE = "1", "0"
REDIRECT_URI = "http://127.0.0.1:9/cb"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - throw-away benchmark accounts
# A current desktop browser's User-Agent: sessions keep it (<= 200 characters).
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
HOP_PORTALS = 5
BASE_PORTALS = 10  # registered portals before the "portals" scenario adds 9,990
SCALE_PORTALS = 10_000
NODE_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # noqa: S105 - as in provider.mjs

ALL = ["discovery", "jwks", "client_credentials", "introspection", "userinfo", "refresh", "sso_hop", "login"]
EXTRA = ["portals"]
# Issue 5's targets per core, and node-oidc-provider 9 as measured there.
TARGETS = {
    "discovery": 10_000, "jwks": 10_000, "client_credentials": 2_500, "introspection": 5_000,
    "refresh": 1_500, "sso_hop": 1_500, "login": 45,
}
ISSUE_NODE = {
    "discovery": 16_400, "jwks": 23_000, "client_credentials": 2_557, "introspection": 9_960,
    "refresh": 1_827, "sso_hop": 3_716,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    verifier = b64url(secrets.token_bytes(32))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def wait_ready(url: str, proc: subprocess.Popen[bytes], limit: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {limit} s")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def process_tree(pid: int) -> list[int]:
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(process_tree(int(child)))
    return out


# ---- results ---------------------------------------------------------------------------


@dataclass
class Result:
    rate: float  # requests (or flows) per second, wall clock
    per_cpu: float  # per CPU-second of the server processes
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    note: str = ""


@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen[bytes]
    worker_pids: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)


# ---- wrk ---------------------------------------------------------------------------------


def pin_database_backends(gw: Gateway) -> int:
    """Move the PostgreSQL backends serving the gateway onto the load core; how many.

    The server's core is the server's: its database, like its private redis-server,
    runs beside the load generator (in production, on a machine of its own).  Left
    to float, the backends took ~40 % of a core during refresh, much of it on the
    server's core, and the wall-clock rate measured the two together.  Backends the
    pool opens later are moved before the next run.
    """
    if not gw.db_name:
        return 0
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        pids = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (gw.db_name,))]
    moved = 0
    for pid in pids:
        try:
            os.sched_setaffinity(pid, {int(LOAD_CORE)})
            moved += 1
        except OSError:  # gone, or not ours to move: it floats
            pass
    return moved



def run_wrk(
    server: Server,
    path: str,
    script: str,
    duration: int,
    *,
    connections: int,
    threads: int = 1,
    env: dict[str, str] | None = None,
    profile: Path | None = None,
) -> Result:
    cmd = [
        "taskset", "-c", LOAD_CORE, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
        "--timeout", "10s", "-s", str(WRK_DIR / script), server.base + path,
    ]
    wrk_env = os.environ | {"BENCH_WRK_DIR": str(WRK_DIR)} | (env or {})
    pids = server.pids()
    spy = start_profile(server, profile, duration)
    before = cpu_seconds(pids)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=wrk_env, check=False)
    used = cpu_seconds(pids) - before
    finish_profile(spy, profile)
    match = re.search(r"^BENCH (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(match.group(1))
    rate = data["requests"] / data["seconds"]
    return Result(
        rate=rate,
        per_cpu=data["requests"] / used if used > 0 else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"] + data["bad"],
        requests=data["requests"],
    )


# ---- profiling ---------------------------------------------------------------------------


def start_profile(server: Server, profile: Path | None, duration: int) -> subprocess.Popen[bytes] | None:
    if profile is None or not server.worker_pids:
        return None
    if shutil.which("py-spy") is None and not (BIN / "py-spy").exists():
        log("py-spy not found: no profile")
        return None
    spy = str(BIN / "py-spy") if (BIN / "py-spy").exists() else "py-spy"
    profile.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, spy, "record", "--pid", str(server.worker_pids[0]), "--duration",
         str(max(duration - 1, 1)), "--rate", "250", "--gil", "--format", "raw", "--output", str(profile),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def finish_profile(spy: subprocess.Popen[bytes] | None, profile: Path | None) -> None:
    if spy is None or profile is None:
        return
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return
    if profile.exists():
        print(f"\nprofile {profile.name}: top frames by inclusive samples (idle threads excluded)")
        for line in top_frames(profile):
            print("   ", line)


def top_frames(path: Path, limit: int = 25) -> list[str]:
    """Inclusive share of busy samples per function, from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        # Threads waiting for work or for the socket: not the gateway's cost.
        if any(w in leaf for w in ("wait (threading", "select (selectors", "_worker (concurrent", "accept (")):
            continue
        n = int(count)
        busy += n
        for name in {re.sub(r" \(.*?:\d+\)$", "", f) + " " + _where(f) for f in frames}:
            inclusive[name] = inclusive.get(name, 0) + n
    if not busy:
        return []
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{100 * n / busy:5.1f}%  {name}" for name, n in ranked]


def _where(frame: str) -> str:
    match = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    if not match:
        return ""
    where = match.group(1)
    for marker in ("site-packages/", "/sso/", "lib/python3"):
        if marker in where:
            return "(" + where.split(marker, 1)[1] + ")"
    return "(" + where + ")"


# ---- the gateway -------------------------------------------------------------------------


@dataclass
class Gateway:
    env: dict[str, str]
    workdir: Path
    db_name: str | None
    port: int = 0
    redis: subprocess.Popen[bytes] | None = None
    redis_url: str = ""
    cc: tuple[str, str] = ("", "")  # client_credentials portal: id, secret
    app_client: tuple[str, str] = ("", "")  # code-flow portal: id, secret
    hop_portals: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    access_token: str = ""
    accounts: list[str] = field(default_factory=list)  # usernames (password logins)
    hops_file: Path | None = None
    hops_used: int = 0  # lines of hops_file sent so far: the next run goes on from there
    session_memory: dict[str, float] = field(default_factory=dict)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def prepare_gateway(backend: str, workdir: Path, sessions: int, chains: int) -> Gateway:
    kek = b64url(secrets.token_bytes(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSO_", "PROMETHEUS_"))}
    gw = Gateway(env=env, workdir=workdir, db_name=None)
    if backend == "production":
        import psycopg

        gw.db_name = "sso_bench_" + secrets.token_hex(4)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{gw.db_name}"')
        gw.redis, gw.redis_url = start_redis(workdir)
        env.update(
            SSO_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{gw.db_name}",
            SSO_REDIS_URL=gw.redis_url,
        )
    gw.port = free_port()
    env.update(
        SSO_ISSUER=f"http://127.0.0.1:{gw.port}",
        SSO_DEVELOPMENT="true",
        SSO_KEY_ENCRYPTION_KEY=kek,
        SSO_INSTANCE_PATH=str(workdir),
        SSO_KEY_PUBLISH_LEAD="0",
        SSO_ACCESS_TOKEN_TTL="7200",  # the benchmark's tokens outlive the whole run
        SSO_LOG_LEVEL="INFO",
        SSO_LOG_FORMAT="json",
    )
    seed(gw, backend, sessions, chains)
    if gw.db_name:
        import psycopg

        # The planner's statistics, as autovacuum keeps them on any PostgreSQL that
        # has it on (the default; this machine's has it off).  Without them every
        # table counts as nearly empty, and the refresh claim read the grants of every
        # account (a cost that grew with each round's logins: 1,495/s, then 593, 298).
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + gw.db_name, autocommit=True) as conn:
            conn.execute("ANALYZE")
    return gw


def seed(gw: Gateway, backend: str, sessions: int, chains: int) -> None:
    """Portals, accounts, consents, sessions, refresh chains and a user access token."""
    from sso import assurance, create_app
    from sso import session as browser_session
    from sso.bootstrap import prepare
    from sso.clients import create_client
    from sso.config import load_settings
    from sso.connectors.local import PASSWORDS
    from sso.crypto import new_token
    from sso.db import db
    from sso.models import Account, Consent, SessionRecord, utcnow
    from sso.oidc import tokens

    settings = load_settings(environ=gw.env)
    app = create_app(settings)
    with app.app_context():
        prepare(app)
        cc = create_client(name="bench client_credentials", redirect_uris=[], grant_types=["client_credentials"],
                           scope="profile", client_id="bench-cc")
        gw.cc = (cc.client.client_id, cc.client_secret or "")
        web = create_client(name="bench portal", redirect_uris=[REDIRECT_URI], scope="openid profile",
                            client_id="bench-app")
        gw.app_client = (web.client.client_id, web.client_secret or "")
        for i in range(HOP_PORTALS):
            create_client(name=f"bench hop portal {i}", redirect_uris=[REDIRECT_URI], scope="openid profile",
                          client_id=f"bench-hop-{i}")
            gw.hop_portals.append(f"bench-hop-{i}")
        for i in range(BASE_PORTALS - 2 - HOP_PORTALS):
            create_client(name=f"bench other portal {i}", redirect_uris=[REDIRECT_URI], scope="openid profile",
                          client_id=f"bench-other-{i}")

        # Accounts: one argon2id hash (at the real parameters) shared by all of them.
        password_hash = PASSWORDS.hash(PASSWORD)
        n_accounts = 200
        accounts = [
            Account(username=f"bench-user-{i}", password_hash=password_hash, display_name=f"Bench {i}",
                    connector_id="accounts")
            for i in range(n_accounts)
        ]
        db.session.add_all(accounts)
        db.session.flush()
        for account in accounts:
            for portal in ["bench-app", *gw.hop_portals]:
                db.session.add(Consent(account_id=account.id, client_id=portal, scopes=["openid", "profile"]))
        db.session.commit()
        gw.accounts = [a.username for a in accounts]

        # Refresh chains and a user access token, through the token code itself.
        client = db.session.execute(db.select(type(web.client)).filter_by(client_id="bench-app")).scalar_one()
        for i in range(chains):
            account = accounts[i % n_accounts]
            authz = tokens.open_grant(client, account.id, "openid profile", code=new_token(32), sid=None,
                                      auth_time=int(time.time()), acr="1", amr=["pwd"], acting=None,
                                      with_refresh_token=True)
            assert authz is not None and authz.issued_refresh_token
            gw.refresh_tokens.append(authz.issued_refresh_token)
            if i == 0:
                with app.test_request_context():
                    gw.access_token = tokens.issue_access_token(client, "openid profile", authz, 7200)
        db.session.commit()

        if backend != "production" or sessions <= 0:
            return
        # Browser sessions straight into the store, as browser_session._write makes them.
        store = app.extensions["sso"].store
        import redis as redis_lib

        raw = redis_lib.Redis.from_url(gw.redis_url)
        before = int(raw.info("memory")["used_memory"])
        acr = assurance.current_level(["pwd"], "self-asserted").acr
        now = int(time.time())
        cookie_name = "sso_session"  # development mode (http issuer); __Host-sso_session otherwise
        lines = []
        records = []
        handles = []
        for i in range(sessions):
            account = accounts[i % n_accounts]
            handle, secret = new_token(16), new_token(32)
            session = browser_session.BrowserSession(
                account_id=account.id, connector_id="accounts", auth_time=now, amr=["pwd"], acr=acr,
                clients=["bench-app", "bench-other-0"], user_agent=USER_AGENT, ip="203.0.113.7",
            )
            session.secret_hash = browser_session._hash(secret)
            # Its record last synced over a minute ago, as for a person whose last
            # request to the gateway was minutes before moving to another portal: the
            # session's first hop in the run is due the record's sync (sso.session).
            session.synced_at = now - browser_session.RECORD_SYNC - 1
            store.put(browser_session.KIND, handle, session.to_dict(), settings.session_idle_timeout)
            handles.append(handle)
            records.append(SessionRecord(
                sid=session.sid, account_id=account.id, handle=handle, clients=list(session.clients),
                user_agent=USER_AGENT, ip="203.0.113.7", created_at=utcnow(), last_seen_at=utcnow(),
                expires_at=utcnow() + timedelta(seconds=settings.session_idle_timeout),
                absolute_expires_at=utcnow() + timedelta(seconds=settings.session_absolute_timeout),
            ))
            lines.append(f"{cookie_name}={handle}.{secret}")
        after = int(raw.info("memory")["used_memory"])
        sample = [raw.memory_usage(store._key(browser_session.KIND, h), samples=0) for h in handles[:200]]
        value_len = [raw.strlen(store._key(browser_session.KIND, h)) for h in handles[:200]]
        gw.session_memory = {
            "sessions": sessions,
            "used_memory_delta_per_session": (after - before) / sessions,
            "memory_usage_mean": statistics.mean(sample),
            "value_bytes_mean": statistics.mean(value_len),
        }
        for start in range(0, len(records), 2000):
            db.session.add_all(records[start:start + 2000])
            db.session.commit()
        _, challenge = pkce_pair()
        hops = []
        # Request i: session i, portal i // sessions: every pair is new until
        # sessions x portals requests have been made.
        for portal in gw.hop_portals:
            query = urllib.parse.urlencode({
                "client_id": portal, "redirect_uri": REDIRECT_URI, "response_type": "code",
                "scope": "openid profile", "state": "bench", "code_challenge": challenge,
                "code_challenge_method": "S256",
            })
            hops.extend(f"{cookie}\t/authorize?{query}" for cookie in lines)
        gw.hops_file = gw.workdir / "hops.txt"
        gw.hops_file.write_text("\n".join(hops) + "\n")


def add_portals(gw: Gateway, total: int) -> None:
    """Register portals (as rows, like `sso clients create` makes them) up to ``total``."""
    from sso import create_app
    from sso.config import load_settings
    from sso.db import db
    from sso.models import Client

    app = create_app(load_settings(environ=gw.env))
    with app.app_context():
        hasher = app.extensions["sso"].secret_hasher
        have = db.session.execute(db.select(db.func.count()).select_from(Client)).scalar_one()
        rows = [
            Client(client_id=f"bench-many-{i}", client_secret_hash=hasher.hash(secrets.token_urlsafe(32)),
                   name=f"bench portal {i}", redirect_uris=[REDIRECT_URI], grant_types=["authorization_code"],
                   scope="openid profile", token_endpoint_auth_method="client_secret_basic")
            for i in range(total - have)
        ]
        for start in range(0, len(rows), 2000):
            db.session.add_all(rows[start:start + 2000])
            db.session.commit()


def start_gateway(gw: Gateway, backend: str, threads: int, wsgi_server: str = "granian") -> Server:
    port = gw.port
    env = gw.env
    cmd = [str(BIN / "sso"), "serve", "--production", "--workers", "1", "--threads", str(threads),
           "--port", str(port)]
    if backend == "embedded":
        cmd.append("--allow-embedded")
    cmd += ["--server", wsgi_server]
    log_file = open(gw.workdir / "gateway.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd], env=env, stdout=log_file, stderr=log_file,
                            cwd=gw.workdir)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/.well-known/openid-configuration", proc)
    server = Server("gateway", base, proc)
    server.worker_pids = [p for p in server.pids() if p != proc.pid]
    return server


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ---- the password login flow (Python load generator) -------------------------------------


class LoginFlow:
    """One virtual browser: authorize -> login page -> login POST -> resume -> code -> token."""

    CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')

    def __init__(self, base: str, client: tuple[str, str], username: str) -> None:
        import requests

        self.base = base
        self.client = client
        self.username = username
        self.http = requests.Session()

    def run(self) -> None:
        self.http.cookies.clear()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        query = {
            "client_id": self.client[0], "redirect_uri": REDIRECT_URI, "response_type": "code",
            "scope": "openid profile", "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        }
        r = self.http.get(self.base + "/authorize", params=query, allow_redirects=False, timeout=30)
        login_url = urllib.parse.urljoin(self.base, r.headers["Location"])
        r = self.http.get(login_url, timeout=30)
        r.raise_for_status()
        match = self.CSRF.search(r.text)
        if match is None:
            raise RuntimeError("no CSRF token on the login page")
        interaction = urllib.parse.parse_qs(urllib.parse.urlsplit(login_url).query)["interaction"][0]
        r = self.http.post(
            self.base + "/login",
            data={"csrf_token": match.group(1) or match.group(2), "interaction": interaction,
                  "username": self.username, "password": PASSWORD},
            allow_redirects=False, timeout=30,
        )
        if r.status_code != 302:
            raise RuntimeError(f"login answered {r.status_code}")
        r = self.http.get(urllib.parse.urljoin(self.base, r.headers["Location"]), allow_redirects=False, timeout=30)
        location = r.headers.get("Location", "")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("code")
        if not code:
            raise RuntimeError(f"no code: {r.status_code} {location[:80]}")
        r = self.http.post(
            self.base + "/token",
            data={"grant_type": "authorization_code", "code": code[0], "redirect_uri": REDIRECT_URI,
                  "code_verifier": verifier},
            headers={"Authorization": basic(*self.client)}, timeout=30,
        )
        if r.status_code != 200 or "id_token" not in r.json():
            raise RuntimeError(f"token exchange answered {r.status_code}")


def run_logins(server: Server, gw: Gateway, duration: int, users: int, profile: Path | None) -> Result:
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    flows = [LoginFlow(server.base, gw.app_client, gw.accounts[i]) for i in range(users)]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    # Warm up each virtual browser once (connections, first-use paths), not counted.
    for flow in flows[:2]:
        with contextlib.suppress(Exception):
            flow.run()
    pids = server.pids()
    spy = start_profile(server, profile, duration)
    before = cpu_seconds(pids)
    started = time.monotonic()
    deadline = started + duration

    def user(flow: LoginFlow) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                flow.run()
                ok = True
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                ok = False
                if errors[0] < 3:
                    log(f"login flow failed: {exc}")
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[0] += 1

    workers = [threading.Thread(target=user, args=(f,), daemon=True) for f in flows]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=duration + 60)
    elapsed = time.monotonic() - started
    used = cpu_seconds(pids) - before
    finish_profile(spy, profile)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(int(p * len(latencies)), len(latencies) - 1)] * 1000 if latencies else 0.0

    return Result(
        rate=len(latencies) / elapsed, per_cpu=len(latencies) / used if used > 0 else 0.0,
        p50_ms=pct(0.50), p99_ms=pct(0.99), errors=errors[0], requests=len(latencies),
        note=f"{users} browsers, 6 requests per flow",
    )


# ---- node-oidc-provider ------------------------------------------------------------------


@dataclass
class Node:
    server: Server
    refresh_tokens: list[str]
    access_token: str
    hops_file: Path
    hops_used: int = 0


def node_folder() -> Path | None:
    """oidc-provider@9 installed under the temporary folder (kept between runs)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        log("node/npm not found: the node-oidc-provider column uses issue 5's figures")
        return None
    folder = Path(tempfile.gettempdir()) / "sso-bench-node"
    folder.mkdir(exist_ok=True)
    if not (folder / "node_modules" / "oidc-provider").exists():
        log(f"installing oidc-provider@9 into {folder} ...")
        (folder / "package.json").write_text('{"name": "sso-bench-node", "private": true}\n')
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "oidc-provider@9"], cwd=folder,
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            log(f"npm install oidc-provider@9 failed; using issue 5's figures\n{done.stderr[-2000:]}")
            return None
    shutil.copy(NODE_DIR / "provider.mjs", folder / "provider.mjs")
    return folder


def node_login(base: str, client_id: str) -> tuple[str, str, str]:
    """A code flow at node-oidc-provider: (session cookie header, refresh token, access token)."""
    import requests

    http = requests.Session()
    verifier, challenge = pkce_pair()
    query = {
        "client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid",
        "state": "bench", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    url = base + "/auth?" + urllib.parse.urlencode(query)
    for _ in range(6):
        r = http.get(url, allow_redirects=False, timeout=10)
        url = urllib.parse.urljoin(url, r.headers["Location"])
        if url.startswith(REDIRECT_URI):
            break
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code"][0]
    r = http.post(base + "/token", data={"grant_type": "authorization_code", "code": code,
                                          "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
                  headers={"Authorization": basic(client_id, NODE_SECRET)}, timeout=10)
    r.raise_for_status()
    body = r.json()
    cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies if c.path == "/")
    return cookie, body["refresh_token"], body["access_token"]


def start_node(folder: Path, workdir: Path, chains: int, sessions: int) -> Node:
    port = free_port()
    log_file = open(workdir / "node.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, "node", "provider.mjs"], cwd=folder,
        env=os.environ | {"PORT": str(port), "BENCH_PORTALS": str(HOP_PORTALS + 1), "NODE_ENV": "production"},
        stdout=log_file, stderr=log_file,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/.well-known/openid-configuration", proc)
    server = Server("node", base, proc, [proc.pid])
    refresh, cookies = [], []
    access = ""
    for i in range(max(chains, sessions)):
        cookie, rt, at = node_login(base, "bench-web-0")
        if i < chains:
            refresh.append(rt)
        if i < sessions:
            cookies.append(cookie)
        access = access or at
    _, challenge = pkce_pair()
    hops = []
    for p in range(1, HOP_PORTALS + 1):
        query = urllib.parse.urlencode({
            "client_id": f"bench-web-{p}", "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid",
            "state": "bench", "code_challenge": challenge, "code_challenge_method": "S256",
        })
        hops.extend(f"{cookie}\t/auth?{query}" for cookie in cookies)
    hops_file = workdir / "node-hops.txt"
    hops_file.write_text("\n".join(hops) + "\n")
    return Node(server, refresh, access, hops_file)


# ---- scenarios -----------------------------------------------------------------------------


def write_tokens(workdir: Path, name: str, tokens: list[str]) -> Path:
    path = workdir / name
    path.write_text("\n".join(tokens) + "\n")
    return path


def scenario(name: str, target: Any, side: str, args: argparse.Namespace, *, profile: Path | None) -> Result:
    """One scenario against one server (side: gateway | node)."""
    c, d = args.connections, args.duration
    if side == "gateway":
        gw: Gateway = target[0]
        server: Server = target[1]
        cc_auth = basic(*gw.cc)
        app_auth = basic(*gw.app_client)
        access, refresh, hops = gw.access_token, gw.refresh_tokens, gw.hops_file
        discovery = "/.well-known/openid-configuration"
        jwks = "/jwks"
        paths = {"token": "/token", "introspect": "/introspect", "userinfo": "/userinfo"}
    else:
        node: Node = target
        server = node.server
        cc_auth = basic("bench-cc", NODE_SECRET)
        app_auth = basic("bench-web-0", NODE_SECRET)
        access, refresh, hops = node.access_token, node.refresh_tokens, node.hops_file
        discovery = "/.well-known/openid-configuration"
        jwks = "/jwks"
        paths = {"token": "/token", "introspect": "/token/introspection", "userinfo": "/me"}
    if name == "discovery":
        return run_wrk(server, discovery, "get.lua", d, connections=c, profile=profile)
    if name == "jwks":
        return run_wrk(server, jwks, "get.lua", d, connections=c, profile=profile)
    if name == "client_credentials":
        return run_wrk(server, paths["token"], "post.lua", d, connections=c, profile=profile,
                       env={"BENCH_BODY": "grant_type=client_credentials", "BENCH_AUTH": cc_auth})
    if name == "introspection":
        return run_wrk(server, paths["introspect"], "post.lua", d, connections=c, profile=profile,
                       env={"BENCH_BODY": f"token={access}&token_type_hint=access_token", "BENCH_AUTH": app_auth})
    if name == "userinfo":
        return run_wrk(server, paths["userinfo"], "get.lua", d, connections=c, profile=profile,
                       env={"BENCH_AUTH": f"Bearer {access}"})
    if name == "refresh":
        n = min(c, len(refresh))
        chains = refresh[:n]
        del refresh[:n]  # a chain is spent after one run: the next run starts new ones
        path = write_tokens(args.workdir, f"{side}-refresh-{len(refresh)}.txt", chains)
        return run_wrk(server, paths["token"], "refresh.lua", d, connections=n, threads=n, profile=profile,
                       env={"BENCH_TOKENS": str(path), "BENCH_AUTH": app_auth})
    if name == "sso_hop":
        if hops is None:
            raise SystemExit("sso_hop needs sessions (--backend production)")
        # Each run goes on where the last one stopped (warm-up included), so that no
        # (session, portal) pair hops twice until the file is spent.
        holder = target[0] if side == "gateway" else target
        result = run_wrk(server, "/", "hop.lua", d, connections=c, profile=profile,
                         env={"BENCH_HOPS": str(hops), "BENCH_HOPS_START": str(holder.hops_used)})
        holder.hops_used += result.requests + c  # and those in flight when wrk stopped
        return result
    raise ValueError(name)


def fmt(result: Result | None) -> list[str]:
    if result is None:
        return ["–", "–", "–", "–", "–"]
    return [f"{result.rate:,.0f}", f"{result.per_cpu:,.0f}", f"{result.p50_ms:.2f}", f"{result.p99_ms:.2f}",
            str(result.errors)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=ALL + EXTRA,
                        help="repeatable; default: all but 'portals'")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--backend", choices=["production", "embedded"], default="production")
    parser.add_argument("--threads", type=int, default=4, help="threads in the one worker (default 4)")
    parser.add_argument("--wsgi-server", choices=["gunicorn", "granian"], default="granian",
                        help="sso serve --production --server ... (default granian, as sso serve)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--login-users", type=int, default=8, help="virtual browsers for 'login' (default 8)")
    parser.add_argument("--sessions", type=int, default=20_000, help="SSO sessions in the store (default 20,000)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per scenario and server; the median is shown")
    parser.add_argument("--no-node", action="store_true", help="skip node-oidc-provider")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the gateway worker into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the database and the work folder")
    args = parser.parse_args()
    scenarios = args.scenario or ALL
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    if args.backend == "embedded" and "sso_hop" in scenarios:
        log("sso_hop needs sessions made in a shared store: skipped with --backend embedded")
        scenarios = [s for s in scenarios if s != "sso_hop"]
    args.workdir = Path(tempfile.mkdtemp(prefix="sso-bench-"))
    chains = args.connections * (args.rounds + 1) * (2 if "portals" in scenarios else 1)
    log(f"work folder {args.workdir}; seeding ({args.sessions:,} sessions) ...")
    t0 = time.monotonic()
    gw = prepare_gateway(args.backend, args.workdir, args.sessions if "sso_hop" in scenarios else 0, chains)
    log(f"seeded in {time.monotonic() - t0:.0f} s")
    server: Server | None = None
    node: Node | None = None
    ours: dict[str, list[Result]] = {}
    theirs: dict[str, list[Result]] = {}
    extra: list[str] = []
    try:
        server = start_gateway(gw, args.backend, args.threads, args.wsgi_server)
        folder = None if args.no_node else node_folder()
        wanted_node = [s for s in scenarios if s in ISSUE_NODE or s == "userinfo"]
        if folder is not None and wanted_node:
            node = start_node(folder, args.workdir, chains, sessions=64)
        # Warm-up: every code path once, not counted.
        for name in scenarios:
            if name in ("login", "portals"):
                continue
            for side, target in (("gateway", (gw, server)), ("node", node)):
                if target is None or (side == "node" and name not in wanted_node):
                    continue
                scenario(name, target, side, argparse.Namespace(**{**vars(args), "duration": 2}), profile=None)
        for rnd in range(args.rounds):
            for name in scenarios:
                if name == "portals":
                    continue
                prof = args.profile / f"{name}.txt" if args.profile and rnd == 0 else None
                pin_database_backends(gw)
                if name == "login":
                    r = run_logins(server, gw, args.duration, args.login_users, prof)
                    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                else:
                    r = scenario(name, (gw, server), "gateway", args, profile=prof)
                ours.setdefault(name, []).append(r)
                log(f"round {rnd + 1} {name:18} gateway {r.rate:9,.0f}/s p50 {r.p50_ms:.2f} ms "
                    f"p99 {r.p99_ms:.2f} ms errors {r.errors}")
                if node is not None and name in wanted_node:
                    r = scenario(name, node, "node", args, profile=None)
                    theirs.setdefault(name, []).append(r)
                    log(f"round {rnd + 1} {name:18} node    {r.rate:9,.0f}/s p50 {r.p50_ms:.2f} ms "
                        f"p99 {r.p99_ms:.2f} ms errors {r.errors}")
        if "portals" in scenarios:
            extra.extend(portals_scale(gw, server, args))
    finally:
        if server is not None:
            stop(server.proc)
        if node is not None:
            stop(node.server.proc)
        stop(gw.redis)
        if gw.db_name and not args.keep:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{gw.db_name}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)

    def med(results: list[Result] | None) -> Result | None:
        if not results:
            return None
        return sorted(results, key=lambda r: r.rate)[len(results) // 2]

    print()
    print(f"backend {args.backend}; gateway: sso serve --production --server {args.wsgi_server}, 1 worker x "
          f"{args.threads} threads on core {SERVER_CORE}; its PostgreSQL backends and Redis on core {LOAD_CORE}; "
          f"load on core {LOAD_CORE}: wrk -c{args.connections} (refresh: -tN -cN), {args.duration} s per run, "
          f"median of {args.rounds}")
    print()
    print("| scenario | gateway /s | gateway /CPU-s | p50 ms | p99 ms | errors | node /s | node /CPU-s | "
          "node p50 | node p99 | node errors | gateway/node | target | met |")
    print("|---|" + "---|" * 13)
    for name in scenarios:
        if name == "portals":
            continue
        o, t = med(ours.get(name)), med(theirs.get(name))
        ratio = f"{o.rate / t.rate:.2f}" if o and t and t.rate else "–"
        target = TARGETS.get(name)
        met = "–" if target is None or o is None else ("yes" if o.rate >= target else f"no ({o.rate / target:.0%})")
        tgt = f"≥ {target:,}" if target else "–"
        unit = " flows" if name in ("sso_hop", "login") else ""
        print(f"| {name}{unit} | " + " | ".join(fmt(o)) + " | " + " | ".join(fmt(t)) +
              f" | {ratio} | {tgt} | {met} |")
    if gw.session_memory:
        m = gw.session_memory
        print()
        print(f"Redis memory per SSO session ({m['sessions']:,} sessions in a private redis-server): "
              f"used_memory delta {m['used_memory_delta_per_session']:.0f} B/session; "
              f"MEMORY USAGE mean {m['memory_usage_mean']:.0f} B (value {m['value_bytes_mean']:.0f} B)")
    for line in extra:
        print(line)


def portals_scale(gw: Gateway, server: Server, args: argparse.Namespace) -> list[str]:
    """client_credentials and introspection with 10 portals, then with 10,000."""
    out: dict[str, list[Result]] = {}
    for total in (BASE_PORTALS, SCALE_PORTALS):
        if total > BASE_PORTALS:
            t0 = time.monotonic()
            add_portals(gw, total)
            log(f"registered {total:,} portals in {time.monotonic() - t0:.0f} s")
        for _ in range(max(args.rounds, 1)):
            for name in ("client_credentials", "introspection"):
                r = scenario(name, (gw, server), "gateway", args, profile=None)
                out.setdefault(f"{name}@{total}", []).append(r)
                log(f"portals={total:,} {name:18} {r.rate:9,.0f}/s p50 {r.p50_ms:.2f} ms errors {r.errors}")
    lines = ["", f"| scenario | {BASE_PORTALS} portals /s | {SCALE_PORTALS:,} portals /s | ratio | "
             f"p50 ms {BASE_PORTALS} → {SCALE_PORTALS:,} |", "|---|---|---|---|---|"]
    for name in ("client_credentials", "introspection"):
        small = statistics.median(r.rate for r in out[f"{name}@{BASE_PORTALS}"])
        large = statistics.median(r.rate for r in out[f"{name}@{SCALE_PORTALS}"])
        p_small = statistics.median(r.p50_ms for r in out[f"{name}@{BASE_PORTALS}"])
        p_large = statistics.median(r.p50_ms for r in out[f"{name}@{SCALE_PORTALS}"])
        lines.append(f"| {name} | {small:,.0f} | {large:,.0f} | {large / small:.2f} | {p_small:.2f} → {p_large:.2f} |")
    return lines


if __name__ == "__main__":
    main()
