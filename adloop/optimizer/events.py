"""Event batches on their way to the store: count rows per campaign, hide other tenants' rows.

A batch is a list of dicts, a polars DataFrame or an Arrow table. Rows that name a campaign
of another tenant are taken out before the store sees them and reported as ``unknown
campaign`` -- exactly what a campaign that does not exist gets -- so a tenant cannot learn
that another tenant's campaign id exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

__all__ = ["campaign_counts", "submit_visible"]


def campaign_counts(events: Any) -> tuple[Any, dict[Any, int]]:
    """The batch in a form the store takes, and how many of its rows name each campaign."""
    if isinstance(events, list):
        return events, dict(Counter(_campaign_ids(events)))
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(events, pa.Table):
        import polars as pl

        events = events.to_arrow() if isinstance(events, pl.DataFrame) else pa.table(events)
    if "campaign_id" not in events.column_names:
        return events, {None: events.num_rows}
    counts = pc.value_counts(events.column("campaign_id"))
    return events, dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def submit_visible(
    store: Any, rows: Any, counts: Mapping[Any, int], hidden_ids: set[str]
) -> Future:
    """Submit the rows not naming a campaign in ``hidden_ids``; report those as unknown.

    Returns a future for the ``AppendResult`` of the whole batch, row numbers as given.
    """
    from adloop.storage import AppendResult, RowError

    hidden: list[int] = []
    index_map: list[int] = []
    if hidden_ids:
        keep = [c not in hidden_ids for c in _campaign_ids(rows)]
        hidden = [i for i, k in enumerate(keep) if not k]
        index_map = [i for i, k in enumerate(keep) if k]
        rows = _select(rows, keep)
    if index_map or (not hidden and sum(counts.values())):
        stored = store.submit_events(rows)
    else:
        stored = Future()
        stored.set_result(AppendResult(accepted=0, duplicates=0, rejected=0, errors=[]))
    if not hidden:
        return stored

    def with_hidden(result: Any) -> Any:
        errors = [
            RowError(row=index_map[e.row], field=e.field, reason=e.reason) for e in result.errors
        ]
        errors += [RowError(row=i, field="campaign_id", reason="unknown campaign") for i in hidden]
        errors.sort(key=lambda e: e.row)
        return AppendResult(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=result.rejected + len(hidden),
            errors=errors,
        )

    return _then(stored, with_hidden)


def _campaign_ids(rows: Any) -> list[Any]:
    """Each row's campaign_id (None where it has none), in row order."""
    if isinstance(rows, list):
        return [e.get("campaign_id") if isinstance(e, Mapping) else None for e in rows]
    if "campaign_id" not in rows.column_names:
        return [None] * rows.num_rows
    return rows.column("campaign_id").to_pylist()


def _select(rows: Any, keep: list[bool]) -> Any:
    """The rows whose ``keep`` flag is set (list or Arrow table alike)."""
    if isinstance(rows, list):
        return [row for row, k in zip(rows, keep, strict=True) if k]
    import pyarrow as pa

    return rows.filter(pa.array(keep, pa.bool_()))


def _then(future: Future, fn: Callable[[Any], Any]) -> Future:
    """A future for ``fn(future.result())`` (or ``future``'s exception)."""
    out: Future = Future()

    def done(inner: Future) -> None:
        try:
            out.set_result(fn(inner.result()))
        except BaseException as error:  # noqa: BLE001 - handed to the waiter, not swallowed
            out.set_exception(error)

    future.add_done_callback(done)
    return out
