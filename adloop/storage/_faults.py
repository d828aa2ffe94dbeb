"""Starting and answering the writer's jobs safely, whatever their callers did meanwhile.

A caller may cancel its future (an HTTP client that disconnected, a task uvicorn cancelled at
shutdown) at any moment; setting the result of a cancelled future raises, which must never
reach the writer thread.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, InvalidStateError
from typing import Any

log = logging.getLogger("storage")


def claim(future: Future | None) -> bool:
    """Start a job: False when its caller cancelled it already (the job is then skipped).

    Once claimed, a future can no longer be cancelled, so setting its result cannot fail.
    """
    if future is None:
        return True
    with contextlib.suppress(RuntimeError):  # already claimed (a job retried on its own)
        return future.set_running_or_notify_cancel()
    return not future.cancelled()


def resolve(future: Future | None, result: Any = None, error: BaseException | None = None) -> None:
    """Set a job's outcome, tolerating a future that is already done or was cancelled."""
    if future is None or future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled or resolved between the check and the set
        log.debug("a write's caller went away before its result was set")
