"""``adloop variants``: list, add, approve or reject a campaign's variants.

Generated variants start ``pending`` (unless the campaign auto-approves) and serve only once
approved. Each review records who made it (``cli:<user>``, or ``--by``), when, and a note.
A variant may be targeted to audience segments (``--segment``): it then serves only requests
from them.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import typer

from adloop.cli._common import DB_HELP, campaign_view, fail, open_engine, print_json

app = typer.Typer(
    help="List and add variants; approve or reject those awaiting review.", no_args_is_help=True
)

_STATUSES = ("pending", "active", "rejected", "retired", "winner")


def _cli_user() -> str:
    """Who runs the command, as recorded with a review."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


@app.command("list")
def list_(
    campaign_id: str = typer.Argument(..., help="The campaign id (c_...)."),
    db: str = typer.Option(..., help=DB_HELP),
    status: str | None = typer.Option(
        None, help=f"Only variants with this status ({', '.join(_STATUSES)})."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List a campaign's variants (with --status pending: those awaiting review)."""
    if status is not None and status not in _STATUSES:
        fail(f"--status must be one of {', '.join(_STATUSES)}, got {status!r}")
    view = campaign_view(db, campaign_id)
    rows = [
        {
            k: v[k]
            for k in (
                "variant_id",
                "status",
                "generator",
                "segments",
                "text",
                "impressions",
                "review",
            )  # fmt: skip
        }
        for v in view["variants"]
        if status is None or v["status"] == status
    ]
    if json_output:
        print_json({"campaign_id": campaign_id, "variants": rows})
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"variants of {campaign_id}" + (f" ({status})" if status else ""))
    for column in ("variant_id", "status", "generator", "segments", "reviewed", "text"):
        table.add_column(column, overflow="fold")
    for row in rows:
        review = row["review"]
        reviewed = f"{review['action'].rstrip('e')}ed by {review['by']}" if review else ""
        table.add_row(
            row["variant_id"],
            row["status"],
            row["generator"] or "",
            escape(", ".join(row["segments"] or []) or "all"),
            escape(reviewed),
            escape(row["text"] or ""),
        )
    Console().print(table)


@app.command("add")
def add(
    campaign_id: str = typer.Argument(..., help="The campaign id (c_...)."),
    db: str = typer.Option(..., help=DB_HELP),
    text: list[str] = typer.Option(
        [], "--text", help="A variant's copy, served at once (repeat for several)."
    ),
    n: int | None = typer.Option(
        None, "--n", help="Generate this many instead (they await review unless auto-approved)."
    ),
    segment: list[str] = typer.Option(
        [],
        "--segment",
        help="Serve the new variants only to this segment (repeat for several); with --n, "
        "one segment of the brief, which the copy is written for.",
    ),
    seed: int | None = typer.Option(None, help="Seed for generation."),
    generators: str | None = typer.Option(
        None, help="Comma-separated generators (template,lm,recombine); default: all installed."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add variants to a campaign: given with --text, or --n generated, optionally targeted."""
    from adloop.generators import GeneratorError
    from adloop.optimizer.errors import OptimizerError

    if bool(text) == (n is not None):
        fail("give --text (one or more) or --n, not both")
    if n is not None and len(segment) > 1:
        fail("with --n, give at most one --segment: the one segment the copy is written for")
    engine = open_engine(db, generators=generators)
    try:
        if text:
            listed = [{"text": t, "segments": list(segment)} for t in text]
            added = engine.add_variants(campaign_id, listed)
        else:
            added = engine.add_variants(
                campaign_id, n=n, seed=seed, segment=segment[0] if segment else None
            )
    except (GeneratorError, OptimizerError) as exc:
        fail(str(exc))
    finally:
        engine.close()
    if json_output:
        print_json({"campaign_id": campaign_id, "added": added})
        return
    for variant in added:
        whom = ", ".join(variant["segments"]) or "every segment"
        typer.echo(
            f"{variant['variant_id']} ({variant['status']}, serves {whom}): {variant['text']}"
        )


def _review_command(action: str, help_text: str) -> Callable[..., None]:
    """The ``adloop variants approve`` or ``reject`` command (they differ only in action)."""

    def command(
        campaign_id: str = typer.Argument(..., help="The campaign id (c_...)."),
        variant_id: str = typer.Argument(..., help="The variant id (v_...)."),
        db: str = typer.Option(..., help=DB_HELP),
        note: str | None = typer.Option(None, "--note", help="Why; recorded with the review."),
        by: str | None = typer.Option(
            None, "--by", help="Who reviews (default: cli:<login name>)."
        ),
    ) -> None:
        from adloop.optimizer.errors import OptimizerError

        engine = open_engine(db)
        try:
            done: dict[str, Any] = engine.review(
                campaign_id, variant_id, action, reviewer=by or _cli_user(), note=note
            )
        except OptimizerError as exc:
            fail(str(exc))
        finally:
            engine.close()
        typer.echo(
            f"{variant_id} is {done['status']} ({action.rstrip('e')}ed by {done['reviewer']} at "
            f"{done['reviewed_at'].isoformat(timespec='seconds')})"
        )

    command.__doc__ = help_text
    return command


app.command("approve")(
    _review_command(
        "approve", "Approve a variant awaiting review (or rejected before): it serves from now on."
    )
)
app.command("reject")(
    _review_command("reject", "Reject a variant awaiting review: it never serves.")
)
