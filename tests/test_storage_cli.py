"""``adloop events import`` end to end: real files, real DuckDB file, the installed CLI app."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from adloop.cli import app
from adloop.storage import Store, UnreadableFileError, read_events_file

TS = datetime(2026, 1, 5, 10, 0, 0)


@pytest.fixture
def campaign_db(db_path: Path) -> Path:
    with Store(db_path) as store:
        store.insert_campaign(
            {"campaign_id": "c_file"}, [{"variant_id": "v_1"}, {"variant_id": "v_2"}]
        )
    return db_path


def frame(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"00{i}" for i in range(n)],  # leading zeros must survive CSV
            "type": ["impression", "click", "conversion"] * (n // 3),
            "campaign_id": ["c_file"] * n,
            "variant_id": ["v_1", "v_2"] * (n // 2),
            "ts": [TS + timedelta(minutes=i) for i in range(n)],
            "value": [0.0, 0.0, 12.5] * (n // 3),
        }
    )


def run(*args: str):
    return CliRunner().invoke(app, ["events", "import", *args])


@pytest.mark.parametrize("kind", ["csv", "parquet", "ndjson"])
def test_import_twice_accepts_zero_the_second_time(tmp_path: Path, campaign_db: Path, kind: str):
    path = tmp_path / f"events.{kind}"
    data = frame()
    if kind == "csv":
        data.write_csv(path)
    elif kind == "parquet":
        data.write_parquet(path)
    else:
        data.write_ndjson(path)
    first = run(str(path), "--db", str(campaign_db), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {"accepted": 6, "duplicates": 0, "rejected": 0, "errors": []}
    second = run(str(path), "--db", str(campaign_db), "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout) == {
        "accepted": 0,
        "duplicates": 6,
        "rejected": 0,
        "errors": [],
    }
    with Store(campaign_db) as store:
        stats = {r["variant_id"]: r for r in store.arm_stats("c_file").to_dicts()}
    assert stats["v_1"]["impressions"] == 1 and stats["v_2"]["clicks"] == 1
    assert stats["v_1"]["value"] + stats["v_2"]["value"] == pytest.approx(25.0)


def test_bad_rows_named_errors_capped_counts_exact(tmp_path: Path, campaign_db: Path):
    lines = ["event_id,type,campaign_id,variant_id,ts,value"]
    lines.append("ok-1,impression,c_file,v_1,2026-01-05 10:00:00,")
    for i in range(150):
        lines.append(f"bad-{i},impression,c_file,v_9,2026-01-05 10:00:00,")
    lines.append("ok-2,conversion,c_file,v_2,2026-01-05T10:00:00Z,abc")
    lines.append("ok-3,conversion,c_file,v_2,not a time,1")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run(str(path), "--db", str(campaign_db), "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert (payload["accepted"], payload["duplicates"], payload["rejected"]) == (1, 0, 152)
    assert len(payload["errors"]) == 100
    assert payload["errors"][0] == {
        "row": 1, "field": "variant_id", "reason": 'unknown variant "v_9" in campaign "c_file"'
    }  # fmt: skip
    assert all(set(error) == {"row", "field", "reason"} for error in payload["errors"])


def test_ndjson_bad_line_is_a_rejected_row(tmp_path: Path, campaign_db: Path):
    good = {
        "event_id": "n1",
        "type": "click",
        "campaign_id": "c_file",
        "variant_id": "v_1",
        "ts": "2026-01-05 10:00:00",
    }
    path = tmp_path / "events.ndjson"
    path.write_text(
        json.dumps(good)
        + "\n{not json\n"
        + json.dumps({**good, "event_id": "n2", "value": "x"})
        + "\n"
    )
    payload = json.loads(run(str(path), "--db", str(campaign_db), "--json").stdout)
    assert payload["accepted"] == 1 and payload["rejected"] == 2
    assert [(e["row"], e["field"]) for e in payload["errors"]] == [(1, "row"), (2, "value")]


def test_unreadable_file_exits_non_zero(tmp_path: Path, campaign_db: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\x00\x01binary junk")
    result = run(str(path), "--db", str(campaign_db), "--json")
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "CSV, Parquet or NDJSON" in result.output
    with pytest.raises(UnreadableFileError):
        read_events_file(tmp_path / "absent.csv")
    missing = run(str(tmp_path / "absent.csv"), "--db", str(campaign_db))
    assert missing.exit_code != 0


def test_human_output(tmp_path: Path, campaign_db: Path):
    path = tmp_path / "events.parquet"
    frame().write_parquet(path)
    result = run(str(path), "--db", str(campaign_db))
    assert result.exit_code == 0
    assert "6 accepted, 0 duplicates, 0 rejected" in result.stdout


def test_csv_lines_with_wrong_field_count_are_rejected_rows(tmp_path: Path, campaign_db: Path):
    path = tmp_path / "events.csv"
    path.write_text(
        "\ufeffevent_id,type,campaign_id,variant_id,ts\n"
        "a1,impression,c_file,v_1,2026-01-05 10:00:00\n"
        "a2,impression,c_file,v_1\n"
        "a3,click,c_file,v_2,2026-01-05 10:00:00,extra\n"
        "a4,click,c_file,v_2,2026-01-05 10:00:01\n"
    )
    payload = json.loads(run(str(path), "--db", str(campaign_db), "--json").stdout)
    assert (payload["accepted"], payload["rejected"]) == (2, 2)
    assert [(e["row"], e["field"]) for e in payload["errors"]] == [(1, "row"), (2, "row")]
    assert "4 fields" in payload["errors"][0]["reason"]
