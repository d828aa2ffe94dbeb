"""adloop optimizer: the engine, HTTP variant-chooser service, scheduler and CLI.

The in-process API an ad server (or the simulator) uses::

    from adloop.optimizer import Engine
    with Engine("adloop.duckdb") as engine:
        campaign = engine.create_campaign(brief, n_candidates=8)
        choice = engine.choose(campaign["campaign_id"], segment="mobile")
        engine.record([...events...])

Everything but the errors is imported on first use (the engine needs numpy, the service
FastAPI), so ``import optimizer`` -- and ``adloop --help`` -- stay light.
"""

from __future__ import annotations

import typing

from adloop.optimizer.errors import (
    AuthError,
    CampaignNotFound,
    ConfigError,
    HTTPError,
    InvalidRequest,
    NoActiveVariants,
    OptimizerError,
    ReviewConflict,
    VariantNotFound,
)

__all__ = [
    "AuthError",
    "CampaignNotFound",
    "Choice",
    "ConfigError",
    "EpsilonGreedy",
    "Engine",
    "EngineConfig",
    "HTTPError",
    "InvalidRequest",
    "NoActiveVariants",
    "OptimizerError",
    "ReviewConflict",
    "ThompsonSampling",
    "UCB1",
    "Uniform",
    "VariantNotFound",
    "create_app",
    "srm_check",
]

_LAZY = {
    "Choice": ("adloop.optimizer.decisions", "Choice"),
    "Engine": ("adloop.optimizer.engine", "Engine"),
    "EngineConfig": ("adloop.optimizer.config", "EngineConfig"),
    "srm_check": ("adloop.optimizer.quality", "srm_check"),
    "create_app": ("adloop.optimizer.service", "create_app"),
    "ThompsonSampling": ("adloop.bandits", "ThompsonSampling"),
    "Uniform": ("adloop.bandits", "Uniform"),
    "EpsilonGreedy": ("adloop.bandits", "EpsilonGreedy"),
    "UCB1": ("adloop.bandits", "UCB1"),
}


if typing.TYPE_CHECKING:
    from adloop.optimizer.config import EngineConfig
    from adloop.optimizer.decisions import Choice
    from adloop.optimizer.engine import Engine
    from adloop.optimizer.quality import srm_check
    from adloop.optimizer.service import create_app


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'adloop.optimizer' has no attribute {name!r}")
