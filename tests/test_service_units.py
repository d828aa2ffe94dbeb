"""Pieces of the service without a server: key files, key hashing, Prometheus rendering,
and the events fast path against the request models."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adloop.optimizer.auth import Principal, hash_key, load_keys_file
from adloop.optimizer.errors import HTTPError, InvalidRequest
from adloop.optimizer.http_codec import (
    decode_events,
    events_table,
    fast_events_table,
    parse_body,
    plain_choose,
)
from adloop.optimizer.http_models import ChooseBody, EventsBody
from adloop.optimizer.metrics import Registry


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


# -- the events fast path ---------------------------------------------------------------

# per field: values the models accept, then values they reject (the timestamps the models
# accept include more than plain ISO 8601, and those they reject include some that look valid)
_FIELD_VALUES = {
    "event_id": (["e1", "e2", "x" * 128, " spaced ", "x" * 127 + "\U0001f600"],
                 ["", "x" * 129, 7, None]),
    "type": (["click", "impression", "conversion"], ["Click", "", 1]),
    "campaign_id": (["c1", "c2"], ["", 3.5, None]),
    "variant_id": (["v1", "v-\u4e2d\u6587"], [[], "y" * 129]),
    "ts": (
        ["2026-01-02T03:04:05", "2026-01-02 03:04:05.123456", "2026-01-02T03:04:05Z",
         "2026-01-02T03:04:05+02:00", "2026-01-02T03:04:05-00:00", "0001-01-01T00:00:00",
         "9999-12-31T23:59:59.999999", "2026-01-02T03:04:05.1234567", "2026-01-02T03:04",
         "2026-01-02t03:04:05z", "2026-01-02T03:04:05+0200", "1700000000", None],
        ["2026-01-02", "yesterday", 1700000000, "2026-01-02T03:04:05.123+02",
         "2026-02-30T03:04:05", "2026-01-02T03:04:60", "2026-01-02T24:00:00",
         "0000-01-02T03:04:05"],
    ),
    "decision_id": (["d1", None], ["", 5]),
    "segment": (["mobile", None], ["", True]),
    "value": ([0, 1.5, 1e308, 10**30, -0.0, None], [-1, 1e999, True, "2"]),
    "extra": ([], ["surprise"]),
}  # fmt: skip
_REQUIRED = ("event_id", "type", "campaign_id", "variant_id")


@st.composite
def _event_bodies(draw: st.DrawFn) -> bytes:
    events = []
    for _ in range(draw(st.integers(0, 4))):
        event = {}
        for name, (good, bad) in _FIELD_VALUES.items():
            roll = draw(st.integers(0, 29))
            if roll == 0 and name in _REQUIRED:
                continue  # missing
            if roll == 1 and bad:
                event[name] = draw(st.sampled_from(bad))
            elif good and (name in _REQUIRED or roll < 15):
                event[name] = draw(st.sampled_from(good))
        events.append(event)
    body = {"events": events}
    if draw(st.integers(0, 29)) == 0:
        body["other"] = 1
    raw = json.dumps(body).encode()  # (1e999 is written as Infinity, which JSON lacks)
    return draw(st.sampled_from([raw, raw, raw, raw, b"", b"{", b"[]", b'{"events": {}}']))


def _outcome(call: Callable[[], Any]) -> Any:
    """What a request would get from ``call``: its table, or the error answer's parts."""
    try:
        return call()
    except HTTPError as error:
        return (error.status, error.code, error.message, error.field, error.details)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(_event_bodies())
def test_events_fast_path_accepts_exactly_what_the_models_accept(raw: bytes) -> None:
    # The service decodes plainly valid event bodies with msgspec, without the pydantic models.
    # Both ways: the shortcut accepts a body if and only if the models do, with the same
    # values; and a body it declines gets exactly the models' error answer.
    now = datetime(2026, 3, 1, 12, 0, 0)
    fast = fast_events_table(raw, now)
    try:
        body = EventsBody.model_validate_json(raw)
    except ValidationError:
        assert fast is None, "the fast path accepted a body the models reject"
        assert _outcome(lambda: decode_events(raw, now)) == _outcome(
            lambda: parse_body(raw, EventsBody)
        )
        return
    assert fast is not None, "the fast path declined a body the models accept"
    assert fast.equals(events_table(body.events, now))
    assert decode_events(raw, now).equals(fast)


_CHOOSE_VALUES = {
    "segment": ["mobile", "", "s" * 128, "s" * 129, 3, None],
    "request_id": ["r1", "", None, 7.0],
    "n": [1, 1000, 0, 1001, 2.0, True, "3", None],
    "other": ["x"],
}


@st.composite
def _choose_bodies(draw: st.DrawFn) -> bytes:
    body = {
        name: draw(st.sampled_from(values))
        for name, values in _CHOOSE_VALUES.items()
        if draw(st.integers(0, 9)) < (1 if name == "other" else 5)
    }
    return draw(st.sampled_from([b"", b"  ", json.dumps(body).encode(), b"{", b"[]", b"null"]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_choose_bodies())
def test_choose_fast_path_accepts_exactly_what_the_model_accepts(raw: bytes) -> None:
    fast = plain_choose(raw)
    try:
        body = ChooseBody.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError:
        assert fast is None
        return
    assert fast is not None
    assert (fast.segment, fast.request_id, fast.n) == (body.segment, body.request_id, body.n)
