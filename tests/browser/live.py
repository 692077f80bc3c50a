"""Real processes for the browser journeys: ``sso serve`` and the two example portals.

The gateway is started as ``sso serve`` (demo data, SQLite + the embedded store,
its background notifier delivering back-channel logouts) on a free port, the
portals (examples/tax_portal, examples/social_portal) are registered with the
``sso`` CLI for their own free ports and back-channel URIs and started as
``python examples/.../app.py``, the way examples/README.md tells a portal
developer to.  Nothing here imports the gateway: the tests see it over HTTP,
read its SQLite file read-only and its development SMS outbox.

Also the small browser helpers the journeys share: what a portal page shows,
the gateway's sign-in and consent forms, and a recorder of every request a tab
makes (to prove a page was never shown).
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sso.bootstrap import DEMO_CITIZEN_PASSWORDS, DEMO_PORTAL_SCOPE
from sso.connectors.demo_data import DEMO_AGENT, DEMO_CITIZEN
from tests.e2e.conftest import Gateway, free_port, start_gateway
from tests.e2e.conftest import _stop as stop_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 15
# What every journey gateway runs with: the notifier wakes every second (session
# expiry, logout retries), and a portal that does not answer is given up after two tries.
# A portal disabled with the CLI (another process) is refused at the next request: no
# client cache (its staleness bound, client_cache_ttl, is tested in test_client_cache.py).
BASE_SETTINGS = {
    "SSO_DEMO": "true",
    "SSO_BACKGROUND_INTERVAL": "1",
    "SSO_LOGOUT_MAX_ATTEMPTS": "2",
    "SSO_LOG_FORMAT": "text",
    "SSO_CLIENT_CACHE_TTL": "0",
}
PORTAL_NAMES = {"tax_portal": "电子税务局 Tax service", "social_portal": "社会保障服务 Social-security service"}


# ---- processes ------------------------------------------------------------------------------------


@dataclass
class LivePortal:
    client_id: str
    name: str  # as registered: the gateway shows it on its login and consent pages
    base: str
    secret: str
    log: Path
    proc: Popen[bytes]

    @property
    def home(self) -> str:
        return self.base + "/"

    @property
    def callback(self) -> str:
        return self.base + "/callback"

    def stop(self) -> None:
        stop_process(self.proc)


def _ready(proc: Popen[bytes], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            requests.get(url, allow_redirects=False, timeout=1)
            return True
        except requests.RequestException:
            time.sleep(0.05)
    return False


@dataclass
class Site:
    """A running gateway and the portals registered with it."""

    gateway: Gateway
    instance: Path
    procs: list[Popen[bytes]] = field(default_factory=list)
    portals: dict[str, LivePortal] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.gateway.issuer

    @property
    def tax(self) -> LivePortal:
        return self.portals["tax"]

    @property
    def social(self) -> LivePortal:
        return self.portals["social"]

    def start_portal(self, key: str, app: str, client_id: str, name: str | None = None) -> LivePortal:
        """Register ``client_id`` for a free port with the CLI and start ``examples/<app>/app.py`` there."""
        name = name or PORTAL_NAMES[app]
        secret = None
        for attempt in range(3):
            base = f"http://127.0.0.1:{free_port()}"
            uris = [
                "--redirect-uri",
                base + "/callback",
                "--post-logout-redirect-uri",
                base + "/",
                "--backchannel-logout-uri",
                base + "/backchannel-logout",
            ]
            if secret is None:
                create = ["clients", "create", "--client-id", client_id, "--name", name, "--scope", DEMO_PORTAL_SCOPE]
                secret = json.loads(self.gateway.cli(*create, *uris, "--json"))["client_secret"]
            else:  # the port was taken meanwhile: follow the new one
                self.gateway.cli("clients", "update", client_id, *uris)
            log = self.instance / f"{client_id}-{attempt}.log"
            command = [
                sys.executable,
                str(EXAMPLES / app / "app.py"),
                "--issuer",
                self.issuer,
                "--client-id",
                client_id,
                "--port",
                base.rsplit(":", 1)[1],
            ]
            env = {**self.gateway.env, "PORTAL_CLIENT_SECRET": secret}  # not on the command line
            with log.open("wb") as out:
                proc = Popen(command, env=env, stdin=DEVNULL, stdout=out, stderr=STDOUT)
            self.procs.append(proc)
            if _ready(proc, base + "/backchannel-logout", time.monotonic() + 30):
                portal = LivePortal(client_id, name, base, secret, log, proc)
                self.portals[key] = portal
                return portal
            stop_process(proc)
            if "Address already in use" not in log.read_text(errors="replace"):
                pytest.fail(f"{app} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        pytest.fail(f"no free port for {app} after 3 attempts")

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)

    # ---- what the gateway recorded ------------------------------------------------------------

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows from the gateway's SQLite file, opened read-only."""
        uri = (self.instance / "sso.sqlite3").as_uri() + "?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=5) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, args)]

    def deliveries(self, client_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM logout_deliveries WHERE client_id = ? ORDER BY id", client_id)

    def sms_code(self, phone: str) -> str:
        """The six digits of the last SMS the development outbox holds for ``phone``."""
        outbox = self.instance / "sms-outbox.jsonl"
        rows = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines() if line]
        text = [r["text"] for r in rows if r["to"] == phone][-1]
        found = re.search(r"(?<!\d)\d{6}(?!\d)", text)
        assert found, text
        return found.group()


def start_site(instance: Path, **settings: str) -> Site:
    """``sso serve`` with the demo data and ``settings`` (SSO_* variables), and both example portals."""
    proc, gateway = start_gateway(instance, {**BASE_SETTINGS, **settings})
    site = Site(gateway, instance, [proc])
    try:
        site.start_portal("tax", "tax_portal", "tax-journey")
        site.start_portal("social", "social_portal", "social-journey")
    except BaseException:
        site.close()
        raise
    return site


# ---- the browser side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Citizen:
    name: str
    id_number: str  # what they sign in with
    password: str
    phone: str


ZHANG_SAN = Citizen(
    DEMO_CITIZEN.name, DEMO_CITIZEN.id_number, DEMO_CITIZEN_PASSWORDS[DEMO_CITIZEN.name], DEMO_CITIZEN.phone
)
ZHAO_MIN = Citizen(DEMO_AGENT.name, DEMO_AGENT.id_number, DEMO_CITIZEN_PASSWORDS[DEMO_AGENT.name], DEMO_AGENT.phone)


def signed_in_as(page: Any) -> str | None:
    """The name a portal page shows, or None when it shows nobody signed in."""
    who = page.locator("#who")
    if who.get_attribute("data-signed-in") != "yes":
        return None
    return str(page.locator("#name").inner_text())


def wait_signed_out(page: Any, portal: LivePortal, seconds: float = 5.0) -> float:
    """Reload the portal until it shows nobody signed in; returns how long that took."""
    start = time.monotonic()
    while True:
        page.goto(portal.home)
        if signed_in_as(page) is None:
            return time.monotonic() - start
        assert time.monotonic() - start < seconds, f"{portal.client_id} still shows {signed_in_as(page)} signed in"
        time.sleep(0.2)


def sign_in(page: Any, username: str, password: str) -> None:
    """Fill the gateway's login form (the page must show it)."""
    page.locator("form#login-form input[name=username]").fill(username)
    page.locator("form#login-form input[name=password]").fill(password)
    page.locator("form#login-form button[type=submit]").click()
    page.wait_for_load_state()


def allow(page: Any) -> None:
    page.locator("form#consent-form button[name=decision][value=allow]").click()
    page.wait_for_load_state()


def path_of(url: str) -> str:
    return urlsplit(url).path


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


class Requests:
    """Every request a tab makes (redirect hops included), with the answer's status."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.seen: list[tuple[str, str]] = []  # (method, url)
        self.documents: list[tuple[int, str]] = []  # (status, url) of each main-frame document
        self._on_request: Callable[[Any], None] = lambda r: self.seen.append((r.method, r.url))
        self._on_response: Callable[[Any], None] = self._response
        page.on("request", self._on_request)
        page.on("response", self._on_response)

    def _response(self, response: Any) -> None:
        request = response.request
        if request.resource_type == "document" and request.frame == self.page.main_frame:
            self.documents.append((response.status, response.url))

    def clear(self) -> None:
        self.seen.clear()
        self.documents.clear()

    def urls(self, origin: str, path: str | None = None) -> list[str]:
        return [u for _, u in self.seen if u.startswith(origin + "/") and (path is None or path_of(u) == path)]

    def pages_shown(self, origin: str) -> list[str]:
        """Documents from ``origin`` that the tab rendered (answers other than a redirect)."""
        return [u for status, u in self.documents if u.startswith(origin + "/") and not 300 <= status < 400]
