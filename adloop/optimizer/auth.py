"""API keys: created once, stored only as SHA-256 hashes, each bound to one tenant.

A key is shown to its owner exactly once (``adloop keys create`` or ``POST /v1/keys``);
the store keeps ``sha256(key)``. Keys are long random tokens, so an unsalted fast hash is
enough (there is nothing to brute-force) and lets a lookup be a single index probe.

A key may carry an expiry, and may be revoked (``adloop keys revoke`` or
``DELETE /v1/keys/{key_id}``). :class:`KeyRing` reuses every answer of the store (a key is
valid, or it is not) for at most :data:`REFRESH_SECONDS`, so a revocation or an expiry takes
effect on a running server within a second, however it was made; a revocation made through
the ring itself takes effect at once. Wrong keys are remembered too (a bounded LRU), so a
flood of wrong keys does not reach the store; :class:`FailedAuthLimiter` limits how often
one client may fail to authenticate.

Example::

    key = create_key(store, tenant="acme")
    keyring = KeyRing(store)
    keyring.authenticate(key)        # Principal(tenant='acme', admin=False)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adloop.optimizer.errors import ConfigError, InvalidRequest
from adloop.storage import utc_now

__all__ = [
    "NEGATIVE_CACHE_SIZE",
    "REFRESH_SECONDS",
    "FailedAuthLimiter",
    "KeyRing",
    "Principal",
    "create_key",
    "generate_key",
    "hash_key",
    "key_id",
    "load_keys_file",
    "validate_tenant",
]

#: How long an answer of the key store (valid or not) is reused before asking it again.
REFRESH_SECONDS = 1.0
#: Most wrong keys remembered at once (least recently seen forgotten first).
NEGATIVE_CACHE_SIZE = 10_000

#: Hex characters of a key's hash that name it in listings, as the store names them.
_KEY_ID_LENGTH = 16

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant the key belongs to, and whether it may create keys."""

    tenant: str
    admin: bool = False


def generate_key() -> str:
    """A new random API key (256 bits of entropy, URL-safe)."""
    return "adk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str:
    """The id naming ``key`` in listings and revocations (a prefix of its hash, not a secret)."""
    return hash_key(key)[:_KEY_ID_LENGTH]


def validate_tenant(tenant: Any, *, field: str = "tenant") -> str:
    """Return ``tenant`` if it is a valid name (letters, digits, ``_.-``, at most 64)."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidRequest(
            field,
            "must be 1-64 letters, digits, '_', '.' or '-' (starting alphanumeric), "
            f"got {tenant!r}",
        )
    return tenant


def create_key(
    store: Any, *, tenant: str, admin: bool = False, expires_at: datetime | None = None
) -> str:
    """Create a key for ``tenant`` (valid until ``expires_at``, UTC, when given), store its
    hash, and return the key (shown only once)."""
    validate_tenant(tenant)
    if expires_at is not None and _naive_utc(expires_at) <= utc_now():
        raise InvalidRequest("expires_at", f"must be in the future, got {expires_at.isoformat()}")
    key = generate_key()
    store.add_api_key(tenant=tenant, key_hash=hash_key(key), admin=admin, expires_at=expires_at)
    return key


def _naive_utc(value: datetime) -> datetime:
    """``value`` as naive UTC (the store's convention); a naive one is taken to be UTC."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def load_keys_file(path: Path) -> list[tuple[str, Principal]]:
    """Read keys from a file: JSON (what ``adloop keys create --json`` prints, or a list of
    those objects) or plain lines ``KEY TENANT [admin]`` with ``#`` comments."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.strip()
    entries: list[tuple[str, Principal]] = []
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRequest("api_keys", f"{path}: not valid JSON ({exc})") from exc
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("api_key"), str):
                raise InvalidRequest("api_keys", f"{path}: entry {i} needs 'api_key' and 'tenant'")
            tenant = validate_tenant(item.get("tenant"), field=f"api_keys[{i}].tenant")
            entries.append((item["api_key"], Principal(tenant, bool(item.get("admin", False)))))
        return entries
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
            raise InvalidRequest("api_keys", f"{path}:{number}: expected 'KEY TENANT [admin]'")
        tenant = validate_tenant(parts[1], field=f"api_keys line {number}")
        entries.append((parts[0], Principal(tenant, len(parts) == 3)))
    return entries


class KeyRing:
    """Resolves API keys to principals: keys from a file plus keys stored (hashed) in the DB.

    Every answer of the store is reused for at most ``refresh_seconds``: a valid key costs
    one hash and one dict probe per request and one store read per second; a wrong key is
    remembered the same way, in an LRU of at most ``negative_cache_size`` hashes. So a key
    created, revoked or expired by anyone sharing the store takes effect within
    ``refresh_seconds``; :meth:`create` and :meth:`revoke` take effect at once. Keys from a
    file are fixed for the life of the ring (edit the file and restart to change them).

    Parameters
    ----------
    store:
        The store holding key hashes.
    extra:
        ``(key, principal)`` pairs, e.g. from :func:`load_keys_file`.
    refresh_seconds, negative_cache_size:
        How long an answer is reused, and how many wrong keys are remembered.
    clock:
        Monotonic seconds (a fake one in tests).
    """

    def __init__(
        self,
        store: Any,
        extra: list[tuple[str, Principal]] | None = None,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        negative_cache_size: int = NEGATIVE_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_seconds >= 0:
            raise ConfigError("refresh_seconds", f"must be >= 0 seconds, got {refresh_seconds!r}")
        if negative_cache_size < 1:
            raise ConfigError(
                "negative_cache_size", f"must be at least 1, got {negative_cache_size!r}"
            )
        self.refresh_seconds = refresh_seconds
        self.negative_cache_size = negative_cache_size
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._fixed: dict[str, Principal] = {hash_key(k): p for k, p in (extra or [])}
        # hash -> (principal, monotonic time until which the answer is reused)
        self._valid: dict[str, tuple[Principal, float]] = {}
        self._wrong: OrderedDict[str, float] = OrderedDict()

    def cached(self, key: str) -> Principal | None:
        """The principal for ``key`` if known valid in memory and fresh (no I/O)."""
        digest = hash_key(key)
        fixed = self._fixed.get(digest)
        if fixed is not None:
            return fixed
        entry = self._valid.get(digest)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return None

    def known_wrong(self, key: str) -> bool:
        """True when ``key`` was found wrong less than ``refresh_seconds`` ago (no I/O)."""
        fresh_until = self._wrong.get(hash_key(key))
        return fresh_until is not None and fresh_until > self._clock()

    def recognizes(self, key: str) -> bool:
        """True when ``key`` was valid the last time it was checked, however long ago."""
        digest = hash_key(key)
        return digest in self._fixed or digest in self._valid

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for ``key``, or None when it is missing, unknown, revoked or expired.

        Answers from memory while the last answer is fresh; else reads the store.
        """
        if not key:
            return None
        found = self.cached(key)
        if found is not None:
            return found
        if self.known_wrong(key):
            return None
        digest = hash_key(key)
        row = self._store.api_key(digest)
        now = self._clock()
        principal, fresh_until = None, now + self.refresh_seconds
        if row is not None and row.get("revoked_at") is None:
            expires_at = row.get("expires_at")
            remaining = math.inf if expires_at is None else _seconds_until(expires_at)
            if remaining > 0:
                principal = Principal(row["tenant"], bool(row.get("admin", False)))
                fresh_until = min(fresh_until, now + remaining)
        with self._lock:
            if principal is not None:
                self._valid[digest] = (principal, fresh_until)
                self._wrong.pop(digest, None)
            else:
                self._valid.pop(digest, None)
                self._remember_wrong(digest, fresh_until)
        return principal

    def _remember_wrong(self, digest: str, fresh_until: float) -> None:
        self._wrong[digest] = fresh_until
        self._wrong.move_to_end(digest)
        while len(self._wrong) > self.negative_cache_size:
            self._wrong.popitem(last=False)

    def create(
        self, *, tenant: str, admin: bool = False, expires_at: datetime | None = None
    ) -> str:
        """Create and store a key; return it (the only time it is visible)."""
        key = create_key(self._store, tenant=tenant, admin=admin, expires_at=expires_at)
        digest = hash_key(key)
        with self._lock:
            self._wrong.pop(digest, None)
        self.authenticate(key)  # cache it, expiry included
        return key

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke the stored key named ``key_id``; it stops working at once.

        Returns the key's row as :meth:`keys` lists it. Raises the store's ``NotFoundError``
        for an unknown id (keys from a file cannot be revoked: edit the file and restart).
        """
        row = self._store.revoke_api_key(key_id)
        with self._lock:
            for digest in [d for d in self._valid if d.startswith(row["key_id"])]:
                del self._valid[digest]
        return row

    def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Stored keys (of ``tenant`` when given), then keys from the file, without secrets.

        Each row: ``key_id``, ``tenant``, ``admin``, ``created_at``, ``expires_at``,
        ``revoked_at`` and ``source`` (``"store"`` or ``"file"``).
        """
        rows = [{**row, "source": "store"} for row in self._store.api_keys(tenant)]
        rows.extend(
            {
                "key_id": digest[:_KEY_ID_LENGTH],  # as key_id() names it
                "tenant": principal.tenant,
                "admin": principal.admin,
                "created_at": None,
                "expires_at": None,
                "revoked_at": None,
                "source": "file",
            }
            for digest, principal in self._fixed.items()
            if tenant is None or principal.tenant == tenant
        )
        return rows


def _seconds_until(moment: datetime) -> float:
    return (_naive_utc(moment) - utc_now()).total_seconds()


class FailedAuthLimiter:
    """How often each client may fail to authenticate: a token bucket per client address.

    A client starts with ``burst`` failures in hand and regains ``per_second`` a second;
    once it has none, :meth:`retry_after` says how long to wait: the service then answers
    the client's requests 429 with ``Retry-After``, without looking their key up, unless
    the key is one it has seen valid (keys in use are never limited). At most
    ``max_clients`` buckets are kept (least recently used dropped first), so memory stays
    bounded whatever the number of addresses.

    Example::

        limiter = FailedAuthLimiter(burst=2, per_second=1.0)
        limiter.record_failure("10.0.0.1"); limiter.record_failure("10.0.0.1")
        limiter.retry_after("10.0.0.1")   # about 1.0
    """

    def __init__(
        self,
        *,
        burst: int = 20,
        per_second: float = 2.0,
        max_clients: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1:
            raise ConfigError("burst", f"must be at least 1 failure, got {burst!r}")
        if not per_second > 0:
            raise ConfigError("per_second", f"must be > 0 failures a second, got {per_second!r}")
        if max_clients < 1:
            raise ConfigError("max_clients", f"must be at least 1, got {max_clients!r}")
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may fail again; 0.0 when it may now."""
        with self._lock:
            if client not in self._buckets:
                return 0.0
            tokens = self._tokens(client, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_second

    def try_spend(self, client: str) -> tuple[bool, float]:
        """Spend one of ``client``'s failures ahead of an attempt that may fail.

        Returns ``(spent, wait)``: ``wait`` > 0 when the client must wait that many seconds
        (nothing spent); ``spent`` when a failure was spent (give it back with
        :meth:`refund` if the attempt succeeds, and do not record it again). Spending first
        keeps many concurrent attempts from one failing client from all passing a check
        made before any of them failed. A client with no failure on record spends nothing:
        its first, concurrent uses of a new valid key all go through.
        """
        with self._lock:
            if client not in self._buckets:
                return False, 0.0
            now = self._clock()
            tokens = self._tokens(client, now)
            if tokens < 1.0:
                return False, (1.0 - tokens) / self.per_second
            self._buckets[client] = (tokens - 1.0, now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return True, 0.0

    def refund(self, client: str) -> None:
        """Give back a failure spent by :meth:`try_spend` for an attempt that succeeded."""
        with self._lock:
            if client in self._buckets:
                tokens, at = self._buckets[client]
                self._buckets[client] = (min(float(self.burst), tokens + 1.0), at)

    def record_failure(self, client: str) -> None:
        """Spend one of ``client``'s failures."""
        with self._lock:
            now = self._clock()
            self._buckets[client] = (max(0.0, self._tokens(client, now) - 1.0), now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
