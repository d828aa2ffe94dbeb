"""``adloop scorer``: fit a tenant's outcome scorer on its finished campaigns, and explain it.

Each ``fit`` writes a new version (``s0001``, ``s0002``, ...) under the model cache, in a
folder of the store's own; ``list`` shows them with their validation figure, ``explain`` shows
what the newest predicts for each variant of a campaign and which features move it. Another
tenant's campaigns are used only when it opted in with ``share``::

    adloop scorer share --db adloop.duckdb --tenant globex
    adloop scorer fit --db adloop.duckdb --tenant acme --pool globex --corpus upworthy.parquet
    adloop scorer explain --db adloop.duckdb --tenant acme --campaign c_000000000042
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from adloop.cli._common import DB_HELP, fail, open_store, print_json

app = typer.Typer(
    help="Per-tenant outcome scorers learnt from finished campaigns.", no_args_is_help=True
)

_TENANT_HELP = "Tenant whose scorer this is (letters, digits, _ . -)."
_ROOT_HELP = "Folder of the tenants' scorers (default: under the model cache, per store)."
DbOption = Annotated[str, typer.Option("--db", help=DB_HELP)]
TenantOption = Annotated[str, typer.Option("--tenant", help=_TENANT_HELP)]
RootOption = Annotated[Path | None, typer.Option("--root", help=_ROOT_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _run(db: str, action: Callable[[Any], Any]) -> Any:
    """``action(store)`` on the store ``db`` names; a clean failure on any error it explains."""
    from adloop.generators import GeneratorError
    from adloop.optimizer.errors import OptimizerError
    from adloop.storage import StorageError

    store = open_store(db)
    try:
        return action(store)
    except (OptimizerError, GeneratorError, StorageError) as exc:
        fail(str(exc))
    finally:
        store.close()


def _blocks_config(blocks: str) -> Any:
    from adloop.generators import ConfigError, OutcomeScorerConfig

    names = tuple(name.strip() for name in blocks.split(",") if name.strip())
    try:
        return OutcomeScorerConfig(blocks=names)
    except ConfigError as exc:
        fail(f"--blocks: {exc}")


@app.command("fit")
def fit(
    db: DbOption,
    tenant: TenantOption = "default",
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="Parquet A/B archive (test_id, headline, impressions, clicks) added to the data.",
        ),
    ] = None,  # fmt: skip
    pool: Annotated[
        list[str] | None,
        typer.Option("--pool", help="Also learn from this tenant, if it opted in (repeatable)."),
    ] = None,
    blocks: Annotated[
        str, typer.Option("--blocks", help="Feature blocks: any of features,sentence,lm.")
    ] = "features",
    min_impressions: Annotated[
        int, typer.Option("--min-impressions", help="Impressions an arm needs to count.")
    ] = 100,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Fit the tenant's scorer on its completed campaigns and save it as a new version."""
    from adloop.optimizer.tenant_scorer import fit_tenant_scorer

    config = _blocks_config(blocks)
    report = _run(
        db,
        lambda store: fit_tenant_scorer(
            store, tenant, corpus=corpus, config=config, pooled_tenants=pool or (),
            root=root, min_impressions=min_impressions,
        ),
    )  # fmt: skip
    validation = report.validation
    if json_output:
        print_json(
            {"tenant": report.tenant, "version": report.version, "path": str(report.path),
             "arms": report.n_arms, "groups": report.n_groups,
             "campaigns": list(report.campaigns), "pooled_tenants": list(report.pooled_tenants),
             "validation": validation}
        )  # fmt: skip
        return
    if validation["pair_accuracy"] is None:
        figure = f"not validated: {validation['reason']}"
    else:
        figure = f"pair accuracy {validation['pair_accuracy']:.3f} on {validation['pairs']} pairs"
    typer.echo(
        f"{report.tenant} {report.version}: {report.n_arms} arms in {report.n_groups} tests "
        f"({len(report.campaigns)} own campaigns); {figure} ({report.path})"
    )


@app.command("share")
def share(
    db: DbOption,
    tenant: TenantOption = "default",
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Stop sharing: other tenants' fits leave it out.")
    ] = False,
    root: RootOption = None,
) -> None:
    """Let other tenants' scorers learn from this tenant's finished campaigns (or stop)."""
    from adloop.optimizer.tenant_scorer import share_tenant_data

    _run(db, lambda store: share_tenant_data(store, tenant, opt_in=not revoke, root=root))
    typer.echo(f"{tenant} {'no longer shares' if revoke else 'shares'} its campaign data")


@app.command("list")
def list_versions(
    db: DbOption,
    tenant: TenantOption = "default",
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the tenant's scorer versions, oldest first, with data and validation."""
    from adloop.optimizer.tenant_scorer import tenant_scorer_versions

    manifests = _run(db, lambda store: tenant_scorer_versions(store, tenant, root=root))
    if json_output:
        print_json(manifests)
        return
    if not manifests:
        typer.echo(
            f"{tenant} has no scorer yet; fit one with `adloop scorer fit --tenant {tenant}`"
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scorers of {tenant}")
    for column in ("version", "created_at", "campaigns", "arms", "pooled", "corpus", "accuracy"):
        table.add_column(column)
    for m in manifests:
        accuracy = m["validation"]["pair_accuracy"]
        table.add_row(
            m["version"], str(m["created_at"]), str(len(m["campaigns"])),
            str(m["counts"]["arms"]), ",".join(m["pooled_tenants"]),
            Path(m["corpus"]["path"]).name if m["corpus"] else "",
            "" if accuracy is None else f"{accuracy:.3f} ({m['validation']['pairs']} pairs)",
        )  # fmt: skip
    Console().print(table)


@app.command("explain")
def explain(
    db: DbOption,
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign to explain.")],
    tenant: TenantOption = "default",
    top: Annotated[int, typer.Option("--top", min=1, help="Features shown per variant.")] = 3,
    version: Annotated[
        str | None, typer.Option("--version", help="Scorer version (default: the newest).")
    ] = None,
    root: RootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Predicted log-odds offset of each variant of a campaign, and the features behind it."""
    from adloop.optimizer.tenant_scorer import explain_campaign

    result = _run(
        db,
        lambda store: explain_campaign(
            store, tenant, campaign, top=top, version=version, root=root
        ),
    )
    if json_output:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{campaign} by scorer {result['version']} of {tenant}")
    for column in ("variant_id", "offset", "text", "features"):
        table.add_column(column)
    for row in result["variants"]:
        reasons = "; ".join(f"{f['feature']} {f['effect']:+.3f}" for f in row["features"])
        table.add_row(row["variant_id"], f"{row['offset']:+.3f}", row["text"], reasons)
    Console().print(table)
