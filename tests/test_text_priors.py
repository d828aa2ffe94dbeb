"""ts_text in serving: a new variant's prior holds its tenant's outcome scorer's prediction.

The tenant "acme" has finished campaigns where a headline that asks a question clearly wins
(see test_tenant_scorer); its scorer, fitted and calibrated on them, should send a brand-new
question more traffic than a brand-new statement before either has a single impression.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tenant_scorer import FEATURES, seed_market

from adloop.optimizer import Engine, EngineConfig
from adloop.optimizer.errors import ConfigError
from adloop.optimizer.tenant_scorer import fit_tenant_scorer, load_tenant_scorer

BRIEF = {"product": "rings", "brand": "Aurelle", "language": "en",
         "channel": {"name": "search", "headline_max": 30, "description_max": 90}}  # fmt: skip
NEW = [
    ("Bespoke gold rings?", "See the collection."),
    ("Bespoke gold rings", "See the collection."),
]


def _launch(engine: Engine, tenant: str) -> str:
    """A new campaign of ``tenant`` with the two NEW variants, neither shown yet."""
    brief = {**BRIEF, "variants": [{"headline": h, "description": d} for h, d in NEW]}
    return engine.create_campaign(brief, tenant=tenant)["campaign_id"]


def _question_share(engine: Engine, campaign_id: str, tenant: str) -> float:
    """The question's share of traffic in the campaign's current allocation (two arms)."""
    choice = engine.choose_many(campaign_id, 1, tenant=tenant)[0]
    asked = "?" in choice.text
    return choice.probability if asked else 1.0 - choice.probability


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_a_calibrated_scorer_backs_the_new_variant_it_predicts_to_win(
    db_path: Path, model_dir: Path
) -> None:
    config = EngineConfig(policy="ts_text", background=False)
    with Engine(db_path, config=config, seed=3) as engine:
        seed_market(engine.store, "acme", 8)
        fit_tenant_scorer(engine.store, "acme", config=FEATURES)
        calibration = load_tenant_scorer(engine.store, "acme").calibration
        assert calibration is not None and calibration.informative, calibration
        acme = _launch(engine, "acme")
        globex = _launch(engine, "globex")  # no scorer: plain Thompson sampling
        backed = _question_share(engine, acme, "acme")
        plain = _question_share(engine, globex, "globex")
    assert backed > 0.6
    assert 0.45 < plain < 0.55
    # the same tenant and copy under ts: the text is ignored
    with Engine(db_path, config=EngineConfig(background=False), seed=4) as engine:
        assert 0.45 < _question_share(engine, _launch(engine, "acme"), "acme") < 0.55


def test_ts_text_is_a_policy_name_the_config_accepts() -> None:
    assert EngineConfig(policy="ts_text").policy == "ts_text"
    with pytest.raises(ConfigError, match="'ts_text'"):
        EngineConfig(policy="text")


def test_serve_takes_the_policy_and_names_the_choices(db_path: Path) -> None:
    from typer.testing import CliRunner

    from adloop.cli import app

    result = CliRunner().invoke(app, ["serve", "--db", str(db_path), "--policy", "thompson"])
    assert result.exit_code == 1
    assert "--policy: got 'thompson'; use 'ts' or 'ts_text'" in result.output


def test_a_scorer_is_never_trusted_with_more_than_three_quarters_of_the_spread() -> None:
    from adloop.bandits import TextCalibration
    from adloop.optimizer.text_priors import MAX_SHARE_EXPLAINED, capped

    # fitted on a few campaigns, a scorer can seem to explain everything
    seeming = TextCalibration(1.0, 0.02, 0.2, 1e-6, 2.0, 8, 32)
    trusted = capped(seeming)
    assert trusted.residual_variance == pytest.approx((1 - MAX_SHARE_EXPLAINED) * 0.2)
    assert trusted.precision < seeming.precision / 1000
    modest = TextCalibration(1.0, 0.1, 0.2, 0.15, 2.0, 100, 400)
    assert capped(modest) == modest
