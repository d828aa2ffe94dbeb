"""CSV exports of the dashboard's tables: the same rows, as plain numbers.

Each table on a campaign's page has a ``CSV`` link; the file holds what the table shows,
with rates as fractions and intervals as two columns (``ctr_low``, ``ctr_high``), so a
spreadsheet can compute with them. Counts are the API's (``GET /v1/campaigns/{id}``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["TABLES", "campaigns_csv", "table_csv"]


def _variants(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["label", "variant_id", "text", "status", "impressions", "clicks", "ctr",
              "ctr_low", "ctr_high", "conversions", "conversion_rate", "conversion_rate_low",
              "conversion_rate_high", "probability_best", "expected_loss", "traffic_share",
              "generator", "model_version"]  # fmt: skip
    rows = (
        [v["label"], v["variant_id"], v.get("text"), v["status"], v["impressions"], v["clicks"],
         *v["ctr"], v["conversions"], *v["cvr"], v["probability_best"], v["expected_loss"],
         v["share"], v.get("generator"), v.get("model_version")]
        for v in page["variants"]
    )  # fmt: skip
    return header, rows


def _traffic(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    series = page["series"]
    header = ["bucket_start", "label", "variant_id", "impressions", "clicks"]
    rows = (
        [start, page["labels"][variant_id], variant_id, impressions[i],
         series["clicks"][variant_id][i]]
        for variant_id, impressions in series["impressions"].items()
        for i, start in enumerate(series["starts"])
    )  # fmt: skip
    return header, rows


def _queue(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["label", "variant_id", "text", "generator", "model_version"]
    rows = (
        [v["label"], v["variant_id"], v.get("text"), v.get("generator"), v.get("model_version")]
        for v in page["pending"]
    )
    return header, rows


def _quality(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["level", "title", "detail", "action"]
    return header, ([f.level, f.title, f.detail, f.action] for f in page["findings"])


def _segments(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["segment", "label", "variant_id", "impressions", "clicks", "ctr", "ctr_low",
              "ctr_high"]  # fmt: skip
    rows = (
        [s["segment"], page["labels"][variant_id], variant_id, cell["impressions"],
         cell["clicks"], *cell["ctr"]]
        for s in page["segments"]
        for variant_id, cell in s["variants"].items()
    )  # fmt: skip
    return header, rows


def _models(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["version", "created_at", "parent", "state", "why", "variants_here"]
    rows = (
        [m["version"], m["created_at"], m["parent"], m["verdict"], m["why"], m["variants_here"]]
        for m in page["models"]["versions"]
    )
    return header, rows


def _insights(page: Mapping[str, Any]) -> tuple[list[str], Iterable[Sequence[Any]]]:
    header = ["element", "kind", "variants_with", "variants_without", "ctr_with",
              "ctr_with_low", "ctr_with_high", "ctr_without", "ctr_without_low",
              "ctr_without_high", "lift", "lift_low", "lift_high", "reading"]  # fmt: skip
    rows = (
        [r["element"], r["kind"], r["variants_with"], r["variants_without"], *r["with"],
         *r["without"], *r["lift"], r["reading"]]
        for r in page["insights"]
    )  # fmt: skip
    return header, rows


#: Table name (as in ``/ui/campaigns/{id}/export/{name}.csv``) to its rows.
TABLES: dict[str, Callable[[Mapping[str, Any]], tuple[list[str], Iterable[Sequence[Any]]]]] = {
    "variants": _variants,
    "traffic": _traffic,
    "queue": _queue,
    "quality": _quality,
    "segments": _segments,
    "insights": _insights,
    "models": _models,
}


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def _write(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(c) for c in row] for row in rows)
    return buffer.getvalue()


def table_csv(page: Mapping[str, Any], table: str) -> str:
    """The CSV text of one of the campaign page's tables (``table`` in :data:`TABLES`)."""
    return _write(*TABLES[table](page))


def campaigns_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The campaign list as CSV."""
    header = ["campaign_id", "name", "status", "objective", "impressions", "impressions_last_day",
              "clicks", "conversions", "leader", "leader_probability_best", "winner",
              "decided_at", "n_active", "n_pending"]  # fmt: skip
    return _write(
        header,
        (
            [r["campaign_id"], r.get("name"), r["status"], r.get("objective"), r["impressions"],
             r["impressions_last_day"], r["clicks"], r["conversions"], r.get("leader_label"),
             r.get("leader_probability"), r.get("winner_label"), r.get("decided_at"),
             r["n_active"], r["n_pending"]]
            for r in rows
        ),
    )  # fmt: skip
