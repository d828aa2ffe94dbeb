"""The engine's background thread: flush queued decisions, rebuild snapshots that are due.

Used only with a real-time clock; a simulated clock refreshes inline so runs repeat exactly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["BackgroundRefresh"]

_log = logging.getLogger("adloop.engine")

# Checking which snapshots are due reads the clock and scans every campaign: at most twice a
# second, however short the flush interval.
_MAX_CHECK_INTERVAL = 0.5


class BackgroundRefresh:
    """A daemon thread calling ``flush`` every ``flush_interval`` seconds and ``refresh_due``
    every ``min(0.5, refresh_interval)`` seconds, until :meth:`stop`."""

    def __init__(
        self,
        flush: Callable[[], None],
        refresh_due: Callable[[], None],
        *,
        flush_interval: float,
        refresh_interval: float,
    ) -> None:
        self._flush = flush
        self._refresh_due = refresh_due
        self._flush_interval = flush_interval
        self._check_interval = min(_MAX_CHECK_INTERVAL, refresh_interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="adloop-engine-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        last_check = 0.0
        while not self._stop.wait(self._flush_interval):
            try:
                self._flush()
            except Exception:  # keep serving on a transient store error; next tick retries
                _log.exception("background flush failed")
            now = time.monotonic()
            if now - last_check < self._check_interval:
                continue
            last_check = now
            # Separate from the flush: a failing writer must not freeze every allocation.
            # ``refresh_due`` isolates campaigns itself; this only guards the thread.
            try:
                self._refresh_due()
            except Exception:
                _log.exception("background refresh failed")
