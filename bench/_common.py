"""Shared plumbing for benchmarks: timing, peak memory, and writing JSON + markdown.

Every suite produces plain rows (one dict per measurement, with at least ``name``,
``system`` — ours or a named peer — and the measured figures) and hands them to
:func:`write_results`, which writes ``<out>/<suite>.json`` and ``<out>/<suite>.md``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Measurement:
    """Wall time and peak Python heap of one block, filled in by :func:`measure`."""

    seconds: float = 0.0
    peak_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure(trace_memory: bool = True) -> Iterator[Measurement]:
    """Time a block and record its peak traced memory (numpy and polars allocations included).

    DuckDB allocates outside Python's tracer; suites that use it also report
    :func:`max_rss_mb` for the whole process.
    """
    result = Measurement()
    if trace_memory:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        if trace_memory:
            result.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """The fastest of ``repeat`` timed calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.3f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a GitHub markdown table; columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_results(suite: str, rows: list[dict[str, Any]], out: Path, notes: str = "") -> Path:
    """Write `<out>/<suite>.json` and `<out>/<suite>.md`, print the table, return the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"suite": suite, "machine": machine(), "rows": rows, "notes": notes}
    json_path = out / f"{suite}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    (out / f"{suite}.md").write_text(f"# bench: {suite}\n\n{table}\n{notes}\n")
    print(table)
    print(f"wrote {json_path} and {out / f'{suite}.md'}")
    return json_path
