"""What :meth:`adloop.storage.Store.append_events` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AppendResult", "RowError"]


@dataclass(frozen=True)
class RowError:
    """Why one row of a batch was rejected.

    Attributes:
        row: 0-based position of the row in the batch (for a file: the data row, header excluded).
        field: the offending column (``event_id``, ``type``, ``campaign_id``, ``variant_id``,
            ``ts``, ``value``; ``row`` when the line itself could not be parsed).
        reason: what was wrong, in words.
    """

    row: int
    field: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """``{"row", "field", "reason"}``."""
        return {"row": self.row, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class AppendResult:
    """Counts for one appended batch, known only after its transaction committed.

    Attributes:
        accepted: rows newly stored.
        duplicates: valid rows whose (campaign_id, event_id) was already stored or appeared
            earlier in the batch (deduplication is scoped to the campaign).
        rejected: invalid rows (exact count).
        errors: one :class:`RowError` per rejected row, capped (see ``max_errors``).
        batch_id: the store's id for this batch (all its accepted rows carry it).

    Example:
        >>> AppendResult(accepted=2, duplicates=1, rejected=0, errors=[]).to_dict()
        {'accepted': 2, 'duplicates': 1, 'rejected': 0, 'errors': []}
    """

    accepted: int
    duplicates: int
    rejected: int
    errors: list[RowError] = field(default_factory=list)
    batch_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"accepted", "duplicates", "rejected", "errors": [{"row", "field", "reason"}]}``."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": [error.to_dict() for error in self.errors],
        }
