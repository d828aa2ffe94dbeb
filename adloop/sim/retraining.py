"""Retraining inside a simulated run: the ``on_retrain`` hook that :func:`run_scenario` calls.

The simulator drives the optimizer's public retraining API exactly as a deployment's
scheduler would: each round runs :func:`adloop.optimizer.retrain.retrain_round` on the
engine's store and, after a promotion, switches the engine's generator pool to the new
version. This glue lives here so that the optimizer never needs to know about the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from adloop.generators import LMGenerator
from adloop.optimizer.retrain import RetrainConfig, retrain_round, switch_pool_model

__all__ = ["make_retrain_hook"]


def _pool_model_dir(pool: Any) -> Path | None:
    """The model directory of the pool's language-model generator (None: it has none)."""
    for generator in getattr(pool, "generators", None) or ():
        if isinstance(generator, LMGenerator):
            return Path(generator.model_dir)
    return None


def make_retrain_hook(
    config: RetrainConfig | Mapping[str, Any] | None = None,
    *,
    progress: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Callable[[Any, int], dict[str, Any]]:
    """A retraining hook for the simulator (``on_retrain(engine, round_index)``).

    Each call runs :func:`retrain_round` on the engine's store and, after a promotion,
    switches the engine's generator pool to the new version. ``config`` may be plain
    settings (a scenario's ``retraining.config``; checked here, so a bad key fails before
    the simulation starts). Unless ``config`` says otherwise, the first version starts from
    the pool's own language model and versions are written next to the database file
    (``<db folder>/models``), so a simulation never fills the user's model cache.
    ``progress``: makes a context per round whose value is the round's progress hook (the
    CLI's ``TrainingProgress``), so each round shows its steps, loss and time left.

    Example::

        from adloop.sim import load_scenario, run_scenario
        from adloop.sim.retraining import make_retrain_hook
        scenario = load_scenario("examples/scenario_retraining_refresh.yaml")
        run_scenario(scenario, on_retrain=make_retrain_hook(scenario.retraining.config))
    """

    if config is not None and not isinstance(config, RetrainConfig):
        config = RetrainConfig.from_dict(dict(config))

    def hook(engine: Any, round_index: int) -> dict[str, Any]:
        settings = config or RetrainConfig()
        overrides: dict[str, Any] = {}
        pool_dir = _pool_model_dir(engine.pool)
        if settings.base_model is None and pool_dir is not None:
            overrides["base_model"] = str(pool_dir)
        if settings.models_root is None:
            overrides["models_root"] = str(Path(engine.store.path).parent / "models")
        if overrides:
            settings = RetrainConfig(**{**settings.__dict__, **overrides})
        with progress() if progress is not None else nullcontext() as tell:
            report = retrain_round(
                engine.store,
                config=settings,
                clock=engine.clock,
                on_promote=lambda model: switch_pool_model(engine.pool, model["path"]),
                progress=tell,
            )
        gate = report.metrics.get("gate", {})
        scorer = report.metrics.get("scorer") or {}
        return {
            "round": round_index,
            "outcome": report.outcome,
            "version": report.current_version,
            "reason": report.reason,
            **{k: v for k, v in report.data.items() if k != "data_hash"},
            "data_hash": report.data.get("data_hash"),
            **{f"gate_{k}": v for k, v in gate.items()},
            "scorer_shipped": scorer.get("shipped", False),
            "scorer_loo_spearman": (scorer.get("metrics") or {}).get("loo_spearman"),
            "scorer_carried": "carried_from" in scorer,
            "scorer_current_out_of_sample": (scorer.get("current_out_of_sample") or {}).get(
                "spearman"
            ),
            "seconds": round(report.seconds.get("total", 0.0), 1),
        }

    return hook
