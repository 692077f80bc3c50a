"""What the example portals share: server-side sessions, the back-channel logout
receiver, the page and the command line.  The OpenID Connect flow itself (sign in,
callback, sign out) is written out in each portal's app.py.

Only Flask, Authlib and joserfc (Authlib's JOSE library) are used; nothing here
imports the gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, render_template_string, request
from flask.sessions import SessionInterface, SessionMixin
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from werkzeug.serving import make_server

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DEMO_CLIENTS = Path(__file__).resolve().parent.parent / "instance" / "demo-clients.json"

ACR_LABELS = {  # the gateway's assurance levels (acr_values_supported in discovery)
    "urn:cn:sso:loa:1": "一级：密码，自报身份 (password, self-asserted identity)",
    "urn:cn:sso:loa:2": "二级：密码，经人口库核验 (password, registry-verified identity)",
    "urn:cn:sso:loa:3": "三级：密码加第二因素，经核验 (two factors, registry-verified identity)",
}
ROLE_LABELS = {"legal_representative": "法定代表人 Legal representative", "agent": "授权代理人 Authorised agent"}


# ---- sessions: kept here, not in the cookie, so the gateway can end them ------------------------


class PortalSession(dict[str, Any], SessionMixin):
    def __init__(self, key: str, new: bool) -> None:
        super().__init__()
        self.key, self.new = key, new


class SessionStore(SessionInterface):
    """Sessions in a dict keyed by a random cookie value (one process; use Redis for more)."""

    def __init__(self, cookie_name: str) -> None:
        self.cookie_name = cookie_name
        self._sessions: dict[str, PortalSession] = {}
        self._lock = threading.Lock()

    def open_session(self, app: Flask, request: Any) -> PortalSession:
        with self._lock:
            found = self._sessions.get(request.cookies.get(self.cookie_name, ""))
        return found if found is not None else PortalSession(secrets.token_urlsafe(32), new=True)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        with self._lock:
            if not session:
                self._sessions.pop(session.key, None)
            elif session.new:  # only a new session is added: one ended meanwhile stays ended
                self._sessions[session.key] = session
        if session and session.new:
            session.new = False
            response.set_cookie(self.cookie_name, session.key, httponly=True, samesite="Lax")

    def renew(self, session: PortalSession) -> None:
        """A new cookie value at sign-in, so a value planted before it is worth nothing."""
        with self._lock:
            self._sessions.pop(session.key, None)
        session.key, session.new = secrets.token_urlsafe(32), True

    def end(self, *, sid: str | None, sub: str | None) -> int:
        """End every session of the gateway session ``sid`` (or, without sid, of ``sub``)."""
        def match(user: dict[str, Any]) -> bool:
            return user.get("sid") == sid if sid else user.get("sub") == sub

        with self._lock:
            doomed = [k for k, s in self._sessions.items() if s.get("user") and match(s["user"])]
            for key in doomed:
                del self._sessions[key]
        return len(doomed)


# ---- back-channel logout (OpenID Connect Back-Channel Logout 1.0) ---------------------------------


class LogoutTokenError(ValueError):
    pass


class LogoutTokenValidator:
    """§2.6: validate a logout token from the gateway; remembers jti values to refuse replays."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway  # the Authlib client registered for the gateway
        self._seen: dict[str, float] = {}  # jti -> when it may be forgotten (its exp)
        self._lock = threading.Lock()

    def _decode(self, token: str) -> Any:
        metadata = self.gateway.load_server_metadata()
        # Only what the gateway signs ID tokens with; never "none" (§2.6 step 3).
        registry = JWSRegistry(algorithms=metadata.get("id_token_signing_alg_values_supported") or ["RS256"])
        try:
            return jwt.decode(token, KeySet.import_key_set(self.gateway.fetch_jwk_set()), registry=registry)
        except InvalidKeyIdError:  # a key published since the JWKS was fetched
            return jwt.decode(token, KeySet.import_key_set(self.gateway.fetch_jwk_set(force=True)), registry=registry)

    def validate(self, token: str) -> dict[str, Any]:
        metadata = self.gateway.load_server_metadata()
        try:
            decoded = self._decode(token)
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": self.gateway.client_id},
                iat={"essential": True},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise LogoutTokenError(f"{type(exc).__name__}: {exc}") from exc
        claims: dict[str, Any] = decoded.claims
        typ = str(decoded.header.get("typ", "logout+jwt")).lower()
        if typ not in ("logout+jwt", "application/logout+jwt"):  # never an ID token (§2.4)
            raise LogoutTokenError(f"typ is {typ}, not logout+jwt")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise LogoutTokenError("no back-channel logout event")
        if not claims.get("sid") and not claims.get("sub"):
            raise LogoutTokenError("neither sid nor sub")
        if "nonce" in claims:
            raise LogoutTokenError("a logout token must not contain a nonce")
        with self._lock:
            now = time.time()
            self._seen = {jti: until for jti, until in self._seen.items() if until > now - 120}
            if claims["jti"] in self._seen:
                raise LogoutTokenError("jti seen before (replay)")
            self._seen[claims["jti"]] = float(claims["exp"])
        return claims


def backchannel_logout(validator: LogoutTokenValidator, sessions: SessionStore) -> Blueprint:
    bp = Blueprint("backchannel", __name__)

    @bp.post("/backchannel-logout")
    def receive() -> Response:
        try:
            claims = validator.validate(request.form.get("logout_token", ""))
        except LogoutTokenError as exc:
            response = jsonify(error="invalid_request", error_description=str(exc))
            response.status_code = 400
        else:
            ended = sessions.end(sid=claims.get("sid"), sub=claims.get("sub"))
            print(f"back-channel logout: sid={claims.get('sid')} ended {ended} session(s)", flush=True)
            response = Response(status=200)
        response.headers["Cache-Control"] = "no-store"  # §2.8
        return response

    return bp


# ---- the page ------------------------------------------------------------------------------------


PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{{ portal.name }} {{ portal.name_en }}</title>
<style>body{font:16px/1.6 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
header{border-bottom:4px solid {{ portal.colour }};margin-bottom:1rem}h1 small{font-size:.55em;color:#666}
dt{font-weight:600;margin-top:.4rem}dd{margin-left:1rem;word-break:break-all}.button,button{display:inline-block;
padding:.45rem 1rem;margin:.3rem .3rem 0 0;border:0;border-radius:4px;background:{{ portal.colour }};color:#fff;
font:inherit;text-decoration:none;cursor:pointer}.notice{background:#fff6d6;padding:.5rem 1rem}</style></head>
<body><header><h1>{{ portal.name }} <small>{{ portal.name_en }}</small></h1></header>
{% if notice %}<p class="notice" id="notice">{{ notice }}</p>{% endif %}
{% if user %}<section id="who" data-signed-in="yes"><h2>已登录 Signed in</h2><dl>
<dt>姓名 Name</dt><dd id="name">{{ user.name }}</dd>
<dt>用户标识 Subject (sub, pairwise)</dt><dd><code id="sub">{{ user.sub }}</code></dd>
<dt>认证等级 Assurance (acr)</dt><dd>{{ acr_labels.get(user.acr, "未知 unknown") }} <code>{{ user.acr }}</code></dd>
<dt>认证方式 Methods (amr)</dt><dd><code>{{ user.amr | join(" ") }}</code></dd>
{% if user.enterprise %}<dt>代表企业 Acting for</dt><dd id="enterprise">{{ user.enterprise.name }}
({{ user.enterprise.credit_code }}) · {{ role_labels.get(user.enterprise.role, user.enterprise.role) }}</dd>{% endif %}
</dl>
<form method="post" action="/logout"><button id="sign-out">退出登录 Sign out</button></form>
<details><summary>ID token and UserInfo claims</summary><pre>{{ user.claims | tojson(indent=2) }}</pre></details>
</section>{% else %}<section id="who" data-signed-in="no"><p>未登录 Not signed in</p>
<a class="button" id="sign-in" href="/login">统一身份认证登录 Sign in</a></section>{% endif %}
{% for href, label in actions %}<a class="button" href="{{ href }}">{{ label }}</a>{% endfor %}
</body></html>"""


def render_page(portal: Portal, user: dict[str, Any] | None, actions: list[tuple[str, str]], notice: str = "") -> str:
    return render_template_string(
        PAGE, portal=portal, user=user, actions=actions, notice=notice, acr_labels=ACR_LABELS, role_labels=ROLE_LABELS
    )


def signed_in_user(id_token: dict[str, Any], userinfo: dict[str, Any], raw_id_token: str) -> dict[str, Any]:
    """What a portal session keeps from a sign-in: validated ID token claims and UserInfo."""
    if userinfo.get("sub") != id_token["sub"]:  # OIDC Core §5.3.2: must be the same person
        raise ValueError("UserInfo sub differs from the ID token's")
    return {
        "sub": id_token["sub"],
        "sid": id_token.get("sid"),
        "name": userinfo.get("name") or id_token.get("name") or "",
        "acr": id_token.get("acr"),
        "amr": id_token.get("amr") or [],
        "enterprise": userinfo.get("cn_legal_person") or id_token.get("cn_legal_person"),
        "id_token": raw_id_token,  # the id_token_hint at sign-out
        "claims": {"id_token": dict(id_token), "userinfo": dict(userinfo)},
    }


# ---- configuration and running -------------------------------------------------------------------


@dataclass(frozen=True)
class Portal:
    client_id: str
    name: str
    name_en: str
    port: int
    colour: str


@dataclass(frozen=True)
class Config:
    issuer: str
    client_id: str
    client_secret: str
    base_url: str  # where the browser reaches this portal: redirect URIs derive from it
    host: str
    port: int


def parse_args(portal: Portal, argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=f"{portal.name} {portal.name_en}: an example portal of the SSO gateway")
    p.add_argument("--issuer", help="the gateway's issuer URL (default: from --demo-clients, else :5000)")
    p.add_argument("--client-id", default=portal.client_id)
    p.add_argument("--client-secret", help="default: $PORTAL_CLIENT_SECRET, else from --demo-clients")
    p.add_argument("--demo-clients", type=Path, default=DEMO_CLIENTS, help="written by `sso demo`")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=portal.port)
    args = p.parse_args(argv)
    secret, issuer = args.client_secret or os.environ.get("PORTAL_CLIENT_SECRET"), args.issuer
    if not secret or not issuer:
        saved = json.loads(args.demo_clients.read_text()) if args.demo_clients.exists() else {}
        entry = saved.get(args.client_id, {})
        secret, issuer = secret or entry.get("client_secret"), issuer or entry.get("issuer")
    if not secret:
        p.error(f"no client secret: pass --client-secret or run `sso demo` first (reads {args.demo_clients})")
    return Config(
        issuer=(issuer or "http://127.0.0.1:5000").rstrip("/"),
        client_id=args.client_id,
        client_secret=secret,
        base_url=f"http://{args.host}:{args.port}",
        host=args.host,
        port=args.port,
    )


def run(app: Flask, config: Config, portal: Portal) -> None:
    """Serve with Werkzeug's development server (logs each request); use a WSGI server in production."""
    server = make_server(config.host, config.port, app, threaded=True)
    print(f"{portal.name} {portal.name_en}: {config.base_url}  (gateway {config.issuer})", flush=True)
    server.serve_forever()
