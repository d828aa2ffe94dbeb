"""The job scheduler against a real engine and DuckDB file; retraining in a real process pool."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adloop.optimizer import Engine, EngineConfig
from adloop.optimizer.retrain import RetrainConfig
from adloop.optimizer.scheduler import JobSchedule, Scheduler, SchedulerConfig

BRIEF = {"product": "made-to-measure rings", "brand": "Aurelle", "language": "en"}


def _engine(db_path: Path) -> Engine:
    engine = Engine(db_path, config=EngineConfig(background=False), seed=1)
    engine.create_campaign(BRIEF, variants=["Bespoke rings, made to fit", "Aurelle rings today"])
    return engine


def test_interval_job_runs_once_per_tick_and_is_recorded(db_path: Path) -> None:
    engine = _engine(db_path)
    try:
        config = SchedulerConfig(
            refresh=JobSchedule(every_seconds=0.25), retire_refill=None, retrain=None
        )
        scheduler = Scheduler(engine, config)
        assert [job["job"] for job in scheduler.jobs()] == ["refresh"]
        started = time.monotonic()
        scheduler.start()
        # Wait for a few ticks rather than a fixed time, so a loaded machine cannot starve it.
        deadline = started + 60.0
        while len(engine.store.job_runs("refresh")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        scheduler.shutdown()
        elapsed = time.monotonic() - started
        runs = engine.store.job_runs("refresh")
    finally:
        engine.close()
    # One run per 0.25 s tick at most, never two for the same tick.
    assert 4 <= len(runs) <= elapsed / 0.25 + 1
    assert all(run["outcome"] == "ok" and run["error"] is None for run in runs)
    assert all(run["ended_at"] >= run["started_at"] for run in runs)
    starts = [run["started_at"] for run in runs]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 0.15 for gap in gaps)


def test_slow_job_never_overlaps_itself(db_path: Path) -> None:
    """max_instances=1: ticks that fall while a run is in progress are skipped, not stacked."""
    engine = _engine(db_path)
    slow_calls = []

    class SlowEngine:
        """The real engine, with a refresh that takes longer than the interval."""

        def __init__(self) -> None:
            self.store = engine.store
            self.clock = engine.clock

        def refresh(self) -> None:
            slow_calls.append(time.monotonic())
            engine.refresh()
            time.sleep(0.5)

    try:
        scheduler = Scheduler(
            SlowEngine(),
            SchedulerConfig(
                refresh=JobSchedule(every_seconds=0.1), retire_refill=None, retrain=None
            ),
        )
        scheduler.start()
        time.sleep(1.3)
        scheduler.shutdown()
        runs = engine.store.job_runs("refresh")
    finally:
        engine.close()
    assert 2 <= len(runs) <= 3
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later["started_at"] >= earlier["ended_at"]


def test_failing_job_is_recorded_with_its_error(db_path: Path, tmp_path: Path) -> None:
    engine = _engine(db_path)
    try:
        config = SchedulerConfig(
            refresh=None,
            retire_refill=None,
            retrain=JobSchedule(cron="0 3 * * *"),
            retraining=RetrainConfig(base_model=str(tmp_path / "missing")),
        )
        result = Scheduler(engine, config).run_job("retrain")
        runs = engine.store.job_runs("retrain")
    finally:
        engine.close()
    assert result["outcome"] == "error"
    assert len(runs) == 1 and runs[0]["outcome"] == "error"
    assert "adloop models pull smollm2" in runs[0]["error"]


def test_retire_refill_job_runs_over_active_campaigns(db_path: Path) -> None:
    engine = _engine(db_path)
    try:
        scheduler = Scheduler(engine, SchedulerConfig(refresh=None, retrain=None))
        detail = scheduler.run_job("retire_refill")
        runs = engine.store.job_runs("retire_refill")
    finally:
        engine.close()
    assert detail["outcome"] == "ok"
    assert len(detail["campaigns"]) == 1
    assert runs[0]["detail"]["campaigns"] == detail["campaigns"]


def test_config_from_yaml_and_bad_keys(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(
        "scheduler:\n  refresh: {every_seconds: 5}\n  retire_refill: null\n"
        "  retrain: {cron: '30 2 * * *'}\n  misfire_grace_seconds: 60\n"
        "  retraining: {min_impressions: 100, training: {sft_steps: 4}}\n"
    )
    config = SchedulerConfig.load(path)
    assert config.refresh == JobSchedule(every_seconds=5)
    assert config.retire_refill is None
    assert config.retrain.cron == "30 2 * * *"
    assert config.retraining.min_impressions == 100 and config.retraining.training.sft_steps == 4
    with pytest.raises(ValueError, match="refresh: unknown key"):
        SchedulerConfig.from_dict({"refresh": {"every": 5}})
    with pytest.raises(ValueError, match="cron"):
        SchedulerConfig.from_dict({"retrain": {"cron": "not a cron"}})
    with pytest.raises(ValueError, match="retraining: .*unknown key"):
        SchedulerConfig.from_dict({"retraining": {"bogus": 1}})
    with pytest.raises(ValueError, match="exactly one"):
        JobSchedule(every_seconds=5, cron="* * * * *")


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    """A tiny real model to retrain (the test is skipped without torch and peft)."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from test_training import save_tiny_model

    return save_tiny_model(tmp_path / "tiny")


def hourly_retraining(tmp_path: Path, base: Path, **settings) -> SchedulerConfig:
    """Only the retraining job, hourly, with quick tiny-model training and a lenient gate."""
    from test_retrain import tiny_config

    return SchedulerConfig(
        refresh=None,
        retire_refill=None,
        retrain=JobSchedule(every_seconds=3600),
        retraining=tiny_config(tmp_path, base, accuracy_tolerance=1.0),
        **settings,
    )


def test_retrain_job_trains_in_a_separate_process_and_promotes(
    db_path: Path, tmp_path: Path, tiny_base: Path
) -> None:
    from test_retrain import fill_store

    base = tiny_base
    engine = Engine(db_path, config=EngineConfig(background=False), seed=1)
    promoted = []
    try:
        fill_store(engine.store)
        config = hourly_retraining(tmp_path, base)
        scheduler = Scheduler(engine, config, on_promote=promoted.append)
        assert config.train_in_subprocess
        detail = scheduler.run_job("retrain")
        scheduler.shutdown()
        runs = engine.store.job_runs("retrain")
        current = engine.store.current_model()
    finally:
        engine.close()
    assert detail["outcome"] == "promoted", detail.get("reason")
    assert runs[0]["outcome"] == "promoted" and runs[0]["detail"]["version"] == "v0001"
    assert current["version"] == "v0001" and promoted[0]["version"] == "v0001"


def test_a_promotion_switches_serving_now_and_after_a_restart(
    db_path: Path, tmp_path: Path, tiny_base: Path
) -> None:
    from test_retrain import fill_store

    from adloop.generators import GeneratorPool, LMGenerator

    base = tiny_base

    def lm_dirs(pool: GeneratorPool) -> list[Path]:
        return [Path(g.model_dir) for g in pool.generators if isinstance(g, LMGenerator)]

    pool = GeneratorPool(["template", "lm"], model_dir=base)
    engine = Engine(db_path, config=EngineConfig(background=False), seed=1, pool=pool)
    try:
        fill_store(engine.store)
        config = hourly_retraining(tmp_path, base, train_in_subprocess=False)
        scheduler = Scheduler(engine, config)  # default: promotions switch the engine's pool
        detail = scheduler.run_job("retrain")
        scheduler.shutdown()
        promoted = Path(engine.store.current_model()["path"])
    finally:
        engine.close()
    assert detail["outcome"] == "promoted", detail.get("reason")
    assert lm_dirs(pool) == [promoted] and promoted != base
    restarted = Engine(db_path, config=EngineConfig(background=False), seed=1)
    try:
        assert restarted.promoted_model_dir() == promoted
        assert lm_dirs(restarted.pool) == [promoted]
    finally:
        restarted.close()


def test_the_example_deployment_config_loads() -> None:
    config = SchedulerConfig.load(Path(__file__).parent.parent / "examples" / "scheduler.yaml")
    assert config.refresh == JobSchedule(every_seconds=10)
    assert config.retrain == JobSchedule(cron="0 3 * * *")
    assert config.train_in_subprocess
    # its retraining section spells out the library's defaults, and must not drift from them
    assert config.retraining == RetrainConfig()
