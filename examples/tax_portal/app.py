"""电子税务局 Tax service: an example portal that signs people in through the SSO gateway.

It knows the gateway only by its discovery URL and uses Authlib's Flask client:
authorization code with PKCE (S256), state and nonce checked, client_secret_basic.

    python examples/tax_portal/app.py                       # the demo: reads instance/demo-clients.json
    python examples/tax_portal/app.py --issuer https://sso.example.gov.cn \\
        --client-id tax-portal --client-secret ... --host 127.0.0.1 --port 5001
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Flask, Response, redirect, request, session
from joserfc.errors import JoseError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import portal_kit as kit  # noqa: E402 - examples/portal_kit.py, found through the line above

PORTAL = kit.Portal(client_id="tax-portal", name="电子税务局", name_en="Tax service", port=5001, colour="#a3261f")
SCOPE = "openid profile"  # the normal sign-in; registered scopes may be more
ENTERPRISE_SCOPE = "openid profile cn_legal_person"  # the gateway asks which enterprise
TWO_FACTORS = "urn:cn:sso:loa:3"  # password + second factor, registry-verified
ACTIONS = [
    ("/login?as=two-factors", "双因素登录 Sign in with two factors"),
    ("/login?as=enterprise", "代表企业办理 Act for an enterprise"),
]


def create_app(config: kit.Config) -> Flask:
    app = Flask(__name__)
    app.session_interface = sessions = kit.SessionStore("tax_portal_session")
    gateway = OAuth(app).register(
        "gateway",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=config.issuer + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": 10,
        },
    )
    app.register_blueprint(kit.backchannel_logout(kit.LogoutTokenValidator(gateway), sessions))
    callback_uri = config.base_url + "/callback"

    def page(notice: str = "", status: int = 200) -> tuple[str, int]:
        return kit.render_page(PORTAL, session.get("user"), ACTIONS, notice or session.pop("notice", "")), status

    @app.get("/")
    def index() -> Response | tuple[str, int]:
        if "state" in request.args:  # back from signing out at the gateway
            try:
                gateway.validate_logout_response()
                session["notice"] = "已退出登录 You have signed out."
            except OAuthError:
                pass
        if "user" not in session and not session.get("sso_checked"):
            # Signed in at the gateway already (for another portal)? Ask without showing a page.
            session["sso_checked"] = True
            return gateway.authorize_redirect(callback_uri, prompt="none")
        return page()

    @app.get("/login")
    def login() -> Response:
        session.pop("wanted_acr", None)
        if request.args.get("as") == "two-factors":
            session["wanted_acr"] = TWO_FACTORS
            return gateway.authorize_redirect(callback_uri, acr_values=TWO_FACTORS)
        if request.args.get("as") == "enterprise":
            return gateway.authorize_redirect(callback_uri, scope=ENTERPRISE_SCOPE)
        return gateway.authorize_redirect(callback_uri)

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        if request.args.get("iss") != gateway.load_server_metadata()["issuer"]:  # RFC 9207 mix-up defence
            return page("回调来源不符 The response is not from our gateway.", 400)
        error = request.args.get("error")
        if error == "login_required":  # the silent check: nobody is signed in at the gateway
            return redirect("/")
        if error in ("consent_required", "interaction_required"):  # signed in there; ask this once
            return gateway.authorize_redirect(callback_uri)
        try:
            # Checks state, sends the PKCE verifier, validates the ID token (signature, iss, aud, nonce).
            token = gateway.authorize_access_token()
            user = kit.signed_in_user(token["userinfo"], gateway.userinfo(token=token), token["id_token"])
        except (AuthlibBaseError, JoseError, requests.RequestException, ValueError, KeyError) as exc:
            return page(f"登录失败 Sign-in failed: {exc}", 400)
        sessions.renew(session)
        session["user"] = user
        wanted = session.pop("wanted_acr", None)
        if wanted and user["acr"] != wanted:
            session["notice"] = f"网关给出的认证等级为 {user['acr']}，不是所要求的 {wanted}"
        return redirect("/")

    @app.post("/logout")
    def logout() -> Response:
        user = session.pop("user", None)
        session["sso_checked"] = True  # do not sign straight back in when the gateway returns here
        if user is None:
            return redirect("/")
        # RP-initiated logout: the gateway ends its session and tells every portal by back-channel.
        return gateway.logout_redirect(post_logout_redirect_uri=config.base_url + "/", id_token_hint=user["id_token"])

    return app


if __name__ == "__main__":
    settings = kit.parse_args(PORTAL)
    kit.run(create_app(settings), settings, PORTAL)
