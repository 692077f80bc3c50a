"""Signing keys: the current key per algorithm, the published JWKS, rotation.

Token code asks the KeyManager to sign and never loads keys itself.  Keys are
parsed once per process and cached by ``kid`` (parsing a PEM RSA key costs tens of
milliseconds); the key table is re-read every ``key_refresh_interval`` seconds so a
rotation made by any process (``sso keys rotate``) reaches all of them.

Lifecycle of a key of algorithm A (no state column: it follows from the times):
  published  from ``created_at``            (clients can fetch it before it signs)
  active     from ``activates_at`` until a newer key of A activates
  retired    still published, until every token it signed has expired
  expired    no longer published nor accepted
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from .crypto import SecretBox
from .db import db
from .models import SigningKey, utcnow

SUPPORTED_ALGS = ("RS256", "ES256")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class TokenInvalid(Exception):
    """A JWT we were asked to trust is not ours, is malformed, or its key expired."""


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    key: RSAKey | ECKey
    public_jwk: dict[str, Any]
    created_at: datetime
    activates_at: datetime


@dataclass(frozen=True)
class KeyStatus:
    kid: str
    alg: str
    state: str  # next | active | retired | expired
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None
    unpublish_at: datetime | None


def _generate(alg: str) -> tuple[RSAKey | ECKey, str]:
    if alg == "RS256":
        key: RSAKey | ECKey = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        raise ValueError(f"unsupported algorithm {alg}")
    # RFC 7638 thumbprint as kid: stable, unique, says nothing about the key's secret.
    return key, key.thumbprint()


class KeyManager:
    def __init__(self, box: SecretBox, *, retention: int, publish_lead: int, refresh: int) -> None:
        self._box = box
        self._retention = timedelta(seconds=retention)
        self.publish_lead = publish_lead
        self._refresh_every = refresh
        self._lock = threading.Lock()
        self._parsed: dict[str, LoadedKey] = {}
        self._keys: list[LoadedKey] = []
        self._header_segments: dict[tuple[str, str, str | None], bytes] = {}
        self._loaded_at = -1.0e9
        self._jwks_doc: bytes = b'{"keys":[]}'
        self._jwks_etag = ""
        self._jwks_until: datetime = datetime.min
        self._verify_set: KeySet | None = None

    # ---- loading -----------------------------------------------------------
    def ensure_keys(self) -> None:
        """First start: one key per supported algorithm, active at once."""
        existing = {k.alg for k in db.session.execute(db.select(SigningKey)).scalars()}
        for alg in SUPPORTED_ALGS:
            if alg not in existing:
                self._create(alg, activate_in=0)
        db.session.commit()
        self.reload()

    def _create(self, alg: str, activate_in: int) -> SigningKey:
        key, kid = _generate(alg)
        public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
        now = utcnow()
        row = SigningKey(
            kid=kid,
            alg=alg,
            public_jwk=public,
            private_key_sealed=self._box.seal(key.as_bytes(private=True), kid),
            created_at=now,
            activates_at=now + timedelta(seconds=activate_in),
        )
        db.session.add(row)
        return row

    def reload(self) -> None:
        rows = db.session.execute(
            db.select(SigningKey).order_by(SigningKey.activates_at, SigningKey.created_at)
        ).scalars()
        keys = []
        for row in rows:
            loaded = self._parsed.get(row.kid)
            if loaded is None:
                pem = self._box.open(row.private_key_sealed, row.kid)
                cls = RSAKey if row.alg == "RS256" else ECKey
                parsed = cls.import_key(pem, parameters={"kid": row.kid, "alg": row.alg})
                loaded = LoadedKey(
                    row.kid, row.alg, parsed, row.public_jwk, row.created_at, row.activates_at
                )
                self._parsed[row.kid] = loaded
            keys.append(loaded)
        with self._lock:
            self._keys = keys
            self._loaded_at = time.monotonic()
            self._rebuild_jwks(utcnow())

    def reload_due(self) -> bool:
        """Whether the next use re-reads the key table (and so needs an app context)."""
        return time.monotonic() - self._loaded_at >= self._refresh_every

    def _maybe_reload(self) -> None:
        if self.reload_due():
            self.reload()

    # ---- lifecycle -------------------------------------------------------------
    def _retired_at(self, key: LoadedKey, now: datetime) -> datetime | None:
        """When a newer key of the same algorithm took over signing (None: not yet)."""
        later = [
            k.activates_at
            for k in self._keys
            if k.alg == key.alg and k.activates_at > key.activates_at and k.activates_at <= now
        ]
        return min(later) if later else None

    def statuses(self) -> list[KeyStatus]:
        self.reload()
        now = utcnow()
        out = []
        for key in self._keys:
            retired = self._retired_at(key, now)
            unpublish = retired + self._retention if retired else None
            if key.activates_at > now:
                state = "next"
            elif retired is None:
                state = "active"
            elif unpublish is not None and unpublish > now:
                state = "retired"
            else:
                state = "expired"
            out.append(
                KeyStatus(key.kid, key.alg, state, key.created_at, key.activates_at, retired, unpublish)
            )
        return out

    def _published(self, now: datetime) -> list[LoadedKey]:
        published = []
        for key in self._keys:
            retired = self._retired_at(key, now)
            if retired is None or retired + self._retention > now:
                published.append(key)
        return published

    def _rebuild_jwks(self, now: datetime) -> None:
        published = self._published(now)
        doc = json.dumps({"keys": [k.public_jwk for k in published]}, separators=(",", ":"))
        self._jwks_doc = doc.encode()
        self._jwks_etag = '"' + hashlib.sha256(self._jwks_doc).hexdigest()[:32] + '"'
        self._verify_set = KeySet([k.key for k in published]) if published else None
        # The document changes next when a pending key activates (retiring its
        # predecessor) or a retired key reaches the end of its retention.
        moments = [k.activates_at for k in self._keys if k.activates_at > now]
        for key in published:
            retired = self._retired_at(key, now)
            if retired is not None:
                moments.append(retired + self._retention)
        self._jwks_until = min(moments) if moments else datetime.max

    def rotate(self, alg: str, activate_in: int | None = None) -> SigningKey:
        """Add the next key: published now, signing after ``activate_in`` seconds."""
        if alg not in SUPPORTED_ALGS:
            raise ValueError(f"unsupported algorithm {alg}; choose one of {SUPPORTED_ALGS}")
        lead = self.publish_lead if activate_in is None else activate_in
        if lead < 0:
            raise ValueError("activation delay must not be negative")
        row = self._create(alg, lead)
        db.session.commit()
        self.reload()
        return row

    # ---- use --------------------------------------------------------------------
    def signing_key(self, alg: str) -> LoadedKey:
        self._maybe_reload()
        now = utcnow()
        active = [k for k in self._keys if k.alg == alg and k.activates_at <= now]
        if not active:
            raise LookupError(f"no active {alg} signing key")
        return active[-1]

    def sign(self, claims: dict[str, Any], *, alg: str, typ: str | None = None) -> str:
        """A compact JWS (RFC 7515 §7.1) of ``claims`` with header ``{"typ", "alg", "kid"}``.

        The bytes ``joserfc.jwt.encode`` makes (its header order, ``typ`` "JWT" by
        default, its JSON), signed by ``cryptography`` directly: every token response
        signs, and the library's generic path (algorithm registry, header checks, the
        header's JSON and base64 each time) cost ~12 µs beside a ~218 µs RS256
        signature, ~3 % of a client_credentials response.  The header segment is made
        once per key, algorithm and type.  Verification stays with joserfc.
        """
        key = self.signing_key(alg)
        prefix = self._header_segments.get((key.kid, alg, typ))
        if prefix is None:
            header = {"typ": typ or "JWT", "alg": alg, "kid": key.kid}
            prefix = _b64(json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode()) + b"."
            self._header_segments[(key.kid, alg, typ)] = prefix
        payload = json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode()
        signing_input = prefix + _b64(payload)
        private = key.key.private_key
        if alg == "RS256":
            signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            # RFC 7518 §3.4: R and S as 32-byte big-endian integers, not DER.
            r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            raise ValueError(f"unsupported algorithm {alg}")
        return (signing_input + b"." + _b64(signature)).decode("ascii")

    def jwks_document(self) -> tuple[bytes, str]:
        """The published JWKS, serialised once per change, with its ETag."""
        self._maybe_reload()
        now = utcnow()
        if now >= self._jwks_until:
            with self._lock:
                self._rebuild_jwks(now)
        return self._jwks_doc, self._jwks_etag

    def verify(self, token: str, *, typ: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Verify a JWT we issued; returns (header, claims). Time claims are the caller's job."""
        self.jwks_document()  # refresh the verification set if a key expired out
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise TokenInvalid("not a compact JWS")
        key_set = self._verify_set
        if key_set is None:
            raise TokenInvalid("no published keys")
        try:
            decoded = jwt.decode(token, key_set, algorithms=list(SUPPORTED_ALGS))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise TokenInvalid(str(exc) or exc.__class__.__name__) from None
        header = dict(decoded.header)
        if typ is not None and str(header.get("typ", "")).lower() != typ:
            raise TokenInvalid("unexpected token type")
        return header, dict(decoded.claims)
