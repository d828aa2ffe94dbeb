"""Allocation snapshots: built once per changed campaign, pushed to every chooser.

:func:`refresh_snapshots` (the refresher; ``adloop snapshots refresh``) finds the campaigns
whose counts changed since their last snapshot, computes each one's traffic weights once
(Thompson sampling over its active arms, as the engine does), and writes a new version to
``adloop_snapshots`` with a ``NOTIFY adloop_snapshot`` in the same transaction.

:class:`SnapshotCache` is the chooser's side (an ``adloop serve`` worker on any host, or an
ad server embedding it): it loads the newest snapshots, then listens for notifications and
polls as a fallback; a newer version replaces the old one in one assignment, an older or
equal one is ignored, and when PostgreSQL is unreachable it keeps serving the last snapshot
it has and retries. :meth:`SnapshotCache.age_seconds` (and :meth:`~SnapshotCache.metrics`)
say how old the snapshot in use is, so a stale one is visible.

Example::

    refresh_snapshots(url)                  # the refresher, every few seconds or minutes
    cache = SnapshotCache(url).start()      # in each chooser
    variant = cache.choose("c_1", rng)
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adloop.bandits import ArmCounts, ThompsonSampling
from adloop.scale.pg import connect, ensure_schema

__all__ = ["CHANNEL", "Snapshot", "SnapshotCache", "refresh_snapshots"]

CHANNEL = "adloop_snapshot"
_LOG = logging.getLogger("adloop.snapshots")


@dataclass(frozen=True)
class Snapshot:
    """One campaign's allocation: version, when it was built, variants and their weights."""

    campaign_id: str
    version: int
    built_at: float  # seconds since the epoch
    variants: tuple[str, ...]
    weights: np.ndarray
    cumulative: tuple[float, ...] = ()  # running sums of the weights, for choosing by bisection
    tenant: str = ""
    """Whose campaign it is (from the registered arms)."""
    texts: tuple[str, ...] = ()
    """Each variant's text, aligned with ``variants`` ("" where none was registered)."""

    def pick(self, u: float) -> int:
        """The index of the variant a uniform draw ``u`` in [0, 1) lands on (a bisection)."""
        index = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return min(index, len(self.variants) - 1)


def refresh_snapshots(url_or_conn: Any, *, seed: int = 0) -> list[tuple[str, int]]:
    """Build a new snapshot for every campaign whose counts changed; ``(campaign, version)``s."""
    own = isinstance(url_or_conn, str)
    conn = connect(url_or_conn) if own else url_or_conn
    built: list[tuple[str, int]] = []
    locked = False
    try:
        ensure_schema(conn)
        # One refresher at a time (a second scheduler by mistake builds nothing, never a
        # conflicting version); the lock is the session's, so it holds across transactions.
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_REFRESH_LOCK,)).fetchone()[0]
        conn.commit()
        if not locked:
            return built
        changed = conn.execute(
            "SELECT ch.campaign_id, ch.seq, coalesce(max(s.version), 0) FROM adloop_changes ch "
            "LEFT JOIN adloop_snapshots s USING (campaign_id) GROUP BY ch.campaign_id, ch.seq "
            "HAVING ch.seq > coalesce(max(s.source_seq), 0)"
        ).fetchall()
        conn.commit()
        policy = ThompsonSampling("ctr")
        for campaign_id, seq, last in changed:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT a.variant_id, coalesce(sum(c.impressions), 0), "
                    "coalesce(sum(c.clicks), 0) FROM adloop_arms a LEFT JOIN adloop_counts c "
                    "USING (campaign_id, variant_id) WHERE a.campaign_id = %s AND "
                    "a.status = 'active' GROUP BY a.variant_id ORDER BY a.variant_id",
                    (campaign_id,),
                ).fetchall()
                if not rows:
                    continue
                counts = ArmCounts([r[0] for r in rows], impressions=[int(r[1]) for r in rows],
                                   clicks=[int(r[2]) for r in rows])  # fmt: skip
                weights = policy.weights(counts, np.random.default_rng([seed, int(seq)]))
                version = int(last) + 1
                conn.execute(
                    "INSERT INTO adloop_snapshots (campaign_id, version, source_seq, variants, "
                    "weights) VALUES (%s, %s, %s, %s, %s)",
                    (campaign_id, version, int(seq), json.dumps([r[0] for r in rows]),
                     json.dumps([float(w) for w in weights])),
                )  # fmt: skip
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{campaign_id}\t{version}"))
            built.append((campaign_id, version))
    finally:
        if locked and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_REFRESH_LOCK,))
            conn.commit()
        if own:
            conn.close()
    return built


_REFRESH_LOCK = 7466831

_LATEST = (
    "SELECT l.*, (SELECT min(a.tenant) FROM adloop_arms a WHERE a.campaign_id = l.campaign_id), "
    "(SELECT jsonb_object_agg(a.variant_id, coalesce(a.text, '')) FROM adloop_arms a "
    "WHERE a.campaign_id = l.campaign_id) FROM (SELECT DISTINCT ON (campaign_id) campaign_id, "
    "version, extract(epoch FROM built_at), variants, weights FROM adloop_snapshots {where} "
    "ORDER BY campaign_id, version DESC) l"
)


class SnapshotCache:
    """The newest snapshot of every campaign, kept current in a background thread."""

    def __init__(
        self, url: str, *, poll_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = url
        self.poll_s = poll_s
        self.clock = clock
        self._snapshots: dict[str, Snapshot] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.store_reachable = False
        self.swaps = 0
        self.on_swap: Callable[[Snapshot], None] | None = None
        self._random = random.Random()

    # -- the chooser's side ---------------------------------------------------------------
    def snapshot(self, campaign_id: str) -> Snapshot | None:
        return self._snapshots.get(campaign_id)

    def choose(
        self, campaign_id: str, rng: random.Random | np.random.Generator | None = None
    ) -> str:
        """A variant drawn by the snapshot's weights (KeyError when the campaign has none).

        About a microsecond: a bisection of the running sums, no numpy call per decision.
        """
        snap = self._snapshots[campaign_id]
        return snap.variants[snap.pick((rng or self._random).random())]

    def age_seconds(self, campaign_id: str) -> float | None:
        """How old the snapshot in use is (None: none yet)."""
        snap = self._snapshots.get(campaign_id)
        return None if snap is None else max(0.0, self.clock() - snap.built_at)

    def metrics(self) -> dict[str, Any]:
        """For a metrics endpoint: reachability, swaps and each campaign's snapshot age."""
        return {
            "store_reachable": self.store_reachable,
            "swaps": self.swaps,
            "snapshot_age_seconds": {c: self.age_seconds(c) for c in list(self._snapshots)},
            "snapshot_version": {c: s.version for c, s in list(self._snapshots.items())},
        }

    # -- keeping it current ---------------------------------------------------------------
    def _offer(self, row: tuple) -> None:
        campaign_id, version, built_at, variants, weights, tenant, texts = row
        current = self._snapshots.get(campaign_id)
        if current is not None and current.version >= int(version):
            return  # an older or repeated version: keep what we have
        weights = np.asarray(weights, dtype=float)
        weights = weights / weights.sum()
        texts = texts or {}
        snap = Snapshot(campaign_id, int(version), float(built_at), tuple(variants), weights,
                        tuple(np.cumsum(weights).tolist()), tenant or "",
                        tuple(texts.get(v, "") for v in variants))  # fmt: skip
        self._snapshots[campaign_id] = snap  # one assignment: readers see old or new, whole
        self.swaps += 1
        if self.on_swap is not None:
            self.on_swap(snap)

    def _load(self, conn: Any, campaign_id: str | None = None) -> None:
        where, args = ("WHERE campaign_id = %s", (campaign_id,)) if campaign_id else ("", ())
        for row in conn.execute(_LATEST.format(where=where), args).fetchall():
            self._offer(row)

    def refresh_now(self) -> None:
        """Load the newest snapshots once (what the background thread does on each poll)."""
        with connect(self.url, autocommit=True, connect_timeout=3) as conn:
            self._load(conn)
        self.store_reachable = True

    def _listen(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with connect(self.url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._load(conn)  # anything built while we were away
                    self.store_reachable, backoff = True, 0.2
                    polled = time.monotonic()
                    while not self._stop.is_set():
                        # the connection is busy while notifies() runs: collect, then load
                        wait = min(self.poll_s, 0.5)  # short, so close() is quick
                        heard = [n.payload for n in conn.notifies(timeout=wait, stop_after=1)]
                        if not heard:
                            if time.monotonic() - polled >= self.poll_s:
                                self._load(conn)  # the poll: covers a missed notification
                                polled = time.monotonic()
                            continue
                        heard += [n.payload for n in conn.notifies(timeout=0.001)]
                        for campaign_id in dict.fromkeys(p.partition("\t")[0] for p in heard):
                            self._load(conn, campaign_id)
            except Exception as error:  # noqa: BLE001 - the store is down: keep serving, retry
                if self.store_reachable:
                    _LOG.warning(
                        "snapshot store unreachable (%s); serving the last snapshots", error
                    )
                self.store_reachable = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def start(self) -> SnapshotCache:
        try:
            self.refresh_now()
        except Exception as error:  # noqa: BLE001 - start empty; the thread keeps trying
            _LOG.warning("snapshot store unreachable at start: %s", error)
        self._thread = threading.Thread(target=self._listen, name="snapshot-cache", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SnapshotCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
