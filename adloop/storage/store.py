"""The DuckDB-backed store: campaigns, variants, the append-only event log and arm statistics.

``Store`` is assembled from one part per job, each in its own module:

- ``_core``: opening and closing the file, the clock, the read and write primitives
  (``_database`` keeps one open file per process, ``_migrations`` upgrades its schema);
- ``_campaigns``: campaigns and variants;
- ``_reviews``: approving and rejecting variants (append-only review records);
- ``_events``: appending events and chooser decisions to the log;
- ``_stats``: arm statistics, decision statistics and data quality;
- ``_models``: model versions and promotions;
- ``_admin``: API keys and scheduler job runs.
"""

from __future__ import annotations

from adloop.storage._admin import AdminMixin
from adloop.storage._campaigns import CampaignsMixin
from adloop.storage._events import EventsMixin
from adloop.storage._fields import utc_now
from adloop.storage._models import ModelsMixin
from adloop.storage._reviews import ReviewsMixin
from adloop.storage._stats import StatsMixin

__all__ = ["Store", "utc_now"]


class Store(CampaignsMixin, ReviewsMixin, EventsMixin, StatsMixin, ModelsMixin, AdminMixin):
    """A DuckDB file holding campaigns, variants, the append-only event log and model history.

    All writes go through one writer thread that owns the write connection and group-commits
    whatever is queued; ``append_events`` returns only after the COMMIT that made its rows
    durable. Reads use a per-thread connection, so a Store may be shared by many threads.

    Args:
        path: the database file (created, with parent folders, if absent).
        clock: returns "now" as a naive UTC datetime; used for timestamps the store stamps
            itself, for rejecting events from the future, and for discounting.

    Raises:
        StoreLockedError: another process has the file open.
        SchemaError: the file was written by a newer adloop.

    Example:
        >>> with Store(tmp_path / "adloop.duckdb") as store:  # doctest: +SKIP
        ...     store.insert_campaign({"campaign_id": "c_1", "objective": "ctr"},
        ...                           [{"variant_id": "v_1", "headline": "Hi"}])
        ...     store.append_events([{"event_id": "e1", "type": "impression",
        ...         "campaign_id": "c_1", "variant_id": "v_1", "ts": "2024-05-01 12:00"}]).accepted
        1
    """

    shared = False
    """One process writes the file (DuckDB's lock), so it sees every change as it makes it."""
