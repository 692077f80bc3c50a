"""Start-up work outside requests: migrate the schema, make keys, seed the demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import clients
from .connectors.local import create_account
from .db import db, statistics_warning, upgrade
from .models import Account, Client

DEMO_USER = ("demo", "demo-password-2026", "演示用户")
# Registry-verified citizens (from the mock population registry) and their passwords.
DEMO_CITIZEN_PASSWORDS = {"张三": "Zhangsan-2026", "赵敏": "Zhaomin-2026"}
# The example portals under examples/ (run by scripts/dev.sh): single sign-on and
# single logout between two services, as a citizen sees it.
DEMO_PORTALS = [
    {"client_id": "tax-portal", "name": "电子税务局 Tax service", "port": 5001},
    {"client_id": "social-portal", "name": "社会保障服务 Social-security service", "port": 5002},
]
DEMO_PORTAL_SCOPE = "openid profile phone address cn_identity cn_legal_person"


def prepare(app: Flask) -> dict[str, Any] | None:
    """Migrate, ensure signing keys, and seed demo data when configured.

    Returns what ``seed_demo`` returns when the demo is on, else None.
    """
    settings = app.extensions["sso"].settings
    upgrade(settings.resolved_database_url)
    with app.app_context():
        with db.engine.connect() as connection:
            warning = statistics_warning(connection)
        if warning:
            import logging

            logging.getLogger("sso.db").warning(warning)
        app.extensions["sso"].keys.ensure_keys()
        if settings.demo:
            return seed_demo(app)
    return None


def seed_demo(app: Flask) -> dict[str, Any]:
    """A demo account, demo portals and the demo registry records.

    Portal secrets are written to the instance folder (0600), never printed.  With
    the default connectors, the mock registries file under the instance folder
    gets the fixed demo people and enterprises (``sso.connectors.demo_data``);
    records already there, e.g. from ``scripts/generate_registries.py``, stay.
    """
    settings = app.extensions["sso"].settings
    if not settings.connectors:
        from .connectors.sqlregistry import seed_demo_registry, url_for_path

        seed_demo_registry(url_for_path(str(Path(settings.instance_path) / "registry.sqlite3")))
    username, password, name = DEMO_USER
    if db.session.execute(db.select(Account).filter_by(username=username)).scalar_one_or_none() is None:
        create_account(username, password, name)
    citizens = seed_demo_citizens()
    portals = seed_demo_portals(Path(settings.instance_path) / "demo-clients.json", settings.issuer)
    return {"username": username, "password": password, "clients": portals, "citizens": citizens}


def demo_registration(portal: dict[str, Any]) -> dict[str, Any]:
    """What a demo portal is registered with: its URIs follow its port on 127.0.0.1."""
    base = f"http://127.0.0.1:{portal['port']}"
    return {
        "name": portal["name"],
        "redirect_uris": [base + "/callback"],
        "post_logout_redirect_uris": [base + "/"],
        "backchannel_logout_uri": base + "/backchannel-logout",
        "scope": DEMO_PORTAL_SCOPE,
    }


def seed_demo_portals(path: Path, issuer: str) -> dict[str, dict[str, Any]]:
    """Register DEMO_PORTALS; their secrets (and the issuer) go to ``path`` (0600) for the portals.

    A portal registered by an earlier start keeps its secret; its registration is
    brought up to date.  A registration whose secret was lost is made again.
    Entries of ``path`` for other client ids are kept as they are.
    """
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    portals: dict[str, dict[str, Any]] = {}
    for portal in DEMO_PORTALS:
        cid = portal["client_id"]
        wanted = demo_registration(portal)
        exists = db.session.execute(db.select(Client).filter_by(client_id=cid)).scalar_one_or_none()
        if exists is not None and cid in saved:
            secret = saved[cid]["client_secret"]
            if any(getattr(exists, field) != value for field, value in wanted.items()):
                clients.update_client(cid, **wanted)
        else:
            if exists is not None:
                db.session.delete(exists)
                db.session.commit()
            secret = clients.create_client(client_id=cid, **wanted).client_secret
        portals[cid] = saved[cid] = {
            "client_id": cid,
            "client_secret": secret,
            "name": portal["name"],
            "base_url": f"http://127.0.0.1:{portal['port']}",
            "issuer": issuer,
        }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh, indent=2, ensure_ascii=False)
    return portals


def seed_demo_citizens() -> list[dict[str, str]]:
    """Register the demo citizens as a person would: real-name verification first."""
    from .accounts import VerificationFailed, find_by_id_number, register_citizen, verify_real_name
    from .connectors.demo_data import DEMO_AGENT, DEMO_CITIZEN

    seeded = []
    for person in (DEMO_CITIZEN, DEMO_AGENT):
        password = DEMO_CITIZEN_PASSWORDS[person.name]
        if find_by_id_number(person.id_number) is None:
            try:
                register_citizen(verify_real_name(person.name, person.id_number), password, person.phone)
            except VerificationFailed:
                continue  # a configured registry without the demo people
        seeded.append({"name": person.name, "id_number": person.id_number, "phone": person.phone, "password": password})
    return seeded
