"""Per-tenant outcome scorers on a real DuckDB store: data isolation, versions, explanations.

The seeded market plants one effect: a headline that asks a question gets clearly more clicks
(+0.8 log-odds). Only the interpretable ``features`` block is fitted, so no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adloop.cli import app
from adloop.generators import OutcomeScorerConfig
from adloop.optimizer.errors import CampaignNotFound, InvalidRequest
from adloop.optimizer.tenant_scorer import (
    MANIFEST,
    corpus_arms,
    explain_campaign,
    fit_tenant_scorer,
    load_tenant_scorer,
    share_tenant_data,
    tenant_arms,
    tenant_scorer_versions,
)
from adloop.storage import Store, store_identity

T0 = datetime(2026, 1, 5, 9, 0, 0)
FEATURES = OutcomeScorerConfig(blocks=("features",))
WORDS = ["rings", "gold", "atelier", "bridal", "silver", "design", "handmade", "bespoke"]
QUESTION_LIFT = 0.8
IMPRESSIONS = 3000


def _headline(rng: np.random.Generator, question: bool) -> str:
    words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 4)), replace=False))
    return words.capitalize() + ("?" if question else "")


def _arms(rng: np.random.Generator, lift: float) -> list[tuple[str, str, int, int]]:
    """Four arms, two asking a question; ``lift`` is the log-odds a question adds."""
    base = rng.uniform(-3.2, -2.8)
    arms = []
    for question in (True, False, True, False):
        rate = 1 / (1 + np.exp(-(base + lift * question)))
        clicks = int(rng.binomial(IMPRESSIONS, rate))
        arms.append((_headline(rng, question), "See the collection.", IMPRESSIONS, clicks))
    return arms


def seed(store: Store, tenant: str, campaign_id: str, arms, status: str = "completed") -> None:
    """One campaign of ``tenant`` whose variants were shown and clicked as ``arms`` say."""
    variant_ids = [f"{campaign_id}_v{i}" for i in range(len(arms))]
    store.insert_campaign(
        {"campaign_id": campaign_id, "tenant": tenant, "brief": {"product": "rings"},
         "created_at": T0},
        [{"variant_id": vid, "headline": h, "description": d, "text": f"{h} — {d}",
          "created_at": T0} for vid, (h, d, _, _) in zip(variant_ids, arms, strict=True)],
    )  # fmt: skip
    columns: dict[str, list] = {"event_id": [], "type": [], "variant_id": [], "ts": []}
    for vid, (_, _, shown, clicked) in zip(variant_ids, arms, strict=True):
        for kind, count in (("impression", shown), ("click", clicked)):
            columns["event_id"] += [f"{vid}-{kind}-{i}" for i in range(count)]
            columns["type"] += [kind] * count
            columns["variant_id"] += [vid] * count
            columns["ts"] += [T0 + timedelta(seconds=i % 3600) for i in range(count)]
    frame = pl.DataFrame(columns).with_columns(
        pl.lit(campaign_id).alias("campaign_id"), pl.lit("all").alias("segment")
    )
    assert store.append_events(frame).accepted == frame.height
    if status != "active":
        store.set_campaign_status(campaign_id, status)


def open_store(path: Path) -> Store:
    return Store(path, clock=lambda: T0 + timedelta(days=1))


def seed_market(
    store: Store,
    tenant: str,
    n: int,
    *,
    lift: float = QUESTION_LIFT,
    seed_: int = 0,
    first: int = 0,
) -> list[str]:
    """``n`` completed campaigns of ``tenant`` (numbered from ``first``); returns their ids."""
    rng = np.random.default_rng(seed_)
    ids = [f"c_{tenant}_{i:03d}" for i in range(first, first + n)]
    for campaign_id in ids:
        seed(store, tenant, campaign_id, _arms(rng, lift))
    return ids


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(folder))
    return folder


@pytest.fixture
def market(db_path: Path, model_dir: Path) -> Iterator[tuple[Store, dict[str, list[str]]]]:
    """acme: 8 completed campaigns, one active and one paused; globex: 4 completed ones that
    reward the opposite (plain headlines win)."""
    with open_store(db_path) as store:
        ids = {"acme": seed_market(store, "acme", 8), "globex": []}
        rng = np.random.default_rng(7)
        seed(store, "acme", "c_acme_live", _arms(rng, QUESTION_LIFT), status="active")
        seed(store, "acme", "c_acme_paused", _arms(rng, QUESTION_LIFT), status="paused")
        ids["globex"] = seed_market(store, "globex", 4, lift=-2.0, seed_=1)
        yield store, ids


def test_only_the_tenants_completed_campaigns_are_used(market) -> None:
    store, ids = market
    assert {row.group for row in tenant_arms(store, "acme")} == set(ids["acme"])
    assert len(tenant_arms(store, "acme", statuses=("active",))) == 4

    report = fit_tenant_scorer(store, "acme", config=FEATURES)

    assert report.campaigns == tuple(ids["acme"])
    assert (report.n_arms, report.n_groups, report.pooled_tenants) == (32, 8, ())
    manifest = json.loads((report.path / MANIFEST).read_text())
    assert manifest["campaigns"] == ids["acme"]
    assert manifest["counts"] == {
        "arms": 32, "groups": 8, "own_arms": 32, "pooled_arms": 0, "corpus_arms": 0
    }  # fmt: skip
    assert manifest["pooled_campaigns"] == [] and manifest["corpus"] is None
    assert manifest["config"]["blocks"] == ["features"]


def test_another_tenants_data_never_changes_the_scorer_unless_pooled(market) -> None:
    store, ids = market
    probe = [
        "Bespoke gold rings? — See the collection.",
        "Bespoke gold rings — See the collection.",
    ]
    first = fit_tenant_scorer(store, "acme", config=FEATURES)
    seed_market(store, "globex", 6, lift=-3.0, seed_=2, first=4)  # more of the opposite, elsewhere
    with pytest.raises(InvalidRequest) as refused:
        fit_tenant_scorer(store, "acme", config=FEATURES, pooled_tenants=["globex"])
    assert refused.value.field == "pooled_tenants"
    assert "'globex' has not opted in" in str(refused.value) and "share" in str(refused.value)

    second = fit_tenant_scorer(store, "acme", config=FEATURES)
    before, after = (load_tenant_scorer(store, "acme", v) for v in (first.version, second.version))
    np.testing.assert_allclose(before.scorer.predict(probe), after.scorer.predict(probe))

    share_tenant_data(store, "globex")
    pooled = fit_tenant_scorer(store, "acme", config=FEATURES, pooled_tenants=["globex"])
    manifest = load_tenant_scorer(store, "acme").manifest
    assert pooled.pooled_tenants == ("globex",) and manifest["pooled_tenants"] == ["globex"]
    assert len(manifest["pooled_campaigns"]) == 10 and manifest["counts"]["pooled_arms"] == 40
    assert manifest["campaigns"] == ids["acme"]

    share_tenant_data(store, "globex", opt_in=False)
    with pytest.raises(InvalidRequest, match="globex"):
        fit_tenant_scorer(store, "acme", config=FEATURES, pooled_tenants=["globex"])


def test_versions_increment_and_the_newest_loads_by_default(market) -> None:
    store, ids = market
    assert load_tenant_scorer(store, "acme") is None and tenant_scorer_versions(store, "acme") == []
    first = fit_tenant_scorer(store, "acme", config=FEATURES, clock=lambda: T0)
    second = fit_tenant_scorer(store, "acme", config=FEATURES)

    assert (first.version, second.version) == ("s0001", "s0002")
    assert first.path.parent == second.path.parent
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["s0001", "s0002"]
    manifests = tenant_scorer_versions(store, "acme")
    assert [m["version"] for m in manifests] == ["s0001", "s0002"]
    assert manifests[0]["created_at"] == str(T0) and manifests[0]["tenant"] == "acme"
    assert all(m["campaigns"] == ids["acme"] for m in manifests)
    assert load_tenant_scorer(store, "acme").version == "s0002"
    assert load_tenant_scorer(store, "acme", "s0001").version == "s0001"
    with pytest.raises(InvalidRequest, match="no scorer version 's0009'"):
        load_tenant_scorer(store, "acme", "s0009")
    assert tenant_scorer_versions(store, "globex") == []


def test_two_stores_write_to_different_roots(tmp_path: Path, model_dir: Path) -> None:
    paths = []
    for name in ("one", "two"):
        with open_store(tmp_path / f"{name}.duckdb") as store:
            seed_market(store, "acme", 3)
            report = fit_tenant_scorer(store, "acme", config=FEATURES)
            expected = model_dir / "versions" / store_identity(store) / "scorers" / "acme"
            assert report.path == expected / "s0001"
            paths.append(report.path)
    assert paths[0] != paths[1]


def test_a_planted_effect_is_learnt_and_validated(market) -> None:
    store, _ = market
    report = fit_tenant_scorer(store, "acme", config=FEATURES)
    scorer = load_tenant_scorer(store, "acme").scorer

    asks, plain = scorer.predict(["Silver bridal design?", "Silver bridal design"])
    assert asks - plain > 0.3
    assert scorer.feature_coefficients()["question"] > 0.3
    assert scorer.explain(["Silver bridal design?"], top=1)[0][0]["feature"] == "question"
    assert report.validation["pairs"] >= 10 and report.validation["folds"] == 5
    assert report.validation["pair_accuracy"] > 0.8


def test_explain_gives_top_features_per_variant_and_keeps_tenants_apart(market) -> None:
    store, ids = market
    fit_tenant_scorer(store, "acme", config=FEATURES)

    result = explain_campaign(store, "acme", "c_acme_live", top=2)

    assert (result["campaign_id"], result["version"]) == ("c_acme_live", "s0001")
    assert [row["variant_id"] for row in result["variants"]] == [
        f"c_acme_live_v{i}" for i in range(4)
    ]
    for row in result["variants"]:
        assert len(row["features"]) == 2 and row["text"].endswith("See the collection.")
        assert {"feature", "value", "coefficient", "effect"} <= set(row["features"][0])
    offsets = [row["offset"] for row in result["variants"]]
    assert min(offsets[0], offsets[2]) > max(offsets[1], offsets[3])  # questions first
    with pytest.raises(CampaignNotFound):
        explain_campaign(store, "acme", ids["globex"][0])
    with pytest.raises(InvalidRequest, match="no scorer yet"):
        explain_campaign(store, "globex", ids["globex"][0])


def test_too_little_data_is_a_clear_error(db_path: Path, model_dir: Path) -> None:
    with open_store(db_path) as store:
        seed_market(store, "acme", 2)
        seed(store, "acme", "c_live", _arms(np.random.default_rng(3), 0.0), status="active")
        with pytest.raises(InvalidRequest) as caught:
            fit_tenant_scorer(store, "acme", config=FEATURES)
    assert caught.value.field == "tenant"
    assert "too little data" in str(caught.value) and "corpus" in str(caught.value)
    assert not (model_dir / "versions").exists() or not any((model_dir / "versions").rglob("s0*"))


def write_corpus(path: Path, *, lift: float = QUESTION_LIFT, tests: int = 6) -> Path:
    rng = np.random.default_rng(5)
    rows = []
    for test in range(tests):
        for arm, question in enumerate((True, False, True)):
            rate = 1 / (1 + np.exp(-(-3.5 + lift * question)))
            rows.append({"test_id": f"t{test}", "headline": f"Story {test} {arm}" + "?" * question,
                         "impressions": 4000, "clicks": int(rng.binomial(4000, rate))})  # fmt: skip
    rows.append({"test_id": "t0", "headline": "Barely shown", "impressions": 50, "clicks": 1})
    pl.DataFrame(rows).write_parquet(path)
    return path


def test_a_corpus_adds_tests_and_is_fingerprinted(db_path: Path, tmp_path: Path, model_dir) -> None:
    corpus = write_corpus(tmp_path / "archive.parquet")
    rows = corpus_arms(corpus)
    assert len(rows) == 18 and "Barely shown" not in {row.text for row in rows}
    with open_store(db_path) as store:
        report = fit_tenant_scorer(store, "newcomer", corpus=corpus, config=FEATURES)
        manifest = load_tenant_scorer(store, "newcomer").manifest
    assert report.campaigns == () and report.validation["pair_accuracy"] is None
    assert "validation needs 2" in report.validation["reason"]
    assert manifest["corpus"]["path"] == str(corpus)
    assert len(manifest["corpus"]["fingerprint"]) == 16 and manifest["counts"]["corpus_arms"] == 18
    pl.DataFrame({"test_id": ["t"], "headline": ["x"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InvalidRequest, match=r"lacks the column\(s\) \['impressions', 'clicks'\]"):
        corpus_arms(tmp_path / "bad.parquet")


def test_cli_fit_list_explain(market, db_path: Path) -> None:
    store, ids = market
    store.close()
    runner = CliRunner()
    db = ["--db", str(db_path), "--tenant", "acme"]

    fitted = runner.invoke(app, ["scorer", "fit", *db, "--json"])
    assert fitted.exit_code == 0, fitted.output
    assert json.loads(fitted.stdout)["version"] == "s0001"
    plain = runner.invoke(app, ["scorer", "fit", *db])
    assert plain.exit_code == 0 and "acme s0002: 32 arms in 8 tests" in plain.stdout

    listed = runner.invoke(app, ["scorer", "list", *db, "--json"])
    assert [m["version"] for m in json.loads(listed.stdout)] == ["s0001", "s0002"]
    assert "s0002" in runner.invoke(app, ["scorer", "list", *db]).stdout

    explained = runner.invoke(app, ["scorer", "explain", *db, "--campaign", "c_acme_live",
                                    "--top", "1", "--json"])  # fmt: skip
    assert explained.exit_code == 0, explained.output
    rows = json.loads(explained.stdout)["variants"]
    assert len(rows) == 4 and all(len(row["features"]) == 1 for row in rows)

    other = runner.invoke(app, ["scorer", "explain", *db, "--campaign", ids["globex"][0]])
    assert other.exit_code == 1 and "not found" in other.output
    refused = runner.invoke(app, ["scorer", "fit", *db, "--pool", "globex"])
    assert refused.exit_code == 1 and "has not opted in" in refused.output
    shared = runner.invoke(app, ["scorer", "share", "--db", str(db_path), "--tenant", "globex"])
    assert shared.exit_code == 0
    pooled = runner.invoke(app, ["scorer", "fit", *db, "--pool", "globex", "--json"])
    assert json.loads(pooled.stdout)["pooled_tenants"] == ["globex"]
    bad = runner.invoke(app, ["scorer", "fit", *db, "--blocks", "features,nope"])
    assert bad.exit_code == 1 and "--blocks" in bad.output


def test_a_corpus_of_another_market_is_left_out_when_it_predicts_the_tenant_worse(
    market, tmp_path: Path
) -> None:
    """A big archive whose readers dislike questions would teach acme the opposite of its own
    market: kept only if it predicts acme's campaigns better, and here it does not."""
    store, _ = market
    opposite = write_corpus(tmp_path / "opposite.parquet", lift=-1.5, tests=200)
    dropped = fit_tenant_scorer(store, "acme", corpus=opposite, config=FEATURES)
    manifest = load_tenant_scorer(store, "acme").manifest
    assert manifest["corpus_used"] is False and manifest["counts"]["corpus_arms"] == 0
    assert dropped.validation["pair_accuracy"] > dropped.validation["with_corpus"]["pair_accuracy"]
    asks, states = load_tenant_scorer(store, "acme").scorer.predict(
        ["Bespoke rings?", "Bespoke rings"]
    )
    assert asks > states
    # an archive that agrees with acme's market is kept
    agreeing = write_corpus(tmp_path / "agreeing.parquet")
    fit_tenant_scorer(store, "acme", corpus=agreeing, config=FEATURES)
    assert load_tenant_scorer(store, "acme").manifest["corpus_used"] is True


def test_retraining_adds_pairs_the_tenants_scorer_ranks_apart(market, tmp_path: Path) -> None:
    """A live campaign with too little evidence for a confident pair still teaches the model:
    its tenant's scorer (questions win in acme's market) orders its variants."""
    from adloop.optimizer.retrain import RetrainConfig, build_dataset

    store, _ = market
    fit_tenant_scorer(store, "acme", config=FEATURES)
    brief = {"product": "rings", "brand": "Aurelle", "language": "en",
             "channel": {"name": "search", "headline_max": 30, "description_max": 90}}  # fmt: skip
    # Just launched: no impressions yet, so no confident pair.
    arms = [("Bespoke gold rings?", "See the collection."),
            ("Bespoke gold rings", "See the collection."),
            ("Handmade silver design?", "See the collection."),
            ("Handmade silver design", "See the collection.")]  # fmt: skip
    store.insert_campaign(
        {"campaign_id": "c_acme_brief", "tenant": "acme", "brief": brief, "created_at": T0},
        [{"variant_id": f"b{i}", "headline": h, "description": d, "text": f"{h} — {d}",
          "created_at": T0} for i, (h, d) in enumerate(arms)],
    )  # fmt: skip
    config = RetrainConfig(min_pair_impressions=100, scorer_pairs=2)
    scorer_of = {"acme": load_tenant_scorer(store, "acme").scorer}.get
    data = build_dataset(store, config=config, campaign_ids=["c_acme_brief"], scorer_of=scorer_of)
    scored = [row for row in data.rows if row["kind"] == "scorer_pair"]
    assert len(scored) == 2 and not any(row["heldout"] for row in scored)
    questions = {"b0", "b2"}
    assert all(row["chosen"] in questions and row["rejected"] not in questions for row in scored)
    assert len(data.pairs) == 2 and all("?" in pair.chosen for pair in data.pairs)
    off = build_dataset(store, config=RetrainConfig(min_pair_impressions=100),
                        campaign_ids=["c_acme_brief"], scorer_of=scorer_of)  # fmt: skip
    assert not off.pairs
