"""Which WSGI server for ``sso serve --production``: granian or gunicorn, measured.

Each server runs one worker process pinned to CPU core 1 (``taskset -c 1``); the
load generator, wrk, runs pinned to core 0, so the figure is what one core of
server gives.  Three targets:

* ``trivial``: a Flask view returning "ok" (what the server itself costs);
* ``discovery``: the gateway's ``/.well-known/openid-configuration``;
* ``token``: the gateway's ``POST /token`` with ``client_credentials``
  (client_secret_basic, an RS256-signed JWT access token), on PostgreSQL + Redis.

All servers are started once and the runs are interleaved round by round, so
noise from a shared machine falls on both alike; the median of the rounds is
reported.  Loopback only; every run is bounded in time.

    .venv/bin/python benchmarks/wsgi/measure.py [--rounds 3] [--duration 10]

Needs wrk (Debian: ``apt-get install wrk``), granian and gunicorn in the venv,
PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import base64
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
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
THREADS = 4  # per worker, for both servers
SERVER_CORE, LOAD_CORE = "1", "0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(server: str, target: str, port: int) -> list[str]:
    if server == "granian":
        return [
            str(BIN / "granian"), "--interface", "wsgi", "--workers", "1",
            "--blocking-threads", str(THREADS), "--runtime-threads", "1", "--no-ws",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", target,
        ]
    if server == "gunicorn":
        return [
            str(BIN / "gunicorn"), "--workers", "1", "--worker-class", "gthread", "--threads", str(THREADS),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", target,
        ]
    raise ValueError(server)


def wait_ready(url: str, proc: subprocess.Popen[bytes], limit: float = 60) -> None:
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


def wrk(url: str, duration: int, script: Path | None) -> tuple[float, int]:
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c16", f"-d{duration}s", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        print("   ", errors.group(0), file=sys.stderr)
    return rps, int(bad.group(1)) if bad else 0


def prepare_gateway(workdir: Path) -> tuple[dict[str, str], str]:
    """A fresh PostgreSQL database, keys, and one client_credentials portal."""
    import psycopg
    import redis

    name = "sso_bench_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        SSO_ISSUER="http://127.0.0.1:5000",
        SSO_DEVELOPMENT="true",
        SSO_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        SSO_REDIS_URL=REDIS_URL,
        SSO_KEY_ENCRYPTION_KEY=kek,
        SSO_INSTANCE_PATH=str(workdir),
        SSO_KEY_PUBLISH_LEAD="0",
    )
    sso = str(BIN / "sso")
    subprocess.run([sso, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run(
        [sso, "clients", "create", "--name", "bench", "--grant-type", "client_credentials",
         "--scope", "profile", "--json"],
        env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    reg = json.loads(out)
    basic = base64.b64encode(f"{reg['client_id']}:{reg['client_secret']}".encode()).decode()
    return env | {"BENCH_DB": name}, basic


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--servers", default="granian,gunicorn")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    servers = args.servers.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="sso-bench-"))
    env, basic = prepare_gateway(workdir)
    token_lua = workdir / "token.lua"
    token_lua.write_text(
        'wrk.method = "POST"\n'
        'wrk.body = "grant_type=client_credentials"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Authorization"] = "Basic {basic}"\n'
    )
    targets = {
        "trivial": ("trivial:app", "/", None),
        "discovery": ("sso.wsgi:app", "/.well-known/openid-configuration", None),
        "token": ("sso.wsgi:app", "/token", token_lua),
    }
    procs: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for server in servers:
            for app in sorted({t[0] for t in targets.values()}):
                port = free_port()
                proc = subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, *server_command(server, app, port)],
                    cwd=ROOT / "benchmarks" / "wsgi", env=env | {"PYTHONPATH": str(ROOT)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                procs[(server, app)] = (proc, port)
                probe = "/" if app == "trivial:app" else "/.well-known/openid-configuration"
                wait_ready(f"http://127.0.0.1:{port}{probe}", proc)
        for rnd in range(args.rounds + 1):  # round 0 warms up and is not counted
            for name, (app, path, script) in targets.items():
                for server in servers:
                    proc, port = procs[(server, app)]
                    duration = 3 if rnd == 0 else args.duration
                    rps, bad = wrk(f"http://127.0.0.1:{port}{path}", duration, script)
                    if bad:
                        raise SystemExit(f"{server} {name}: {bad} non-2xx responses")
                    if rnd:
                        results.setdefault((server, name), []).append(rps)
                        print(f"round {rnd} {name:9} {server:8} {rps:9.1f} req/s", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(env["BENCH_DB"])
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"| target | {' | '.join(servers)} | ratio {servers[0]}/{servers[-1]} |")
    print(f"|---|{'---|' * len(servers)}---|")
    for name in targets:
        runs = [results[(s, name)] for s in servers]
        med = [statistics.median(r) for r in runs]
        spread = [f"{m:.0f} ({min(r):.0f}–{max(r):.0f})" for m, r in zip(med, runs, strict=True)]
        print(f"| {name} | {' | '.join(spread)} | {med[0] / med[-1]:.2f} |")


if __name__ == "__main__":
    main()
