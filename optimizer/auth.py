"""API keys: created once, stored only as SHA-256 hashes, each bound to one tenant.

A key is shown to its owner exactly once (``adloop keys create`` or ``POST /v1/keys``);
the store keeps ``sha256(key)``. Keys are long random tokens, so an unsalted fast hash is
enough (there is nothing to brute-force) and lets a lookup be a single index probe.

Example::

    key = create_key(store, tenant="acme")
    keyring = KeyRing(store)
    keyring.authenticate(key)        # Principal(tenant='acme', admin=False)
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adloop.optimizer.errors import InvalidRequest

__all__ = [
    "KeyRing",
    "Principal",
    "create_key",
    "generate_key",
    "hash_key",
    "load_keys_file",
    "validate_tenant",
]

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


def validate_tenant(tenant: Any, *, field: str = "tenant") -> str:
    """Return ``tenant`` if it is a valid name (letters, digits, ``_.-``, at most 64)."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidRequest(
            field,
            "must be 1-64 letters, digits, '_', '.' or '-' (starting alphanumeric), "
            f"got {tenant!r}",
        )
    return tenant


def create_key(store: Any, *, tenant: str, admin: bool = False) -> str:
    """Create a key for ``tenant``, store its hash, and return the key (shown only once)."""
    validate_tenant(tenant)
    key = generate_key()
    store.add_api_key(tenant=tenant, key_hash=hash_key(key), admin=admin)
    return key


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

    Successful lookups are cached in memory so the request path costs one hash and one
    dict probe; unknown keys always go back to the store (a key created by another
    process is found without a restart).
    """

    def __init__(self, store: Any, extra: list[tuple[str, Principal]] | None = None) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._cache: dict[str, Principal] = {hash_key(k): p for k, p in (extra or [])}

    def cached(self, key: str) -> Principal | None:
        """The principal for ``key`` if already known in memory (no I/O)."""
        return self._cache.get(hash_key(key))

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for ``key``, or None when the key is missing or unknown."""
        if not key:
            return None
        digest = hash_key(key)
        principal = self._cache.get(digest)
        if principal is not None:
            return principal
        row = self._store.api_key(digest)
        if row is None:
            return None
        principal = Principal(row["tenant"], bool(row.get("admin", False)))
        with self._lock:
            self._cache[digest] = principal
        return principal

    def create(self, *, tenant: str, admin: bool = False) -> str:
        """Create and store a key; return it (the only time it is visible)."""
        key = create_key(self._store, tenant=tenant, admin=admin)
        with self._lock:
            self._cache[hash_key(key)] = Principal(tenant, admin)
        return key
