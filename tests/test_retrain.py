"""Retraining rounds against a real DuckDB store and a tiny real transformers model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from test_training import one_torch_thread, save_tiny_model  # noqa: E402, F401

from adloop.generators import (  # noqa: E402
    TRAINING_RECORD,
    LMGenerator,
    PreferencePair,
    SFTExample,
    TrainingConfig,
    distinct_n,
    installed_models,
    train_version,
)
from adloop.generators.scorer import (  # noqa: E402
    CopyScorer,
    fit_scorer,
    load_scorer,
    out_of_sample_spearman,
    text_digest,
)
from adloop.optimizer.errors import ConfigError  # noqa: E402
from adloop.optimizer.retrain import (  # noqa: E402
    RetrainConfig,
    ServingModel,
    build_dataset,
    completion_text,
    evaluate_gate,
    fit_version_scorer,
    retrain_round,
    validity,
)
from adloop.sim.history import seed_campaign  # noqa: E402
from adloop.storage import Store, store_identity  # noqa: E402

BRIEF = {
    "product": "made-to-measure rings",
    "brand": "Aurelle",
    "language": "en",
    "keywords": ["bespoke rings"],
    "channel": {"name": "search", "headline_max": 30, "description_max": 90},
}
# (headline, description, impressions, clicks): A clearly beats C and D, B sits in between.
ARMS = [
    ("Bespoke rings, made to fit", "Book a private fitting today.", 3000, 240),
    ("Rings made to measure", "Handcrafted in our atelier.", 3000, 150),
    ("Shop Aurelle jewellery", "See the collection.", 3000, 60),
    ("Aurelle rings", "Visit us.", 3000, 30),
]
T0 = datetime(2026, 1, 5, 9, 0, 0)
#: A short simulated campaign of fixed variants with a retraining round every 2 hours.
SIM_SCENARIO = {
    "brief": BRIEF,
    "variants": [
        "Bespoke rings, made to measure — book today!",
        "Aurelle rings",
        "Luxury custom rings: 20% off — shop now",
        "Rings",
    ],
    "traffic": {"hours": 4, "impressions_per_hour": 6000},
    "lifecycle": {"retire_refill_every_hours": None, "declare_winner": False},
    "retraining": {"enabled": True, "every_hours": 2},
}


def fill_store(store: Store, campaign_id: str = "c_000000000001", arms=ARMS) -> list[str]:
    """One campaign with the arms above; impressions and clicks as real events."""
    return seed_campaign(store, BRIEF, arms, campaign_id=campaign_id, name="rings", start=T0)


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """A fresh store whose clock reads one day after the seeded history began."""
    with Store(db_path, clock=lambda: T0 + timedelta(days=1)) as opened:
        yield opened


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base") / "tiny")


def tiny_config(tmp_path: Path, base_dir: Path, **overrides) -> RetrainConfig:
    training = overrides.pop(
        "training",
        TrainingConfig(
            sft_steps=6, dpo_steps=6, batch_size=2, learning_rate=1e-2, max_length=160, threads=1
        ),
    )
    settings = dict(
        base_model=str(base_dir),
        models_root=str(tmp_path / "versions"),
        min_impressions=500,
        min_pair_impressions=200,
        gate_candidates=3,
        gate_briefs=1,
        training=training,
    )
    settings.update(overrides)
    return RetrainConfig(**settings)


def test_dataset_has_winners_and_only_confident_pairs(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    ids = fill_store(store)
    config = tiny_config(tmp_path, base_dir, holdout_fraction=0.3)
    data = build_dataset(store, config=config)
    again = build_dataset(store, config=config)

    assert data.data_hash == again.data_hash
    pair_rows = [r for r in data.rows if r["kind"] == "pair"]
    winner_rows = [r for r in data.rows if r["kind"] == "winner"]
    assert [r["variant_id"] for r in winner_rows] == [ids[0]]
    assert all(r["p_beats"] >= 0.95 for r in pair_rows)
    ordered = {(r["chosen"], r["rejected"]) for r in pair_rows}
    # Every chosen variant really has the higher CTR; A beats all, C beats D.
    assert {(ids[0], ids[1]), (ids[0], ids[2]), (ids[0], ids[3]), (ids[2], ids[3])} <= ordered
    assert not any(ids.index(a) > ids.index(b) for a, b in ordered)
    assert len(data.heldout_pairs) >= 1 and len(data.pairs) >= 1
    assert len(data.pairs) + len(data.heldout_pairs) == len(pair_rows)
    # Weights grow with lift: A over D outweighs A over B.
    weight = {(r["chosen"], r["rejected"]): r["weight"] for r in pair_rows}
    assert weight[(ids[0], ids[3])] > weight[(ids[0], ids[1])]
    # Prompts are the brief's LM prompt; completions are in the generator's format.
    assert data.heldout_pairs[0].prompt.startswith("Write one search ad in English.")
    assert all(p.chosen.startswith("Headline: ") for p in data.pairs)


def test_fresh_variants_do_not_hide_a_clear_winner(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    # Right after a refill: two variants with no impressions yet. Their flat posteriors
    # must not take probability-best from the proven variants.
    fresh = [("Rings for every day", "New in.", 0, 0), ("Aurelle bands", "Just added.", 0, 0)]
    ids = fill_store(store, arms=[*ARMS, *fresh])
    data = build_dataset(store, config=tiny_config(tmp_path, base_dir))
    winner_rows = [r for r in data.rows if r["kind"] == "winner"]
    assert [r["variant_id"] for r in winner_rows] == [ids[0]]
    assert winner_rows[0]["probability_best"] > 0.95
    # Lift is measured against the proven variants, not the fresh ones' prior mean of 0.5.
    assert winner_rows[0]["weight"] > 1.0
    assert not any(ids[4] in (r.get("chosen"), r.get("rejected")) for r in data.rows)


def test_runners_up_above_the_average_are_trained_on_at_lower_weight(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    ids = fill_store(store)
    strict = build_dataset(store, config=tiny_config(tmp_path, base_dir))
    config = tiny_config(tmp_path, base_dir, above_average_confidence=0.9)
    broad = build_dataset(store, config=config)

    assert [r["kind"] for r in strict.rows if r["kind"] != "pair"] == ["winner"]
    sft_rows = {r["variant_id"]: r for r in broad.rows if r["kind"] != "pair"}
    # B (5 %) clearly beats the average of A, C and D; C and D (2 %, 1 %) do not.
    assert set(sft_rows) == {ids[0], ids[1]}
    assert sft_rows[ids[0]]["kind"] == "winner"
    assert sft_rows[ids[1]]["kind"] == "above_average"
    assert sft_rows[ids[1]]["p_above_average"] >= 0.9
    assert 0 < sft_rows[ids[1]]["weight"] < sft_rows[ids[0]]["weight"]
    assert len(broad.winners) == 2 and broad.data_hash != strict.data_hash
    with pytest.raises(ValueError, match="above_average_confidence"):
        tiny_config(tmp_path, base_dir, above_average_confidence=0.3)


def test_no_data_is_skipped(store: Store, tmp_path: Path, base_dir: Path) -> None:
    close_arms = [("Rings one", "a.", 300, 10), ("Rings two", "b.", 300, 11)]
    fill_store(store, arms=close_arms)
    report = retrain_round(store, config=tiny_config(tmp_path, base_dir))
    assert report.outcome == "skipped"
    assert "no winners" in report.reason
    # The base model is registered and promoted so later rounds have a parent.
    assert store.current_model()["path"] == str(base_dir)


def test_round_trains_gates_and_promotes(store: Store, tmp_path: Path, base_dir: Path) -> None:
    promoted = []
    fill_store(store)
    config = tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0)
    report = retrain_round(store, config=config, on_promote=promoted.append)
    assert report.outcome == "promoted", report.reason
    current = store.current_model()
    versions = {v["version"]: v for v in store.model_versions()}

    assert current["version"] == report.version == "v0001"
    assert promoted and promoted[0]["version"] == "v0001"
    record = json.loads((Path(current["path"]) / TRAINING_RECORD).read_text())
    assert record["data_hash"] == versions["v0001"]["data_hash"] == report.data["data_hash"]
    assert record["parent"] == versions["v0001"]["parent"] and record["parent"].startswith("base-")
    assert record["steps"] == {"sft": 6, "dpo": 6}
    metrics = versions["v0001"]["metrics"]
    assert metrics["gate_passed"] is True
    assert "heldout_accuracy" in metrics["gate"] and "pass_rate" in metrics["gate"]
    assert (Path(current["path"]) / "dataset.json").exists()
    # The new version is a model the generator can load and sample from.
    generator = LMGenerator(current["path"])
    assert generator.model_version == "v0001"
    from adloop.generators import load_brief

    assert len(generator.generate(load_brief(BRIEF), 2, seed=0)) == 2


def test_worse_model_fails_the_gate(tmp_path: Path, base_dir: Path) -> None:
    """A version trained to prefer losers ranks held-out winners worse than the base."""
    prompt = "Write one search ad in English.\nProduct: rings"
    good = ["Headline: Bespoke rings, made to fit", "Headline: Rings made to measure"]
    bad = ["Headline: Shop Aurelle jewellery", "Headline: Aurelle rings"]
    heldout = [PreferencePair(prompt=prompt, chosen=g, rejected=b) for g in good for b in bad]
    reversed_pairs = [
        PreferencePair(prompt=prompt, chosen=p.rejected, rejected=p.chosen) for p in heldout
    ]
    dpo_only = TrainingConfig(
        sft_steps=0, dpo_steps=20, batch_size=4, learning_rate=1e-2, dpo_beta=0.5
    )
    worse = train_version(base_dir, tmp_path / "worse", pairs=reversed_pairs, config=dpo_only)
    better = train_version(base_dir, tmp_path / "better", pairs=heldout, config=dpo_only)
    config = RetrainConfig(gate_candidates=0)
    rejected = evaluate_gate(worse.model_dir, better.model_dir, heldout, config=config)
    accepted = evaluate_gate(better.model_dir, worse.model_dir, heldout, config=config)

    assert not rejected.passed
    assert "held-out accuracy" in rejected.reasons[0]
    assert rejected.metrics["heldout_accuracy"] < rejected.metrics["current_heldout_accuracy"]
    assert accepted.passed and accepted.metrics["heldout_accuracy"] >= 0.75


def test_gate_refuses_a_slow_collapse_measured_against_the_base(
    tmp_path: Path, base_dir: Path
) -> None:
    """Each round compares with the current version, so a lineage that lost its diversity
    one small step at a time would pass that check; the base model is the fixed reference."""
    from adloop.generators import load_brief

    brief = load_brief(BRIEF)
    # One ad as the generator serves it, learnt by heart: the phrases it picks every time.
    served = LMGenerator(base_dir, rerank=False, best_of=1.0).generate(brief, 1, seed=0)[0]
    repeat = SFTExample(
        prompt=brief.prompt(), completion=completion_text(served.headline, served.description)
    )
    collapsed = train_version(
        base_dir,
        tmp_path / "collapsed",
        sft_examples=[repeat],
        config=TrainingConfig(
            sft_steps=40, dpo_steps=0, lora=False, batch_size=1, learning_rate=5e-2
        ),
    )
    config = RetrainConfig(gate_candidates=6, gate_briefs=1, min_distinct_ratio_to_base=0.5)
    # Against itself as the current version the collapsed model looks fine ...
    alone = evaluate_gate(
        collapsed.model_dir, collapsed.model_dir, [], briefs=[brief], config=config
    )
    assert alone.passed, alone.reasons
    # ... against the base of its lineage it does not.
    gate = evaluate_gate(
        collapsed.model_dir,
        collapsed.model_dir,
        [],
        briefs=[brief],
        config=config,
        base_dir=base_dir,
    )
    assert not gate.passed
    assert any("since the base model" in reason for reason in gate.reasons), gate.reasons
    assert gate.metrics["distinct_2"] < 0.5 * gate.metrics["base_distinct_2"]


def test_gate_rejection_keeps_serving_on_the_current_version(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    fill_store(store)
    serving = ServingModel(store)
    # Demand a diversity the tiny model cannot reach relative to itself: gate must fail.
    config = tiny_config(
        tmp_path,
        base_dir,
        min_distinct_ratio=1.0,
        min_pass_rate_ratio=1.0,
        accuracy_tolerance=0.0,
        training=TrainingConfig(
            sft_steps=30,
            dpo_steps=0,
            lora=False,
            batch_size=2,
            learning_rate=5e-2,
            max_length=160,
        ),
    )
    retrain_round(
        store,
        config=RetrainConfig(
            **{**config.__dict__, "min_impressions": 10**9, "min_pair_impressions": 10**9}
        ),
    )
    assert serving.sync() is True
    before = serving.current
    report = retrain_round(store, config=config)
    assert report.outcome == "rejected", report
    assert report.reason
    assert serving.sync() is False
    assert serving.current is before
    assert store.current_model()["version"] == before[0]
    # The rejected version is on record, with the gate's verdict, but not in force.
    rejected = [v for v in store.model_versions() if v["version"] == report.version][0]
    assert rejected["metrics"]["gate_passed"] is False


def test_crash_mid_training_leaves_current_version(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    fill_store(store)
    # A learning rate this large drives the loss to inf/NaN within a step: training aborts.
    config = tiny_config(
        tmp_path,
        base_dir,
        training=TrainingConfig(
            sft_steps=5, dpo_steps=5, batch_size=2, learning_rate=1e30, max_length=160
        ),
    )
    # A half-written version of a killed earlier round (its process is gone) is cleaned up.
    stale = tmp_path / "versions" / ".v0001.partial-999999999"
    stale.mkdir(parents=True)
    report = retrain_round(store, config=config)
    assert report.outcome == "failed"
    assert "training failed" in report.reason
    current = store.current_model()
    assert current["path"] == str(base_dir)
    assert [v["version"] for v in store.model_versions()] == [current["version"]]
    leftovers = list((tmp_path / "versions").iterdir())
    assert leftovers == []


def test_promotion_switches_serving_and_rollback_restores(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    fill_store(store)
    serving = ServingModel(store)
    report = retrain_round(store, config=tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0))
    assert report.outcome == "promoted"
    assert serving.sync() is True
    version, generator = serving.current
    assert version == "v0001" and generator.model_version == "v0001"
    previous = store.rollback_model()
    assert previous["version"].startswith("base-")
    assert serving.sync() is True
    assert serving.current[0] == previous["version"]


def test_rounds_can_start_from_the_base_model_instead_of_the_current_version(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    """train_from="base": a later round trains the lineage's base model afresh, so on the same
    evidence it writes the same weights as the first round did; "current" builds on them."""
    import torch
    from safetensors.torch import load_file

    def weights(version: dict) -> dict:
        return load_file(str(Path(version["path"]) / "model.safetensors"))

    fill_store(store)
    reports = [
        retrain_round(
            store,
            config=tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0, train_from=start),
        )
        for start in ("current", "base", "current")
    ]
    versions = {v["version"]: v for v in store.model_versions()}
    assert [r.outcome for r in reports] == ["promoted"] * 3, [r.reason for r in reports]
    first, from_base, built_on = (versions[r.version] for r in reports)
    assert from_base["metrics"]["trained_from"] == str(base_dir)
    assert from_base["parent"] == first["version"]  # the lineage still records what it replaced
    assert built_on["metrics"]["trained_from"] == from_base["path"]
    w_first, w_base, w_built = weights(first), weights(from_base), weights(built_on)
    assert all(torch.equal(w_first[k], w_base[k]) for k in w_first)
    assert not all(torch.equal(w_first[k], w_built[k]) for k in w_first)


# Eight arms: the four that say "bespoke" convert impressions into clicks about three times as
# often as the four that do not, whatever else they say.
SCORED_ARMS = [
    ("Bespoke rings", "Book a fitting.", 3000, 190),
    ("Bespoke gold bands", "Made in Paris.", 3000, 175),
    ("Your bespoke ring", "Book today.", 3000, 200),
    ("Bespoke bridal sets", "Visit the atelier.", 3000, 165),
    ("Aurelle gold bands", "Book a fitting.", 3000, 60),
    ("Rings from Paris", "Made in Paris.", 3000, 55),
    ("Aurelle bridal sets", "Visit the atelier.", 3000, 70),
    ("Gold rings", "Book today.", 3000, 50),
]


def test_a_round_ships_a_copy_scorer_with_the_version(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    """The scorer is fitted on the proven variants, validated, saved in the version directory,
    recorded with the version, and the promoted version's generator reranks with it."""
    fill_store(store, arms=SCORED_ARMS)
    config = tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0, rerank_oversample=4)
    report = retrain_round(store, config=config)
    assert report.outcome == "promoted", report.reason
    record = {v["version"]: v for v in store.model_versions()}[report.version]
    assert report.data["variants"] == 8
    scorer_report = record["metrics"]["scorer"]
    assert scorer_report["shipped"] is True
    assert scorer_report["metrics"]["loo_spearman"] > 0.5
    scorer = load_scorer(report.model_dir)
    assert scorer is not None and scorer.oversample == 4
    assert scorer.weights["w:bespoke"] > 0
    assert LMGenerator(report.model_dir).scorer is not None
    # the gate rated both versions' plain samples with it (recorded; refusing is opt-in)
    gate = record["metrics"]["gate"]
    assert np.isfinite(gate["scorer_mean"]) and np.isfinite(gate["current_scorer_mean"])
    strict = retrain_round(
        store, config=replace(config, models_root=str(tmp_path / "strict"), scorer_tolerance=0.0)
    )
    worse = strict.metrics["gate"]["scorer_mean"] < strict.metrics["gate"]["current_scorer_mean"]
    assert any("copy scorer rates" in r for r in strict.metrics["gate_reasons"]) == worse
    # what the scorer was fitted on is kept with the version's dataset
    dataset = json.loads((Path(report.model_dir) / "dataset.json").read_text())
    assert len(dataset["variants"]) == 8 and {"text", "trials", "successes"} <= set(
        dataset["variants"][0]
    )


def test_no_scorer_ships_without_enough_variants_or_when_reranking_is_off(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    fill_store(store)  # four variants
    few = retrain_round(
        store,
        config=tiny_config(tmp_path / "few", base_dir, accuracy_tolerance=1.0, rerank_oversample=4),
    )
    off = retrain_round(
        store,
        config=tiny_config(tmp_path / "off", base_dir, accuracy_tolerance=1.0, rerank_oversample=1),
    )
    assert "4 proven variants; a scorer needs 6" in few.metrics["scorer"]["reason"]
    assert "reranking is off" in off.metrics["scorer"]["reason"]
    for report in (few, off):
        assert not (Path(report.model_dir) / "scorer.json").exists()
        assert LMGenerator(report.model_dir).scorer is None


def test_a_scorer_that_does_not_validate_is_not_shipped(tmp_path: Path) -> None:
    """Every variant converted alike: nothing to learn, so the version samples plainly."""
    variants = [
        {"campaign_id": "c", "text": f"{h} — {d}", "trials": 3000.0, "successes": 90.0}
        for h, d, _, _ in SCORED_ARMS
    ]
    report = fit_version_scorer(tmp_path, variants, RetrainConfig(rerank_oversample=4))
    assert report["shipped"] is False
    assert "leave-one-out rank correlation 0.00 is below 0.2" in report["reason"]
    assert not (tmp_path / "scorer.json").exists()


def _serving_scorer(directory: Path, fitted: list[str]) -> Path:
    """A serving version's scorer: longer copy converts better; fitted on ``fitted``."""
    directory.mkdir(parents=True, exist_ok=True)
    CopyScorer(
        weights={}, length_coef=(1.0, 0.0), length_mean=40.0, length_sd=10.0,
        fitted=frozenset(text_digest(t) for t in fitted),
    ).save(directory)  # fmt: skip
    return directory


@pytest.mark.parametrize("new_order", [1, -1])
def test_a_serving_scorer_carries_over_only_when_it_ranks_variants_it_never_saw(
    tmp_path: Path, new_order: int
) -> None:
    """The fresh fit fails its check (the old variants' results are noise); the serving
    version's scorer carries over when it ranks the newly proven variants right (longer ones
    convert better), and not when they say the opposite."""
    rng = np.random.default_rng(5)
    old = [f"Bespoke rings {'x' * k} made" for k in range(8)]
    new = [f"Gold bands {'y' * (3 * k)} for her" for k in range(8)]
    variants = [
        {"campaign_id": "c", "text": t, "trials": 3000.0, "successes": float(rng.integers(60, 120))}
        for t in old
    ] + [
        {"campaign_id": "c", "text": t, "trials": 3000.0,
         "successes": 90.0 + new_order * 8.0 * (k - 4)}
        for k, t in enumerate(new)
    ]  # fmt: skip
    current = _serving_scorer(tmp_path / "current", old)
    config = RetrainConfig(rerank_oversample=4, scorer_min_spearman=0.95)
    (tmp_path / "next").mkdir()  # the new version's directory
    report = fit_version_scorer(tmp_path / "next", variants, config, current_dir=current)
    assert report["metrics"]["loo_spearman"] < 0.95  # the fresh fit is not shipped
    assert report["current_out_of_sample"]["variants"] == len(new)
    carried = load_scorer(tmp_path / "next")
    if new_order == 1:
        assert report["shipped"] is True and report["carried_from"] == str(current)
        assert report["current_out_of_sample"]["spearman"] == pytest.approx(1.0)
        assert carried is not None and carried.oversample == 4
        assert carried.fitted == load_scorer(current).fitted
    else:
        assert report["shipped"] is False and "carried_from" not in report
        assert report["current_out_of_sample"]["spearman"] == pytest.approx(-1.0)
        assert carried is None


def test_a_fitted_scorer_records_what_it_was_fitted_on(tmp_path: Path) -> None:
    texts = [f"Bespoke rings {'x' * k}" for k in range(6)]
    scorer = fit_scorer(texts, [1000.0] * 6, [20.0 + k for k in range(6)])
    scorer.save(tmp_path)
    assert load_scorer(tmp_path).fitted == {text_digest(t) for t in texts}
    n_new, _ = out_of_sample_spearman(scorer, [*texts, "Gold bands"], [1.0] * 7, [0.0] * 7)
    assert n_new == 1


def test_the_validity_check_samples_a_version_plainly_even_when_it_ships_a_scorer(
    tmp_path: Path, base_dir: Path
) -> None:
    """Reranking puts copy that passes the filters first; measured through it, a version with a
    scorer would beat one without on pass rate whatever its weights. The gate compares models."""
    import shutil

    from adloop.generators import load_brief
    from adloop.generators.scorer import CopyScorer

    with_scorer = tmp_path / "with-scorer"
    shutil.copytree(base_dir, with_scorer)
    CopyScorer(
        weights={}, length_coef=(-1.0, 0.0), length_mean=20.0, length_sd=5.0, oversample=4
    ).save(with_scorer)
    briefs = [load_brief(BRIEF)]
    assert LMGenerator(with_scorer).scorer is not None  # serving would rerank
    assert validity(with_scorer, briefs, n=6, seed=3) == validity(base_dir, briefs, n=6, seed=3)


def test_distinct_n() -> None:
    assert distinct_n(["a b c", "a b c"], 2) == 0.5
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["臻品钻戒", "臻品项链"], 2) == pytest.approx(5 / 6)
    # Chinese counts by character even when the copy spaces its phrases; Latin words stay whole
    spaced = ["臻品钻戒 限时礼遇", "臻品项链 限时礼遇"]
    assert distinct_n(spaced, 2) == pytest.approx(10 / 14)
    assert distinct_n(["Aurelle臻品", "Aurelle臻品"], 2) == pytest.approx(2 / 4)
    assert distinct_n([], 2) == 0.0


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="pair_confidence"):
        RetrainConfig(pair_confidence=1.5)
    with pytest.raises(ValueError, match="min_distinct_ratio_to_base"):
        RetrainConfig(min_distinct_ratio_to_base=-0.1)
    with pytest.raises(ValueError, match="rerank_oversample"):
        RetrainConfig(rerank_oversample=0)
    with pytest.raises(ValueError, match="scorer_min_spearman"):
        RetrainConfig(scorer_min_spearman=1.5)
    with pytest.raises(ValueError, match="train_from"):
        RetrainConfig(train_from="scratch")
    with pytest.raises(ValueError, match="unknown key"):
        RetrainConfig.from_dict({"winner_treshold": 0.9})
    # a bad training value is a config error too, naming the key path and the field
    with pytest.raises(ConfigError, match=r"retraining\.training: .*sft_steps") as info:
        RetrainConfig.from_dict({"training": {"sft_steps": -1}})
    assert info.value.field == "retraining.training"
    config = RetrainConfig.from_dict({"training": {"sft_steps": 3}})
    assert config.training.sft_steps == 3 and config.training.dpo_steps == 12
    assert np.isclose(config.winner_threshold, 0.9)


@pytest.mark.parametrize(
    "name", ["scenario_retraining", "scenario_retraining_busy", "scenario_retraining_refresh"]
)
def test_the_example_scenarios_retraining_settings_are_valid(name: str) -> None:
    """`adloop sim run` builds its rounds' settings from these; a typo would fail at run time."""
    from adloop.sim import load_scenario

    scenario = load_scenario(Path(__file__).parent.parent / "examples" / f"{name}.yaml")
    config = RetrainConfig.from_dict(scenario.retraining.config)
    assert config.training.sft_steps == 0 and config.training.dpo_steps == 12
    assert config.train_from == ("base" if name.endswith("refresh") else "current")


def test_promotion_switches_a_generator_pool(store: Store, tmp_path: Path, base_dir: Path) -> None:
    from adloop.generators import GeneratorPool
    from adloop.optimizer.retrain import switch_pool_model

    pool = GeneratorPool(["template", "lm"], model_dir=base_dir)
    before = pool.model_version
    fill_store(store)
    report = retrain_round(
        store,
        config=tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0),
        on_promote=lambda model: switch_pool_model(pool, model["path"]),
    )
    assert report.outcome == "promoted"
    assert before != "v0001" and pool.model_version == "v0001"
    assert pool.names == ["template", "lm"]


def test_simulator_hook_runs_rounds_through_the_engine(tmp_path: Path, base_dir: Path) -> None:
    """The hook the simulator calls: rounds on the engine's store, from the real event log."""
    from adloop.sim import load_scenario, run_scenario
    from adloop.sim.retraining import make_retrain_hook

    scenario = load_scenario(SIM_SCENARIO)
    hook = make_retrain_hook(
        tiny_config(
            tmp_path,
            base_dir,
            accuracy_tolerance=1.0,
            min_impressions=100,
            min_pair_impressions=100,
            winner_threshold=0.6,
        )
    )
    result = run_scenario(scenario, seed=3, db_path=tmp_path / "sim.duckdb", on_retrain=hook)
    details = [r["detail"] for r in result.summary["retraining_rounds"] if r.get("detail")]
    assert details, result.summary["retraining_rounds"]
    assert details[0]["outcome"] in {"promoted", "rejected", "skipped"}
    assert details[0]["round"] == 1
    if details[0]["outcome"] != "skipped":
        assert details[0]["data_hash"]


@pytest.mark.slow
def test_round_with_the_default_model(store: Store, tmp_path: Path) -> None:
    """One real round on SmolLM2-135M-Instruct (skipped when it is not installed)."""
    from adloop.generators import default_model_dir

    base = Path(default_model_dir()) / "smollm2-135m-instruct"
    if not (base / "config.json").exists():
        pytest.skip("default model not installed (adloop models pull smollm2)")
    training = TrainingConfig(sft_steps=2, dpo_steps=2, batch_size=2, max_length=288, threads=2)
    config = RetrainConfig(
        base_model=str(base),
        models_root=str(tmp_path / "versions"),
        gate_candidates=2,
        gate_briefs=1,
        training=training,
        min_impressions=500,
        min_pair_impressions=200,
    )
    fill_store(store)
    report = retrain_round(store, config=config)
    current = store.current_model()
    assert report.outcome in {"promoted", "rejected"}, report.reason
    assert report.metrics["steps"] == {"sft": 2, "dpo": 2}
    assert "heldout_accuracy" in report.metrics["gate"]
    if report.outcome == "promoted":
        assert current["version"] == report.version
    else:
        assert current["path"] == str(base)


def test_one_held_out_pair_lost_is_noise_not_a_regression(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    """The held-out check compares the pairs the two versions order differently: a version
    that loses one of them and wins none (sign test p 0.5) is promoted by default and refused
    by a gate that refuses any shortfall (``accuracy_significance`` 1.0)."""
    fill_store(store)
    learnt = TrainingConfig(
        sft_steps=40, dpo_steps=0, batch_size=1, learning_rate=5e-2, lora_r=32, lora_alpha=64,
        max_length=160,
    )  # fmt: skip
    first = retrain_round(store, config=tiny_config(tmp_path / "first", base_dir, training=learnt))
    assert first.outcome == "promoted", str(first.metrics["gate"])
    barely = TrainingConfig(sft_steps=1, dpo_steps=0, learning_rate=1e-9, max_length=160)
    config = tiny_config(tmp_path / "second", base_dir, training=barely)
    strict = retrain_round(store, config=replace(config, accuracy_significance=1.0))
    lenient = retrain_round(store, config=config)
    gate = lenient.metrics["gate"]
    assert gate["heldout_accuracy"] < gate["current_heldout_accuracy"]
    assert (gate["heldout_pairs_lost"], gate["heldout_pairs_won"]) == (1.0, 0.0)
    assert gate["heldout_sign_test_p"] == 0.5
    assert strict.outcome == "rejected" and "1 pairs lost, 0 won" in strict.reason
    assert lenient.outcome == "promoted", lenient.reason


def test_a_rejected_version_keeps_its_adapter_not_a_model_copy(
    store: Store, tmp_path: Path, base_dir: Path
) -> None:
    fill_store(store)
    # A first round learns enough to beat the base model on the held-out pairs (promoted) ...
    learnt = tiny_config(
        tmp_path / "first",
        base_dir,
        training=TrainingConfig(
            sft_steps=40,
            dpo_steps=0,
            batch_size=1,
            learning_rate=5e-2,
            lora_r=32,
            lora_alpha=64,
            max_length=160,
        ),
    )
    first = retrain_round(store, config=learnt)
    assert first.outcome == "promoted", str(first.metrics["gate"])
    assert first.metrics["gate"]["heldout_accuracy"] > 0.0
    # ... a second, from the base model with next to no training, ranks them as the base does,
    # below the serving version: a gate that refuses any shortfall (two held-out pairs are too
    # few for the sign test) refuses it.
    barely = TrainingConfig(sft_steps=1, dpo_steps=0, learning_rate=1e-9, max_length=160)
    strict = tiny_config(tmp_path, base_dir, training=barely, accuracy_significance=1.0)
    report = retrain_round(store, config=strict)
    assert report.outcome == "rejected", str(report.metrics["gate"])
    version_dir = Path(report.model_dir)
    assert not list(version_dir.glob("*.safetensors"))  # no merged weights left
    assert (version_dir / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((version_dir / "pruned.json").read_text())["reason"].startswith("rejected")
    record = [v for v in store.model_versions() if v["version"] == report.version][0]
    assert record["metrics"]["pruned_bytes"] > 0
    listed = {row["name"]: row["kind"] for row in installed_models(tmp_path)}
    assert listed[str(version_dir.relative_to(tmp_path))] == "pruned"
    assert not any(name.endswith("adapter") for name in listed)  # a version's part, not a model
    # what it learnt is still there: base + adapter rebuilds a model that loads and scores
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rebuilt = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), version_dir / "adapter"
    ).merge_and_unload()
    assert sum(p.numel() for p in rebuilt.parameters()) > 0


def test_two_stores_keep_their_versions_apart(
    tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default models_root, two databases never write into one version folder."""
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(tmp_path / "cache"))
    config = tiny_config(tmp_path, base_dir, models_root=None, accuracy_tolerance=1.0)
    dirs, identities = [], []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.duckdb"
        with Store(path, clock=lambda: T0 + timedelta(days=1)) as opened:
            fill_store(opened)
            report = retrain_round(opened, config=config)
            assert report.version == "v0001", report
            dirs.append(Path(report.model_dir))
            identities.append(store_identity(opened))
        with Store(path) as reopened:  # the identity is the database's, not the process's
            assert store_identity(reopened) == identities[-1]
    assert identities[0] != identities[1]
    assert dirs[0] != dirs[1]
    for directory, identity in zip(dirs, identities, strict=True):
        assert directory.parent == tmp_path / "cache" / "versions" / identity
    listed = {row["name"] for row in installed_models(tmp_path / "cache")}
    assert {f"versions/{identity}/v0001" for identity in identities} <= listed


def _write_archive(path: Path) -> Path:
    """A small A/B archive in the replay format: in each test the first headline clearly won."""
    import polars as pl

    tests = [
        ("t1", "Rings made to measure, order today", "Shop the new collection"),
        ("t2", "Save 20% on diamond necklaces now", "Discover bespoke bracelets"),
        ("t3", "Luxury earrings, crafted by hand", "Fine jewellery for every day"),
        ("t4", "Fine jewellery for every day", "Fine jewellery for every day"),  # no pair
    ]
    rows = []
    for test_id, won, lost in tests:
        rows.append({"test_id": test_id, "headline": won, "impressions": 5000, "clicks": 150})
        rows.append({"test_id": test_id, "headline": lost, "impressions": 5000, "clicks": 60})
    pl.DataFrame(rows).write_parquet(path)
    return path


def test_archive_pairs_are_the_significant_ones_with_the_winner_first(tmp_path: Path) -> None:
    from adloop.optimizer.real_pairs import archive_pairs

    pairs = archive_pairs(_write_archive(tmp_path / "ab.parquet"))
    assert [p.chosen.split(": ", 1)[1] for p in pairs] == [
        "Rings made to measure, order today",
        "Save 20% on diamond necklaces now",
        "Luxury earrings, crafted by hand",
    ]
    assert len(archive_pairs(tmp_path / "ab.parquet", limit=2)) == 2
    with pytest.raises(ConfigError, match="gate_real_pairs"):
        archive_pairs(tmp_path / "missing.parquet")


def test_gate_measures_real_pairs_and_refuses_a_version_that_unlearns_them(
    tmp_path: Path, base_dir: Path
) -> None:
    from adloop.optimizer.real_pairs import archive_pairs

    archive = _write_archive(tmp_path / "ab.parquet")
    real = archive_pairs(archive)
    reversed_pairs = [
        PreferencePair(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen) for p in real
    ]
    # One version learns the archive's winners, another its losers.
    training = TrainingConfig(
        sft_steps=0, dpo_steps=15, batch_size=2, learning_rate=1e-2, dpo_beta=0.5, seed=2
    )
    good = train_version(base_dir, tmp_path / "good", pairs=real, config=training)
    bad = train_version(base_dir, tmp_path / "bad", pairs=reversed_pairs, config=training)
    config = RetrainConfig(gate_candidates=0, gate_real_pairs=str(archive))
    recorded = evaluate_gate(bad.model_dir, good.model_dir, [], config=config)
    assert recorded.metrics["real_pairs"] == 3
    assert recorded.metrics["real_accuracy"] < recorded.metrics["current_real_accuracy"]
    assert recorded.passed  # recorded only, by default
    strict = replace(config, real_pairs_tolerance=0.0)
    refused = evaluate_gate(bad.model_dir, good.model_dir, [], config=strict)
    assert not refused.passed
    assert "real A/B pairs" in refused.reasons[0]
    assert evaluate_gate(good.model_dir, bad.model_dir, [], config=strict).passed


def test_a_round_with_scorer_pairs_records_the_scorer_version_it_used(
    store: Store, tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adloop.generators import OutcomeScorerConfig
    from adloop.optimizer.tenant_scorer import fit_tenant_scorer

    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(tmp_path / "cache"))
    for number in range(1, 4):
        campaign_id = f"c_00000000000{number}"
        fill_store(store, campaign_id=campaign_id)
        store.set_campaign_status(campaign_id, "completed")
    fit_tenant_scorer(store, "default", config=OutcomeScorerConfig(blocks=("features",)))
    config = tiny_config(tmp_path, base_dir, accuracy_tolerance=1.0, scorer_pairs=2)
    report = retrain_round(store, config=config)
    record = {v["version"]: v for v in store.model_versions()}[report.version]
    assert record["metrics"]["tenant_scorers"] == {"default": "s0001"}
    # without scorer pairs, no tenant scorer is read
    plain = retrain_round(
        store, config=replace(config, scorer_pairs=0, models_root=str(tmp_path / "p"))
    )
    assert plain.metrics["tenant_scorers"] == {}
