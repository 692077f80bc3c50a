"""A neighbouring province's gateway as a login connector: a small OpenID Connect relying party.

Mutual recognition across regions: a citizen of the neighbouring province signs
in at *their* gateway, which sends the browser back here with a code.  This
module is the whole connector; it is added without touching the gateway's code::

    [[connectors]]
    type = "examples.connectors.neighbour_gateway:NeighbourGateway"
    id = "neighbour-zj"
    name = "浙江政务服务网"

    [connectors.settings]
    issuer = "https://sso.zj.example.gov.cn"
    authorization_endpoint = "https://sso.zj.example.gov.cn/authorize"
    token_endpoint = "https://sso.zj.example.gov.cn/token"
    client_id = "beijing-gateway"
    client_secret_env = "NEIGHBOUR_ZJ_SECRET"       # or client_secret = "..." (keep it out of git)
    jwks_file = "neighbour-zj.jwks.json"            # relative to instance_path; or jwks = { keys = [...] }
    # scopes = ["openid", "profile"]
    # [connectors.settings.assurance_by_acr]        # their acr -> our assurance (default: the
    # "urn:cn:sso:loa:2" = "registry-verified"      # gateways' shared urn:cn:sso:loa:1..3 levels)

What it does, step by step (OIDC Core §3.1, RFC 7636, RFC 9700 §2.1):

- ``login_url`` builds the authorization request with the gateway's ``state``,
  a fresh ``nonce`` and a PKCE S256 challenge; the nonce and verifier stay here,
  keyed by the state, single use, for ``state_ttl`` seconds.
- ``handle_callback`` takes that pending entry (unknown, expired or reused state:
  error), exchanges the code at the token endpoint (client_secret_basic, through a
  pluggable ``http_post`` function), and verifies the ID token against the
  *configured* JWKS with joserfc: signature (RS256/ES256 only), ``iss``, ``aud``
  (and ``azp`` when several audiences), ``exp``/``iat`` with a small leeway, and
  the ``nonce``.
- The claims become an :class:`~sso.connectors.base.Identity`: ``subject`` is the
  other side's ``sub`` (stable for our client id), the assurance comes from their
  ``acr``; when they vouch for a registry-verified identity, ``name`` and
  ``birthdate`` become verified attributes with their issuer as the source.
  The raw ID token (for a later logout at their side) goes in ``connector_data``,
  which never leaves this server.

Every failure raises :class:`NeighbourLoginFailed` (a ``ValueError``) with a
message fit for the log; the login page shows its own generic text.

Pending logins are kept in process memory: with several gateway processes, pass
a shared ``pending`` store (anything with ``put(state, entry, ttl)`` and
``take(state)``, e.g. over Redis) so the callback may land on any of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sso.connectors.base import Identity, VerifiedAttribute

# The levels every gateway of the programme publishes (sso.assurance): loa:2 and
# loa:3 mean the other side checked the person against the population registry.
DEFAULT_ASSURANCE_BY_ACR = {
    "urn:cn:sso:loa:1": "self-asserted",
    "urn:cn:sso:loa:2": "registry-verified",
    "urn:cn:sso:loa:3": "registry-verified",
}
ASSURANCES = ("self-asserted", "registry-verified")
ALGORITHMS = ["RS256", "ES256"]  # never "none", never HMAC with a public value
MAX_PARAM = 2048  # longer callback parameters are not a real answer
VERIFIED_CLAIMS = ("name", "birthdate")
KNOWN_SETTINGS = frozenset(
    "issuer authorization_endpoint token_endpoint client_id client_secret client_secret_env"
    " jwks jwks_file scopes assurance_by_acr state_ttl".split()
)

# (url, form fields, headers, timeout in seconds) -> (HTTP status, body)
HttpPost = Callable[[str, Mapping[str, str], Mapping[str, str], float], tuple[int, bytes]]


class NeighbourLoginFailed(ValueError):
    """The other gateway's answer cannot be trusted or used; the message says why."""


def urllib_post(url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
    """The default HTTP client: the standard library, errors as a status."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the configured https endpoint
        url, data=urlencode(form).encode(), headers=dict(headers), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1_000_000)
    except (urllib.error.URLError, OSError) as exc:
        raise NeighbourLoginFailed(f"token endpoint unreachable: {exc}") from exc


@dataclass(frozen=True)
class PendingLogin:
    nonce: str
    code_verifier: str
    callback_url: str


class PendingStore(Protocol):
    def put(self, state: str, entry: PendingLogin, ttl: int) -> None: ...

    def take(self, state: str) -> PendingLogin | None: ...


class MemoryPendingStore:
    """Pending logins in this process: single use, expiring, bounded in size."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[float, PendingLogin]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def put(self, state: str, entry: PendingLogin, ttl: int) -> None:
        now = self._clock()
        with self._lock:
            for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[key]
            while len(self._entries) >= self._max:  # oldest first: dicts keep insertion order
                del self._entries[next(iter(self._entries))]
            self._entries[state] = (now + ttl, entry)

    def take(self, state: str) -> PendingLogin | None:
        with self._lock:
            found = self._entries.pop(state, None)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _text_param(params: Mapping[str, Any], key: str) -> str | None:
    """A callback parameter as short printable ASCII, or None (absent or garbage)."""
    value = params.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_PARAM:
        return None
    if not value.isascii() or not value.isprintable():
        return None
    return value


class NeighbourGateway:
    """Connector type ``examples.connectors.neighbour_gateway:NeighbourGateway`` (RedirectLogin)."""

    def __init__(
        self,
        connector_id: str,
        name: str,
        *,
        issuer: str,
        authorization_endpoint: str,
        token_endpoint: str,
        client_id: str,
        client_secret: str,
        jwks: Mapping[str, Any],
        scopes: tuple[str, ...] = ("openid", "profile"),
        assurance_by_acr: Mapping[str, str] | None = None,
        http_post: HttpPost = urllib_post,
        pending: PendingStore | None = None,
        state_ttl: int = 600,
        leeway: int = 60,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = connector_id
        self.name = name
        self.issuer = issuer
        self.authorization_endpoint = authorization_endpoint
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self._client_secret = client_secret
        self._keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        self.scopes = tuple(scopes)
        self.assurance_by_acr = dict(DEFAULT_ASSURANCE_BY_ACR if assurance_by_acr is None else assurance_by_acr)
        self._http_post = http_post
        self._pending: PendingStore = pending if pending is not None else MemoryPendingStore()
        self.state_ttl = state_ttl
        self.leeway = leeway
        self.timeout = timeout
        self._clock = clock

    def __repr__(self) -> str:  # the client secret stays out of logs
        return f"NeighbourGateway(id={self.id!r}, issuer={self.issuer!r}, client_id={self.client_id!r})"

    # ---- configuration ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any], instance_path: str) -> list[str]:
        """Every problem with the settings table, not just the first."""
        problems: list[str] = []
        for key in ("issuer", "authorization_endpoint", "token_endpoint"):
            value = settings.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"settings.{key} is required")
                continue
            parts = urlsplit(value)
            local = parts.hostname in ("127.0.0.1", "localhost", "::1")
            if parts.scheme != "https" and not (parts.scheme == "http" and local):
                problems.append(f"settings.{key} must be an https URL: {value!r}")
        if not isinstance(settings.get("client_id"), str) or not settings.get("client_id"):
            problems.append("settings.client_id is required")
        secret, env_name = settings.get("client_secret"), settings.get("client_secret_env")
        if (secret is None) == (env_name is None):
            problems.append("settings: give exactly one of client_secret and client_secret_env")
        elif env_name is not None and not (isinstance(env_name, str) and os.environ.get(env_name)):
            problems.append(f"settings.client_secret_env: environment variable {env_name!r} is not set")
        elif secret is not None and not (isinstance(secret, str) and secret):
            problems.append("settings.client_secret must be a non-empty string")
        if ("jwks" in settings) == ("jwks_file" in settings):
            problems.append("settings: give exactly one of jwks and jwks_file")
        else:
            try:
                keys = cls._load_jwks(settings, instance_path)
                KeySet.import_key_set(keys)  # type: ignore[arg-type]
                if any("d" in key for key in keys["keys"]):
                    problems.append("settings: the JWKS must hold public keys only")
            except (OSError, ValueError, TypeError, KeyError, JoseError) as exc:
                problems.append(f"settings: unusable JWKS ({exc})")
        scopes = settings.get("scopes", ["openid", "profile"])
        if not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes) and "openid" in scopes):
            problems.append("settings.scopes must be a list of strings including 'openid'")
        mapping = settings.get("assurance_by_acr", DEFAULT_ASSURANCE_BY_ACR)
        if not isinstance(mapping, dict) or not all(v in ASSURANCES for v in mapping.values()):
            problems.append(f"settings.assurance_by_acr must map acr values to one of {', '.join(ASSURANCES)}")
        unknown = set(settings) - KNOWN_SETTINGS
        if unknown:
            problems.append(f"settings: unknown key(s) {', '.join(sorted(unknown))}")
        ttl = settings.get("state_ttl", 600)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 30 <= ttl <= 3600:
            problems.append("settings.state_ttl must be between 30 and 3600 seconds")
        return problems

    @staticmethod
    def _load_jwks(settings: Mapping[str, Any], instance_path: str) -> dict[str, Any]:
        if "jwks" in settings:
            keys = settings["jwks"]
        else:
            path = Path(instance_path) / str(settings["jwks_file"])  # an absolute path wins in "/"
            keys = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise ValueError("expected a JSON object with a 'keys' list")
        return keys

    @classmethod
    def from_config(
        cls, connector_id: str, name: str, settings: dict[str, Any], instance_path: str
    ) -> NeighbourGateway:
        problems = cls.check_settings(settings, instance_path)
        if problems:
            raise ValueError(f"connector {connector_id}: " + "; ".join(problems))
        secret = settings.get("client_secret") or os.environ[settings["client_secret_env"]]
        return cls(
            connector_id,
            name,
            issuer=settings["issuer"],
            authorization_endpoint=settings["authorization_endpoint"],
            token_endpoint=settings["token_endpoint"],
            client_id=settings["client_id"],
            client_secret=secret,
            jwks=cls._load_jwks(settings, instance_path),
            scopes=tuple(settings.get("scopes", ("openid", "profile"))),
            assurance_by_acr=settings.get("assurance_by_acr"),
            state_ttl=settings.get("state_ttl", 600),
        )

    # ---- RedirectLogin --------------------------------------------------------------

    def login_url(self, callback_url: str, state: str) -> str:
        if not state or _text_param({"state": state}, "state") is None:
            raise NeighbourLoginFailed("the state must be short printable ASCII")
        verifier = secrets.token_urlsafe(48)  # RFC 7636 §4.1: 43-128 characters
        pending = PendingLogin(nonce=secrets.token_urlsafe(24), code_verifier=verifier, callback_url=callback_url)
        self._pending.put(state, pending, self.state_ttl)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": callback_url,
            "scope": " ".join(self.scopes),
            "state": state,
            "nonce": pending.nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
            "code_challenge_method": "S256",
        }
        separator = "&" if urlsplit(self.authorization_endpoint).query else "?"
        return self.authorization_endpoint + separator + urlencode(query, quote_via=quote)

    def handle_callback(self, params: dict[str, str], callback_url: str) -> Identity:
        state = _text_param(params, "state")
        if state is None:
            raise NeighbourLoginFailed("the callback has no usable state")
        pending = self._pending.take(state)
        if pending is None:
            raise NeighbourLoginFailed("unknown, expired or already used state")
        if pending.callback_url != callback_url:
            raise NeighbourLoginFailed("the callback URL differs from the one the login started with")
        if "error" in params:
            # RFC 6749 §4.1.2.1: the user refused or the other gateway failed.
            error = _text_param(params, "error") or "unreadable"
            raise NeighbourLoginFailed(f"the other gateway answered with an error: {error}")
        # RFC 9207: when the other side names itself, it must be the configured issuer.
        if "iss" in params and params.get("iss") != self.issuer:
            raise NeighbourLoginFailed("the callback comes from another issuer (RFC 9207 mix-up defence)")
        code = _text_param(params, "code")
        if code is None:
            raise NeighbourLoginFailed("the callback has no usable code")
        id_token = self._exchange(code, pending)
        return self._identity(self._verified_claims(id_token, pending), id_token)

    # ---- steps ----------------------------------------------------------------------

    def _exchange(self, code: str, pending: PendingLogin) -> str:
        # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic.
        credentials = f"{quote(self.client_id, safe='')}:{quote(self._client_secret, safe='')}"
        headers = {
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii"),
            "Accept": "application/json",
        }
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.callback_url,
            "code_verifier": pending.code_verifier,
        }
        try:
            status, body = self._http_post(self.token_endpoint, form, headers, self.timeout)
        except OSError as exc:  # also what requests' and httpx's connection errors derive from
            raise NeighbourLoginFailed(f"token endpoint unreachable: {exc}") from exc
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise NeighbourLoginFailed(f"the token endpoint answered {status} without a JSON object")
        if status != 200:
            reason = answer.get("error") if isinstance(answer.get("error"), str) else "unknown"
            raise NeighbourLoginFailed(f"the token endpoint refused the code ({status} {reason})")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token.isascii():
            raise NeighbourLoginFailed("the token response has no ID token")
        return id_token

    def _verified_claims(self, id_token: str, pending: PendingLogin) -> dict[str, Any]:
        try:
            token = jwt.decode(id_token, self._keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise NeighbourLoginFailed(f"the ID token does not verify against the configured keys: {exc}") from None
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": pending.nonce},
        )
        try:
            registry.validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise NeighbourLoginFailed(f"the ID token claims are not for us: {exc}") from None
        # OIDC Core §3.1.3.7 (4)-(5): several audiences need azp, and it must be us.
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self.client_id:
            raise NeighbourLoginFailed("the ID token was issued to another client (azp)")
        if not isinstance(claims["sub"], str) or not 0 < len(claims["sub"]) <= 255:
            raise NeighbourLoginFailed("the ID token has no usable sub")
        return claims

    def _identity(self, claims: dict[str, Any], id_token: str) -> Identity:
        acr = claims.get("acr")
        assurance = self.assurance_by_acr.get(acr, "self-asserted") if isinstance(acr, str) else "self-asserted"
        name = claims.get("name")
        display_name = name if isinstance(name, str) and name.strip() else claims["sub"]
        attributes: dict[str, VerifiedAttribute] = {}
        if assurance == "registry-verified":
            # They vouch for the person as of their login (auth_time), else as of issuing.
            when = claims.get("auth_time")
            if not isinstance(when, int) or isinstance(when, bool) or when <= 0:
                when = claims["iat"]
            verified_at = datetime.fromtimestamp(int(when), UTC).replace(tzinfo=None)  # naive UTC, like sso.models
            attributes = {
                key: VerifiedAttribute(claims[key], self.issuer, verified_at)
                for key in VERIFIED_CLAIMS
                if isinstance(claims.get(key), str)
            }
        return Identity(
            connector_id=self.id,
            subject=claims["sub"],
            display_name=display_name,
            principal="natural",
            assurance=assurance,
            attributes=attributes,
            connector_data={"id_token": id_token, "sid": claims.get("sid"), "acr": acr},
        )
