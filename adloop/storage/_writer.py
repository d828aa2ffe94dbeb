"""The single writer: one thread owns the write connection and group-commits queued work.

Callers enqueue jobs and (usually) wait on a future that resolves only after the COMMIT that
made the job durable. Consecutive event batches are merged and validated, deduplicated and
inserted by one set-based pass, so a thousand small HTTP requests cost one transaction, not a
thousand. If a merged group fails, it is rolled back and each job is retried alone, so one bad
job cannot take the others down with it.

The writer survives any error in a job. A job whose caller cancelled it before it started is
skipped; results are set through helpers that tolerate a future cancelled meanwhile. When the
*storage* fails (a full disk, an I/O error, a database DuckDB has invalidated), every job of the
group is answered with a :class:`~adloop.storage.errors.StorageUnavailableError` (the full disk
with its subclass ``StorageFullError``), fire-and-forget jobs (chooser decisions) are kept and
retried every :data:`RETRY_INTERVAL` seconds, an invalidated database is reopened, and
:meth:`Writer.health` reports the fault until the storage works again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from adloop.storage import _ingest
from adloop.storage._faults import claim, resolve
from adloop.storage._keys import KeyIndex
from adloop.storage.errors import (
    StorageFullError,
    StorageUnavailableError,
    WriterStoppedError,
    storage_fault,
)

log = logging.getLogger("storage")

#: A merged group stops growing past this many rows or jobs, bounding the writer's memory.
MAX_GROUP_ROWS = 2_000_000
MAX_GROUP_JOBS = 512
#: Aggregate tables are compacted when they grow past this many rows (and twice their
#: size after the previous compaction).
COMPACT_MIN_ROWS = 50_000
#: While the storage is failing, kept decisions are retried (and an invalidated database
#: reopened) this often, in seconds.
RETRY_INTERVAL = 1.0
#: At most this many rows of fire-and-forget work are kept for a retry; beyond it the oldest
#: are dropped, and counted in :meth:`Writer.health` (memory must stay bounded).
MAX_DEFERRED_ROWS = 2_000_000
#: A full disk counts as healed once this much space is free again.
MIN_FREE_BYTES = 4 << 20


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
_PROBE = object()


@dataclass
class _State:
    next_batch_id: int
    aggregate_rows: dict[str, int] = field(default_factory=dict)
    compacted_rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WriterHealth:
    """Whether writes work, and what is waiting for them to work again."""

    fault: str | None
    """The storage fault of the last failed write (None while writes succeed)."""
    disk_full: bool
    """True when that fault is a full disk."""
    deferred_rows: int
    """Rows of chooser decisions (and their impressions) kept for a retry."""
    dropped_rows: int
    """Rows of fire-and-forget work dropped since start (kept work beyond the bound, or
    work the store rejected as malformed)."""


class Writer:
    """Owns ``connection`` on a daemon thread until :meth:`stop`.

    ``reopen`` closes the database and returns a fresh write connection; the writer calls it
    when DuckDB has invalidated the database (e.g. a checkpoint hit a full disk).
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        name: str,
        *,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        folder: str | os.PathLike[str] | None = None,
    ) -> None:
        self._connection = connection
        self._reopen = reopen
        self._folder = folder
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
        self._fault: StorageUnavailableError | None = None
        self._must_reopen = False
        self._deferred: deque[IngestJob | CallJob] = deque()
        self._deferred_rows = 0
        self._dropped_rows = 0
        self._died: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"adloop-writer:{name}", daemon=True)
        self._thread.start()

    def submit(self, job: IngestJob | CallJob) -> None:
        """Queue ``job``; its future (if any) resolves after the commit."""
        if not self._thread.is_alive():
            cause = f": {self._died}" if self._died is not None else ""
            raise WriterStoppedError(f"the writer thread has stopped{cause}")
        self._queue.put(job)

    def probe(self) -> None:
        """Ask the writer to check its connection (a reader saw the database fail)."""
        if self._thread.is_alive():
            self._queue.put(_PROBE)

    def health(self) -> WriterHealth:
        """The current fault (if any) and the work kept for a retry."""
        fault = self._fault
        return WriterHealth(
            fault=None if fault is None else fault.cause,
            disk_full=isinstance(fault, StorageFullError),
            deferred_rows=self._deferred_rows,
            dropped_rows=self._dropped_rows,
        )

    def stop(self) -> None:
        """Commit everything queued so far, then end the thread.

        Raises:
            StorageUnavailableError: kept work could not be written even by a last retry
                (it is lost with this process; the message says how many rows).
        """
        self._queue.put(_STOP)
        self._thread.join()
        self._key_index.wait()
        if self._deferred_rows:
            cause = self._fault.cause if self._fault is not None else "unknown"
            raise StorageUnavailableError(
                f"{cause}; {self._deferred_rows} rows of chooser decisions could not be "
                "written before shutdown and are lost"
            )

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # a bug: never die silently, answer what is queued
            self._died = error
            log.exception("the writer thread failed")
            self._fail_queued(WriterStoppedError(f"the writer thread failed: {error!r}"))

    def _loop(self) -> None:
        while True:
            waiting = bool(self._deferred) or self._fault is not None
            try:
                job = self._queue.get(timeout=RETRY_INTERVAL if waiting else None)
            except queue.Empty:
                self._heal()
                continue
            if job is _STOP:
                self._heal()
                return
            if job is _PROBE:
                self._probe()
                continue
            jobs, stopping = self._collect(job)
            self._run_jobs(jobs)
            if stopping:
                self._heal()
                return

    def _collect(self, job: IngestJob | CallJob) -> tuple[list, bool]:
        """``job`` and whatever queued behind it, up to the group limits; and whether to stop."""
        jobs = [job]
        rows = _rows(job)
        while len(jobs) < MAX_GROUP_JOBS and rows < MAX_GROUP_ROWS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is _STOP:
                return jobs, True
            if more is _PROBE:
                continue
            jobs.append(more)
            rows += _rows(more)
        return jobs, False

    def _run_jobs(self, jobs: list) -> None:
        # A job whose caller cancelled it (a client that went away) is skipped: no one waits
        # for it and nothing of it was acknowledged.
        live = [job for job in jobs if claim(job.future)]
        if self._must_reopen:
            self._try_reopen()
        if live:
            try:
                self._run_group(live)
            except Exception as error:  # a bug in a job's bookkeeping: answer, keep running
                log.exception("a write group failed unexpectedly")
                for job in live:
                    resolve(job.future, error=error)
        if self._deferred and self._fault is None:
            self._heal()
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
            fault = storage_fault(error)
            if fault is not None:
                # The storage failed, not a job: retrying each job alone would fail alike.
                self._set_fault(fault)
                for job in jobs:
                    self._fail(job, fault)
                return
            if len(jobs) > 1:
                for job in jobs:
                    self._run_group([job])
                return
            self._error_count += 1
            self._fail(jobs[0], error)
            return
        if self._fault is not None:
            log.warning("storage writable again after: %s", self._fault.cause)
            self._fault = None
        self._key_index.commit()
        for table, n in added.items():
            self._state.aggregate_rows[table] = self._state.aggregate_rows.get(table, 0) + n
        for job, result in zip(jobs, results, strict=True):
            resolve(job.future, result)

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

    # -- faults -------------------------------------------------------------------------------

    def _fail(self, job: IngestJob | CallJob, error: BaseException) -> None:
        """Answer a failed job; keep fire-and-forget work for a retry if the storage failed."""
        if job.future is not None:
            resolve(job.future, error=error)
        elif isinstance(error, StorageUnavailableError):
            self._defer(job)
        else:
            self._dropped_rows += _rows(job)
            log.error("a queued write failed and was dropped: %s", error)

    def _defer(self, job: IngestJob | CallJob) -> None:
        rows = _rows(job)
        while self._deferred and self._deferred_rows + rows > MAX_DEFERRED_ROWS:
            oldest = self._deferred.popleft()
            self._deferred_rows -= _rows(oldest)
            self._dropped_rows += _rows(oldest)
            log.error(
                "dropped %d rows of kept decisions: more than %d wait for the storage",
                _rows(oldest),
                MAX_DEFERRED_ROWS,
            )
        self._deferred.append(job)
        self._deferred_rows += rows

    def _set_fault(self, fault: StorageUnavailableError) -> None:
        if self._fault is None or self._fault.cause != fault.cause:
            log.error("storage fault, writes fail until it is fixed: %s", fault.cause)
        self._fault = fault
        self._must_reopen = self._must_reopen or fault.needs_reopen

    def _heal(self) -> None:
        """Reopen an invalidated database, retry kept work, notice a disk with space again."""
        if self._must_reopen and not self._try_reopen():
            return
        if self._deferred:
            kept = list(self._deferred)
            self._deferred.clear()
            self._deferred_rows = 0
            try:
                self._run_group(kept)  # on a new failure they are kept again, in order
            except Exception:
                log.exception("retrying kept decisions failed unexpectedly")
                for job in kept:
                    self._defer(job)
        elif isinstance(self._fault, StorageFullError) and self._has_free_space():
            log.warning("disk space available again after: %s", self._fault.cause)
            self._fault = None

    def _probe(self) -> None:
        try:
            self._connection.execute("SELECT 1").fetchall()
        except Exception as error:
            fault = storage_fault(error)
            if fault is not None:
                self._set_fault(fault)
                self._heal()

    def _try_reopen(self) -> bool:
        if self._reopen is None:
            return False
        try:
            self._key_index.wait()
            self._connection = self._reopen()
        except Exception as error:  # still failing (e.g. the disk is still full): next tick
            fault = storage_fault(error) or StorageUnavailableError(str(error))
            self._fault = fault
            log.warning("reopening the database failed: %s", fault.cause)
            return False
        log.warning("database reopened after: %s", self._fault.cause if self._fault else "")
        self._must_reopen = False
        self._key_index = KeyIndex()  # rebuilt lazily on the new connection
        self._known.clear()
        return True

    def _has_free_space(self) -> bool:
        if self._folder is None:
            return False
        try:
            stat = os.statvfs(self._folder)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize >= MIN_FREE_BYTES

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                resolve(job.future, error=error)

    def _maybe_compact(self) -> None:
        if self._fault is not None:
            return  # no housekeeping on failing storage
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
                fault = storage_fault(error)
                if fault is not None:
                    self._set_fault(fault)
                continue
            self._state.aggregate_rows[table] = remaining
            self._state.compacted_rows[table] = remaining


def _rows(job: Any) -> int:
    if not isinstance(job, IngestJob):
        return 1
    return job.events.num_rows + (job.decisions.num_rows if job.decisions is not None else 0)
