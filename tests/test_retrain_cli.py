"""``adloop retrain`` and ``adloop models rollback`` on a real DuckDB file and a tiny model."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from test_retrain import T0, fill_store  # noqa: E402
from test_service_support import reap, terminate  # noqa: E402
from test_training import one_torch_thread, save_tiny_model  # noqa: E402, F401
from typer.testing import CliRunner  # noqa: E402

from adloop.cli import app  # noqa: E402
from adloop.storage import Store  # noqa: E402

CONFIG = """
retraining:
  min_impressions: 500
  min_pair_impressions: 200
  gate_candidates: 2
  gate_briefs: 1
  accuracy_tolerance: 1.0
  training: {sft_steps: 4, dpo_steps: 4, batch_size: 2, learning_rate: 0.01, max_length: 160,
             threads: 1}
"""


def test_retrain_then_rollback(db_path: Path, tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "tiny")
    with Store(db_path, clock=lambda: T0 + timedelta(days=1)) as store:
        fill_store(store)
    config = tmp_path / "retrain.yaml"
    config.write_text(CONFIG)
    runner = CliRunner()
    common = [
        "--db",
        str(db_path),
        "--base",
        str(base),
        "--models-root",
        str(tmp_path / "v"),
        "--config",
        str(config),
    ]

    result = runner.invoke(app, ["retrain", *common, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outcome"] == "promoted" and report["version"] == "v0001"
    assert report["data"]["winners"] == 1 and report["data"]["data_hash"]

    # the progress display (on stderr) names each phase with its steps and loss
    assert "fine-tune (winners)" in result.stderr and "gate (sample, score)" in result.stderr
    assert re.search(r"step (\d+)/\1 +loss \d+\.\d{3}", result.stderr), result.stderr

    result = runner.invoke(app, ["models", "rollback", "--db", str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    rolled = json.loads(result.stdout)
    assert rolled["rolled_back"] == "v0001" and rolled["current"].startswith("base-")
    with Store(db_path) as store:
        assert store.current_model()["path"] == str(base)

    result = runner.invoke(app, ["models", "rollback", "--db", str(db_path)])
    assert result.exit_code == 1
    assert "nothing to roll back" in result.output


def test_retrain_bad_input(db_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    with Store(db_path) as store:
        fill_store(store)
    result = runner.invoke(app, ["retrain", "--db", str(db_path), "--campaign", "c_nope"])
    assert result.exit_code == 1 and "unknown campaign 'c_nope'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("retraining: {min_impresions: 3}\n")
    result = runner.invoke(app, ["retrain", "--db", str(db_path), "--config", str(bad)])
    assert result.exit_code == 1 and "min_impresions" in result.output
    result = runner.invoke(app, ["retrain", "--db", str(db_path), "--base", str(tmp_path / "none")])
    assert result.exit_code == 1 and "adloop models pull smollm2" in result.output


@pytest.mark.slow
def test_scheduler_process_runs_jobs_and_stops_on_sigterm(db_path: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    with Store(db_path) as store:
        fill_store(store)
    config = tmp_path / "scheduler.yaml"
    config.write_text(
        "scheduler:\n  refresh: {every_seconds: 0.5}\n  retire_refill: null\n  retrain: null\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adloop.cli",
            "scheduler",
            "--db",
            str(db_path),
            "--config",
            str(config),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "scheduler running" in line or not line:
                break
        assert any("scheduled refresh" in line for line in lines), lines
        time.sleep(2.0)
        assert terminate(process) == 0
    finally:
        reap(process)
    with Store(db_path) as store:
        runs = store.job_runs("refresh")
    assert len(runs) >= 2 and all(run["outcome"] == "ok" for run in runs)


def _sim_scenario(tmp_path: Path, config: dict) -> Path:
    """A short fixed-variant campaign whose rounds retrain with ``config``."""
    from test_retrain import SIM_SCENARIO

    scenario = {
        **SIM_SCENARIO,
        "generators": {"names": ["template"], "pool_size": 4},
        # enough traffic that round 1 has confident pairs to train on and to hold out
        "traffic": {"hours": 4, "impressions_per_hour": 20000},
        "retraining": {**SIM_SCENARIO["retraining"], "measure_candidates": True, "config": config},
    }
    path = tmp_path / "scenario.yaml"
    path.write_text(json.dumps(scenario))  # JSON is YAML
    return path


def test_sim_run_retrains_with_the_scenarios_settings(tmp_path: Path) -> None:
    """`adloop sim run` takes a round's settings from the scenario's retraining.config, and
    --no-retraining runs the same scenario as the control arm."""
    base = save_tiny_model(tmp_path / "tiny")
    versions = tmp_path / "versions"
    config = {
        "base_model": str(base),
        "models_root": str(versions),
        "min_impressions": 100,
        "min_pair_impressions": 100,
        "winner_threshold": 0.6,
        "accuracy_tolerance": 1.0,
        "gate_candidates": 2,
        "gate_briefs": 1,
        # this test follows the scenario's settings into a promoted version; a tiny model
        # trained at this rate may sample one-word ads, which the gate's own tests cover
        "min_pass_rate_ratio": 0.0,
        "min_distinct_ratio": 0.0,
        "training": {"sft_steps": 3, "dpo_steps": 2, "batch_size": 2, "max_length": 160,
                     "learning_rate": 0.01, "threads": 1},
    }  # fmt: skip
    scenario = _sim_scenario(tmp_path, config)
    runner = CliRunner()
    common = ["sim", "run", "--scenario", str(scenario), "--seed", "3", "--quiet", "--json", "-"]

    result = runner.invoke(app, [*common, "--out", str(tmp_path / "on")])
    assert result.exit_code == 0, result.output
    rounds = json.loads(result.stdout)["retraining_rounds"]
    assert [(r["round"], r["retrained"]) for r in rounds] == [(0, False), (1, True)]
    trained = [r["detail"] for r in rounds if r["detail"].get("version", "").startswith("v0")]
    assert trained, json.dumps(rounds[1]["detail"])
    # The version was written where the scenario said, with the scenario's step counts.
    record = json.loads((versions / trained[0]["version"] / "training.json").read_text())
    assert (record["config"]["sft_steps"], record["config"]["dpo_steps"]) == (3, 2)
    outcome = f"round 1 ({trained[0]['outcome']} {trained[0]['version']}): new candidates'"
    assert outcome in result.stderr

    result = runner.invoke(app, [*common, "--out", str(tmp_path / "off"), "--no-retraining"])
    assert result.exit_code == 0, result.output
    control = json.loads(result.stdout)["retraining_rounds"]
    assert [(r["round"], r["retrained"]) for r in control] == [(0, False), (1, False)]
    assert control[0]["mean_true_ctr"] == rounds[0]["mean_true_ctr"]  # same audience and probe
    assert "round 1 (no retraining)" in result.stderr
    assert len(list(versions.iterdir())) == len(trained)


def test_sim_run_rejects_bad_retraining_settings_before_it_starts(tmp_path: Path) -> None:
    scenario = _sim_scenario(tmp_path, {"min_impresions": 3})
    result = CliRunner().invoke(
        app, ["sim", "run", "--scenario", str(scenario), "--quiet", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "retraining.config" in result.output and "min_impresions" in result.output
    assert not (tmp_path / "o").exists()
