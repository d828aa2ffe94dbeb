"""The single writer: one thread owns the write connection and group-commits queued work.

Callers enqueue jobs and (usually) wait on a future that resolves only after the COMMIT that
made the job durable. Consecutive event batches are merged and validated, deduplicated and
inserted by one set-based pass, so a thousand small HTTP requests cost one transaction, not a
thousand. If a merged group fails, it is rolled back and each job is retried alone, so one bad
job cannot take the others down with it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from adloop.storage import _ingest
from adloop.storage._keys import KeyIndex
from adloop.storage.errors import WriterStoppedError

log = logging.getLogger("storage")

#: A merged group stops growing past this many rows or jobs, bounding the writer's memory.
MAX_GROUP_ROWS = 2_000_000
MAX_GROUP_JOBS = 512
#: Aggregate tables are compacted when they grow past this many rows (and twice their
#: size after the previous compaction).
COMPACT_MIN_ROWS = 50_000


@dataclass
class IngestJob:
    """One event batch (and optionally the decisions behind its impressions)."""

    events: pa.Table
    source: str
    received_at: datetime
    max_ts: datetime
    max_errors: int
    decisions: pa.Table | None = None
    future: Future | None = None
    batch_id: int = 0


@dataclass
class CallJob:
    """Any other write: runs ``fn(connection)`` inside the group's transaction."""

    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future | None = None


_STOP = object()


@dataclass
class _State:
    next_batch_id: int
    aggregate_rows: dict[str, int] = field(default_factory=dict)
    compacted_rows: dict[str, int] = field(default_factory=dict)


class Writer:
    """Owns ``connection`` on a daemon thread until :meth:`stop`."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, name: str) -> None:
        self._connection = connection
        self._queue: queue.Queue = queue.Queue()
        self._error_count = 0
        first = connection.execute(
            "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_log"
        ).fetchall()[0]
        self._state = _State(next_batch_id=int(first[0]))
        for table in _ingest.AGGREGATE_TABLES:
            (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            self._state.aggregate_rows[table] = count
            self._state.compacted_rows[table] = count
        self._key_index = KeyIndex()
        # Each campaign's variant ids, for validating events without a query per group.
        # Only other writes (CallJobs, run on this thread) can change them: they clear it.
        self._known: dict[str, frozenset[str]] = {}
        self._thread = threading.Thread(target=self._run, name=f"adloop-writer:{name}", daemon=True)
        self._thread.start()

    def submit(self, job: IngestJob | CallJob) -> None:
        """Queue ``job``; its future (if any) resolves after the commit."""
        if not self._thread.is_alive():
            raise WriterStoppedError("the writer thread has stopped")
        self._queue.put(job)

    def stop(self) -> None:
        """Commit everything queued so far, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        self._key_index.wait()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
            jobs = [job]
            rows = _rows(job)
            while len(jobs) < MAX_GROUP_JOBS and rows < MAX_GROUP_ROWS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                jobs.append(more)
                rows += _rows(more)
            self._run_group(jobs)
            try:
                self._maybe_compact()
            except Exception as error:  # never let housekeeping kill the writer
                log.warning("compaction skipped: %s", error)

    def _run_group(self, jobs: list) -> None:
        connection = self._connection
        saved_batch_id = self._state.next_batch_id
        added: dict[str, int] = {}
        try:
            connection.execute("BEGIN TRANSACTION")
            results = self._execute(jobs, added)
            started = time.perf_counter()
            connection.execute("COMMIT")
            if _ingest.TRACE is not None:
                _ingest.TRACE.append(("COMMIT", time.perf_counter() - started))
        except Exception as error:  # roll back, then isolate the failing job
            with contextlib.suppress(duckdb.Error):
                connection.execute("ROLLBACK")
            self._key_index.rollback()
            self._known.clear()
            self._state.next_batch_id = saved_batch_id
            if len(jobs) > 1:
                for job in jobs:
                    self._run_group([job])
                return
            self._error_count += 1
            if jobs[0].future is not None:
                jobs[0].future.set_exception(error)
            else:
                log.error("a queued write failed and was dropped: %s", error)
            return
        self._key_index.commit()
        for table, n in added.items():
            self._state.aggregate_rows[table] = self._state.aggregate_rows.get(table, 0) + n
        for job, result in zip(jobs, results, strict=True):
            if job.future is not None:
                job.future.set_result(result)

    def _execute(self, jobs: list, added: dict[str, int]) -> list:
        results: list = []
        start = 0
        while start < len(jobs):
            if isinstance(jobs[start], IngestJob):
                end = start
                while end < len(jobs) and isinstance(jobs[end], IngestJob):
                    jobs[end].batch_id = self._state.next_batch_id
                    self._state.next_batch_id += 1
                    end += 1
                results.extend(
                    _ingest.ingest(
                        self._connection, jobs[start:end], added, self._key_index, self._known
                    )
                )
                start = end
            else:
                self._known.clear()
                results.append(jobs[start].fn(self._connection))
                start += 1
        return results

    def _maybe_compact(self) -> None:
        for table in _ingest.AGGREGATE_TABLES:
            rows = self._state.aggregate_rows[table]
            if rows < max(COMPACT_MIN_ROWS, 2 * self._state.compacted_rows[table]):
                continue
            try:
                self._connection.execute("BEGIN TRANSACTION")
                remaining = _ingest.compact(self._connection, table)
                self._connection.execute("COMMIT")
            except duckdb.Error as error:
                with contextlib.suppress(duckdb.Error):
                    self._connection.execute("ROLLBACK")
                log.warning("compacting %s failed (totals unchanged): %s", table, error)
                continue
            self._state.aggregate_rows[table] = remaining
            self._state.compacted_rows[table] = remaining


def _rows(job: Any) -> int:
    return job.events.num_rows if isinstance(job, IngestJob) else 1
