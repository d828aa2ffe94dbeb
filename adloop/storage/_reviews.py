"""Variant reviews: approving or rejecting a variant, recorded as an append-only fact.

A generated variant may wait as ``pending`` until a person approves it (it becomes ``active``
and serves) or rejects it (``rejected``; it never serves). The status change and the review
row (who, when, the action, a note) are written in one transaction, so a status set by review
always has its record.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from adloop.storage._core import StoreCore
from adloop.storage._fields import fetch_dicts, one_of
from adloop.storage.errors import ConflictError, InvalidArgumentError, NotFoundError

REVIEW_ACTIONS = ("approve", "reject")

# action -> (statuses it applies to, status it sets). A rejected variant may still be
# approved (a change of mind); an active one is retired, not rejected.
_TRANSITIONS = {
    "approve": (("pending", "rejected"), "active"),
    "reject": (("pending",), "rejected"),
}
_MAX_NOTE = 2000


class ReviewsMixin(StoreCore):
    """The store's variant reviews."""

    def review_variant(
        self, campaign_id: str, variant_id: str, action: str, *, reviewer: str, note: str | None
    ) -> dict:
        """Approve (``pending``/``rejected`` -> ``active``) or reject (``pending`` ->
        ``rejected``) a variant and append the review; return the review row.

        Raises:
            InvalidRecordError: ``action`` is not approve or reject.
            InvalidArgumentError: ``reviewer`` is empty, or ``note`` is too long.
            NotFoundError: the campaign has no such variant.
            ConflictError: the variant's status is not one the action applies to.
        """
        one_of(action, "action", REVIEW_ACTIONS)
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise InvalidArgumentError("reviewer must name who reviewed (a tenant, key or user)")
        if note is not None and (not isinstance(note, str) or len(note) > _MAX_NOTE):
            raise InvalidArgumentError(f"note must be a string of at most {_MAX_NOTE} characters")
        sources, target = _TRANSITIONS[action]
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> dict:
            found = connection.execute(
                "SELECT status FROM variants WHERE campaign_id = ? AND variant_id = ?",
                [campaign_id, variant_id],
            ).fetchall()
            if not found:
                raise NotFoundError(f"campaign {campaign_id} has no variant {variant_id}")
            status = found[0][0]
            if status not in sources:
                raise ConflictError(
                    f"variant {variant_id} is {status}; only a {' or '.join(sources)} variant "
                    f"can be {action.rstrip('e')}ed"
                )
            connection.execute(
                "UPDATE variants SET status = ?, updated_at = ? "
                "WHERE campaign_id = ? AND variant_id = ?",
                [target, now, campaign_id, variant_id],
            )
            connection.execute(
                "INSERT INTO variant_reviews VALUES (?, ?, ?, ?, ?, ?)",
                [campaign_id, variant_id, action, reviewer.strip(), note, now],
            )
            return _review(campaign_id, variant_id, action, reviewer.strip(), note, now)

        return self._write(write)

    def variant_reviews(self, campaign_id: str) -> list[dict]:
        """The campaign's reviews, oldest first (``variant_id, action, reviewer, note,
        reviewed_at``)."""
        sql = (
            "SELECT campaign_id, variant_id, action, reviewer, note, reviewed_at "
            "FROM variant_reviews WHERE campaign_id = ? ORDER BY reviewed_at, rowid"
        )
        return fetch_dicts(self._read(sql, [campaign_id]))


def _review(
    campaign_id: str, variant_id: str, action: str, reviewer: str, note: str | None, at: datetime
) -> dict:
    return {
        "campaign_id": campaign_id,
        "variant_id": variant_id,
        "action": action,
        "reviewer": reviewer,
        "note": note,
        "reviewed_at": at,
    }
