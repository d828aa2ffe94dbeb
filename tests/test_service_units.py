"""Pieces of the service without a server: key files, key hashing, Prometheus rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.auth import Principal, hash_key, load_keys_file
from optimizer.errors import InvalidRequest
from optimizer.metrics import Registry


def test_keys_file_accepts_cli_json_and_plain_lines(tmp_path: Path) -> None:
    as_json = tmp_path / "keys.json"
    as_json.write_text(
        json.dumps(
            [{"tenant": "acme", "api_key": "k1"}, {"tenant": "ops", "api_key": "k2", "admin": True}]
        )
    )
    assert load_keys_file(as_json) == [("k1", Principal("acme")), ("k2", Principal("ops", True))]
    lines = tmp_path / "keys.txt"
    lines.write_text("# key tenant [admin]\nk3 globex\n\nk4 ops admin  # the operator\n")
    assert load_keys_file(lines) == [("k3", Principal("globex")), ("k4", Principal("ops", True))]
    bad = tmp_path / "bad.txt"
    bad.write_text("k5 acme superuser\n")
    with pytest.raises(InvalidRequest, match="bad.txt:1"):
        load_keys_file(bad)
    bad.write_text("k6 'not a tenant'\n")
    with pytest.raises(InvalidRequest):
        load_keys_file(bad)


def test_keys_are_hashed_with_sha256() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_prometheus_text_format() -> None:
    registry = Registry()
    hits = registry.counter("adloop_hits_total", "Hits.", ("route",))
    hits.inc(route="/a")
    hits.inc(2, route="/a")
    latency = registry.histogram("adloop_seconds", "Latency.", ("route",), buckets=(0.01, 0.1))
    latency.observe(0.005, route="/a")
    latency.observe(0.05, route="/a")
    latency.observe(5.0, route="/a")
    registry.gauge("adloop_depth", "Depth.", lambda: 4)
    text = registry.render()
    assert "# TYPE adloop_hits_total counter" in text
    assert 'adloop_hits_total{route="/a"} 3' in text
    assert 'adloop_seconds_bucket{route="/a",le="0.01"} 1' in text
    assert 'adloop_seconds_bucket{route="/a",le="0.1"} 2' in text
    assert 'adloop_seconds_bucket{route="/a",le="+Inf"} 3' in text
    assert 'adloop_seconds_count{route="/a"} 3' in text
    assert "adloop_depth 4" in text
    assert latency.count(route="/a") == 3
