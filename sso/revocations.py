"""Which grants and access tokens are still active, remembered per process.

Introspection and userinfo ask, for every JWT access token, whether its grant was
revoked and whether its ``jti`` is on the revocation list.  Asking the database
each time costs a round trip; this module remembers the *positive* answers
("grant G is not revoked", "jti J is not revoked") for ``revocation_cache_ttl``
seconds, and forgets them the moment a revocation commits:

* **Every write is seen centrally**, at the SQLAlchemy engine: each UPDATE or
  DELETE of ``grants`` or ``accounts`` (userinfo's copy of the account, the status
  included; a deleted account's grants go with it) and INSERT into
  ``revoked_access_tokens`` that reaches the database through
  SQLAlchemy — ORM attribute changes, bulk ``update(Grant)``, Core statements,
  raw SQL text — is recorded on its connection (``after_cursor_execute``).  What it
  names (a grant id, a session id, a portal, an account, a jti) is read from the
  statement and its parameters; anything it cannot read forgets everything.
  Nothing at the write sites has to remember to call us.
* **After the transaction commits** (``Session.after_commit``; the pool's
  ``checkin`` for connections used outside a session) this process forgets those
  entries synchronously, then tells the other processes and instances over Redis
  pub/sub and waits (at most ``LIVENESS`` seconds) until every subscriber — as
  many as PUBLISH reached or as have pulsed lately (``MEMBERS_KEY``), whichever is
  more — has acknowledged, so when the revoking request returns, no instance
  answers from a stale entry (one that did not acknowledge has stopped trusting
  its entries by then).  If Redis cannot be reached, the revoker waits until every
  process that cannot reach it either has stopped trusting its entries, and the
  announcement is retried.  A rolled-back transaction forgets nothing.
* **The cache is trusted only while the subscription is live.**  A subscriber
  thread per process pings on its subscription every ``HEARTBEAT`` seconds; an
  entry is used only while a pong for a ping sent less than ``LIVENESS`` seconds
  ago has come back — which proves every invalidation published before that ping
  was applied.  On every (re)subscription everything is forgotten first.  While
  Redis is unreachable every lookup goes to the database, as without the cache.
  With the embedded store (no Redis: one process) invalidation is in-process, plus
  a stamp file in the instance folder that the ``sso`` command rewrites.
* **The race with a reader** that read "active" from the database just before a
  revocation committed: the reader takes a ticket (the generation) before its
  query and may store its answer only if no invalidation happened since.

Userinfo's copy of the account (``AccountFacts``: the columns claims read, never
the password hash) is remembered and forgotten the same way.  Negative answers are
not remembered, and legal-person tokens keep their registry check on every request
(``sso.oidc.endpoints``).  Entries live at most ``revocation_cache_ttl`` seconds
(0 turns the cache off); at most ``MAX_ENTRIES`` grants, as many jtis and as many
accounts are kept.  Changes made to the database without SQLAlchemy (by hand, in
``psql``) are seen within the TTL.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, Grouping

log = logging.getLogger("sso.revocations")

EXTENSION = "sso_revocations"
MAX_ENTRIES = 100_000
HEARTBEAT = 0.5  # seconds between pings on the subscription
LIVENESS = 3.0  # an entry is trusted only while a pong for a ping this recent came back
CHANNEL = "sso:revocations:{db}"
ACK_KEY = "sso:revocations:ack:{id}"
# Subscribers alive lately (origin -> wall-clock time of their last pong): a revoker waits
# for as many acknowledgements as there are, even for one Redis dropped without its noticing.
MEMBERS_KEY = "sso:revocations:members"
MEMBER_WINDOW = LIVENESS + 2.0  # seconds; the 2 allow for clocks a little apart

# An invalidation: ("all",) forgets everything; ("jti", J) one revocation-list
# entry; ("account", A) userinfo's copy of one account; ("grant", ((column, value), ...))
# the grants whose columns all equal those values (id, sid, client_id or account_id).
Key = tuple[Any, ...]
ALL: Key = ("all",)
_GRANT_FIELDS = ("id", "sid", "client_id", "account_id")
_INDEXED = ("sid", "client_id", "account_id")


@dataclass(frozen=True)
class GrantFacts:
    """What a request needs of an active grant, without its database row."""

    id: str
    account_id: str | None
    acting: dict[str, Any] | None
    sid: str | None
    client_id: str


@dataclass(frozen=True)
class AccountFacts:
    """The columns userinfo reads of an account (never its password hash), as last committed."""

    id: str
    status: str
    username: str | None
    display_name: str
    phone: str | None
    phone_verified_at: Any
    id_number_masked: str | None
    id_number_sealed: bytes | None
    assurance: str
    verified_at: Any
    verified_attributes: dict[str, Any]

    @classmethod
    def of(cls, account: Any) -> AccountFacts:
        return cls(
            account.id,
            account.status,
            account.username,
            account.display_name,
            account.phone,
            account.phone_verified_at,
            account.id_number_masked,
            account.id_number_sealed,
            account.assurance,
            account.verified_at,
            copy.deepcopy(account.verified_attributes or {}),
        )


# ---- the cache ------------------------------------------------------------------------


class RevocationCache:
    """Per process: positive answers, forgotten on every revocation (see the module)."""

    def __init__(
        self, ttl: float, redis_url: str | None = None, *, stamp: str | None = None, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.ttl = float(ttl)
        self.enabled = self.ttl > 0
        self.redis_url = redis_url or None
        self.max_entries = max_entries
        self.origin = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._gen = 0
        self._grants: dict[str, tuple[float, GrantFacts]] = {}
        self._jtis: dict[str, float] = {}
        self._accounts: dict[str, tuple[float, AccountFacts]] = {}
        self._index: dict[tuple[str, str], set[str]] = {}
        # Embedded store: one process, nothing to listen to; always live.
        self._live_until = float("inf") if self.redis_url is None else 0.0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._publisher: Any = None
        self._channel = ""
        self._unpublished: list[Key] = []
        self._failing_since: float | None = None
        # Embedded store: a file in the instance folder that every revocation rewrites, so
        # a second process on the same files (the `sso` command) is heard at once too.
        self._stamp = stamp if self.redis_url is None else None
        self._stamp_seen = self._stamp_state()
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0, "clears": 0, "published": 0, "acks_missing": 0}
        _CACHES.add(self)  # the subscriber starts with the first reader (ticket): not in `sso` commands

    # -- reading ----------------------------------------------------------------------

    def live(self) -> bool:
        if self._stamp is not None and self._stamp_state() != self._stamp_seen:
            self._stamp_changed()
        return self.enabled and self._live_until > time.monotonic()

    def _stamp_state(self) -> tuple[int, int, int] | None:
        if self._stamp is None:
            return None
        try:
            st = os.stat(self._stamp)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _stamp_changed(self) -> None:
        with self._lock:
            self._stamp_seen = self._stamp_state()
            self._gen += 1
            self._clear_locked()

    def _touch_stamp(self) -> None:
        assert self._stamp is not None
        mine, tmp = secrets.token_hex(16), f"{self._stamp}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(mine)
            os.replace(tmp, self._stamp)
            # Still ours (nobody else revoked since): no need to forget everything here.
            with open(self._stamp) as fh:
                st = os.fstat(fh.fileno())
                if fh.read() == mine:
                    self._stamp_seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as error:
            log.error("revocation stamp %s not written: %s", self._stamp, error)

    def grant(self, gid: str, jti: str) -> GrantFacts | None:
        """The grant's facts when both it and the jti are known active, else None."""
        if not self.live():
            return None
        now = time.monotonic()
        entry = self._grants.get(gid)
        jti_until = self._jtis.get(jti)
        if entry is None or entry[0] <= now or jti_until is None or jti_until <= now:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return entry[1]

    def jti(self, jti: str) -> bool:
        """True when the jti is known not to be on the revocation list."""
        if not self.live():
            return False
        now = time.monotonic()
        until = self._jtis.get(jti)
        if until is None or until <= now:
            self.stats["misses"] += 1
            return False
        self.stats["hits"] += 1
        return True

    def account(self, account_id: str) -> AccountFacts | None:
        """The account as last committed, when remembered."""
        if not self.live():
            return None
        entry = self._accounts.get(account_id)
        if entry is None or entry[0] <= time.monotonic():
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return entry[1]

    def store_account(self, ticket: int | None, account: AccountFacts) -> None:
        if ticket is None:
            return
        until = time.monotonic() + self.ttl
        with self._lock:
            if ticket != self._gen or not self.live():
                return
            if account.id not in self._accounts and len(self._accounts) >= self.max_entries:
                self._accounts.pop(next(iter(self._accounts)))
            self._accounts[account.id] = (until, account)

    def ticket(self) -> int | None:
        """Take before reading the database; None: do not store what you read."""
        if self._thread is None and self.enabled and self.redis_url is not None and not self._closed:
            self._start()  # the first reader in this process (or in a forked child)
        if not self.live():
            return None
        return self._gen

    def store(self, ticket: int | None, jti: str, grant: GrantFacts | None = None) -> None:
        """Remember what the reader holding ``ticket`` found active, unless revoked since."""
        if ticket is None:
            return
        until = time.monotonic() + self.ttl
        with self._lock:
            if ticket != self._gen or not self.live():
                return
            if len(self._jtis) >= self.max_entries:
                self._jtis.pop(next(iter(self._jtis)))
            self._jtis[jti] = until
            if grant is not None:
                if grant.id not in self._grants and len(self._grants) >= self.max_entries:
                    self._drop(next(iter(self._grants)))
                self._drop(grant.id)
                self._grants[grant.id] = (until, grant)
                for field in _INDEXED:
                    value = getattr(grant, field)
                    if value:
                        self._index.setdefault((field, value), set()).add(grant.id)

    def __len__(self) -> int:
        return len(self._grants) + len(self._jtis) + len(self._accounts)

    # -- forgetting ----------------------------------------------------------------------

    def _drop(self, gid: str) -> None:
        entry = self._grants.pop(gid, None)
        if entry is None:
            return
        for field in _INDEXED:
            value = getattr(entry[1], field)
            if value:
                members = self._index.get((field, value))
                if members is not None:
                    members.discard(gid)
                    if not members:
                        del self._index[(field, value)]

    def forget(self, keys: Iterable[Key]) -> None:
        """Apply invalidations here, now (any in-flight reader's answer is refused)."""
        keys = list(keys)
        with self._lock:
            self._gen += 1
            self.stats["invalidations"] += 1
            for key in keys:
                if key[0] == "all":
                    self._clear_locked()
                    return
            for key in keys:
                if key[0] == "jti":
                    self._jtis.pop(key[1], None)
                    continue
                if key[0] == "account":
                    self._accounts.pop(key[1], None)
                    continue
                conditions = dict(key[1])
                if not conditions:
                    self._clear_locked()
                    return
                if "id" in conditions:
                    candidates: Iterable[str] = [conditions.pop("id")]
                else:
                    field = next(f for f in _INDEXED if f in conditions)
                    candidates = list(self._index.get((field, conditions.pop(field)), ()))
                for gid in candidates:
                    entry = self._grants.get(gid)
                    if entry is not None and all(getattr(entry[1], f) == v for f, v in conditions.items()):
                        self._drop(gid)

    def clear(self) -> None:
        with self._lock:
            self._gen += 1
            self._clear_locked()

    def _clear_locked(self) -> None:
        self.stats["clears"] += 1
        self._grants.clear()
        self._jtis.clear()
        self._accounts.clear()
        self._index.clear()

    def revoked(self, keys: list[Key]) -> None:
        """A transaction that revoked ``keys`` committed: forget here, then everywhere."""
        self.forget(keys)
        if self.redis_url is not None:
            self._publish(keys)
        elif self._stamp is not None:
            self._touch_stamp()

    # -- Redis: publishing -----------------------------------------------------------

    def _client(self) -> Any:
        if self._publisher is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry

            client = redis.Redis.from_url(
                self.redis_url,  # type: ignore[arg-type]
                decode_responses=True,
                socket_timeout=LIVENESS + 1,
                socket_connect_timeout=1.0,
                health_check_interval=15,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._channel = CHANNEL.format(db=client.connection_pool.connection_kwargs.get("db", 0))
            self._publisher = client
        return self._publisher

    def _publish(self, keys: list[Key], *, wait: bool = True) -> bool:
        message_id = secrets.token_hex(12)
        payload = json.dumps({"id": message_id, "origin": self.origin, "keys": keys})
        try:
            client = self._client()
            now = time.time()
            pipe = client.pipeline(transaction=False)
            pipe.publish(self._channel, payload)
            pipe.zcount(MEMBERS_KEY, now - MEMBER_WINDOW, "+inf")
            pipe.zremrangebyscore(MEMBERS_KEY, "-inf", now - 600)
            published, members, _ = pipe.execute()
            receivers = max(int(published), int(members))
            self.stats["published"] += 1
        except Exception as error:  # noqa: BLE001 - Redis unreachable: retried by the subscriber
            log.error("revocation not yet announced to other processes (retrying): %s", error)
            with self._lock:
                self._unpublished = [ALL] if len(self._unpublished) + len(keys) > 100 else self._unpublished + keys
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                failing_since = self._failing_since
            if wait:
                # A process that cannot hear us because Redis is gone for it too stops
                # trusting its entries LIVENESS seconds after its last pong, which came
                # before our first failure: returning after that keeps "revoked means
                # inactive everywhere once the revoking request returns".
                time.sleep(max(0.0, failing_since + LIVENESS - time.monotonic()))
            return False
        self._failing_since = None
        if not wait:
            return True
        # Every subscriber acknowledges once it has forgotten; one that does not within
        # LIVENESS seconds stops trusting its entries by then anyway (no fresh pong).
        deadline, acked, ack_key = time.monotonic() + LIVENESS, 0, ACK_KEY.format(id=message_id)
        try:
            while acked < receivers:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or client.blpop([ack_key], timeout=remaining) is None:
                    break
                acked += 1
        except Exception as error:  # noqa: BLE001
            log.warning("waiting for revocation acknowledgements: %s", error)
        if acked < receivers:
            self.stats["acks_missing"] += receivers - acked
            log.warning("revocation: %d of %d processes did not acknowledge", receivers - acked, receivers)
        return True

    # -- Redis: the subscriber -----------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._live_until = 0.0
            thread = threading.Thread(
                target=_subscriber, args=(weakref.ref(self),), name="sso-revocations", daemon=True
            )
            self._thread = thread
        thread.start()

    def close(self) -> None:
        self._closed = True
        self._live_until = 0.0
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.zrem(MEMBERS_KEY, self.origin)  # leaving: no revoker waits for us
            except Exception as error:  # noqa: BLE001 - best effort; the entry ages out anyway
                log.debug("leaving the revocation members: %s", error)
            publisher.close()

    def _after_fork(self) -> None:
        # The parent's thread and sockets did not come along; trust nothing inherited.
        self._lock = threading.Lock()
        self._thread = None
        self._publisher = None
        self.origin = secrets.token_hex(8)  # the parent's messages are not ours
        self._gen += 1
        self._clear_locked()
        if self.redis_url is not None:
            self._live_until = 0.0

    def _on_subscribed(self) -> None:
        # Invalidations published while we were not subscribed are lost: forget everything.
        self._live_until = 0.0
        self.clear()

    def _on_pong(self, sent: float) -> None:
        self._live_until = max(self._live_until, sent + LIVENESS)

    def _on_message(self, data: bytes | str) -> str | None:
        """Apply one invalidation; returns the key to acknowledge on."""
        try:
            message = json.loads(data)
            keys = [_key_from_json(k) for k in message["keys"]]
            message_id = str(message["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("unreadable revocation message: forgetting everything")
            self.clear()
            return None
        if message.get("origin") != self.origin:  # our own: forgotten when it committed
            self.forget(keys)
        return ACK_KEY.format(id=message_id)

    def _retry_unpublished(self) -> None:
        with self._lock:
            keys, self._unpublished = self._unpublished, []
        if keys and not self._publish(keys, wait=False):
            log.error("revocation announcement still failing")


def _key_from_json(raw: list[Any]) -> Key:
    if raw[0] == "grant":
        return ("grant", tuple((str(f), v) for f, v in raw[1] if f in _GRANT_FIELDS))
    if raw[0] in ("jti", "account"):
        return (raw[0], str(raw[1]))
    return ALL


def _subscriber(ref: weakref.ReferenceType[RevocationCache]) -> None:
    """One thread per process: listen, acknowledge, keep the subscription's pulse."""
    import redis

    backoff, connected = 0.1, True  # "connected": log the first failure, not every retry
    while True:
        cache = ref()
        if cache is None or cache._closed:
            return
        url, channel = cache.redis_url, CHANNEL
        cache._client()  # resolves the channel name
        channel = cache._channel
        del cache
        # Bytes: redis-py mis-parses a pong in subscribed mode when it decodes responses.
        client = redis.Redis.from_url(url, decode_responses=False, socket_timeout=LIVENESS, socket_connect_timeout=1.0)  # type: ignore[arg-type]
        pubsub = None
        try:
            pubsub = client.pubsub()
            pubsub.subscribe(channel)
            last_ping = 0.0
            last_pong = time.monotonic()
            while True:
                now = time.monotonic()
                if now - last_ping >= HEARTBEAT:
                    pubsub.ping(message=repr(now))  # the pong carries its send time
                    last_ping = now
                if now - last_pong > 2 * LIVENESS:
                    raise TimeoutError("no pong on the revocation subscription")
                message = pubsub.get_message(timeout=HEARTBEAT)
                cache = ref()
                if cache is None or cache._closed:
                    return
                if message is not None:
                    kind = message["type"]
                    if kind == "subscribe":
                        cache._on_subscribed()
                        backoff, connected = 0.1, True
                        last_ping = 0.0  # ping at once: the pong makes the cache live
                    elif kind == "pong":
                        last_pong = time.monotonic()
                        try:
                            cache._on_pong(float(message["data"]))
                        except (TypeError, ValueError):
                            pass
                        client.zadd(MEMBERS_KEY, {cache.origin: time.time()})
                        if cache._unpublished:
                            cache._retry_unpublished()
                    elif kind == "message":
                        ack = cache._on_message(message["data"])
                        if ack is not None:
                            try:
                                pipe = client.pipeline(transaction=False)
                                pipe.rpush(ack, 1)
                                pipe.expire(ack, 30)
                                pipe.execute()
                            except Exception as error:  # noqa: BLE001 - the revoker stops waiting by itself
                                log.warning("revocation acknowledgement failed: %s", error)
                del cache
        except Exception as error:  # noqa: BLE001 - any failure: not live until resubscribed
            cache = ref()
            if cache is not None:
                cache._live_until = 0.0
                del cache
            if connected:
                log.warning("revocation subscription lost (%s): answering from the database until it is back", error)
            connected = False
        finally:
            try:
                if pubsub is not None:
                    pubsub.close()
                cache = ref()
                if cache is not None and cache._closed:
                    client.zrem(MEMBERS_KEY, cache.origin)  # leaving: nobody waits for us
                del cache
                client.close()
            except Exception as error:  # noqa: BLE001
                log.debug("closing the revocation subscription: %s", error)
        time.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


_CACHES: weakref.WeakSet[RevocationCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    for cache in list(_CACHES):
        if cache._thread is not None:
            cache.close()


def cache_of(app: Any) -> RevocationCache:
    """The app's cache, made on first use (readers and writers alike)."""
    cache = app.extensions.get(EXTENSION)
    if cache is None:
        with _CREATE_LOCK:
            cache = app.extensions.get(EXTENSION)
            if cache is None:
                settings = app.extensions["sso"].settings
                cache = RevocationCache(
                    settings.revocation_cache_ttl,
                    settings.redis_url or None,
                    stamp=os.path.join(settings.instance_path, "revocations.stamp"),
                )
                app.extensions[EXTENSION] = cache
    return cache  # type: ignore[no-any-return]


_CREATE_LOCK = threading.Lock()


# ---- seeing every revocation: engine and session events ------------------------------------

_PENDING = "sso_revocations_pending"
_local = threading.local()
_WRITE = re.compile(r"\s*(update|delete|insert|replace|merge|with|truncate|copy)\b", re.IGNORECASE)
_TRACKED_TEXT = re.compile(r"\b(grants|revoked_access_tokens|accounts)\b", re.IGNORECASE)


def changes_of(kind: str, statement: Any, parameters: list[dict[str, Any]], bind_names: dict[Any, str]) -> list[Key]:
    """What an executed ``kind`` (insert, update, delete) revokes: nothing, some keys, or ALL."""
    table = getattr(getattr(statement, "table", None), "name", None)
    if table is None:
        return [ALL] if kind != "insert" else []
    if table == "revoked_access_tokens":
        if kind != "insert":
            return []  # deleting expired entries revokes nothing
        keys: list[Key] = []
        for params in parameters or [{}]:
            jti = params.get("jti")
            if not isinstance(jti, str):
                return [ALL]
            keys.append(("jti", jti))
        return keys
    if kind == "insert" or table not in ("grants", "accounts"):
        return []
    column_map = {"id": "account_id"} if table == "accounts" else {f: f for f in _GRANT_FIELDS}
    where = getattr(statement, "whereclause", None)
    if where is None:
        return [ALL]
    result: list[Key] = []
    for params in parameters or [{}]:
        conditions = _equalities(where, params, bind_names, column_map, table)
        if not conditions:
            return [ALL]
        for combination in _expand(conditions):
            if table == "accounts":
                # Userinfo's copy of the account; a deleted account takes its grants along.
                result.append(("account", combination[0][1]))
                if kind == "delete":
                    result.append(("grant", combination))
            else:
                result.append(("grant", combination))
    return result


def _equalities(
    clause: Any, params: dict[str, Any], bind_names: dict[Any, str], column_map: dict[str, str], table: str
) -> list[tuple[str, list[Any]]] | None:
    """The column = value (or IN) conditions ANDed in ``clause``; None if it has an OR."""
    while isinstance(clause, Grouping):
        clause = clause.element
    if isinstance(clause, BooleanClauseList):
        if clause.operator is not operators.and_:
            return None
        found: list[tuple[str, list[Any]]] = []
        for part in clause.clauses:
            inner = _equalities(part, params, bind_names, column_map, table)
            if inner is None:
                return None
            found.extend(inner)
        return found
    if isinstance(clause, BinaryExpression) and clause.operator in (operators.eq, operators.in_op):
        column, bind = clause.left, clause.right
        if isinstance(column, BindParameter):
            column, bind = bind, column
        name = getattr(column, "name", None)
        if getattr(getattr(column, "table", None), "name", None) != table or name not in column_map:
            return []
        while isinstance(bind, Grouping):
            bind = bind.element
        if not isinstance(bind, BindParameter):
            return []
        # Values come from this execution's parameters, never from the (cached) statement.
        key = bind_names.get(bind, bind.key)
        if key not in params:
            return []
        value = params[key]
        values = list(value) if clause.operator is operators.in_op and isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            return []
        return [(column_map[name], values)]
    return []  # another condition only narrows: ignoring it forgets more, never less


def _expand(conditions: list[tuple[str, list[Any]]]) -> list[tuple[tuple[str, Any], ...]]:
    # The most selective indexed field first; an IN becomes one key per value.
    by_field: dict[str, list[Any]] = {}
    for field, values in conditions:
        by_field.setdefault(field, values)
    combos: list[tuple[tuple[str, Any], ...]] = [()]
    for field in _GRANT_FIELDS:
        if field in by_field:
            combos = [c + ((field, v),) for c in combos for v in by_field[field]]
    return combos


def _record(conn: Any, keys: list[Key]) -> None:
    pending = conn.info.get(_PENDING)
    if pending is None:
        pending = conn.info[_PENDING] = []
    pending.extend(keys)


@event.listens_for(Engine, "after_cursor_execute")
def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
    if context is None:
        return
    compiled = context.compiled
    if compiled is None or context.is_text:
        if _WRITE.match(statement) and _TRACKED_TEXT.search(statement):
            _record(conn, [ALL])  # raw SQL on a tracked table: forget everything
        return
    if context.isinsert:
        kind = "insert"
    elif context.isupdate:
        kind = "update"
    elif context.isdelete:
        kind = "delete"
    else:
        return
    try:
        keys = changes_of(kind, compiled.statement, context.compiled_parameters, compiled.bind_names)
    except Exception:  # noqa: BLE001 - unreadable: the safe answer
        log.exception("revocation tracking could not read a statement: forgetting everything")
        keys = [ALL]
    if keys:
        _record(conn, keys)


def _take_pending(conn: Any) -> list[Key] | None:
    if conn.invalidated:
        return None  # its transaction died with the connection: nothing was committed
    try:
        return conn.info.pop(_PENDING, None)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a connection in a broken state: same as above
        return None


@event.listens_for(Engine, "commit")
def _on_commit(conn) -> None:  # type: ignore[no-untyped-def]
    # Fires just BEFORE the database commits: hold the keys until after (below).
    keys = _take_pending(conn)
    if keys:
        committed = getattr(_local, "committed", None)
        if committed is None:
            committed = _local.committed = []
        committed.extend(keys)


@event.listens_for(Engine, "rollback")
def _on_rollback(conn) -> None:  # type: ignore[no-untyped-def]
    _take_pending(conn)


@event.listens_for(Session, "after_commit")
def _after_session_commit(session) -> None:  # type: ignore[no-untyped-def]
    _announce()


@event.listens_for(Pool, "checkin")
def _on_checkin(dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
    # A connection used outside a session (engine.begin()) commits, then comes back here.
    # Anything still pending was neither committed nor rolled back through SQLAlchemy
    # (autocommit): treated as committed — forgetting too much is harmless.
    leftover = record.info.pop(_PENDING, None) if record is not None else None
    if leftover:
        committed = getattr(_local, "committed", None)
        if committed is None:
            committed = _local.committed = []
        committed.extend(leftover)
    _announce()


def _announce() -> None:
    keys = getattr(_local, "committed", None)
    if not keys:
        return
    _local.committed = None
    from flask import current_app, has_app_context

    caches: list[RevocationCache]
    if has_app_context() and "sso" in current_app.extensions:
        caches = [cache_of(current_app)]
    else:
        caches = list(_CACHES)
    for cache in caches:
        try:
            cache.revoked(_dedupe(keys))
        except Exception:  # noqa: BLE001 - never fail the committed request; clear as a last resort
            log.exception("revocation invalidation failed")
            cache.clear()


def _dedupe(keys: list[Key]) -> list[Key]:
    if any(k[0] == "all" for k in keys):
        return [ALL]
    return list(dict.fromkeys(keys))
