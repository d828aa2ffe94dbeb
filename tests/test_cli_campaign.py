"""``adloop campaign create/list/show`` and ``adloop demo`` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_service_support import VARIANT_VIEW_FIELDS
from typer.testing import CliRunner

from adloop.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _brief_file(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "brief.yaml"
    brief = {"product": "bespoke engagement rings", "brand": "Aurelle", "language": "en", **extra}
    path.write_text(yaml.safe_dump(brief))
    return path


def test_create_with_listed_variants_then_list_and_show(tmp_path: Path, db_path: Path) -> None:
    brief = _brief_file(
        tmp_path,
        variants=[
            {"text": "Rings made for you"},
            {"headline": "Bespoke rings", "description": "In gold."},
        ],
    )
    created = _run("campaign", "create", "--brief", brief, "--db", db_path, "--json")
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)
    assert body["campaign_id"].startswith("c_")
    assert [v["text"] for v in body["variants"]] == [
        "Rings made for you",
        "Bespoke rings — In gold.",
    ]
    assert all(v["variant_id"].startswith("v_") for v in body["variants"])

    listed = _run("campaign", "list", "--db", db_path, "--json")
    assert listed.exit_code == 0, listed.output
    assert [c["campaign_id"] for c in json.loads(listed.stdout)["campaigns"]] == [
        body["campaign_id"]
    ]

    shown = _run("campaign", "show", body["campaign_id"], "--db", db_path, "--json")
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert view["campaign_id"] == body["campaign_id"] and view["status"] == "active"
    for variant in view["variants"]:
        assert set(variant) >= VARIANT_VIEW_FIELDS
        assert variant["impressions"] == 0
    human = _run("campaign", "show", body["campaign_id"], "--db", db_path)
    assert human.exit_code == 0 and body["campaign_id"] in human.output
    assert "SRM" in human.output


def test_create_generates_from_the_example_brief(db_path: Path) -> None:
    created = _run(
        "campaign",
        "create",
        "--brief",
        REPO / "examples" / "brief_jewelry_en.yaml",
        "--db",
        db_path,
        "--n",
        5,
        "--generators",
        "template",
        "--json",
    )
    assert created.exit_code == 0, created.output
    variants = json.loads(created.stdout)["variants"]
    assert 1 <= len(variants) <= 5
    assert all("Aurelle" in v["text"] for v in variants)  # the brief's required term
    assert all(v["generator"] == "template" for v in variants)


def test_bad_brief_and_unknown_campaign_fail_clearly(tmp_path: Path, db_path: Path) -> None:
    bad = _brief_file(tmp_path, language="fr")
    result = _run("campaign", "create", "--brief", bad, "--db", db_path, "--json")
    assert result.exit_code != 0
    assert "language" in result.output
    missing = _run("campaign", "create", "--brief", tmp_path / "nope.yaml", "--db", db_path)
    assert missing.exit_code != 0 and "does not exist" in missing.output
    unknown = _run("campaign", "show", "c_000000000000", "--db", db_path, "--json")
    assert unknown.exit_code != 0 and "not found" in unknown.output


def test_demo_runs_end_to_end_without_a_language_model(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _run("demo", "--out", out, "--hours", 6, "--impressions-per-hour", 300, "--no-lm")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["impressions"] > 1000
    assert len(summary["lifecycle"]) >= 1  # one retire/refill cycle ran
    assert (out / "report.html").is_file()
    assert "adloop models pull smollm2" in result.output
