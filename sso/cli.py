"""The ``sso`` command line: thin click commands over plain service functions."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from flask import Flask

from .config import ConfigError, load_settings


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def build_app(ctx: click.Context, **overrides: Any) -> Flask:
    from . import create_app
    from .crypto import KeyEncryptionKeyError

    try:
        settings = load_settings(ctx.obj.get("config"), overrides=overrides)
        return create_app(settings)
    except ConfigError as exc:
        _fail(str(exc))
    except KeyEncryptionKeyError as exc:
        _fail(f"invalid configuration:\n  - {exc}")
    except OSError as exc:
        # e.g. the instance folder cannot be created or read
        _fail(f"cannot start: {exc}")


def prepare_app(app: Flask) -> dict[str, Any] | None:
    """Migrate and make keys; a database or key problem is a clear error, not a traceback."""
    from .bootstrap import prepare

    with startup_errors(app):
        return prepare(app)
    raise AssertionError("unreachable")  # pragma: no cover - startup_errors exits


@contextlib.contextmanager
def startup_errors(app: Flask) -> Iterator[None]:
    from cryptography.exceptions import InvalidTag
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        url = app.extensions["sso"].settings.resolved_database_url
        _fail(f"cannot use the database {_safe_url(url)}: {exc.orig or exc}")
    except InvalidTag:
        _fail(
            "the signing keys in the database cannot be decrypted: they were sealed under a "
            "different key-encryption key (check key_encryption_key / SSO_KEY_ENCRYPTION_KEY, "
            "or the key file in instance_path)"
        )


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return "(configured database)"


def with_app(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command inside an app context with the schema migrated."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        app = build_app(ctx)
        prepare_app(app)
        with app.app_context():
            return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else text)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config file (or SSO_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Unified identity and single sign-on gateway."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


# ---- serving --------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--production",
    is_flag=True,
    help="Serve with granian (or --server gunicorn): several worker processes, wedged workers replaced after "
    "--timeout, a graceful stop on TERM.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="With --production: processes (default: one per core)."
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="With --production: threads per worker (default: 4)."
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="With --production: seconds before a worker that stopped answering is killed and replaced.",
)
@click.option(
    "--allow-embedded",
    is_flag=True,
    help="With --production: accept SQLite and the in-process store (one worker, one machine).",
)
@click.option(
    "--server",
    "wsgi_server",
    type=click.Choice(["gunicorn", "granian"]),
    default="granian",
    show_default=True,
    help="With --production: the WSGI server (granian: faster, wedged workers end themselves after --timeout; "
    "gunicorn: threaded workers, its master replaces wedged ones).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    production: bool,
    workers: int | None,
    threads: int | None,
    timeout: int,
    allow_embedded: bool,
    wsgi_server: str,
) -> None:
    """Run the gateway: Flask's threaded server, or granian (or gunicorn) with --production."""
    from . import logs

    if production:
        _serve_production(ctx, host, port, workers, threads, timeout, allow_embedded, wsgi_server)
        return
    server_given = ctx.get_parameter_source("wsgi_server") is not click.core.ParameterSource.DEFAULT
    if workers is not None or threads is not None or allow_embedded or server_given:
        _fail("--workers, --threads, --server and --allow-embedded apply only with --production")
    app = build_app(ctx)
    settings = app.extensions["sso"].settings
    logs.configure(settings.log_format, settings.log_level)
    prepare_app(app)
    click.echo(f"Gateway at {settings.issuer}")
    app.extensions["sso_notifier"].start()  # back-channel logouts, session expiry
    app.run(host=host, port=port, threaded=True, use_reloader=False)


def _serve_production(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int | None,
    threads: int | None,
    timeout: int,
    allow_embedded: bool,
    wsgi_server: str = "granian",
) -> None:
    import logging

    from . import logs, server

    # Configuration and backend problems together, in one message.
    try:
        settings = load_settings(ctx.obj.get("config"))
        problems = server.embedded_problems(settings, workers, allow_embedded)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        _fail(str(ConfigError(problems)))
    if workers is None:
        workers = 1 if allow_embedded and not settings.redis_url else server.default_workers()
    with server.multiprocess_metrics_dir():  # before anything imports prometheus_client
        app = build_app(ctx)
        logs.configure(settings.log_format, settings.log_level)
        prepare_app(app)
        # The workers build their own apps: no pooled connection crosses the fork.
        from .db import db

        with app.app_context():
            db.engine.dispose()
        close = getattr(app.extensions["sso"].store, "close", None)
        if close is not None:
            close()
        threads = threads or server.DEFAULT_THREADS
        settings = server.pool_size_for(settings, threads)
        logging.getLogger("sso.server").info(
            "gateway at %s: %s, %d worker(s) x %d threads", settings.issuer, wsgi_server, workers, threads
        )
        serve_with = server.run_gunicorn if wsgi_server == "gunicorn" else server.run
        serve_with(settings, host=host, port=port, workers=workers, threads=threads, timeout=timeout)


@main.command()
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--instance",
    default=None,
    help="Folder for the SQLite file, keys and demo-clients.json (default: instance_path).",
)
@click.pass_context
def demo(ctx: click.Context, port: int, instance: str | None) -> None:
    """Run on the embedded default (SQLite + embedded store) with demo data."""
    overrides: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "development": True,
        "demo": True,
    }
    if instance is not None:
        overrides["instance_path"] = instance
    app = build_app(ctx, **overrides)
    demo_data = prepare_app(app)
    assert demo_data is not None
    settings = app.extensions["sso"].settings
    issuer = settings.issuer
    instance = settings.instance_path
    click.echo("")
    click.echo(f"  Gateway:      {issuer}")
    click.echo(f"  Discovery:    {issuer}/.well-known/openid-configuration")
    for citizen in demo_data.get("citizens", []):
        click.echo(
            f"  Demo citizen: {citizen['name']}  sign in with {citizen['id_number']} or {citizen['phone']}"
            f" / {citizen['password']}"
        )
    click.echo(f"  Demo account: {demo_data['username']} / {demo_data['password']}  (local, self-asserted)")
    portals = list(demo_data["clients"].values())
    for client in portals:
        click.echo(f"  Demo portal:  {client['base_url']}  {client['name']}  (client_id={client['client_id']})")
    click.echo(f"                secrets in {Path(instance) / 'demo-clients.json'}; ./scripts/dev.sh runs the portals")
    click.echo("                (examples/tax_portal/app.py, examples/social_portal/app.py)")
    click.echo("")
    for line in _demo_journey(portals, demo_data.get("citizens", []), demo_data):
        click.echo(line)
    click.echo("  Stop with Ctrl+C.")
    click.echo("")
    app.extensions["sso_notifier"].start()  # back-channel logouts, session expiry
    app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


def _demo_journey(portals: list[dict[str, Any]], citizens: list[dict[str, str]], demo: dict[str, Any]) -> list[str]:
    """Single sign-on and single logout across the two demo portals, step by step."""
    if len(portals) < 2:
        return []
    first, second = portals[0], portals[1]
    if citizens:
        who, login = citizens[0]["name"], f"{citizens[0]['id_number']} / {citizens[0]['password']}"
    else:
        who, login = demo["username"], f"{demo['username']} / {demo['password']}"
    return [
        "  Try single sign-on:",
        f"    1. Open {first['base_url']} ({first['name']}) and sign in as {who}: {login}",
        f"    2. Open {second['base_url']} ({second['name']}): signed in as {who}"
        " without signing in again (agree once to what it may see)",
        f"    3. Sign out there, reload {first['base_url']}: signed out too (back-channel logout)",
    ]


# ---- database ------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply schema migrations (idempotent); at head, also create the first signing keys."""
    from .db import current_revision, upgrade

    app = build_app(ctx)
    url = app.extensions["sso"].settings.resolved_database_url
    with startup_errors(app):
        upgrade(url, revision)
        if revision == "head":
            # A fresh database is ready to serve: one active key per algorithm.
            with app.app_context():
                app.extensions["sso"].keys.ensure_keys()
        click.echo(f"database at revision {current_revision(url)}")


# ---- clients ---------------------------------------------------------------------------


@main.group()
def clients() -> None:
    """Register and manage portals (OAuth clients)."""


def _exit_code(exc: Exception) -> int:
    """1: the client does not exist; 2: the request itself is invalid."""
    from .clients import UnknownClient

    return 1 if isinstance(exc, UnknownClient) else 2


def _client_text(data: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in data.items())


@clients.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True)
@click.option("--grant-type", "grant_types", multiple=True)
@click.option("--auth-method", default=None)
@click.option("--public", is_flag=True, help="A public client (PKCE, no secret).")
@click.option("--scope", default="openid profile", show_default=True)
@click.option(
    "--id-token-alg",
    type=click.Choice(["RS256", "ES256"]),
    default=None,
    help="ID token signing algorithm (default: default_signing_alg, RS256).",
)
@click.option(
    "--jwks-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Public JWKS for private_key_jwt.",
)
@click.option("--client-id", default=None, help="Choose the client id (default: generated).")
@click.option(
    "--subject-type",
    type=click.Choice(["pairwise", "public"]),
    default="pairwise",
    show_default=True,
    help="pairwise: a different sub per sector; public: the same sub everywhere.",
)
@click.option(
    "--sector-identifier",
    default=None,
    help="Pairwise sector shared with other portals (default: the first redirect URI's host).",
)
@click.option("--backchannel-logout-uri", default=None, help="Where to POST logout tokens (Back-Channel Logout 1.0).")
@click.option("--frontchannel-logout-uri", default=None, help="Loaded in an iframe at logout (Front-Channel 1.0).")
@click.option(
    "--allow-full-id-number",
    is_flag=True,
    help="Approve the portal to receive the full resident identity number (with the person's consent).",
)
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_create(
    name: str,
    redirect_uris: tuple[str, ...],
    post_logout: tuple[str, ...],
    grant_types: tuple[str, ...],
    auth_method: str | None,
    public: bool,
    scope: str,
    id_token_alg: str | None,
    jwks_file: str | None,
    client_id: str | None,
    subject_type: str,
    sector_identifier: str | None,
    backchannel_logout_uri: str | None,
    frontchannel_logout_uri: str | None,
    allow_full_id_number: bool,
    as_json: bool,
) -> None:
    """Register a portal; prints its client id and (once) its secret."""
    from .clients import ClientError, create_client, describe

    jwks = None
    if jwks_file:
        try:
            jwks = json.loads(Path(jwks_file).read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            _fail(f"cannot read JWKS file {jwks_file}: {exc}")
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            _fail(f"the JWKS file {jwks_file} must hold an object with a 'keys' list")
    try:
        reg = create_client(
            name=name,
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout),
            grant_types=list(grant_types) or None,
            auth_method=auth_method,
            public=public,
            scope=scope,
            id_token_signed_response_alg=id_token_alg,
            jwks=jwks,
            client_id=client_id,
            subject_type=subject_type,
            sector_identifier=sector_identifier,
            full_id_number_allowed=allow_full_id_number,
            backchannel_logout_uri=backchannel_logout_uri,
            frontchannel_logout_uri=frontchannel_logout_uri,
        )
    except ClientError as exc:
        _fail(str(exc))
    data = describe(reg.client)
    if reg.client_secret:
        data["client_secret"] = reg.client_secret
    note = "\n(the secret is shown only this once)" if reg.client_secret else ""
    _emit(data, as_json, _client_text(data) + note)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_list(as_json: bool) -> None:
    """List registered portals."""
    from .clients import describe, list_clients

    rows = [describe(c) for c in list_clients()]
    text = "\n".join(f"{r['client_id']}\t{'disabled' if r['disabled'] else 'enabled'}\t{r['name']}" for r in rows)
    _emit(rows, as_json, text or "no clients")


def _client_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(func: Callable[..., Any]) -> Any:
        wrapped = with_app(func)
        wrapped = click.option("--json", "as_json", is_flag=True)(wrapped)
        wrapped = click.argument("client_id")(wrapped)
        return clients.command(name, help=help_text)(wrapped)

    return decorate


@_client_command("show", "Show one portal.")
def clients_show(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, describe, get_client

    try:
        data = describe(get_client(client_id))
    except ClientError as exc:
        _fail(str(exc), _exit_code(exc))
    _emit(data, as_json, _client_text(data))


@clients.command("update")
@click.argument("client_id")
@click.option("--name", default=None)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Replaces the registered list.")
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True, help="Replaces the registered list.")
@click.option("--scope", default=None)
@click.option("--id-token-alg", type=click.Choice(["RS256", "ES256"]), default=None)
@click.option("--enable", is_flag=True, default=None, help="Re-enable a disabled portal.")
@click.option("--backchannel-logout-uri", default=None, help="Where to POST logout tokens; empty clears it.")
@click.option("--frontchannel-logout-uri", default=None, help="Loaded in an iframe at logout; empty clears it.")
@click.option(
    "--allow-full-id-number/--deny-full-id-number",
    "full_id_number",
    default=None,
    help="Approve or withdraw receiving the full resident identity number.",
)
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_update(
    client_id: str,
    name: str | None,
    redirect_uris: tuple[str, ...],
    post_logout: tuple[str, ...],
    scope: str | None,
    id_token_alg: str | None,
    enable: bool | None,
    backchannel_logout_uri: str | None,
    frontchannel_logout_uri: str | None,
    full_id_number: bool | None,
    as_json: bool,
) -> None:
    """Change a portal's registration."""
    from .clients import ClientError, describe, update_client

    try:
        client = update_client(
            client_id,
            name=name,
            redirect_uris=list(redirect_uris) or None,
            post_logout_redirect_uris=list(post_logout) or None,
            scope=scope,
            id_token_signed_response_alg=id_token_alg,
            enable=True if enable else None,
            full_id_number_allowed=full_id_number,
            backchannel_logout_uri=backchannel_logout_uri,
            frontchannel_logout_uri=frontchannel_logout_uri,
        )
    except ClientError as exc:
        _fail(str(exc), _exit_code(exc))
    data = describe(client)
    _emit(data, as_json, _client_text(data))


@_client_command("rotate-secret", "Issue a new secret (shown once); the old one stops working.")
def clients_rotate(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, rotate_secret

    try:
        secret = rotate_secret(client_id)
    except ClientError as exc:
        _fail(str(exc), _exit_code(exc))
    _emit({"client_id": client_id, "client_secret": secret}, as_json, f"client_secret: {secret}")


@_client_command("disable", "Disable a portal: it can no longer authorize or get tokens.")
def clients_disable(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, describe, disable_client

    try:
        data = describe(disable_client(client_id))
    except ClientError as exc:
        _fail(str(exc), _exit_code(exc))
    _emit(data, as_json, f"{client_id} disabled")


@_client_command("delete", "Delete a portal's registration.")
def clients_delete(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, delete_client

    try:
        delete_client(client_id)
    except ClientError as exc:
        _fail(str(exc), _exit_code(exc))
    _emit({"client_id": client_id, "deleted": True}, as_json, f"{client_id} deleted")


# ---- keys ------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Signing keys."""


def _key_row(status: Any) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "kid": status.kid,
        "alg": status.alg,
        "state": status.state,
        "created_at": iso(status.created_at),
        "activates_at": iso(status.activates_at),
        "retired_at": iso(status.retired_at),
        "unpublish_at": iso(status.unpublish_at),
    }


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_app
def keys_list(as_json: bool) -> None:
    """List signing keys and their state (next, active, retired, expired)."""
    from flask import current_app

    rows = [_key_row(s) for s in current_app.extensions["sso"].keys.statuses()]
    text = "\n".join(f"{r['kid']}\t{r['alg']}\t{r['state']}\tactivates {r['activates_at']}" for r in rows)
    _emit(rows, as_json, text)


@keys.command("rotate")
@click.option("--alg", default="RS256", show_default=True, type=click.Choice(["RS256", "ES256"]))
@click.option(
    "--activate-in",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds before the new key signs (default: key_publish_lead).",
)
@click.option("--json", "as_json", is_flag=True)
@with_app
def keys_rotate(alg: str, activate_in: int | None, as_json: bool) -> None:
    """Publish the next key now; it signs after the publish lead."""
    from flask import current_app

    row = current_app.extensions["sso"].keys.rotate(alg, activate_in)
    data = {"kid": row.kid, "alg": row.alg, "activates_at": row.activates_at.isoformat() + "Z"}
    _emit(data, as_json, f"new {alg} key {row.kid} published; signs from {data['activates_at']}")


# ---- accounts (local connector) ---------------------------------------------------------


MIN_PASSWORD_LENGTH = 8


@main.group()
def accounts() -> None:
    """Local accounts."""


@accounts.command("create")
@click.option("--username", required=True)
@click.option("--name", "display_name", required=True)
@click.password_option()
@click.option("--admin", is_flag=True, help="A gateway administrator (may see /admin/stats).")
@with_app
def accounts_create(username: str, display_name: str, password: str, admin: bool) -> None:
    """Create a local account."""
    from .connectors.local import create_account
    from .db import db
    from .models import Account

    if not 1 <= len(username) <= 64 or username != username.strip():
        _fail("username must be 1 to 64 characters without surrounding spaces")
    if not display_name.strip() or len(display_name) > 100:
        _fail("name must be 1 to 100 characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        _fail(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if db.session.execute(db.select(Account).filter_by(username=username)).scalar_one_or_none():
        _fail(f"username {username} is taken")
    account = create_account(username, password, display_name)
    if admin:
        _set_admin(account, True)
    click.echo(f"account {account.username} created" + (" (administrator)" if admin else ""))


def _set_admin(account: Any, admin: bool) -> None:
    from . import audit
    from .db import db

    account.is_admin = admin
    event = "account.admin_granted" if admin else "account.admin_revoked"
    audit.record(event, commit=False, account=account.id, via="cli")
    db.session.commit()


def _account(login: str) -> Any:
    """The account with this username, phone number or resident identity number; else exit 1."""
    from .accounts import find_by_login_name

    account = find_by_login_name(login)
    if account is None:
        _fail(f"no account with username, phone or identity number {login}", 1)
    return account


@accounts.command("grant-admin")
@click.argument("login")
@with_app
def accounts_grant_admin(login: str) -> None:
    """Make the account with this username or phone number an administrator."""
    account = _account(login)
    if account.is_admin:
        click.echo(f"account {login} is already an administrator")
        return
    _set_admin(account, True)
    click.echo(f"account {login} is now an administrator")


@accounts.command("revoke-admin")
@click.argument("login")
@with_app
def accounts_revoke_admin(login: str) -> None:
    """Take administrator rights away from this account (at once: /admin reads them on every request)."""
    account = _account(login)
    if not account.is_admin:
        click.echo(f"account {login} is not an administrator")
        return
    _set_admin(account, False)
    click.echo(f"account {login} is no longer an administrator")


@accounts.command("disable")
@click.argument("login")
@with_app
def accounts_disable(login: str) -> None:
    """Disable an account: no sign-in; its sessions end everywhere and its tokens are revoked."""
    from .accounts import disable

    account = _account(login)
    if account.status == "disabled":
        click.echo(f"account {login} is already disabled")
        return
    ended = disable(account, via="cli")
    click.echo(f"account {login} disabled; {ended} session(s) ended, its tokens revoked")


@accounts.command("enable")
@click.argument("login")
@with_app
def accounts_enable(login: str) -> None:
    """Let a disabled account sign in again."""
    from .accounts import enable

    account = _account(login)
    if account.status == "active":
        click.echo(f"account {login} is already active")
        return
    enable(account, via="cli")
    click.echo(f"account {login} enabled")


# ---- audit trail and statistics -----------------------------------------------------------


@main.group("audit")
def audit_group() -> None:
    """The audit trail: verify its hash chain, export events."""


@audit_group.command("verify")
@click.option("--json", "as_json", is_flag=True)
@with_app
def audit_verify(as_json: bool) -> None:
    """Recompute the hash chain; exit 1 naming the first broken row."""
    from .audit_chain import verify
    from .db import db

    result = verify(db.session)
    if result.ok:
        text = f"OK: {result.count} events, chain intact (head {result.head_seq} {result.head_hash})"
        _emit(result.to_json(), as_json, text)
        return
    broken = result.broken
    assert broken is not None
    where = f"row {broken.row_id}" if broken.row_id is not None else "chain head"
    _emit(
        result.to_json(),
        as_json,
        f"BROKEN at {where} ({broken.kind}): {broken.message}\n{result.count} events intact before it",
    )
    sys.exit(1)


def _iso_utc(value: str | None, option: str) -> Any:
    """An ISO 8601 date or time as naive UTC (a time without an offset is taken as UTC)."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be an ISO 8601 date or time, e.g. 2026-05-01 or 2026-05-01T08:00:00+08:00")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@audit_group.command("export")
@click.option("--since", default=None, help="From this ISO time on (inclusive; no offset means UTC).")
@click.option("--until", default=None, help="Before this ISO time (exclusive; no offset means UTC).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
@with_app
def audit_export(since: str | None, until: str | None, out: str | None) -> None:
    """Write audit events as JSON lines, one event per line, with their hashes."""
    from .audit_chain import export
    from .db import db

    start, end = _iso_utc(since, "--since"), _iso_utc(until, "--until")
    if out is None:
        export(db.session, sys.stdout, start, end)
        return
    try:
        with open(out, "w", encoding="utf-8") as fh:
            count = export(db.session, fh, start, end)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc}")
    click.echo(f"{count} events written to {out}", err=True)


@main.command("stats")
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="Days back, today included.")
@click.option("--json", "as_json", is_flag=True)
@with_app
def stats_command(days: int, as_json: bool) -> None:
    """Sign-ins per portal per day, by principal type and assurance level; sessions; consents."""
    from .stats import as_text, compute

    result = compute(days)
    _emit(result.to_json(), as_json, as_text(result))


if __name__ == "__main__":  # pragma: no cover
    main()
