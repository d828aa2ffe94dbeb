"""``adloop aggregate`` and ``adloop snapshots``: the scaled-out deployment's workers.

See the README's "Running on more than one machine": events go through a Kafka-protocol
topic, ``adloop aggregate`` workers count them into PostgreSQL, and ``adloop snapshots
refresh`` publishes each changed campaign's allocation to every chooser.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from adloop.cli._common import fail, print_json

app = typer.Typer(help="Allocation snapshots in PostgreSQL (scaled-out deployments).",
                  no_args_is_help=True)  # fmt: skip

PG = Annotated[
    str, typer.Option("--pg", envvar="ADLOOP_PG_URL", help="PostgreSQL URL (postgresql://...).")
]


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def aggregate(
    pg: PG,
    bootstrap: Annotated[
        str,
        typer.Option(
            "--bootstrap",
            envvar="ADLOOP_KAFKA_BOOTSTRAP",
            help="Kafka bootstrap servers, host:port.",
        ),
    ],
    topic: Annotated[str, typer.Option(help="Events topic.")] = "adloop.events",
    group: Annotated[str, typer.Option(help="Consumer group of the workers.")] = "adloop-aggregate",
    archive: Annotated[
        Path | None, typer.Option(help="Folder for the raw events as Parquet.")
    ] = None,
    batch_messages: Annotated[
        int, typer.Option(min=1, help="Most messages (of >= 100 events) per transaction.")
    ] = 2000,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many idle seconds.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the totals as JSON.")] = False,
) -> None:
    """Count events from the topic into PostgreSQL, exactly once (one consumer-group worker).

    Run one per core or host; the group shares the partitions. Counts and consumed offsets
    commit in one transaction, so a killed worker's replacement resumes exactly. Stops on
    Ctrl-C or SIGTERM after the batch in hand.
    """
    from adloop.scale.aggregator import Aggregator

    stop = _stop_on_signals()
    try:
        totals = Aggregator(
            pg, bootstrap, topic=topic, group=group, archive=archive, max_messages=batch_messages
        ).run(stop, idle_exit_s=idle_exit)
    except Exception as error:  # noqa: BLE001 - a clear one-line error for the operator
        fail(f"aggregate: {error}")
    if json_output:
        print_json(totals)
    else:
        typer.echo(", ".join(f"{k} {v:,}" for k, v in totals.items()), err=True)


@app.command("refresh")
def refresh(
    pg: PG,
    every: Annotated[float | None, typer.Option(help="Repeat every this many seconds.")] = None,
) -> None:
    """Build a snapshot for each campaign whose counts changed, and notify the choosers."""
    from adloop.scale.snapshots import refresh_snapshots

    stop = _stop_on_signals()
    while True:
        try:
            built = refresh_snapshots(pg)
        except Exception as error:  # noqa: BLE001
            fail(f"snapshots refresh: {error}")
        typer.echo(f"{len(built)} snapshots built", err=True)
        if every is None or stop.wait(every):
            return
