"""Workers killed mid-request: a real ``sso serve --production`` on PostgreSQL + Redis.

During a burst of refresh-token rotations, first one worker and then the whole
server (master and workers, SIGKILL: no clean-up at all) die; the server is
started again on the same database.  Then:

* nothing committed is lost: refresh tokens issued before the kill and never
  used work exactly once;
* nothing is half-issued: the last token of each rotating chain whose answer
  was lost either still works exactly once (its rotation never committed) or
  counts as used (it committed; the answer died with the process) — never both;
* a token whose answer arrived works exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.backends import pg_url, redis_url  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SSO = Path(sys.executable).with_name("sso")
USERNAME, PASSWORD = "worker-test", "worker test password 2026"
REDIRECT = "https://portal.example.gov.cn/callback"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(SSO), *args], env=self.env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(SSO), "serve", "--production", "--workers", "2", "--threads", "4", "--port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killpg reaches master and workers
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail("the gateway did not become ready:\n" + self.log.read_text()[-3000:])

    def workers(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_everything(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "processes of the killed server are still there"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with_group = self.proc.pid
            os.killpg(with_group, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Server]:  # noqa: F811
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSO_", "PROMETHEUS_"))}
    env.update(
        SSO_ISSUER=f"http://127.0.0.1:{port}",
        SSO_DEVELOPMENT="true",
        SSO_DATABASE_URL=pg_url,
        SSO_REDIS_URL=redis_url,
        SSO_INSTANCE_PATH=str(tmp_path / "instance"),
        SSO_KEY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
        SSO_KEY_PUBLISH_LEAD="0",
        PYTHONUNBUFFERED="1",
    )
    srv = Server(env, port, tmp_path / "serve.log")
    srv.cli("accounts", "create", "--username", USERNAME, "--name", "Worker Test", "--password", PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" type="hidden" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def refresh_token_for(srv: Server, browser: requests.Session, client_id: str, secret: str) -> str:
    """One authorization code flow through the pages, as a browser and a portal would."""
    verifier, challenge = pkce()
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid",
             "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
    response = browser.get(srv.base + "/authorize?" + urlencode(query), allow_redirects=False, timeout=15)
    for _ in range(8):
        location = response.headers["Location"]
        if location.startswith(REDIRECT):
            break
        url = location if location.startswith("http") else srv.base + location
        page = browser.get(url, allow_redirects=False, timeout=15)
        path = urlsplit(url).path
        if path == "/login" and page.status_code == 200:
            data = {"csrf_token": hidden(page.text, "csrf_token"), "interaction": hidden(page.text, "interaction"),
                    "username": USERNAME, "password": PASSWORD}
            response = browser.post(srv.base + "/login", data=data, allow_redirects=False, timeout=15)
        elif path == "/consent" and page.status_code == 200:
            data = {"csrf_token": hidden(page.text, "csrf_token"), "interaction": hidden(page.text, "interaction"),
                    "decision": "allow"}
            response = browser.post(srv.base + "/consent", data=data, allow_redirects=False, timeout=15)
        else:
            response = page
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    token = requests.post(srv.base + "/token", auth=(client_id, secret), timeout=15, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert token.status_code == 200, token.text
    return str(token.json()["refresh_token"])


def rotate(srv: Server, client_id: str, secret: str, token: str) -> requests.Response:
    return requests.post(srv.base + "/token", auth=(client_id, secret), timeout=10,
                         data={"grant_type": "refresh_token", "refresh_token": token})


def works_exactly_once(srv: Server, client_id: str, secret: str, token: str) -> None:
    first = rotate(srv, client_id, secret, token)
    assert first.status_code == 200, first.text
    assert first.json()["refresh_token"] and first.json()["access_token"]
    second = rotate(srv, client_id, secret, token)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant", second.text


class Chain:
    """One portal's refresh token, rotated in a loop until the server dies."""

    def __init__(self, token: str) -> None:
        self.confirmed = token  # the last token the portal received
        self.lost_answer = False  # a rotation of `confirmed` was sent and its answer never came
        self.rotations = 0

    def run(self, srv: Server, client_id: str, secret: str, stop: threading.Event, errors: list[str]) -> None:
        while not stop.is_set():
            try:
                response = rotate(srv, client_id, secret, self.confirmed)
            except requests.RequestException:
                self.lost_answer = True
                time.sleep(0.02)
                continue  # the worker died: try again (another worker, or the restarted server)
            if response.status_code == 200:
                self.confirmed, self.lost_answer = response.json()["refresh_token"], False
                self.rotations += 1
            elif response.status_code == 400 and self.lost_answer:
                return  # the lost rotation had committed: the token counts as used
            else:
                errors.append(f"{response.status_code} {response.text[:200]}")
                return


def test_killed_workers_lose_nothing_committed_and_half_issue_nothing(server: Server) -> None:
    reg = server.cli("clients", "create", "--name", "Killed", "--redirect-uri", REDIRECT, "--json")
    import json

    registration: dict[str, Any] = json.loads(reg)
    client_id, secret = registration["client_id"], registration["client_secret"]
    server.start()
    browser = requests.Session()
    spare = [refresh_token_for(server, browser, client_id, secret) for _ in range(3)]
    chains = [Chain(refresh_token_for(server, browser, client_id, secret)) for _ in range(6)]

    # Phase 1: one worker is SIGKILLed mid-burst; the master replaces it, the burst goes on.
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=c.run, args=(server, client_id, secret, stop, errors)) for c in chains]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(2.0)
    assert victim not in server.workers() and len(server.workers()) == 2, "the master did not replace the worker"
    before = sum(c.rotations for c in chains)
    time.sleep(1.0)
    assert sum(c.rotations for c in chains) > before, "no rotation succeeded after the worker was replaced"

    # Phase 2: everything is SIGKILLed mid-burst, then started again on the same database.
    server.kill_everything()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    server.start()

    for token in spare:  # issued before the kills, never used: committed, works once
        works_exactly_once(server, client_id, secret, token)
    outcomes = {"worked once": 0, "counted as used": 0}
    for chain in chains:
        if not chain.lost_answer:
            works_exactly_once(server, client_id, secret, chain.confirmed)
            outcomes["worked once"] += 1
            continue
        # The answer was lost: either outcome, but consistently.
        first = rotate(server, client_id, secret, chain.confirmed)
        if first.status_code == 200:
            again = rotate(server, client_id, secret, chain.confirmed)
            assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
            outcomes["worked once"] += 1
        else:
            assert first.status_code == 400 and first.json()["error"] == "invalid_grant", first.text
            outcomes["counted as used"] += 1
    assert sum(outcomes.values()) == len(chains), outcomes
