"""Brute-force protection for every credential check: a progressive delay, then a lockout.

Each factor calls :func:`guard` *before* it looks at the credential, then
:func:`failure` or :func:`success` after::

    verdict = throttle.guard("totp", account_key)      # the client IP is taken from the request
    if not verdict.allowed:
        return throttle.too_many(verdict)               # 429 + Retry-After
    if code_is_right:
        throttle.success(verdict)
    else:
        throttle.failure(verdict)

Policy (per scope, :data:`POLICIES`; the default for every scope):

* per account key (a normalised login name, identity number, phone, account id):
  the first 3 attempts are free; after the n-th failed attempt (n >= 3) the next
  must wait 2^(n-3) s (1, 2, 4 ... capped at 60 s); the 10th failed attempt
  inside the 15-minute window locks the key for 15 minutes.  A success clears
  the key.  Every attempt counts, including those refused while a wait runs (a
  client that ignores Retry-After uses up its attempts; the wait it was told is
  not lengthened).
* per client IP (IPv6 by /64 network): 50 failures inside 15 minutes lock the IP
  for 15 minutes in that scope, whatever the account.  Successes never count, so
  the people behind one office NAT do not lock each other out.

Counters live in the short-lived store and move by ``incr`` only, so they are
exact under parallel requests and across workers.  ``guard`` counts the attempt
*before* the credential is checked, so each of N parallel attempts gets its own
number: only the first 3 may run together, and any later one runs only if the
attempt before it has finished and its wait is over, so at most one attempt per
delay step reaches the verifier.

The account key is whatever the person typed, normalised, and it is used as
given: an unknown login name is throttled exactly like a real one, so a lock
says nothing about whether the account exists.  Keys reach the store only as an
HMAC under a server key (identity numbers are few enough to enumerate a plain
hash) and are never logged.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, cast

from flask import Response, current_app, has_request_context, render_template, request
from flask_babel import gettext as _
from flask_babel import ngettext

log = logging.getLogger("sso.throttle")

COUNT = "throttle-n"  # per-account attempt counter (incr, fixed window)
STATE = "throttle-s"  # per-key state: {"n": last attempt number, "until": epoch seconds}
IP_FAILURES = "throttle-ip"  # per-IP failure counter (incr, fixed window)


@dataclass(frozen=True)
class Policy:
    free_failures: int = 3  # failures before any delay
    max_delay: int = 60  # seconds: cap of the progressive delay
    account_limit: int = 10  # failures in one window that lock the account key
    ip_limit: int = 50  # failures in one window that lock the client IP
    window: int = 15 * 60  # seconds: counters start at the first attempt and last this long
    lockout: int = 15 * 60  # seconds

    def __post_init__(self) -> None:
        # A counter is created no later than the lock it leads to, so with
        # window <= lockout it has expired by the time the lock ends: the key
        # starts afresh instead of being locked again by its old count.
        if self.window > self.lockout:
            raise ValueError("throttle window must not be longer than the lockout")
        if not 0 <= self.free_failures < self.account_limit:
            raise ValueError("free_failures must be below account_limit")

    def delay_after(self, failures: int) -> int:
        """Seconds the next attempt must wait after ``failures`` failures (before the lock)."""
        if failures < self.free_failures:
            return 0
        return int(min(2 ** (failures - self.free_failures), self.max_delay))


DEFAULT_POLICY = Policy()
POLICIES: dict[str, Policy] = {
    "password": DEFAULT_POLICY,
    # Real-name verification and SMS codes while registering: per identity
    # number and per IP.  A lower IP limit: there is no legitimate reason to
    # fail many identity checks from one place.
    "register": Policy(ip_limit=20),
    # SMS codes sent while registering, per IP (each send is charged as a failure).
    "register-sms": Policy(ip_limit=10),
}


def policy_for(scope: str) -> Policy:
    return POLICIES.get(scope, DEFAULT_POLICY)


# Wall clock (epoch seconds), a module attribute so that tests can move time.
_clock = time.time


def now() -> float:
    return _clock()


@dataclass(frozen=True)
class Verdict:
    """The answer of :func:`guard`; pass it back to :func:`failure` / :func:`success`."""

    allowed: bool
    retry_after: int = 0  # seconds, when not allowed
    scope: str = ""
    locked: bool = False  # a lockout (rather than a delay) refused the attempt
    account: tuple[str, int] | None = None  # (store key, attempt number)
    ip: str | None = None  # store key of the client IP

    def __repr__(self) -> str:  # keys are HMACs, but keep them out of logs all the same
        return f"Verdict(allowed={self.allowed}, retry_after={self.retry_after}, scope={self.scope!r})"


# ---- keys ----------------------------------------------------------------------------


def login_key(value: str | None) -> str:
    """The normalised form of a login name: NFKC, no whitespace, case-folded.

    Variants of one name (full-width digits, a lowercase x, spaces) share one
    counter, so they cannot be used to get more attempts.
    """
    text = unicodedata.normalize("NFKC", value or "")
    return "".join(text.split()).casefold()


def client_ip() -> str:
    """The client address as a throttle key: IPv4 as is, IPv6 by its /64 network."""
    raw = (request.remote_addr or "") if has_request_context() else ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _gateway() -> Any:
    return current_app.extensions["sso"]


def _key(scope: str, kind: str, value: str) -> str:
    # Keyed: the store hashes keys with plain SHA-256, which would not hide an
    # identity number (the space of valid numbers is small).
    return _gateway().secret_hasher.hash(f"throttle\x00{scope}\x00{kind}\x00{value}")  # type: ignore[no-any-return]


def _state_ttl(policy: Policy, until: float, t: float) -> int:
    # The state must outlive the counter it sequences and the wait it records.
    return policy.window + max(1, math.ceil(until - t))


# ---- one round trip on Redis (ShortLivedStore.run_script) -------------------------------

# What guard() reads, in the order it reads it, as one atomic step: the IP's state;
# unless that locks the IP, the account's counter (INCR, and its TTL set as
# RedisStore.incr sets it: only when the key has none) and the account's state.
# Without an account key only the IP's state is read.
_GUARD_SCRIPT = """
local ip_state = false
if KEYS[1] ~= '' then
    ip_state = redis.call('GET', KEYS[1])
    if ip_state then
        local ok, decoded = pcall(cjson.decode, ip_state)
        if ok and type(decoded) == 'table' and type(decoded['until']) == 'number'
                and decoded['until'] > tonumber(ARGV[1]) then
            return {ip_state}
        end
    end
end
if KEYS[2] == '' then
    return {ip_state}
end
local n = redis.call('INCR', KEYS[2])
if redis.call('TTL', KEYS[2]) == -1 then
    redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return {ip_state, n, redis.call('GET', KEYS[3])}
"""


# The same, for an attempt made for a short-lived entry that must still exist (the
# login's stored authorization request, KEYS[4]): the entry is read first, and when it
# is gone nothing is read or counted (an empty reply); else the guard's reply with the
# entry after it.
_GUARD_WITH_ENTRY_SCRIPT = (
    """
local entry = redis.call('GET', KEYS[4])
if not entry then
    return {}
end
local function guard()
"""
    + _GUARD_SCRIPT
    + """
end
local reply = guard()
reply[#reply + 1] = entry
return reply
"""
)

_MISSING: Any = object()  # _redis_guard_reads(): the entry asked for is not in the store


def _redis_guard_reads(
    store: Any,
    ikey: str | None,
    akey: str | None,
    policy: Policy,
    t: float,
    entry: tuple[str, str] | None = None,
) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]] | None, Any] | None:
    """guard()'s reads in one script call on Redis: (IP state, (n, account state), entry).

    ``(n, state)`` is None when the IP state locks the attempt (nothing was
    counted) or there is no account key.  ``entry`` (kind, key): that store entry
    is read first, in the same call; the third item is its value, or
    :data:`_MISSING` (then nothing else was read or counted); None without one.
    None for a store without scripts (or a TTL the store would refuse): guard()
    then reads one by one, through the store.
    """
    if policy.window < 1 or (ikey is None and akey is None):
        return None
    entries = [
        (STATE, ikey) if ikey is not None else None,
        (COUNT, akey) if akey is not None else None,
        (STATE, akey) if akey is not None else None,
    ]
    script = _GUARD_SCRIPT
    if entry is not None:
        entries.append(entry)
        script = _GUARD_WITH_ENTRY_SCRIPT
    reply = store.run_script(script, entries, [repr(float(t)), policy.window])
    if reply is None:
        return None
    value = None
    if entry is not None:
        if not reply:
            return None, None, _MISSING
        value = json.loads(reply[-1])  # as the store's get() loads what its put() wrote
        reply = reply[:-1]
    ip_state = json.loads(reply[0]) if reply and reply[0] is not None else None
    if len(reply) < 3:
        return ip_state, None, value
    return ip_state, (int(reply[1]), (json.loads(reply[2]) if reply[2] is not None else None) or {}), value


# What failure() writes for an attempt that did not reach the lock, in the order it
# writes it, as one step: the account's new state (read first: a state that holds a
# "locked" key, or is not an object, is left to failure()'s own path, which may keep
# a running lock; nothing is written then), and the IP's failure count (INCR, its
# TTL set as RedisStore.incr sets it).
_FAILURE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, decoded = pcall(cjson.decode, current)
    if not ok or string.sub(current, 1, 1) ~= '{' or type(decoded) ~= 'table' or decoded['locked'] ~= nil then
        return {0}
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[2] == '' then
    return {1}
end
local failures = redis.call('INCR', KEYS[2])
if redis.call('TTL', KEYS[2]) == -1 then
    redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return {1, failures}
"""


def _redis_failure(
    store: Any, akey: str, n: int, until: float, ikey: str | None, policy: Policy, t: float
) -> int | None:
    """failure()'s writes in one script call on Redis: the IP's new failure count (0 without an IP).

    None when nothing was done (a store without scripts, a TTL the store would
    refuse, or an account state that may hold a lock): failure() then goes store
    by store.
    """
    if policy.window < 1:
        return None
    entries = [(STATE, akey), (IP_FAILURES, ikey) if ikey is not None else None]
    args = [json.dumps({"n": n, "until": until}), _state_ttl(policy, until, t), policy.window]
    reply = store.run_script(_FAILURE_SCRIPT, entries, args)
    if not reply or int(reply[0]) != 1:
        return None
    return int(reply[1]) if len(reply) > 1 else 0


# ---- the API -------------------------------------------------------------------------


def guard(scope: str, account_key: str | None, ip: str | None = None) -> Verdict:
    """May this attempt be checked?  Call before verifying the credential.

    ``account_key`` is normalised here (see :func:`login_key`); pass None when
    there is no account yet.  ``ip`` defaults to the requesting client.
    """
    return cast(Verdict, _guard(scope, account_key, ip, None)[1])  # no entry asked for: always a verdict


def guard_for_entry(
    scope: str, account_key: str | None, entry: tuple[str, str], ip: str | None = None
) -> tuple[dict[str, Any] | None, Verdict | None]:
    """:func:`guard` for an attempt made for a short-lived store entry that must still exist.

    ``entry`` is (kind, key) in the short-lived store: the password login's stored
    authorization request.  It is read before anything is counted, on Redis in the
    same round trip as the guard's own reads (one script call, not a GET and then
    the script); through the store elsewhere.  Returns (its value, the verdict), or
    (None, None) when it is not there: then nothing was counted or read, as when
    the caller looked it up first and stopped.
    """
    value, verdict = _guard(scope, account_key, ip, entry)
    return (None, None) if value is _MISSING else (value, verdict)


def _guard(
    scope: str, account_key: str | None, ip: str | None, entry: tuple[str, str] | None
) -> tuple[Any, Verdict | None]:
    """guard(), and the value of ``entry`` read first (:data:`_MISSING`, no verdict, when it is gone)."""
    policy = policy_for(scope)
    store = _gateway().store
    t = now()
    ip = client_ip() if ip is None else ip
    ikey = _key(scope, "ip", ip) if ip else None
    akey = _key(scope, "account", login_key(account_key)) if account_key is not None else None
    read = _redis_guard_reads(store, ikey, akey, policy, t, entry)  # the reads below, in one round trip
    counted = None
    value = None
    if read is not None:
        ip_state, counted, value = read
        if value is _MISSING:
            return _MISSING, None
    else:
        if entry is not None:
            value = store.get(*entry)
            if value is None:
                return _MISSING, None
        ip_state = store.get(STATE, ikey) if ikey is not None else None
    return value, _verdict(scope, policy, store, t, ikey, akey, ip_state, counted)


def _verdict(
    scope: str,
    policy: Policy,
    store: Any,
    t: float,
    ikey: str | None,
    akey: str | None,
    ip_state: dict[str, Any] | None,
    counted: tuple[int, dict[str, Any]] | None,
) -> Verdict:
    """guard()'s decision from what it read (the account's counter and state read here when not yet)."""
    if ip_state and ip_state.get("until", 0) > t:
        return _refused(scope, ip_state["until"] - t, True)
    if akey is None:
        return Verdict(True, scope=scope, ip=ikey)

    if counted is not None:
        n, state = counted
    else:
        n = store.incr(COUNT, akey, policy.window)
        state = store.get(STATE, akey) or {}
    if state.get("until", 0) > t:
        # A wait or lock is running: this attempt counts, the wait stays as told.
        _record(store, akey, n, state["until"], policy, t, locked=bool(state.get("locked")))
        return _refused(scope, state["until"] - t, bool(state.get("locked")), ikey, policy)
    if n > policy.account_limit:
        # The counter outran the lock (parallel attempts): lock now.
        _lock(store, scope, akey, n, policy, t)
        return _refused(scope, policy.lockout, True, ikey, policy)
    if n > policy.free_failures and state.get("n") != n - 1:
        # Attempt n-1 has not finished yet: it is being checked in parallel.
        # (A success would have reset the counter, so it can only fail.)
        until = t + max(1, policy.delay_after(n - 1))
        _record(store, akey, n, until, policy, t)
        return _refused(scope, until - t, False, ikey, policy)
    return Verdict(True, scope=scope, account=(akey, n), ip=ikey)


def failure(verdict: Verdict) -> None:
    """The credential was wrong: start the next wait, or the lock."""
    if not verdict.allowed:
        return
    policy = policy_for(verdict.scope)
    store = _gateway().store
    t = now()
    if verdict.account is not None:
        akey, n = verdict.account
        if n >= policy.account_limit:
            _lock(store, verdict.scope, akey, n, policy, t)
        else:
            until = t + policy.delay_after(n)
            done = _redis_failure(store, akey, n, until, verdict.ip, policy, t)
            if done is not None:  # the record and the IP's count, in one round trip
                if verdict.ip is not None:
                    _ip_failed(store, verdict.scope, verdict.ip, policy, t, done)
                return
            _record(store, akey, n, until, policy, t)
    if verdict.ip is not None:
        _ip_failure(store, verdict.scope, verdict.ip, policy, t)


def success(verdict: Verdict) -> None:
    """The credential was right: the account key starts afresh (the IP count stays)."""
    if not verdict.allowed or verdict.account is None:
        return
    akey, _n = verdict.account
    _gateway().store.delete_many(((COUNT, akey), (STATE, akey)))  # one DEL on Redis: one round trip


def _record(store: Any, akey: str, n: int, until: float, policy: Policy, t: float, locked: bool = False) -> None:
    """Attempt ``n`` has finished; the next may run at ``until``.

    Attempts racing each other may finish out of order and overwrite a later
    record: that costs the next attempt one refusal, which records itself.  A
    running lock is never replaced by a shorter wait.
    """
    if not locked:
        current = store.get(STATE, akey) or {}
        if current.get("locked") and current.get("until", 0) > until:
            until, locked = current["until"], True
    entry: dict[str, Any] = {"n": n, "until": until}
    if locked:
        entry["locked"] = True
    store.put(STATE, akey, entry, _state_ttl(policy, until, t))


def _lock(store: Any, scope: str, akey: str, n: int, policy: Policy, t: float) -> None:
    _record(store, akey, n, t + policy.lockout, policy, t, locked=True)
    if n in (policy.account_limit, policy.account_limit + 1):  # the failure, or the race, that set it
        _audit_lock(scope, "account", policy)


def _ip_failure(store: Any, scope: str, ikey: str, policy: Policy, t: float) -> None:
    _ip_failed(store, scope, ikey, policy, t, store.incr(IP_FAILURES, ikey, policy.window))


def _ip_failed(store: Any, scope: str, ikey: str, policy: Policy, t: float, failures: int) -> None:
    """The IP's failure count is now ``failures``: lock it at the limit."""
    if failures >= policy.ip_limit:
        until = t + policy.lockout
        store.put(STATE, ikey, {"until": until, "locked": True}, _state_ttl(policy, until, t))
        if failures == policy.ip_limit:
            _audit_lock(scope, "ip", policy)


def _audit_lock(scope: str, kind: str, policy: Policy) -> None:
    from . import audit

    # No key in the event: it may be an identity number.  The IP is on the row.
    audit.record("throttle.locked", outcome="blocked", scope=scope, key_kind=kind, seconds=policy.lockout)


def _refused(scope: str, wait: float, locked: bool, ikey: str | None = None, policy: Policy | None = None) -> Verdict:
    """A refusal; one refused by the account's throttle also counts against the IP."""
    if ikey is not None and policy is not None:
        _ip_failure(_gateway().store, scope, ikey, policy, now())
    retry_after = max(1, math.ceil(wait))
    log.info("throttled scope=%s retry_after=%s locked=%s", scope, retry_after, locked)
    return Verdict(False, retry_after, scope=scope, locked=locked)


# ---- the answer to a refused attempt ---------------------------------------------------


def wait_text(seconds: int) -> str:
    if seconds < 60:
        return ngettext("%(num)d second", "%(num)d seconds", seconds)
    minutes = math.ceil(seconds / 60)
    return ngettext("%(num)d minute", "%(num)d minutes", minutes)


def message(verdict: Verdict) -> str:
    return _(
        "Too many attempts. For your security, please wait %(wait)s before trying again.",
        wait=wait_text(verdict.retry_after),
    )


def too_many(verdict: Verdict, back_url: str | None = None) -> Response:
    """The 429 page for a refused attempt, with ``Retry-After``.

    The page depends only on the wait: a locked unknown login name and a locked
    real account get the same bytes.
    """
    body = render_template("throttled.html", message=message(verdict), back_url=back_url)
    response = Response(body, status=429, mimetype="text/html")
    response.headers["Retry-After"] = str(verdict.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response
