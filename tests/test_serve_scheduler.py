"""``adloop serve --scheduler``: one process serves requests and runs the periodic jobs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from test_service_support import free_port, reap, start_serve_process, terminate

from adloop.storage import Store


def test_serve_runs_scheduled_jobs_beside_requests_and_records_them(
    db_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "jobs.yaml"
    config.write_text("refresh: {every_seconds: 1}\nretire_refill: null\nretrain: null\n")
    port = free_port()
    process = start_serve_process(db_path, port, "--scheduler-config", str(config))
    try:
        time.sleep(3.5)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert terminate(process) == 0
    finally:
        reap(process)
    with Store(db_path) as store:
        runs = store.job_runs("refresh")
        assert store.job_runs("retrain") == []
    assert len(runs) >= 2
    assert {run["outcome"] for run in runs} == {"ok"}
