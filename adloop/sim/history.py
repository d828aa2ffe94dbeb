"""A campaign with a given history: fixed variants and their impressions and clicks as events.

Retraining learns from what a store has seen. Benchmarks, tests and demos of a retraining
round need a store that already holds such a history without running the traffic that
produced it; :func:`seed_campaign` writes one straight through the public
:class:`adloop.storage.Store` API, exactly as the service would have recorded it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from adloop.sim.errors import SimError
from adloop.storage import Store

__all__ = ["Arm", "seed_campaign"]

#: One variant and its history: ``(headline, description, impressions, clicks)``.
Arm = tuple[str, str, int, int]


def seed_campaign(
    store: Store,
    brief: Mapping[str, Any],
    arms: Sequence[Arm],
    *,
    campaign_id: str = "c_000000000001",
    name: str = "seeded",
    start: datetime = datetime(2026, 1, 5, 9, 0, 0),
) -> list[str]:
    """Write one active CTR campaign whose variants have already been shown and clicked.

    Each arm becomes an active template variant with ``impressions`` impression events and
    ``clicks`` click events in segment ``"all"``, all within the hour after ``start``.
    Returns the variant ids, in the order of ``arms``.

    Example::

        with Store("history.duckdb") as store:
            ids = seed_campaign(store, {"product": "rings"}, [("Rings", "Shop now.", 100, 7)])
    """
    variant_ids = [f"v_{campaign_id[-6:]}{i:06d}" for i in range(len(arms))]
    store.insert_campaign(
        {
            "campaign_id": campaign_id,
            "tenant": "default",
            "name": name,
            "brief": dict(brief),
            "objective": "ctr",
            "status": "active",
            "settings": {},
            "created_at": start,
        },
        [
            {
                "variant_id": vid,
                "campaign_id": campaign_id,
                "headline": headline,
                "description": description,
                "text": f"{headline} — {description}",
                "language": "en",
                "generator": "template",
                "model_version": None,
                "parent_ids": [],
                "provenance": {},
                "status": "active",
                "created_at": start,
            }
            for vid, (headline, description, _, _) in zip(variant_ids, arms, strict=True)
        ],
    )
    events = []
    for vid, (_, _, impressions, clicks) in zip(variant_ids, arms, strict=True):
        for kind, count in (("impression", impressions), ("click", clicks)):
            events.extend(
                {
                    "event_id": f"{vid}-{kind}-{i}",
                    "type": kind,
                    "campaign_id": campaign_id,
                    "variant_id": vid,
                    "ts": start + timedelta(seconds=i % 3600),
                    "segment": "all",
                }
                for i in range(count)
            )
    result = store.append_events(events)
    if result.rejected or result.duplicates:
        first = result.errors[0].reason if result.errors else "event ids already stored"
        raise SimError(
            f"seed_campaign: the store did not take {result.rejected + result.duplicates} of "
            f"{len(events)} events ({first}); pass a campaign_id the store has not seen"
        )
    return variant_ids
