"""Crash safety and process exclusion, with real child processes on a real DuckDB file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from adloop.storage import Store, StoreLockedError

BATCH = 500

# The child plays an at-least-once client: it (re)sends batches from --start on, each with the
# previous batch repeated inside it, and prints a batch number only after append_events returned.
CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta
    from adloop.storage import Store

    path, start, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store(path)
    if store.campaign("c_crash") is None:
        variants = [{"variant_id": "v_1"}, {"variant_id": "v_2"}]
        store.insert_campaign({"campaign_id": "c_crash"}, variants)
    print("ready", flush=True)
    ts = datetime(2026, 1, 1)

    def rows(k):
        return [{"event_id": f"b{k}-{i}", "type": ("impression", "click")[i % 2],
                 "campaign_id": "c_crash", "variant_id": f"v_{1 + i % 2}",
                 "ts": ts + timedelta(seconds=i)} for i in range(batch)]

    k = start
    while True:
        result = store.append_events(rows(k) + (rows(k - 1) if k > 0 else []))
        assert result.accepted in (0, batch), result
        print(k, flush=True)
        k += 1
    """
)


def _run_and_kill(db_path: Path, start: int, n_acks: int) -> list[int]:
    """Start a child ingesting from batch ``start``; SIGKILL it after ``n_acks`` acks."""
    log = db_path.with_name(f"child-{start}.log")
    with log.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db_path), str(start), str(BATCH)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    acknowledged: list[int] = []
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "ready", log.read_text()
        deadline = time.monotonic() + 60
        while len(acknowledged) < n_acks and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-run: the next batch is being written now
        child.wait(timeout=30)
        assert child.stdout is not None
        # Lines already written before the kill were acknowledged too.
        acknowledged.extend(int(line) for line in child.stdout.read().split())
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= n_acks, "the child acknowledged too few batches before the deadline"
    return acknowledged


def _batch_counts(db_path: Path) -> dict[int, tuple[int, int]]:
    with duckdb.connect(str(db_path), read_only=True) as connection:
        rows = connection.execute(
            """SELECT split_part(event_id, '-', 1)[2:]::INTEGER AS k, count(*),
                      count(DISTINCT event_id)
               FROM events GROUP BY k"""
        ).fetchall()
    return {k: (n, n_distinct) for k, n, n_distinct in rows}


def test_sigkill_loses_no_acknowledged_event_and_leaves_no_partial_batch(db_path: Path):
    first = _run_and_kill(db_path, start=0, n_acks=6)
    # The client resends from its first unacknowledged batch, as an at-least-once sender does.
    second = _run_and_kill(db_path, start=max(first) + 1, n_acks=4)
    acknowledged = set(first) | set(second)

    counts = _batch_counts(db_path)
    for k in acknowledged:
        assert counts.get(k) == (BATCH, BATCH), f"acknowledged batch {k} is not stored exactly once"
    for k, (n, n_distinct) in counts.items():
        assert n == n_distinct == BATCH, f"batch {k} is partial or duplicated: {n} rows"

    with Store(db_path) as store:  # reopens cleanly, aggregates agree with the log
        stats = store.arm_stats("c_crash")
        total = sum(n for n, _ in counts.values())
        assert int(stats["impressions"].sum() + stats["clicks"].sum()) == total
        assert (
            store.data_quality("c_crash")["duplicate_deliveries"]
            >= len(acknowledged) * BATCH - BATCH
        )


HOLDER = textwrap.dedent(
    """
    import sys, time
    from adloop.storage import Store
    store = Store(sys.argv[1])
    print("open", flush=True)
    time.sleep(60)
    """
)


def test_second_process_gets_a_clear_locked_error(db_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError) as caught:
            Store(db_path)
        error = caught.value
        assert error.pid == holder.pid
        message = str(error)
        assert str(db_path.resolve()) in message
        assert str(holder.pid) in message
        assert "HTTP API" in message and "Stop that process" in message
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    with Store(db_path) as store:  # usable again once the holder is gone
        assert store.campaigns() == []
