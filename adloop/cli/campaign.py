"""``adloop campaign``: create, list and show campaigns (through the engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from adloop.cli._common import DB_HELP, campaign_view, fail, open_engine, print_json

app = typer.Typer(help="Create, list and show campaigns.", no_args_is_help=True)


def _read_brief(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        fail(f"brief file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        fail(f"{path}: not valid YAML or JSON ({exc})")
    if not isinstance(data, dict):
        fail(f"{path}: the brief must be a mapping of fields (product, language, ...)")
    return data


@app.command("create")
def create(
    brief: Path = typer.Option(
        ..., help="Brief as YAML or JSON; may list 'variants' to use as given."
    ),
    db: str = typer.Option(..., help=DB_HELP),
    n: int = typer.Option(8, "--n", help="How many variants to generate."),
    tenant: str = typer.Option("default", help="Tenant the campaign belongs to."),
    objective: str = typer.Option("ctr", help="ctr, cvr or value."),
    impressions_reported_separately: bool = typer.Option(
        False, help="The ad server posts impression events itself (choose logs none)."
    ),
    seed: int | None = typer.Option(None, help="Seed for generation."),
    generators: str | None = typer.Option(
        None, help="Comma-separated generators (template,lm,recombine); default: all installed."
    ),
    auto_approve: bool = typer.Option(
        False,
        help="Serve generated variants without review (else they await `adloop variants "
        "approve`); a brief may say 'auto_approve: true' too.",
    ),
    per_segment: bool = typer.Option(
        False,
        help="Write the generated variants for the brief's segments in turn, each served only "
        "to requests from its segment.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the campaign as JSON."),
) -> None:
    """Create a campaign from a brief and write its first variants.

    Variants listed in the brief serve at once (one may name its ``segments``); generated
    ones await review (``adloop variants list/approve/reject``) unless ``--auto-approve``.
    """
    from adloop.generators import GeneratorError
    from adloop.optimizer.errors import OptimizerError

    data = _read_brief(brief)
    engine = open_engine(db, generators=generators)
    try:
        view = engine.create_campaign(
            data,
            tenant=tenant,
            n_candidates=n,
            objective=objective,
            seed=seed,
            impressions_reported_separately=impressions_reported_separately,
            auto_approve=auto_approve,
            per_segment=per_segment,
        )
    except (GeneratorError, OptimizerError) as exc:
        fail(f"{brief}: {exc}")
    finally:
        engine.close()
    variants = [
        {
            k: v[k]
            for k in (
                "variant_id",
                "text",
                "headline",
                "description",
                "generator",
                "model_version",
                "status",
                "segments",
            )
        }
        for v in view["variants"]
    ]
    if json_output:
        print_json(
            {
                "campaign_id": view["campaign_id"],
                "name": view["name"],
                "tenant": view["tenant"],
                "variants": variants,
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"campaign {view['campaign_id']} ({view['name']})")
    for column in ("variant_id", "status", "generator", "segments", "text"):
        table.add_column(column)
    for v in variants:
        segments = ", ".join(v["segments"]) or "all"
        table.add_row(v["variant_id"], v["status"], v["generator"] or "", segments, v["text"])
    console = Console()
    console.print(table)
    n_pending = sum(v["status"] == "pending" for v in variants)
    if n_pending:
        console.print(
            f"{n_pending} generated variant(s) await review; nothing serves until one is "
            f"approved: adloop variants approve {view['campaign_id']} VARIANT_ID --db {db}",
            soft_wrap=True,
        )


@app.command("list")
def list_(
    db: str = typer.Option(..., help=DB_HELP),
    tenant: str | None = typer.Option(None, help="Only this tenant's campaigns."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List campaigns."""
    engine = open_engine(db)
    try:
        rows = engine.campaigns(tenant)
    finally:
        engine.close()
    if json_output:
        print_json({"campaigns": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="campaigns")
    for column in ("campaign_id", "tenant", "name", "status", "active", "winner"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["campaign_id"],
            row["tenant"],
            str(row["name"]),
            row["status"],
            f"{row['n_active']}/{row['n_variants']}",
            row["winner"] or "",
        )
    Console().print(table)


@app.command("show")
def show(
    campaign_id: str = typer.Argument(..., help="The campaign id (c_...)."),
    db: str = typer.Option(..., help=DB_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a campaign: variants with counts, posteriors and reviews, winner, data quality."""
    view = campaign_view(db, campaign_id)
    if json_output:
        print_json(view)
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        title=f"{view['campaign_id']} ({view['name']}) — {view['status']}"
        + (f", winner {view['winner']}" if view["winner"] else ""),
    )
    headers = ("variant_id", "status", "impr", "clicks", "conv", "mean", "95% interval",
               "P(best)")  # fmt: skip
    rows = []
    for v in view["variants"]:
        low, high = v["interval_95"]
        rows.append(
            (
                v["variant_id"],
                v["status"],
                str(v["impressions"]),
                str(v["clicks"]),
                str(v["conversions"]),
                f"{v['posterior_mean']:.4f}",
                f"[{low:.4f}, {high:.4f}]",
                f"{v['probability_best']:.3f}",
                v["text"],
            )
        )
    # Figures in the table, one line each; the ad copy, which is long, listed below it.
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row[:-1])
    console = Console()
    console.print(table)
    segments_of = {v["variant_id"]: v.get("segments") or [] for v in view["variants"]}
    for row in rows:
        # a targeted variant says whom it serves
        whom = f" [dim](segments: {escape(', '.join(segments_of[row[0]]))})[/dim]"
        whom = whom if segments_of[row[0]] else ""
        console.print(f"[bold]{row[0]}[/bold]  {escape(row[-1])}{whom}", soft_wrap=True)
    for review in view["reviews"]:
        note = f" — {escape(review['note'])}" if review["note"] else ""
        console.print(
            f"{review['action'].rstrip('e')}ed {review['variant_id']} by {escape(review['by'])} at "
            f"{review['at']}{note}",
            soft_wrap=True,
        )
    srm = view["data_quality"].get("srm", {})
    status = "FLAGGED" if srm.get("flagged") else "ok"
    console.print(f"SRM check: {status} — {srm.get('reason')} (p = {srm.get('p_value')})")
