"""The log's 64-bit event keys: how they are computed, and an in-memory index of them.

A key is ``EVENT_KEY_SQL``, DuckDB's ``hash(campaign_id, event_id)``: deduplication is scoped
to the campaign (and so to its tenant), so one tenant's event ids can never collide with, drop
or reveal another's. The key only narrows the search; two rows are the same event when their
full ``(campaign_id, event_id)`` pairs are equal.

Deduplicating a batch against the log normally semi-joins its keys with the log's key column:
cheap per event for a bulk import, but a full column scan (10 M keys) for every group of a few
HTTP requests. This index answers "could this key be stored, and where?" by binary search:

- ``main``: keys committed when the index was built, sorted, with each row's ``rowid`` (the
  log is append-only and never deletes, so row ids stay put); a possible match is fetched by
  row id, a lookup DuckDB answers without scanning.
- ``recent`` / ``pending``: keys appended since (committed / in the open transaction); their
  rows all have ``batch_id > built_batch_id``, so the lookup touches only the log's tail.

Only the stored rows fetched this way are compared with the batch, by full (campaign_id,
event_id), so the index can make dedupe faster but never wrong: a key it misses would be a
bug caught by the verification below, and a stale row id is detected and answered by a full
scan instead.
The index is built lazily (first small group), owned by the writer thread, and costs 16 bytes
per stored event; it is rebuilt when the recent part outgrows an eighth of the main part.
"""

from __future__ import annotations

import threading

import duckdb
import numpy as np

#: The SQL expression of an event's key over its ``campaign_id`` and ``event_id`` columns.
EVENT_KEY_SQL = "hash(campaign_id, event_id)"

#: Groups with at most this many rows use the index; bigger ones the set-based scan.
SMALL_GROUP_ROWS = 50_000
#: Logs up to this size build the index inline; bigger ones on a background thread.
SYNC_BUILD_EVENTS = 200_000


class KeyIndex:
    """Sorted committed keys with row ids, plus keys appended since the build.

    The build (seconds for tens of millions of events) runs on its own thread and connection,
    so the writer never stalls on it; until it is ready, groups take the exact scan path.
    """

    def __init__(self) -> None:
        self._main_keys: np.ndarray | None = None
        self._main_rowids = np.empty(0, dtype=np.int64)
        self._built_batch_id = 0
        self._recent: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._builder: threading.Thread | None = None
        self._snapshot: tuple[np.ndarray, np.ndarray, int] | None = None

    @property
    def built(self) -> bool:
        return self._main_keys is not None

    def ready(self, connection: duckdb.DuckDBPyConnection) -> bool:
        """True when the index can answer; otherwise make sure a build is under way.

        Called by the writer inside its transaction. Adopting a finished build also loads the
        keys committed after the build's snapshot (the log's tail, found by batch_id).
        """
        if self._main_keys is not None:
            return True
        if self._builder is None and self._snapshot is None:
            (n_events,) = connection.execute("SELECT count(*) FROM events").fetchall()[0]
            if n_events <= SYNC_BUILD_EVENTS:
                # Small log: building takes milliseconds, do it now (on its own connection, so
                # it sees committed rows only and their row ids are final).
                self._build(connection.cursor())
        if self._snapshot is not None:
            keys, rowids, built_batch_id = self._snapshot
            self._snapshot = None
            self._builder = None
            tail = connection.execute(
                "SELECT event_key FROM events WHERE batch_id > ?", [built_batch_id]
            ).fetchnumpy()["event_key"]
            self._main_keys, self._main_rowids = keys, rowids
            self._built_batch_id = built_batch_id
            self._recent = [np.sort(np.asarray(tail, dtype=np.uint64))] if len(tail) else []
            self._pending = []
            return True
        if self._builder is None:
            cursor = connection.cursor()
            self._builder = threading.Thread(
                target=self._build, args=(cursor,), name="adloop-key-index", daemon=True
            )
            self._builder.start()
        return False

    def _build(self, cursor: duckdb.DuckDBPyConnection) -> None:
        try:
            cursor.execute("BEGIN TRANSACTION")  # one snapshot for the keys and their batch ids
            (built_batch_id,) = cursor.execute(
                "SELECT coalesce(max(batch_id), 0) FROM events"
            ).fetchall()[0]
            columns = cursor.execute("SELECT event_key, rowid AS row_id FROM events").fetchnumpy()
            cursor.execute("COMMIT")
            keys = np.asarray(columns["event_key"], dtype=np.uint64)
            order = np.argsort(keys, kind="stable")
            self._snapshot = (
                keys[order],
                np.asarray(columns["row_id"], dtype=np.int64)[order],
                int(built_batch_id),
            )
        except duckdb.Error:
            self._builder = None  # the store is closing; the next small group retries
        finally:
            cursor.close()

    def wait(self) -> None:
        """Let a running build finish (before its connection's database closes)."""
        builder = self._builder
        if builder is not None:
            builder.join()

    def lookup(
        self, connection: duckdb.DuckDBPyConnection, keys: np.ndarray
    ) -> list[tuple[int, str, str]]:
        """Stored ``(event_key, campaign_id, event_id)`` rows whose key is one of ``keys``.

        ``keys`` are unique and sorted.
        """
        assert self._main_keys is not None
        found: list[tuple[int, str, str]] = []
        positions = np.searchsorted(self._main_keys, keys, side="left")
        ends = np.searchsorted(self._main_keys, keys, side="right")
        hit = ends > positions  # usually none: only hits cost a Python step each
        rowids = np.concatenate(
            [
                self._main_rowids[a:b]
                for a, b in zip(positions[hit].tolist(), ends[hit].tolist(), strict=True)
            ]
            or [[]]
        ).astype(np.int64)
        if len(rowids):
            rows = connection.execute(
                "SELECT event_key, campaign_id, event_id FROM events"
                " WHERE rowid = ANY($rowids::BIGINT[])",
                {"rowids": rowids.tolist()},
            ).fetchall()
            expected = set(keys[ends > positions].tolist())
            if len(rows) != len(rowids) or any(row[0] not in expected for row in rows):
                # Row ids moved (never expected for an append-only log): answer exactly anyway.
                self.drop()
                return _scan(connection, keys)
            found.extend(rows)
        tail = [keys[_contains(part, keys)] for part in self._recent + self._pending]
        tail_keys = np.unique(np.concatenate(tail)) if tail else np.empty(0, np.uint64)
        if len(tail_keys):
            found.extend(
                connection.execute(
                    """SELECT event_key, campaign_id, event_id FROM events
                       WHERE batch_id > $built AND event_key = ANY($keys::UBIGINT[])""",
                    {"built": self._built_batch_id, "keys": tail_keys.tolist()},
                ).fetchall()
            )
        return found

    def add_pending(self, keys: np.ndarray) -> None:
        """Keys appended by the open transaction (visible to later work in it)."""
        if self._main_keys is not None and len(keys):
            self._pending.append(np.sort(np.asarray(keys, dtype=np.uint64)))

    def commit(self) -> None:
        """The open transaction committed: its keys become part of the index."""
        if self._main_keys is None:
            self._pending = []
            return
        self._recent.extend(self._pending)
        self._pending = []
        recent_size = sum(len(part) for part in self._recent)
        if recent_size > max(1_000_000, len(self._main_keys) // 8):
            self.drop()  # rebuilt, with row ids, by the next small group
        elif len(self._recent) > 32:
            self._recent = [np.sort(np.concatenate(self._recent))]

    def rollback(self) -> None:
        """The open transaction rolled back: forget its keys."""
        self._pending = []

    def drop(self) -> None:
        """Forget everything; the next small group rebuilds the index."""
        self._main_keys = None
        self._main_rowids = np.empty(0, dtype=np.int64)
        self._recent = []
        self._pending = []


def _scan(connection: duckdb.DuckDBPyConnection, keys: np.ndarray) -> list[tuple[int, str, str]]:
    return connection.execute(
        "SELECT event_key, campaign_id, event_id FROM events"
        " WHERE event_key = ANY($keys::UBIGINT[])",
        {"keys": [int(key) for key in keys]},
    ).fetchall()


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    positions = np.searchsorted(sorted_keys, keys)
    positions[positions == len(sorted_keys)] = 0
    return sorted_keys[positions] == keys
