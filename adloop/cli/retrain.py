"""``adloop retrain`` (one retraining round now) and ``adloop scheduler`` (the job scheduler).

Both read an optional YAML config file with a ``retraining:`` section (the fields of
``optimizer.retrain.RetrainConfig``, ``training:`` nested) and, for the scheduler, a
``scheduler:`` section (see ``examples/scheduler.yaml`` in the README)::

    scheduler:
      refresh: {every_seconds: 10}
      retire_refill: {every_seconds: 3600}
      retrain: {cron: "0 3 * * *"}
      retraining:
        min_impressions: 500
        training: {sft_steps: 24, dpo_steps: 24}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from adloop.cli._common import DB_HELP, fail, open_store, print_json


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    if not path.exists():
        fail(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping at the top level")
    return data


def _retrain_config(data: dict[str, Any], base: Path | None, models_root: Path | None) -> Any:
    from adloop.optimizer.retrain import RetrainConfig

    section = data.get("retraining")
    if section is None and isinstance(data.get("scheduler"), dict):
        section = data["scheduler"].get("retraining")
    section = dict(section or {})
    if base is not None:
        section["base_model"] = str(base)
    if models_root is not None:
        section["models_root"] = str(models_root)
    try:
        return RetrainConfig.from_dict(section)
    except (TypeError, ValueError) as exc:
        fail(f"retraining config: {exc}")


def retrain(
    db: Annotated[str, typer.Option("--db", help=DB_HELP)],
    campaign: Annotated[
        list[str] | None,
        typer.Option("--campaign", help="Train only on this campaign's data (repeatable)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML with a 'retraining:' section.")
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Model directory the first version starts from."),
    ] = None,
    models_root: Annotated[
        Path | None, typer.Option("--models-root", help="Where new versions are written.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the round's report as JSON.")
    ] = False,
) -> None:
    """Run one retraining round now: winners and pairs -> fine-tune -> gate -> promote."""
    from rich.console import Console

    from adloop.cli._progress import TrainingProgress
    from adloop.generators import GeneratorError
    from adloop.optimizer.retrain import retrain_round

    console = Console(stderr=True)
    settings = _retrain_config(_read_config(config), base, models_root)
    store = open_store(db)
    try:
        if campaign:
            missing = [c for c in campaign if store.campaign(c) is None]
            if missing:
                fail(f"unknown campaign {missing[0]!r} in {db}")
        with TrainingProgress(console) as tell:
            report = retrain_round(
                store, config=settings, campaign_ids=campaign or None, progress=tell
            )
    except GeneratorError as exc:
        fail(str(exc))
    finally:
        store.close()
    if json_output:
        print_json(report.to_dict())
    else:
        data = report.data
        console.print(
            f"{report.outcome}: version {report.version or '-'} "
            f"(current: {report.current_version}); winners {data.get('winners', 0)}, "
            f"pairs {data.get('train_pairs', 0)} train / {data.get('heldout_pairs', 0)} held out"
        )
        if report.reason:
            console.print(f"reason: {report.reason}")
        gate = report.metrics.get("gate", {})
        if "heldout_accuracy" in gate:
            console.print(
                f"held-out accuracy {gate['heldout_accuracy']:.3f} "
                f"(current {gate.get('current_heldout_accuracy', float('nan')):.3f})"
            )
        if report.seconds:
            console.print(f"took {report.seconds.get('total', 0.0):.1f} s")
    if report.outcome == "failed":
        raise typer.Exit(1)


def scheduler(
    db: Annotated[str, typer.Option("--db", help=DB_HELP)],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML with a 'scheduler:' section (jobs, retraining)."),
    ] = None,
) -> None:
    """Run the job scheduler (refresh, retire-and-refill, retraining) as its own process.

    DuckDB allows one writing process per file: run this *instead of* a separate
    ``adloop serve`` on the same file, or run the scheduler inside ``adloop serve``.
    Stops cleanly on Ctrl-C or SIGTERM.
    """
    import signal
    import threading

    from rich.console import Console

    from adloop.optimizer import Engine
    from adloop.optimizer.scheduler import Scheduler as JobScheduler
    from adloop.optimizer.scheduler import SchedulerConfig
    from adloop.storage import StorageError

    console = Console(stderr=True)
    data = _read_config(config)
    section = data.get("scheduler", data if "retraining" not in data else {})
    section = dict(section or {})
    if "retraining" in data and "retraining" not in section:
        section["retraining"] = data["retraining"]
    try:
        settings = SchedulerConfig.from_dict(section)
    except (TypeError, ValueError) as exc:
        fail(f"scheduler config: {exc}")
    try:
        engine = Engine(db)
    except StorageError as exc:
        fail(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    jobs = JobScheduler(engine, settings)
    try:
        jobs.start()
        for job in jobs.jobs():
            console.print(f"scheduled {job['job']}: {job['trigger']}")
        console.print(f"scheduler running on {db}; Ctrl-C or SIGTERM to stop")
        stop.wait()
        console.print("stopping: waiting for running jobs to finish")
    finally:
        jobs.shutdown(wait=True)
        engine.close()
