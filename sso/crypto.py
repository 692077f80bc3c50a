"""Server-side secrets: the key-encryption key, derived keys, secret hashing.

One master key (the KEK) is loaded or generated at start-up; everything else
(Flask's session/CSRF key, the client-secret pepper, the pairwise-subject salt)
is derived from it with HKDF so an operator manages a single secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEK_FILE = "key-encryption-key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token; 32 bytes = 256 bits of entropy."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """The durable identifier of a bearer secret (codes, refresh tokens): never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyEncryptionKeyError(Exception):
    pass


def load_or_create_kek(configured: str, instance_path: str) -> bytes:
    """The configured KEK, or a generated one kept under the instance folder (0600)."""
    if configured:
        try:
            key = b64url_decode(configured.strip())
        except (ValueError, TypeError) as exc:
            raise KeyEncryptionKeyError("key_encryption_key is not base64url") from exc
        if len(key) != 32:
            raise KeyEncryptionKeyError("key_encryption_key must decode to 32 bytes")
        return key
    folder = Path(instance_path)
    # The instance folder holds the key file and the SQLite database (password and
    # secret hashes): readable by the service account only.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / KEK_FILE
    try:
        # O_EXCL: of two processes starting together, one creates the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = b64url_decode(path.read_text().strip())
        if len(key) != 32:
            raise KeyEncryptionKeyError(f"{path} does not hold a 32-byte key") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(b64url(key))
    return key


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()
    ).derive(master)


class SecretBox:
    """AES-256-GCM under the KEK; the associated data binds a ciphertext to its row."""

    def __init__(self, kek: bytes, purpose: str = "sso signing-key encryption") -> None:
        self._aead = AESGCM(derive_key(kek, purpose))

    def seal(self, plaintext: bytes, associated: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated.encode())

    def open(self, sealed: bytes, associated: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], associated.encode())


class SecretHasher:
    """Client secrets: HMAC-SHA-256 under a server pepper, compared in constant time.

    Secrets are server-generated with 256 bits of entropy, so a slow password hash
    buys nothing and would cost every token request tens of milliseconds.
    """

    def __init__(self, kek: bytes) -> None:
        self._pepper = derive_key(kek, "sso client-secret pepper")

    def hash(self, secret: str) -> str:
        mac = hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256)
        return "hmac-sha256$" + mac.hexdigest()

    def verify(self, secret: str, stored: str | None) -> bool:
        if not stored:
            return False
        return hmac.compare_digest(self.hash(secret), stored)


class IdNumberVault:
    """Resident identity numbers at rest: sealed for use, keyed hash for lookup.

    The hash is keyed (HMAC under a KEK-derived key) because the space of valid
    numbers is small enough to enumerate: a plain SHA-256 would be reversible.
    """

    def __init__(self, kek: bytes) -> None:
        self._mac_key = derive_key(kek, "sso id-number lookup")
        self._box = SecretBox(kek, "sso id-number sealing")

    def lookup_hash(self, number: str) -> str:
        return hmac.new(self._mac_key, number.upper().encode("ascii"), hashlib.sha256).hexdigest()

    def seal(self, number: str, account_id: str) -> bytes:
        return self._box.seal(number.upper().encode("ascii"), "id-number:" + account_id)

    def open(self, sealed: bytes, account_id: str) -> str:
        return self._box.open(sealed, "id-number:" + account_id).decode("ascii")


def _compact_json(value: Any) -> str:
    """itsdangerous' default payload serializer (``_CompactJSON.dumps``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_TIMESTAMP = struct.Struct(">Q")


class TimedSigner:
    """``itsdangerous.URLSafeTimedSerializer(...).dumps``, its signing key derived once.

    itsdangerous builds its serializer and signer objects and derives the HMAC key
    from the secret key and salt on every call (Flask-WTF's ``generate_csrf`` even
    makes a new serializer for each token).  Here the derived key's HMAC state is
    made once and copied for each signature.  The bytes are itsdangerous 2's for
    the same second (tests compare them): the payload's JSON, zlib-compressed when
    that is more than one byte shorter (then prefixed with '.'), base64url without
    padding; '.', the timestamp's big-endian bytes (leading zeros dropped)
    base64url; '.', the HMAC-SHA1 of all that, base64url.  What it signs is read
    back by itsdangerous (``loads``) as before: only the signing is done here.

    ``key_derivation``: itsdangerous' ``"django-concat"`` (its default: SHA-1 of
    salt + "signer" + key) or ``"hmac"`` (HMAC of the salt under the key: Flask's
    session cookie).  ``dumps``: the payload serializer (itsdangerous' compact JSON).
    """

    def __init__(
        self,
        secret_key: str | bytes,
        salt: str | bytes,
        *,
        key_derivation: str = "django-concat",
        dumps: Callable[[Any], str] = _compact_json,
    ) -> None:
        key = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
        salt_bytes = salt.encode("utf-8") if isinstance(salt, str) else salt
        if key_derivation == "django-concat":
            derived = hashlib.sha1(salt_bytes + b"signer" + key).digest()  # noqa: S324 - itsdangerous's derivation
        elif key_derivation == "hmac":
            derived = hmac.new(key, salt_bytes, hashlib.sha1).digest()
        else:
            raise ValueError(f"unsupported key derivation {key_derivation!r}")
        self._mac = hmac.new(derived, digestmod=hashlib.sha1)
        self._dumps = dumps

    def dumps(self, value: Any, now: int | None = None) -> str:
        """``value`` serialised and signed at ``now`` (epoch seconds; the current second by default)."""
        payload = self._dumps(value).encode("utf-8")
        compressed = zlib.compress(payload)
        if len(compressed) < len(payload) - 1:
            signed = b"." + base64.urlsafe_b64encode(compressed).rstrip(b"=")
        else:
            signed = base64.urlsafe_b64encode(payload).rstrip(b"=")
        stamp = _TIMESTAMP.pack(int(time.time()) if now is None else now).lstrip(b"\x00")
        signed += b"." + base64.urlsafe_b64encode(stamp).rstrip(b"=")
        mac = self._mac.copy()
        mac.update(signed)
        return (signed + b"." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")).decode("ascii")
