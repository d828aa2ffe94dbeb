"""``adloop serve``: run the HTTP variant-chooser service under uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from adloop.cli._common import DB_HELP, fail


def serve(
    db: str = typer.Option(
        ...,
        help=DB_HELP + " Several adloop serve processes may share one postgresql:// store "
        "(campaigns, variants, keys and events); a DuckDB file has one.",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    api_keys: Path | None = typer.Option(
        None,
        help="Extra keys: JSON from 'adloop keys create --json' (or a list of them), "
        "or lines 'KEY TENANT \\[admin]'.",
    ),
    scheduler: bool = typer.Option(
        False,
        help="Also run the job scheduler (refresh, retire/refill, retraining) in-process; "
        "on a shared postgresql:// store, in exactly one process.",
    ),
    scheduler_config: Path | None = typer.Option(
        None, help="Scheduler settings (YAML/JSON, see optimizer.scheduler); implies --scheduler."
    ),
    generators: str | None = typer.Option(
        None,
        help="Comma-separated generators for new variants (template,lm,recombine,openai; "
        "openai reads ADLOOP_OPENAI_BASE_URL, ADLOOP_OPENAI_MODEL, ADLOOP_OPENAI_API_KEY). "
        "Default: each campaign brief's 'generators' mix, else all installed.",
    ),
    policy: str = typer.Option(
        "ts",
        help="Allocation: ts (Thompson sampling), or ts_text (each new variant's prior starts "
        "from its tenant's outcome scorer, fitted with 'adloop scorer fit'; tenants without "
        "one are served as by ts).",
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
    max_connections: int = typer.Option(
        1000, min=1, help="Open connections beyond which new requests get 503 at once."
    ),
    events_to: str | None = typer.Option(
        None,
        envvar="ADLOOP_EVENTS_TO",
        help="Scale out: publish events and decisions to kafka://HOST:PORT[/topic] "
        "(needs --snapshots).",
    ),
    snapshots: str | None = typer.Option(
        None,
        envvar="ADLOOP_SNAPSHOTS",
        help="Scale out: choose from the snapshots in this postgresql:// store "
        "(needs --events-to).",
    ),
    ack_timeout: float = typer.Option(
        5.0, help="Scale out: seconds POST /v1/events waits for the broker before a 503."
    ),
) -> None:
    """Run the HTTP variant-chooser service (OpenAPI docs at /docs).

    SIGTERM (or Ctrl-C) stops accepting connections, lets requests in flight finish, then
    commits every queued decision and event before exiting.

    Scaled out (--events-to and --snapshots): choose draws from the shared snapshots,
    POST /v1/events answers 202 once the broker acknowledged the batch, and --scheduler runs
    the snapshot refresher (start exactly one such process per deployment).
    """
    import uvicorn

    from adloop.optimizer.auth import KeyRing, load_keys_file
    from adloop.optimizer.engine import Engine
    from adloop.optimizer.errors import OptimizerError
    from adloop.optimizer.service import create_app
    from adloop.storage import StorageError, StoreLockedError
    from adloop.storage.interface import redact_url

    scale_out = _scale_out(events_to, snapshots, ack_timeout, scheduler, scheduler_config)
    extra = []
    if api_keys is not None:
        if not api_keys.is_file():
            fail(f"--api-keys: {api_keys} does not exist")
        try:
            extra = load_keys_file(api_keys)
        except OptimizerError as exc:
            fail(str(exc))
    pool = None
    if generators:
        from adloop.generators import GeneratorError, GeneratorPool

        try:
            pool = GeneratorPool([g.strip() for g in generators.split(",") if g.strip()])
        except (GeneratorError, ValueError) as exc:
            fail(f"--generators: {exc}")
    try:
        engine = Engine(db, pool=pool, config=_engine_config(policy))
    except StoreLockedError as exc:
        fail(f"{exc} To run several adloop serve processes on one store, give each the same "
             "--db postgresql://user@host:port/db.")  # fmt: skip
    except StorageError as exc:
        fail(f"--db: {exc}")
    shared = engine.store.shared
    promoted = engine.promoted_model_dir()
    if pool is not None and promoted is not None:
        from adloop.optimizer.retrain import switch_pool_model

        switch_pool_model(pool, promoted)  # serve the version retraining promoted last
    on_startup = on_shutdown = None
    if scale_out is not None:
        on_shutdown = scale_out.close  # send what is queued; wait for the broker's acks
    elif scheduler or scheduler_config is not None:
        try:
            from adloop.optimizer.scheduler import Scheduler, SchedulerConfig

            settings = (
                SchedulerConfig.load(scheduler_config) if scheduler_config else SchedulerConfig()
            )
            jobs = Scheduler(engine, settings)
        except (ImportError, OSError, ValueError) as exc:
            engine.close()
            fail(f"--scheduler: {exc}")
        on_startup = jobs.start

        def on_shutdown() -> None:
            jobs.shutdown(wait=True)

    app = create_app(
        engine,
        keyring=KeyRing(engine.store, extra),
        close_engine=True,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        scale_out=scale_out,
    )
    where = redact_url(db)
    keys_hint = (
        f"adloop keys create --tenant NAME --db {where} (any time: the store is shared)"
        if shared
        else "adloop keys create --tenant NAME --db PATH (while stopped)"
    )
    typer.secho(
        f"adloop serving {where} on http://{host}:{port} (docs: /docs). "
        f"Create keys with: {keys_hint} or POST /v1/keys with an admin key.",
        err=True,
    )
    if shared and on_startup is not None:
        typer.secho(
            "adloop serve --scheduler on a shared store: run it in exactly one process, or "
            "each process retires, refills and retrains on its own.",
            err=True,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        limit_concurrency=max_connections,  # slow or idle clients cannot pile up unbounded
        access_log=False,
    )
    # uvicorn handles SIGTERM/SIGINT itself (graceful drain), then re-raises the signal to the
    # handler that was installed before it; a no-op one lets a clean drain exit with status 0.
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    _draining_server(config, engine.flush).run()
    failure = getattr(app.state, "shutdown_error", None)
    if failure is not None:
        # uvicorn only logs a failed lifespan shutdown; the exit status must say so too.
        fail(f"shutdown failed, queued work may be lost: {failure}")
    typer.secho("adloop serve: drained and stopped", err=True)


def _scale_out(
    events_to: str | None,
    snapshots: str | None,
    ack_timeout: float,
    scheduler: bool,
    scheduler_config: Path | None,
) -> Any:
    """The started links of a scaled-out process (None without --events-to/--snapshots)."""
    if events_to is None and snapshots is None:
        return None
    if events_to is None or snapshots is None:
        missing = "--events-to" if events_to is None else "--snapshots"
        fail(f"{missing}: scaling out needs both --events-to kafka://HOST:PORT[/topic] and "
             "--snapshots postgresql://...")  # fmt: skip
    if scheduler_config is not None:
        fail("--scheduler-config: scaled out, the scheduler only refreshes snapshots (use "
             "--scheduler on one process per deployment); retiring and retraining read the "
             "one-machine store")  # fmt: skip
    from adloop.optimizer.config import ScaleOutConfig
    from adloop.optimizer.errors import ConfigError

    try:
        config = ScaleOutConfig(events_to=events_to, snapshots=snapshots, ack_timeout=ack_timeout)
    except ConfigError as exc:
        fail(f"--{exc.field.replace('_', '-')}: {exc.message}")
    try:
        from adloop.scale.serving import ScaleOut, parse_events_to

        parse_events_to(config.events_to)
        link = ScaleOut(
            config.snapshots, config.events_to, ack_timeout_s=config.ack_timeout,
            linger_s=config.linger, poll_s=config.snapshot_poll,
            refresh_every_s=config.refresh_every if scheduler else None,
        )  # fmt: skip
    except ImportError as exc:
        fail(f"--events-to: scaling out needs pip install 'adloop[scale]' ({exc})")
    except ValueError as exc:
        fail(f"--events-to: {exc}")
    try:
        return link.start()
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator
        fail(f"--events-to: the broker at {link.bootstrap} did not answer: {exc}")


def _draining_server(config: Any, drain: Callable[[], None]) -> Any:
    """A uvicorn server that commits everything queued before it may cancel any task.

    On SIGTERM uvicorn stops accepting, waits ``timeout_graceful_shutdown`` for requests in
    flight and then cancels them. Draining first (queued events and decisions committed, so
    their requests answer) means a cancelled task never held acknowledged work.
    """
    import asyncio

    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            for server in self.servers:
                server.close()  # stop accepting first (uvicorn's own close is idempotent)
            try:
                await asyncio.to_thread(drain)
            except Exception as exc:  # noqa: BLE001 - the lifespan's final flush reports it
                logging.getLogger("adloop.service").error("draining before shutdown: %s", exc)
            await super().shutdown(sockets)

    return DrainingServer(config)


def _engine_config(policy: str) -> Any:
    """The engine's settings for ``--policy``; a name it does not know exits with the choices."""
    from adloop.optimizer.config import TEXT_POLICY, EngineConfig
    from adloop.optimizer.errors import ConfigError

    if policy not in ("ts", TEXT_POLICY):
        fail(f"--policy: got {policy!r}; use 'ts' or '{TEXT_POLICY}'")
    try:
        return EngineConfig(policy=policy)
    except ConfigError as error:
        fail(f"--policy: {error}")
