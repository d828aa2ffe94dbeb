"""``adloop demo``: the main job end to end on the embedded default.

A campaign for made-to-measure jewellery is created from its brief, simulated traffic runs
through the real engine on a simulated clock (decisions, clicks, conversions into a DuckDB
file), the pool goes through a retire-and-refill cycle, a retraining round runs when the
default language model is installed, and a report (``summary.json`` + ``report.html``) is
written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from adloop.cli._common import fail

# Used when the example brief is not next to the installed package (e.g. a wheel install).
BUILT_IN_BRIEF: dict[str, Any] = {
    "product": "made-to-measure fine jewellery",
    "brand": "Aurelle",
    "description": "Handcrafted rings and necklaces in 18k gold, designed with you in our "
    "Paris atelier.",
    "segments": ["bridal couples", "luxury gift buyers", "fashion lovers"],
    "keywords": [
        "bespoke engagement rings",
        "18k gold necklaces",
        "custom diamond rings",
        "luxury jewellery",
        "made-to-measure rings",
        "fine jewellery",
    ],
    "tone": "refined, confident, warm",
    "offer": "complimentary private design consultation",
    "call_to_action": "Book your consultation",
    "language": "en",
    "channel": {"name": "google_search", "headline_max": 30, "description_max": 90},
    "banned_terms": ["cheap", "discount", "guaranteed", "best price"],
    "required_terms": ["Aurelle"],
}


def _examples_dir() -> Path | None:
    for candidate in (Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"):
        if (candidate / "brief_jewelry_en.yaml").is_file():
            return candidate
    return None


def _scenario(hours: int, impressions_per_hour: int, seed: int, with_lm: bool) -> tuple[dict, str]:
    import yaml

    examples = _examples_dir()
    base: dict[str, Any] = {}
    source = "built-in brief"
    brief = BUILT_IN_BRIEF
    if examples is not None:
        brief = yaml.safe_load((examples / "brief_jewelry_en.yaml").read_text(encoding="utf-8"))
        source = str(examples / "brief_jewelry_en.yaml")
        scenario_file = examples / "scenario_jewelry_en.yaml"
        if scenario_file.is_file():
            base = yaml.safe_load(scenario_file.read_text(encoding="utf-8")) or {}
    base.update(
        name="demo_jewelry_en",
        seed=seed,
        brief=brief,
        objective="ctr",
    )
    traffic = dict(base.get("traffic") or {})
    traffic.update(hours=hours, impressions_per_hour=impressions_per_hour)
    base["traffic"] = traffic
    # one retire/refill cycle half-way through, a winner asked for at the end
    base["lifecycle"] = {
        "retire_refill_every_hours": max(1, hours // 2),
        "declare_winner": True,
        "stop_on_winner": False,
    }
    base["generators"] = {
        "names": ["lm", "template", "recombine"] if with_lm else ["template", "recombine"],
        "pool_size": 6,
    }
    base["retraining"] = {"enabled": with_lm, "every_hours": max(1, hours // 2)}
    drift = dict(base.get("drift") or {})
    if "preference_shift" in drift:  # keep the demo's story simple: no mid-run shift
        drift["preference_shift"] = {"enabled": False}
    base["drift"] = drift
    return base, source


def _lm_installed() -> bool:
    try:
        from adloop.generators import resolve_model
        from adloop.generators.model_dir import require_lm_packages

        require_lm_packages(resolve_model(None))  # a model, and torch + transformers to run it
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable": run without it
        return False


def _retrain_hook() -> Any:
    """A retraining round per the simulator's hook protocol (None if retraining is absent)."""
    try:
        from adloop.optimizer.retrain import retrain_round
    except ImportError:
        return None

    from adloop.cli._progress import TrainingProgress

    def hook(engine: Any, round_index: int) -> dict[str, Any] | None:
        with TrainingProgress() as tell:
            report = retrain_round(engine.store, clock=engine.clock, progress=tell)
        return report.to_dict()

    return hook


def demo(
    out: Path = typer.Option(Path("adloop-demo"), help="Folder for the report and the database."),
    db: Path | None = typer.Option(None, help="DuckDB file (default: OUT/demo.duckdb, fresh)."),
    hours: int = typer.Option(48, help="Simulated hours of traffic."),
    impressions_per_hour: int = typer.Option(1500, help="Mean simulated impressions per hour."),
    seed: int = typer.Option(7, help="Seed for the audience, traffic and engine."),
    use_lm: bool = typer.Option(
        True, "--lm/--no-lm", help="Use the default language model when it is installed."
    ),
) -> None:
    """Run the main job end to end on the embedded default and write a report."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        from adloop.sim import load_scenario
        from adloop.sim.engine_run import run_scenario
    except ImportError as exc:
        fail(f"the simulator is not available in this installation ({exc})")
    with_lm = use_lm and _lm_installed()
    data, source = _scenario(hours, impressions_per_hour, seed, with_lm)
    scenario = load_scenario(data)
    out.mkdir(parents=True, exist_ok=True)
    db_path = db or out / "demo.duckdb"
    if db is None and db_path.exists():
        db_path.unlink()  # a fresh demo each time; pass --db to keep one
        wal = db_path.with_name(db_path.name + ".wal")
        if wal.exists():
            wal.unlink()
    console.print(f"[bold]adloop demo[/bold]: brief from {source}")
    if not with_lm:
        console.print(
            "No language model in use: candidates come from the template and recombination "
            "generators. Add the default model with [bold]adloop models pull smollm2[/bold] "
            "and rerun to get model-written candidates and a retraining round."
        )
    hook = _retrain_hook() if with_lm else None
    started = time.perf_counter()
    if with_lm:
        console.print(
            "Using the default language model for part of the candidates and one retraining "
            "round; on a slow or busy CPU this is the long part (use --no-lm to skip it)."
        )
    result = run_scenario(
        scenario,
        seed=seed,
        db_path=db_path,
        out=out,
        progress=True,
        on_retrain=hook,
        # bound each generation request; the pool fills up from the fast generators
        engine_config={"generation_time_budget": 20.0},
    )
    seconds = time.perf_counter() - started
    summary = result.summary
    (out / "demo.json").write_text(
        json.dumps(
            {"seconds": seconds, "db": str(db_path), "used_lm": with_lm, "brief_source": source},
            indent=2,
        )
        + "\n"
    )
    console.print(f"simulated {hours} h in {seconds:.1f} s -> {db_path}")
    console.print(
        f"  campaign {summary.get('campaign_id')}: {summary.get('impressions')} impressions, "
        f"{summary.get('clicks')} clicks, {summary.get('conversions')} conversions; "
        f"regret vs. oracle {summary.get('regret', 0.0):.1f} clicks"
    )
    for cycle in summary.get("lifecycle") or []:
        console.print(
            f"  hour {cycle.get('hour')}: retired {len(cycle.get('retired', []))}, "
            f"added {len(cycle.get('added', []))} fresh candidates"
        )
    for round_ in summary.get("retraining_rounds") or []:
        ctr = round_.get("mean_true_ctr")
        console.print(
            f"  retraining round {round_.get('round')}: "
            f"{(round_.get('detail') or {}).get('outcome', 'baseline')}, "
            "mean true CTR of new candidates "
            + (f"{ctr:.2%}" if isinstance(ctr, int | float) else "n/a")
        )
    winner = summary.get("winner")
    if isinstance(winner, dict) and winner.get("variant_id"):
        console.print(
            f"  winner {winner['variant_id']} (P(best) "
            f"{winner.get('probability_best', float('nan')):.3f}): {winner.get('text')}"
        )
    else:
        console.print("  no winner declared yet (the stopping rule wants more evidence)")
    report = out / "report.html"
    console.print(f"report: {report}" + ("" if report.exists() else " (not written)"))
    console.print(f"summary: {out / 'summary.json'}")
    console.print(
        f"inspect the campaign: adloop campaign show {summary.get('campaign_id', 'ID')} "
        f"--db {db_path}"
    )
