"""Password verification by libsodium (PyNaCl), argon2-cffi for the hashes libsodium is not given.

``sso.connectors.local.PASSWORDS`` is argon2-cffi's PasswordHasher whose ``verify``
runs libsodium's argon2id for the gateway's own hashes (argon2id, v=19, p=1, the
canonical PHC form): the same answer, less CPU.  Every other hash — another lane
count, version 16, argon2i, a string too long for libsodium, anything malformed —
is verified by argon2-cffi exactly as before.  Both release the GIL while they
hash: the server runs 4 threads per worker.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import nacl.pwhash.argon2id
import pytest
from argon2 import PasswordHasher, Type, low_level
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sso.connectors import local

PASSWORD = "correct horse battery staple"
UNICODE_PASSWORD = "密码-Zhāng-ß-🔑"
# Small costs for the hashes of other shapes: the shape, not the cost, decides the path.
SMALL = {"time_cost": 1, "memory_cost": 64}


@pytest.fixture
def sodium_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Each hash handed to libsodium (the real call still runs)."""
    calls: list[bytes] = []
    real = local.crypto_pwhash_str_verify

    def spy(stored: bytes, password: bytes) -> bool:
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(local, "crypto_pwhash_str_verify", spy)
    return calls


def test_the_gateways_hashes_are_argon2id_19mib_t2_p1_and_verify_in_libsodium(sodium_calls: list[bytes]):
    stored = local.PASSWORDS.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert local.PASSWORDS.verify(stored, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(stored, PASSWORD + "!")
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(stored, "")
    assert sodium_calls == [stored.encode()] * 3
    assert not local.PASSWORDS.check_needs_rehash(stored)


def test_the_dummy_hash_of_unknown_names_takes_the_same_path_as_a_real_one(sodium_calls: list[bytes]):
    # Same shape and parameters: an unknown name costs what a wrong password costs.
    real = local.PASSWORDS.hash(PASSWORD)
    assert local._DUMMY_HASH.split("$")[:4] == real.split("$")[:4]
    assert len(local._DUMMY_HASH) == len(real)
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(local._DUMMY_HASH, PASSWORD)
    assert sodium_calls == [local._DUMMY_HASH.encode()]


def test_unicode_passwords_are_utf8_on_both_sides(sodium_calls: list[bytes]):
    by_cffi = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(UNICODE_PASSWORD)
    assert local.PASSWORDS.verify(by_cffi, UNICODE_PASSWORD) is True
    assert local.PASSWORDS.verify(by_cffi, UNICODE_PASSWORD.encode()) is True
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(by_cffi, UNICODE_PASSWORD.upper())
    # NUL inside a password is part of it (length-counted, not a C string).
    with_nul = local.PASSWORDS.hash("a\x00b")
    assert local.PASSWORDS.verify(with_nul, "a\x00b") is True
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(with_nul, "a")
    assert len(sodium_calls) == 5


def test_libsodiums_own_strings_verify_in_both_libraries(sodium_calls: list[bytes]):
    made = nacl.pwhash.argon2id.str(UNICODE_PASSWORD.encode(), opslimit=2, memlimit=19 * 1024 * 1024).decode()
    assert made.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert local.PASSWORDS.verify(made, UNICODE_PASSWORD) is True
    assert PasswordHasher().verify(made, UNICODE_PASSWORD) is True
    assert not local.PASSWORDS.check_needs_rehash(made)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda pw: PasswordHasher(parallelism=4, **SMALL).hash(pw), id="p=4"),
        pytest.param(lambda pw: PasswordHasher(parallelism=2, **SMALL).hash(pw), id="p=2"),
        pytest.param(lambda pw: PasswordHasher(type=Type.I, **SMALL).hash(pw), id="argon2i"),
        pytest.param(lambda pw: PasswordHasher(hash_len=64, salt_len=32, **SMALL).hash(pw), id="over-127-bytes"),
        pytest.param(
            lambda pw: low_level.hash_secret(pw.encode(), os.urandom(16), 1, 64, 1, 32, Type.ID, version=16).decode(),
            id="version-16",
        ),
    ],
)
def test_other_hashes_verify_through_argon2_cffi(make: Any, sodium_calls: list[bytes]):
    stored = make(UNICODE_PASSWORD)
    assert local.PASSWORDS.verify(stored, UNICODE_PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(stored, PASSWORD)
    assert sodium_calls == []  # libsodium never saw them (it answers "mismatch" for version 16)
    assert local.PASSWORDS.check_needs_rehash(stored)


def test_other_parameters_with_one_lane_verify_in_libsodium_and_need_a_rehash(sodium_calls: list[bytes]):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    assert local.PASSWORDS.verify(weak, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        local.PASSWORDS.verify(weak, UNICODE_PASSWORD)
    assert sodium_calls == [weak.encode()] * 2
    assert local.PASSWORDS.check_needs_rehash(weak)


# A fixed hash of PASSWORD at the gateway's parameters (fixed: test ids must agree across xdist workers).
GOOD = "$argon2id$v=19$m=19456,t=2,p=1$Zml4ZWQgc2FsdCAxNiBieQ$6WG3lcqMmVj0iy7mAHcASWWeFLvLHxNtuiz1DIMYzvE"


def test_the_fixed_hash_verifies_in_both_libraries(sodium_calls: list[bytes]):
    assert local.PASSWORDS.verify(GOOD, PASSWORD) is True
    assert PasswordHasher().verify(GOOD, PASSWORD) is True
    assert sodium_calls == [GOOD.encode()]


_PARTS = GOOD.split("$")  # ['', 'argon2id', 'v=19', 'm=19456,t=2,p=1', salt, hash]


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("", id="empty"),
        pytest.param("not a hash", id="not-a-hash"),
        pytest.param("$argon2id$", id="prefix-only"),
        pytest.param(GOOD + "\n", id="trailing-newline"),  # the pattern is matched in full
        pytest.param(GOOD + "A", id="impossible-length"),  # base64 of 4n+1 characters
        pytest.param(GOOD[:-2], id="hash-cut-short"),
        pytest.param(GOOD.replace("m=19456", "m=019456"), id="leading-zero"),
        pytest.param(GOOD.replace("v=19", "v=16"), id="other-version-label"),
        pytest.param(GOOD.replace("$argon2id$", "$argon2x$"), id="unknown-type"),
        pytest.param(GOOD.replace("$argon2id$v=19$", "$argon2id$"), id="no-version"),  # read as 16
        pytest.param(GOOD[:-4] + "é" * 4, id="not-ascii"),
        pytest.param("$".join([*_PARTS[:4], "c2FsdA", _PARTS[5]]), id="4-byte-salt"),
    ],
)
def test_malformed_or_foreign_hashes_never_verify(stored: str):
    with pytest.raises((VerificationError, InvalidHashError, UnicodeEncodeError)):
        local.PASSWORDS.verify(stored, PASSWORD)


def _spin(until: Any) -> tuple[int, float]:
    """Iterations of a Python loop until ``until()`` is true, and the seconds it took."""
    n = 0
    t0 = time.perf_counter()
    while not until():
        n += 1
    return n, time.perf_counter() - t0


def test_libsodium_releases_the_gil_while_it_hashes():
    """Python keeps running in another thread during a verify, as beside argon2-cffi.

    Holding the GIL, the verify would let this thread run only at its start and
    end (a C call is never interrupted): a few per cent of its free rate (a loaded machine
    still leaves it far more than a tenth).
    """
    # A long verify (t=40: ~0.3-1 s), so the start and the scheduler's noise are small beside it.
    slow = PasswordHasher(time_cost=40, memory_cost=19 * 1024, parallelism=1).hash(PASSWORD)
    assert local._SODIUM_HASH.fullmatch(slow)
    deadline = time.perf_counter() + 0.2
    free, free_took = _spin(lambda: time.perf_counter() > deadline)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (local.PASSWORDS.verify(slow, PASSWORD), done.set()))
    worker.start()
    during, took = _spin(done.is_set)
    worker.join()
    assert took > 0.1, f"this thread ran {took:.3f} s of the verify: it held the GIL"
    assert during / took > 0.1 * free / free_took, (during / took, free / free_took)
