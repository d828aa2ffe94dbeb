"""Decisions: the :class:`Choice` handed to the ad server, and the queue that logs them.

Choosing must never wait for the database, so each decision is appended to an in-memory
queue (a deque append is atomic, so the hot path takes no lock) and :meth:`DecisionLog.flush`
hands the queue to the store's writer as one Arrow table, off the request path.

Decision ids are unguessable, because a decision id doubles as its impression's event id and
an ad server may hand it to the client: a plain choice's id is 64 bits from ``os.urandom`` (the
operating system's CSPRNG, never a seeded stream whose state could be recovered from a few
ids); an idempotent choice's id (and its uniform draw) is a MAC of ``(campaign_id,
request_id)`` under the store's secret (``Store.decision_id_secret``): keyed BLAKE2b (RFC 7693),
a MAC like HMAC, at half HMAC-SHA256's cost on the request path. A retried request gets the
same decision, even after a restart, while nobody without the database file can compute it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Choice", "DecisionLog"]

# How many (campaign, request id) pairs are remembered to answer a retried request alike.
_RECENT_REQUESTS = 100_000


class Choice(NamedTuple):
    """One decision: which variant to show, and the probability it had of being chosen."""

    decision_id: str
    variant_id: str
    text: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """The decision as the HTTP API returns it."""
        return {
            "decision_id": self.decision_id,
            "variant_id": self.variant_id,
            "text": self.text,
            "probability": self.probability,
        }


def fresh_ids() -> Callable[[], str]:
    """A source of decision ids of 64 random bits from the operating system.

    Drawn 4,096 at a time (one ``os.urandom`` call): a call per decision costs more than
    the rest of a choice. ``list.pop`` is atomic, so threads never share an id.
    """
    ids: list[str] = []

    def fresh() -> str:
        try:
            return ids.pop()
        except IndexError:
            block = os.urandom(8 * 4096).hex()
            ids.extend("d_" + block[i : i + 16] for i in range(0, len(block), 16))
            return ids.pop()

    return fresh


def request_draw(secret: bytes, campaign_id: str, request_id: str) -> tuple[float, str]:
    """A uniform draw and a decision id, both fixed by ``(campaign_id, request_id)`` under
    ``secret`` (keyed BLAKE2b)."""
    # The campaign id's length first, so no two (campaign_id, request_id) pairs share a
    # message, whatever characters they hold.
    message = f"{len(campaign_id)}:{campaign_id}{request_id}".encode()
    digest = hashlib.blake2b(message, key=secret, digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, "d_" + digest[8:].hex()


class DecisionLog:
    """Queues decisions for the store and makes their ids.

    Parameters
    ----------
    store:
        The ``storage.Store`` that receives the decisions (``log_decisions``) and keeps the
        secret of idempotent decision ids (``decision_id_secret``).
    epoch_stamps:
        True when stamps are ``time.time()`` floats (converted at flush time, which is
        cheaper than a datetime per decision); False when they are datetimes.
    """

    def __init__(self, store: Any, epoch_stamps: bool) -> None:
        self._store = store
        self._secret: bytes = store.decision_id_secret()
        self._epoch_stamps = epoch_stamps
        self._pending: deque[tuple] = deque()
        # One flush at a time: a flush that finds the queue empty because another thread has
        # just taken it must wait until that batch is handed to the store, or a caller's
        # "flush, then read" (Engine.campaign) can read before those decisions are committed.
        self._flush_lock = threading.Lock()
        self._recent_requests: OrderedDict[tuple[str, str], Choice] = OrderedDict()
        self._fresh_id = fresh_ids()

    def __len__(self) -> int:
        """Decisions queued and not yet handed to the store."""
        return len(self._pending)

    def log(
        self,
        campaign_id: str,
        variant_id: str,
        text: str,
        probability: float,
        segment: str | None,
        stamp: Any,
        log_impressions: bool,
    ) -> Choice:
        """Queue one decision with a fresh id and return it (hot path: no I/O, no lock)."""
        decision_id = self._fresh_id()
        self._pending.append(
            (decision_id, campaign_id, variant_id, segment, probability, stamp, log_impressions)
        )
        return Choice(decision_id, variant_id, text, probability)

    def request_draw(self, campaign_id: str, request_id: str) -> tuple[float, str]:
        """A uniform draw and a decision id, both fixed by ``(campaign_id, request_id)``.

        A retried ad request must get the same variant and the same decision id (which
        doubles as the impression's event id, so the store drops the repeat), even after a
        restart; keyed with the store's secret, so no other tenant can compute either.
        """
        return request_draw(self._secret, campaign_id, request_id)

    def recall(self, campaign_id: str, request_id: str) -> Choice | None:
        """The decision already made for this request, if it is still remembered."""
        return self._recent_requests.get((campaign_id, request_id))

    def log_for_request(
        self,
        campaign_id: str,
        request_id: str,
        choice: Choice,
        segment: str | None,
        stamp: Any,
        log_impressions: bool,
    ) -> Choice:
        """Queue ``choice`` as the one decision for ``request_id`` and remember it."""
        self._pending.append(
            (
                choice.decision_id,
                campaign_id,
                choice.variant_id,
                segment,
                choice.probability,
                stamp,
                log_impressions,
            )
        )
        self._recent_requests[(campaign_id, request_id)] = choice
        if len(self._recent_requests) > _RECENT_REQUESTS:
            self._recent_requests.popitem(last=False)
        return choice

    def flush(self) -> None:
        """Hand every queued decision to the store's writer (does not wait for the commit)."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        batches: dict[bool, list[tuple]] = {True: [], False: []}
        try:
            # popleft until empty rather than copy-and-clear: choosers keep appending
            # from other threads, and nothing appended meanwhile may be lost.
            while True:
                item = pending.popleft()
                batches[item[6]].append(item)
        except IndexError:
            pass
        import pyarrow as pa

        for log_impressions, items in batches.items():
            if not items:
                continue
            columns = list(zip(*items, strict=True))
            if self._epoch_stamps:
                micros = pa.array([round(t * 1e6) for t in columns[5]], pa.int64())
                stamps = micros.cast(pa.timestamp("us"))
            else:
                stamps = pa.array(columns[5], pa.timestamp("us"))
            # Arrow columns straight away: the cheapest form for the store, and this runs
            # beside the request path, so every millisecond holding the GIL counts.
            frame = pa.table(
                {
                    "decision_id": pa.array(columns[0], pa.string()),
                    "campaign_id": pa.array(columns[1], pa.string()),
                    "variant_id": pa.array(columns[2], pa.string()),
                    "segment": pa.array(columns[3], pa.string()),
                    "probability": pa.array(columns[4], pa.float64()),
                    "ts": stamps,
                }
            )
            self._store.log_decisions(frame, impressions=log_impressions)
