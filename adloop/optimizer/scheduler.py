"""The deployment's job scheduler: posterior refresh, retire-and-refill, and retraining.

One :class:`Scheduler` per deployment, either as its own process (``adloop scheduler``)
or inside the serving process. It wraps an APScheduler 3.11 ``BackgroundScheduler``:

* every job has ``max_instances=1`` (a slow run is never overlapped by the next one),
  ``coalesce=True`` (runs missed while the process was busy or asleep collapse into one)
  and a ``misfire_grace_time`` (a run later than that is skipped, not run late);
* triggers come from configuration, per job, as an interval (``every_seconds``) or a
  crontab line (``cron: "0 3 * * *"``), or ``null`` to switch the job off;
* fine-tuning runs in a one-worker ``ProcessPoolExecutor`` (spawned, not forked), so the
  serving threads of this process never wait on the training's CPU time or GIL, and a
  crash in training cannot take the process down;
* every run is recorded with ``store.record_job_run`` (start, end, outcome, error, detail).

Example::

    from adloop.optimizer import Engine
    from adloop.optimizer.scheduler import Scheduler, SchedulerConfig
    engine = Engine("adloop.duckdb")
    scheduler = Scheduler(engine, SchedulerConfig.load("scheduler.yaml"))
    scheduler.start()
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from adloop.optimizer.errors import ConfigError, InvalidRequest
from adloop.optimizer.retrain import RetrainConfig, retrain_round, switch_pool_model
from adloop.optimizer.retrain_worker import log_progress
from adloop.storage import utc_now

__all__ = ["JOB_NAMES", "JobSchedule", "Scheduler", "SchedulerConfig"]

#: The jobs a deployment runs, by the names recorded in ``job_runs``.
JOB_NAMES = ("refresh", "retire_refill", "retrain")


@dataclass(frozen=True, kw_only=True)
class JobSchedule:
    """When a job runs: every ``every_seconds`` seconds, or on a crontab line (UTC)."""

    every_seconds: float | None = None
    """Interval between runs, in seconds."""
    cron: str | None = None
    """Five-field crontab line, e.g. ``"0 3 * * *"`` for 03:00 UTC daily."""

    def __post_init__(self) -> None:
        if (self.every_seconds is None) == (self.cron is None):
            raise ConfigError(
                "JobSchedule",
                "a job schedule needs exactly one of every_seconds and cron, e.g. "
                "{every_seconds: 60} or {cron: '0 3 * * *'}",
            )
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ConfigError(
                "JobSchedule.every_seconds", f"must be > 0, got {self.every_seconds!r}"
            )
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ConfigError(
                    "JobSchedule.cron",
                    f"{self.cron!r} is not a five-field crontab line such as '0 3 * * *' ({exc})",
                ) from exc

    def trigger(self) -> Any:
        """The APScheduler trigger for this schedule."""
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            return CronTrigger.from_crontab(self.cron, timezone="UTC")
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.every_seconds, timezone="UTC")


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Which jobs run when; ``None`` switches a job off."""

    refresh: JobSchedule | None = field(default_factory=lambda: JobSchedule(every_seconds=10))
    """Recompute allocation snapshots from the store."""
    retire_refill: JobSchedule | None = field(
        default_factory=lambda: JobSchedule(every_seconds=3600)
    )
    """Retire clear losers and refill every active campaign's pool."""
    retrain: JobSchedule | None = field(default_factory=lambda: JobSchedule(cron="0 3 * * *"))
    """One retraining round (see :mod:`adloop.optimizer.retrain`)."""
    misfire_grace_seconds: int = 300
    """A run that could not start within this many seconds of its time is skipped."""
    retraining: RetrainConfig = field(default_factory=RetrainConfig)
    """Settings of each retraining round."""
    train_in_subprocess: bool = True
    """Fine-tune in a separate process (recommended); False trains in a scheduler thread."""

    def __post_init__(self) -> None:
        if not isinstance(self.misfire_grace_seconds, int) or self.misfire_grace_seconds < 1:
            raise ConfigError(
                "SchedulerConfig.misfire_grace_seconds",
                f"must be a positive integer (seconds), got {self.misfire_grace_seconds!r}",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchedulerConfig:
        """From plain config; unknown keys are errors naming the key path.

        Example
        -------
        >>> SchedulerConfig.from_dict({"retrain": {"cron": "30 2 * * *"}, "refresh": None}).refresh
        """
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                "scheduler", f"unknown key(s) {unknown}; use only these: {sorted(known)}"
            )
        for name in JOB_NAMES:
            if name in data and data[name] is not None:
                value = data[name]
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        name,
                        "expected a mapping with every_seconds or cron, or null to turn it off",
                    )
                bad = sorted(set(value) - {"every_seconds", "cron"})
                if bad:
                    raise ConfigError(name, f"unknown key(s) {bad}; use every_seconds or cron")
                try:
                    data[name] = JobSchedule(**value)
                except ConfigError as exc:
                    raise ConfigError(name, str(exc)) from exc
        if isinstance(data.get("retraining"), Mapping):
            try:
                data["retraining"] = RetrainConfig.from_dict(dict(data["retraining"]))
            except (TypeError, ConfigError) as exc:
                if isinstance(exc, ConfigError) and exc.field.startswith("retraining"):
                    raise  # already names the key path
                raise ConfigError("retraining", str(exc)) from exc
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> SchedulerConfig:
        """Read YAML (or JSON); settings may sit under a top-level ``scheduler`` key."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(str(path), "expected a mapping (job: schedule) at the top level")
        if "scheduler" in data and isinstance(data["scheduler"], Mapping):
            data = data["scheduler"]
        return cls.from_dict(data)


class Scheduler:
    """Runs the deployment's jobs against an engine and records every run in its store.

    Parameters
    ----------
    engine:
        An ``optimizer.Engine``; its store records the job runs.
    config:
        Which jobs run when.
    clock:
        Stamps job runs (defaults to the engine's clock).
    on_promote:
        Called with the new model record after a retraining round promotes a version
        (a serving process switches its generator here).

    Example
    -------
    >>> scheduler = Scheduler(engine, SchedulerConfig(retrain=None))  # doctest: +SKIP
    >>> scheduler.start(); ...; scheduler.shutdown()  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Any,
        config: SchedulerConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        on_promote: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.engine = engine
        self.config = config or SchedulerConfig()
        self.clock = clock or getattr(engine, "clock", None) or utc_now
        # Serving switches to a promoted version between requests unless the caller says otherwise.
        self.on_promote = on_promote if on_promote is not None else self._switch_serving_model
        self._executor: Executor | None = None
        self._executor_lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone="UTC")
        for name in JOB_NAMES:
            schedule: JobSchedule | None = getattr(self.config, name)
            if schedule is None:
                continue
            self._scheduler.add_job(
                self.run_job,
                trigger=schedule.trigger(),
                args=[name],
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=self.config.misfire_grace_seconds,
            )

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`shutdown`."""
        return bool(self._scheduler.running)

    def jobs(self) -> list[dict[str, Any]]:
        """Scheduled jobs with their triggers and next run times."""
        return [
            {
                "job": job.id,
                "trigger": str(job.trigger),
                "next_run_time": getattr(job, "next_run_time", None),
            }
            for job in self._scheduler.get_jobs()
        ]

    def start(self) -> None:
        """Start running jobs in background threads."""
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running jobs finish; stop the training process."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=wait, cancel_futures=True)
                self._executor = None

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ jobs

    def _training_executor(self) -> Executor | None:
        if not self.config.train_in_subprocess:
            return None
        with self._executor_lock:
            if self._executor is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                # spawn: a fork would copy DuckDB's and torch's threads in a broken state.
                self._executor = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                )
            return self._executor

    def _refresh(self) -> dict[str, Any]:
        self.engine.refresh()
        return {}

    def _switch_serving_model(self, model: dict[str, Any]) -> None:
        switch_pool_model(self.engine.pool, model["path"])

    def _retire_refill(self) -> dict[str, Any]:
        results = {}
        for campaign in self.engine.campaigns():
            if campaign.get("status") != "active":
                continue
            outcome = self.engine.retire_and_refill(campaign["campaign_id"])
            results[campaign["campaign_id"]] = {
                "retired": len(outcome.get("retired", [])),
                "added": len(outcome.get("added", [])),
            }
        return {"campaigns": results}

    def _retrain(self) -> dict[str, Any]:
        report = retrain_round(
            self.engine.store,
            config=self.config.retraining,
            executor=self._training_executor(),
            clock=self.clock,
            progress=log_progress,
            on_promote=self.on_promote,
        )
        if "BrokenProcessPool" in report.reason:
            # The training process died (killed, out of memory): start a fresh one next time.
            with self._executor_lock:
                self._executor = None
        return {"outcome": report.outcome, **report.to_dict()}

    def run_job(self, name: str) -> dict[str, Any]:
        """Run job ``name`` once now and record it; returns the recorded detail.

        Never raises: an error is recorded with outcome ``error`` and its message.
        """
        handlers = {
            "refresh": self._refresh,
            "retire_refill": self._retire_refill,
            "retrain": self._retrain,
        }
        if name not in handlers:
            raise InvalidRequest("job", f"unknown job {name!r}; use one of {list(JOB_NAMES)}")
        started = self.clock()
        outcome, error, detail = "ok", None, {}
        try:
            detail = handlers[name]()
            outcome = detail.pop("outcome", "ok")
            if outcome == "failed":
                error = detail.get("reason")
        except Exception as exc:  # noqa: BLE001 - a job failure is recorded, never fatal
            outcome = "error"
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.engine.store.record_job_run(
            job=name,
            started_at=started,
            ended_at=self.clock(),
            outcome=outcome,
            error=error,
            detail=detail,
        )
        return {"job": name, "outcome": outcome, "error": error, **detail}
