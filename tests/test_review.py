"""Review before serving: generated variants wait as pending until a person approves them.

Against a real uvicorn server, the real CLI on a DuckDB file, and (for missing optional
packages) a real subprocess whose only fake is an import hook that hides ``transformers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml
from test_service_support import ThreadServer
from typer.testing import CliRunner

from adloop.cli import app as cli_app
from adloop.generators import GenerationFailedError, GeneratorPool
from adloop.optimizer import Engine, NoActiveVariants
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app
from adloop.storage import Store

BRIEF = {
    "product": "handmade leather boots",
    "brand": "Cordwain",
    "language": "en",
    "keywords": ["leather boots", "resoled for life"],
    "call_to_action": "Shop now",
}
runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path):
    engine = Engine(tmp_path / "adloop.duckdb", pool=GeneratorPool(["template"]))
    keys = {
        "acme": create_key(engine.store, tenant="acme"),
        "globex": create_key(engine.store, tenant="globex"),
    }
    with ThreadServer(create_app(engine, close_engine=True)) as server:
        yield server.url, keys


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_pending_variants_never_serve_until_approved(service) -> None:
    url, keys = service
    with _client(url, keys["acme"]) as http, _client(url, keys["globex"]) as other:
        created = http.post("/v1/campaigns", json={"brief": BRIEF, "n_candidates": 3})
        assert created.status_code == 201, created.text
        campaign = created.json()
        campaign_id = campaign["campaign_id"]
        ids = [v["variant_id"] for v in campaign["variants"]]
        assert len(ids) == 3 and {v["status"] for v in campaign["variants"]} == {"pending"}
        assert campaign["auto_approve"] is False and campaign["reviews"] == []

        choose = f"/v1/campaigns/{campaign_id}/choose"
        refused = http.post(choose, json={})
        assert refused.status_code == 409
        assert refused.json()["error"] == "no_active_variants"
        assert "await review" in refused.json()["message"]
        assert "/approve" in refused.json()["message"]
        assert http.post(choose, json={"n": 5}).status_code == 409

        # Another tenant can neither see nor review the campaign.
        review = f"/v1/campaigns/{campaign_id}/variants"
        assert other.post(f"{review}/{ids[0]}/approve").status_code == 404

        approved = http.post(f"{review}/{ids[0]}/approve", json={"note": "on brand"})
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["status"] == "active" and body["review"]["action"] == "approve"
        assert body["review"]["by"].startswith("acme (key ")
        assert body["review"]["note"] == "on brand" and body["review"]["at"]

        rejected = http.post(f"{review}/{ids[1]}/reject")  # no body: the note is optional
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["status"] == "rejected"

        served = {http.post(choose, json={}).json()["variant_id"] for _ in range(40)}
        batch = http.post(choose, json={"n": 200}).json()["decisions"]
        assert served == {ids[0]} and {d["variant_id"] for d in batch} == {ids[0]}

        # Wrong transitions and unknown variants are answered, not guessed.
        again = http.post(f"{review}/{ids[0]}/reject")
        assert again.status_code == 409 and again.json()["error"] == "review_conflict"
        assert http.post(f"{review}/v_nope/approve").status_code == 404
        too_long = http.post(f"{review}/{ids[2]}/approve", json={"note": "x" * 2001})
        assert too_long.status_code == 422

        view = http.get(f"/v1/campaigns/{campaign_id}").json()
        statuses = {v["variant_id"]: v["status"] for v in view["variants"]}
        assert statuses == {ids[0]: "active", ids[1]: "rejected", ids[2]: "pending"}
        assert [(r["variant_id"], r["action"], r["note"]) for r in view["reviews"]] == [
            (ids[0], "approve", "on brand"),
            (ids[1], "reject", None),
        ]
        by_id = {v["variant_id"]: v for v in view["variants"]}
        assert by_id[ids[0]]["review"]["by"] == body["review"]["by"]
        assert by_id[ids[2]]["review"] is None
        listed = http.get("/v1/campaigns").json()["campaigns"]
        summary = next(c for c in listed if c["campaign_id"] == campaign_id)
        assert summary["n_active"] == 1 and summary["n_pending"] == 1


def test_listed_variants_serve_and_auto_approve_skips_review(service) -> None:
    url, keys = service
    with _client(url, keys["acme"]) as http:
        listed = http.post(
            "/v1/campaigns", json={"brief": BRIEF, "variants": [{"text": "Rings made for you"}]}
        ).json()
        assert [v["status"] for v in listed["variants"]] == ["active"]
        choose = http.post(f"/v1/campaigns/{listed['campaign_id']}/choose", json={})
        assert choose.status_code == 200

        auto = http.post(
            "/v1/campaigns", json={"brief": BRIEF, "n_candidates": 2, "auto_approve": True}
        ).json()
        assert auto["auto_approve"] is True
        assert {v["status"] for v in auto["variants"]} == {"active"}
        added = http.post(f"/v1/campaigns/{auto['campaign_id']}/variants", json={"n": 1})
        assert {v["status"] for v in added.json()["added"]} == {"active"}

        # Generated additions to a reviewed campaign wait for review too.
        added = http.post(f"/v1/campaigns/{listed['campaign_id']}/variants", json={"n": 2})
        assert added.status_code == 201, added.text
        new_ids = {v["variant_id"] for v in added.json()["added"]}
        assert new_ids and {v["status"] for v in added.json()["added"]} == {"pending"}
        choose = f"/v1/campaigns/{listed['campaign_id']}/choose"
        served = {d["variant_id"] for d in http.post(choose, json={"n": 300}).json()["decisions"]}
        assert not served & new_ids


def test_engine_refuses_pending_only_campaigns_and_refill_waits_for_review(tmp_path: Path) -> None:
    with Engine(tmp_path / "a.duckdb", pool=GeneratorPool(["template"]), seed=3) as engine:
        campaign_id = engine.create_campaign(BRIEF, n_candidates=3)["campaign_id"]
        with pytest.raises(NoActiveVariants, match="await review"):
            engine.choose(campaign_id)
        # Pending variants count toward the pool: a refill writes nothing more to review.
        assert engine.retire_and_refill(campaign_id)["added"] == []


def _cli(*args: object):
    return runner.invoke(cli_app, [str(a) for a in args])


def test_cli_lists_approves_and_rejects_on_a_duckdb_file(tmp_path: Path) -> None:
    db = tmp_path / "adloop.duckdb"
    brief = tmp_path / "brief.yaml"
    brief.write_text(yaml.safe_dump(BRIEF))
    created = _cli(
        "campaign", "create", "--brief", brief, "--db", db, "--n", 3, "--generators", "template",
        "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.stdout)["campaign_id"]

    pending = _cli("variants", "list", campaign_id, "--db", db, "--status", "pending", "--json")
    assert pending.exit_code == 0, pending.output
    ids = [v["variant_id"] for v in json.loads(pending.stdout)["variants"]]
    assert len(ids) == 3

    approved = _cli("variants", "approve", campaign_id, ids[0], "--db", db, "--note", "good")
    assert approved.exit_code == 0, approved.output
    assert f"{ids[0]} is active (approved by cli:" in approved.stdout
    rejected = _cli("variants", "reject", campaign_id, ids[1], "--db", db, "--by", "ana")
    assert rejected.exit_code == 0 and "rejected by ana" in rejected.stdout
    conflict = _cli("variants", "reject", campaign_id, ids[0], "--db", db)
    assert conflict.exit_code == 1 and "is active" in conflict.stderr
    missing = _cli("variants", "approve", "c_nope", ids[0], "--db", db)
    assert missing.exit_code == 1 and "not found" in missing.stderr

    still = _cli("variants", "list", campaign_id, "--db", db, "--status", "pending", "--json")
    assert [v["variant_id"] for v in json.loads(still.stdout)["variants"]] == [ids[2]]
    shown = _cli("campaign", "show", campaign_id, "--db", db, "--json")
    reviews = json.loads(shown.stdout)["reviews"]
    assert [(r["variant_id"], r["action"], r["note"]) for r in reviews] == [
        (ids[0], "approve", "good"),
        (ids[1], "reject", None),
    ]
    assert reviews[0]["by"].startswith("cli:") and reviews[1]["by"] == "ana"
    table = _cli("campaign", "show", campaign_id, "--db", db)
    assert (
        f"approved {ids[0]} by cli:" in table.stdout and f"rejected {ids[1]} by ana" in table.stdout
    )

    # The review is a stored fact: the file has it after the engine is gone.
    with Store(db) as store:
        assert [r["action"] for r in store.variant_reviews(campaign_id)] == ["approve", "reject"]
        assert [v["variant_id"] for v in store.variants(campaign_id, ("active",))] == [ids[0]]


def test_brief_file_may_auto_approve(tmp_path: Path) -> None:
    brief = tmp_path / "brief.yaml"
    brief.write_text(yaml.safe_dump({**BRIEF, "auto_approve": True}))
    created = _cli(
        "campaign", "create", "--brief", brief, "--db", tmp_path / "a.duckdb", "--n", 2,
        "--generators", "template", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert {v["status"] for v in json.loads(created.stdout)["variants"]} == {"active"}


# -- item 7: a generator that cannot run is an error, not an empty list ---------------------

_HIDE_TRANSFORMERS = textwrap.dedent(
    """
    import sys

    class HideTransformers:
        def find_spec(self, name, path=None, target=None):
            if name == "transformers" or name.startswith("transformers."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideTransformers())
    from adloop.cli import main
    sys.argv = ["adloop", *sys.argv[1:]]
    main()
    """
)


def _fake_model_dir(tmp_path: Path) -> Path:
    """A directory that passes the cheap model check (config + a weight file); never loaded."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"")
    return model


def _adloop_without_transformers(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADLOOP_MODEL_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", _HIDE_TRANSFORMERS, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_generate_lm_without_transformers_names_the_package(tmp_path: Path) -> None:
    brief = Path(__file__).resolve().parent.parent / "examples" / "brief_jewelry_en.yaml"
    model = _fake_model_dir(tmp_path)
    asked = _adloop_without_transformers(
        tmp_path, "generate", "--brief", str(brief), "--generators", "lm", "--model", str(model),
        "--json",
    )  # fmt: skip
    assert asked.returncode == 1, asked.stdout + asked.stderr
    assert asked.stdout == ""  # no empty list pretending to be a result
    assert "'transformers'" in asked.stderr and "pip install 'adloop[lm]'" in asked.stderr

    # Left to pick its own generators, the pool goes on without the LM and says why.
    default = _adloop_without_transformers(
        tmp_path, "generate", "--brief", str(brief), "--model", str(model), "--n", "2", "--json"
    )
    assert default.returncode == 0, default.stderr
    assert len(json.loads(default.stdout)) == 2
    assert "pip install 'adloop[lm]'" in default.stderr


class _BrokenGenerator:
    name = "broken"

    def generate(self, brief, n, *, seed=0, winners=()):
        raise RuntimeError("out of paper")


def test_a_failing_generator_is_an_error_naming_it() -> None:
    pool = GeneratorPool(["template", _BrokenGenerator()])
    with pytest.raises(GenerationFailedError, match="broken generator failed.*out of paper"):
        pool.generate(BRIEF, 4, seed=0)
