"""Bring your own model: the OpenAI-compatible chat generator against a real ``transformers
serve`` process serving a tiny model built here, the brief's generator mix, and (against a
small stub server) the error edges a real server will not produce on demand: a refused key,
rate limits, a body that is not JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_generators_lm import CHAT_TEMPLATE, CORPUS
from test_service_support import free_port
from typer.testing import CliRunner

from adloop.cli import app
from adloop.generators import (
    DROP_REASONS,
    BriefError,
    ConfigError,
    EndpointError,
    GenerationFailedError,
    GeneratorPool,
    OpenAIChatGenerator,
    load_brief,
    parse_completion,
)
from adloop.generators.filters import complete_required_terms
from adloop.generators.lm_prompt import build_messages, few_shot_examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV_NAMES = (
    "ADLOOP_OPENAI_BASE_URL",
    "ADLOOP_OPENAI_MODEL",
    "ADLOOP_OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)
runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No endpoint settings leak in from the machine, and no local model is installed."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(tmp_path / "no-models"))


@pytest.fixture
def brief_en():
    return load_brief(EXAMPLES / "brief_jewelry_en.yaml")


def with_mix(brief, generators: Any):
    """``brief`` with its ``generators`` mix set (checked as a brief file's would be)."""
    return load_brief({**brief.model_dump(), "generators": generators})


# ---------------------------------------------------------------------------- the real server
def _serve_available() -> str:
    """Why ``transformers serve`` cannot run here ('' when it can)."""
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (pip install -e '.[lm]')"
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        return "transformers serve needs the 'openai' package (pip install -e '.[dev]')"
    return ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``transformers serve`` in a child process on 127.0.0.1, serving a tiny random Llama from
    a local directory; yields its base URL and model name, and stops it by PID afterwards."""
    reason = _serve_available()
    if reason:
        pytest.skip(reason)
    from tiny_llama import build_tiny_llama

    model_dir = tmp_path_factory.mktemp("served-llama")
    model, tokenizer = build_tiny_llama(
        CORPUS * 3,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
        vocab_size=400,
        max_position_embeddings=2048,  # few-shot prompts run to ~450 tokens of this vocabulary
        tie_word_embeddings=True,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    # transformers serve samples only when the model's generation config says so.
    model.generation_config.do_sample = True
    tokenizer.save_pretrained(model_dir)
    model.save_pretrained(model_dir)

    port = free_port()
    log_path = model_dir.parent / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Importing torch twice (server and model process) takes a while on a busy machine.
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"transformers serve exited with {process.returncode}:\n{_tail(log_path)}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer in 300 s:\n{_tail(log_path)}")
            time.sleep(0.2)
        yield {
            "base_url": f"http://127.0.0.1:{port}/v1",
            "model": str(model_dir),
            "port": str(port),
        }
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server stops its model process itself), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-3000:]


def test_pool_writes_parsed_filter_checked_candidates_with_the_served_model(
    served: dict[str, str], brief_en
) -> None:
    options = {"base_url": served["base_url"], "model": served["model"], "max_tokens": 24}
    pool = GeneratorPool(["openai"], openai_options=options)
    result = pool.generate(brief_en, 3, seed=1, budget=6)
    assert result.requested == {"openai": 6}
    written = result.candidates + [candidate for candidate, _ in result.dropped]
    assert len(written) == 6  # every answer came back and went through the filters
    for candidate in written:
        assert candidate.generator == "openai"
        assert candidate.model_version == f"openai:{served['model']}@127.0.0.1:{served['port']}"
        assert candidate.prompt_hash == brief_en.prompt_hash()
        assert "\n" not in candidate.headline and "\n" not in candidate.description
    # A random model writes nonsense: it is dropped with reasons, never silently.
    assert {reason for _, reason in result.dropped} <= set(DROP_REASONS)
    if len(result.candidates) < 3:
        assert any("passed the filters" in note for note in result.notes)


def test_answers_are_parsed_like_the_local_model_and_seeded(
    served: dict[str, str], brief_en
) -> None:
    """The server ignores ``n`` (one choice per request), so three answers take three
    requests; the same seed gives the same answers, parsed exactly as the LM generator does."""
    generator = OpenAIChatGenerator(served["base_url"], served["model"], max_tokens=16)
    messages = build_messages(brief_en, few_shot_examples(brief_en, n_shots=2, seed=4))
    answers = generator.complete(messages, 3, seed=4, brief=brief_en)
    assert len(answers) == 3 and len(set(answers)) > 1  # consecutive seeds per request
    assert generator.complete(messages, 3, seed=4, brief=brief_en) == answers
    candidates = generator.generate(brief_en, 3, seed=4)

    def parsed(answer: str) -> tuple[str, str]:
        headline, description = parse_completion(answer, brief_en)
        if not headline:
            return headline, description
        return complete_required_terms(headline, description, brief_en)

    assert [(c.headline, c.description) for c in candidates] == [parsed(a) for a in answers]
    assert all(c.seed == 4 for c in candidates)


def test_settings_come_from_the_environment(
    served: dict[str, str], brief_en, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # the standard name...
    monkeypatch.setenv("ADLOOP_OPENAI_BASE_URL", served["base_url"])  # ...loses to adloop's
    monkeypatch.setenv("ADLOOP_OPENAI_MODEL", served["model"])
    generator = OpenAIChatGenerator(max_tokens=8)
    assert generator.base_url == served["base_url"] and generator.model == served["model"]
    assert len(generator.generate(brief_en, 2, seed=0)) == 2
    # `adloop generate --generators openai` reads the same settings; the tiny model's copy
    # reaches the filters, which drop it, and the command says so.
    result = runner.invoke(
        app,
        ["generate", "--brief", str(EXAMPLES / "brief_jewelry_en.yaml"), "--n", "1"]
        + ["--generators", "openai"],
    )
    assert "dropped" in result.stderr
    if result.exit_code:
        assert "no candidate passed the brief's filters" in result.stderr


def test_a_brief_picks_its_generator_mix(
    served: dict[str, str], brief_en, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADLOOP_OPENAI_BASE_URL", served["base_url"])
    monkeypatch.setenv("ADLOOP_OPENAI_MODEL", served["model"])
    mixed = with_mix(brief_en, {"template": 1, "openai": 1})
    pool = GeneratorPool(openai_options={"max_tokens": 8})  # the caller names no generators
    result = pool.generate(mixed, 6, seed=2)
    assert set(result.requested) == {"template", "openai"} and result.requested["openai"] > 0
    assert len(result.candidates) == 6  # the template grammar fills what the model cannot
    # Generators the caller names win over the brief's mix.
    assert set(GeneratorPool(["template"]).generate(mixed, 3, seed=2).requested) == {"template"}
    # A share of 0 turns one off.
    off = with_mix(brief_en, {"template": 1, "openai": 0})
    assert set(pool.generate(off, 3, seed=2).requested) == {"template"}
    # And `adloop generate` without --generators honours a brief file's mix.
    data = brief_en.model_dump()
    data["generators"] = ["template", "openai"]
    path = Path(served["model"]).parent / "mixed.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    cli = runner.invoke(app, ["generate", "--brief", str(path), "--n", "2", "--json"])
    assert cli.exit_code == 0, cli.output
    assert len(json.loads(cli.stdout)) == 2
    # The brief's mix, not the pool's default (which notes the missing local model).
    assert "no language model installed" not in cli.stderr


# ---------------------------------------------------------------------------- settings
def test_missing_or_bad_settings_name_the_setting_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, brief_en
) -> None:
    with pytest.raises(ConfigError, match="ADLOOP_OPENAI_BASE_URL"):
        OpenAIChatGenerator(model="m")
    with pytest.raises(ConfigError, match="ADLOOP_OPENAI_MODEL"):
        OpenAIChatGenerator(base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="http"):
        OpenAIChatGenerator(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ConfigError, match="top_p"):
        OpenAIChatGenerator(base_url="http://127.0.0.1:8000/v1", model="m", top_p=0)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://models.internal:8000/v1/")
    monkeypatch.setenv("ADLOOP_OPENAI_MODEL", "qwen2.5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    generator = OpenAIChatGenerator()
    assert generator.base_url == "http://models.internal:8000/v1"
    assert generator.model_version == "openai:qwen2.5@models.internal:8000"
    assert "sk-secret" not in repr(generator) and "api_key=set" in repr(generator)
    # Named without settings, the pool and the CLI fail at once, naming the variable.
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="ADLOOP_OPENAI_BASE_URL"):
        GeneratorPool(["openai"])
    result = runner.invoke(
        app,
        ["generate", "--brief", str(EXAMPLES / "brief_jewelry_en.yaml"), "--generators", "openai"],
    )
    assert result.exit_code == 1 and "ADLOOP_OPENAI_BASE_URL" in result.stderr


def test_the_brief_mix_is_checked_and_named(brief_en) -> None:
    with pytest.raises(BriefError) as error:
        load_brief({"product": "rings", "language": "en", "generators": ["template", "gpt"]})
    assert error.value.field == "generators"
    assert "'gpt'" in str(error.value) and "openai" in str(error.value)
    for bad in ({"template": -1}, ["lm", "lm"], {"template": 0}, [3]):
        with pytest.raises(BriefError) as error:
            load_brief({"product": "rings", "language": "en", "generators": bad})
        assert error.value.field == "generators"
    forms = (
        "template, openai",
        ["template", {"openai": 2}],
        {"template": 1, "openai": 2},
        [{"name": "template"}, {"name": "openai", "share": 2}],
    )
    briefs = [load_brief({"product": "rings", "language": "en", "generators": f}) for f in forms]
    shares = [{g.name: g.share for g in brief.generators} for brief in briefs]
    assert shares[0] == {"template": 1.0, "openai": 1.0}
    assert shares[1] == shares[2] == shares[3] == {"template": 1.0, "openai": 2.0}
    assert load_brief(briefs[1].model_dump()) == briefs[1]  # stored briefs load back
    assert briefs[1].prompt() == load_brief({"product": "rings", "language": "en"}).prompt()


def test_a_brief_mix_naming_openai_without_settings_fails_clearly(brief_en) -> None:
    mixed = with_mix(brief_en, ["openai"])
    with pytest.raises(ConfigError, match="ADLOOP_OPENAI_BASE_URL"):
        GeneratorPool().generate(mixed, 2)


# ---------------------------------------------------------------------------- error edges
def test_a_dead_port_is_connection_refused_with_the_fix(brief_en) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    generator = OpenAIChatGenerator(base_url, "m", backoff_s=0)
    with pytest.raises(EndpointError, match="connection refused") as error:
        generator.generate(brief_en, 2)
    assert error.value.url == f"{base_url}/chat/completions" and error.value.status is None
    assert "ADLOOP_OPENAI_BASE_URL" in str(error.value)
    pool = GeneratorPool(
        ["template", "openai"], openai_options={"base_url": base_url, "model": "m"}
    )
    with pytest.raises(GenerationFailedError, match="openai generator failed"):
        pool.generate(brief_en, 4)


class StubServer:
    """A tiny OpenAI-style endpoint on 127.0.0.1 that answers from a script, for the error
    edges (a real server will not refuse a key or rate-limit on demand). Records requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"headers": dict(self.headers), "body": body})
                status, headers, payload = stub.script.pop(0) if stub.script else stub.answer(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def answer(body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """A well-formed answer honouring ``n``."""
        content = "Headline: Aurelle Bespoke Rings\nDescription: Made to measure in Paris."
        choices = [
            {"index": i, "message": {"role": "assistant", "content": content}}
            for i in range(body.get("n", 1))
        ]
        return 200, {"Content-Type": "application/json"}, json.dumps({"choices": choices}).encode()

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _error(status: int, message: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return status, {"Content-Type": "application/json", **headers}, body.encode()


def test_a_refused_key_says_which_setting_to_fix(brief_en) -> None:
    with StubServer([_error(401, "Incorrect API key provided")]) as stub:
        generator = OpenAIChatGenerator(stub.base_url, "m", api_key="sk-wrong")
        with pytest.raises(EndpointError) as error:
            generator.generate(brief_en, 2)
    assert error.value.status == 401 and len(stub.requests) == 1  # a 401 is not retried
    assert "Incorrect API key provided" in str(error.value)
    assert "ADLOOP_OPENAI_API_KEY" in str(error.value) and "sk-wrong" not in str(error.value)
    assert stub.requests[0]["headers"]["Authorization"] == "Bearer sk-wrong"


def test_rate_limits_and_server_errors_are_retried_then_reported(brief_en) -> None:
    script = [_error(429, "slow down", **{"Retry-After": "0"}), _error(503, "warming up")]
    with StubServer(script) as stub:
        generator = OpenAIChatGenerator(stub.base_url, "m", backoff_s=0, shots=0)
        candidates = generator.generate(brief_en, 3, seed=9)
        assert len(stub.requests) == 3  # two refused, then one answer with all three choices
        assert stub.requests[-1]["body"]["n"] == 3 and stub.requests[-1]["body"]["seed"] == 9
        assert "Authorization" not in stub.requests[-1]["headers"]  # no key: none sent
    assert [c.headline for c in candidates] == ["Aurelle Bespoke Rings"] * 3
    assert candidates[0].description == "Made to measure in Paris."
    with StubServer([_error(500, "boom")] * 3) as stub:
        generator = OpenAIChatGenerator(stub.base_url, "m", max_retries=2, backoff_s=0)
        with pytest.raises(EndpointError, match="HTTP 500: boom") as error:
            generator.generate(brief_en, 1)
        assert len(stub.requests) == 3 and error.value.status == 500


def test_bad_answers_are_errors_never_an_empty_result(brief_en) -> None:
    not_json = (200, {"Content-Type": "text/html"}, b"<html>Ollama is running</html>")
    no_choices = (200, {"Content-Type": "application/json"}, b'{"choices": []}')
    for answer, message in ((not_json, "not JSON"), (no_choices, "no choices")):
        with StubServer([answer]) as stub:
            generator = OpenAIChatGenerator(stub.base_url, "m")
            with pytest.raises(EndpointError, match=message):
                generator.generate(brief_en, 2)


def test_a_server_that_refuses_n_is_asked_once_per_answer(brief_en) -> None:
    """llama.cpp's server answers 400 to ``n`` > 1: the generator then asks one at a time."""
    with StubServer([_error(400, "Only one completion choice is allowed")]) as stub:
        generator = OpenAIChatGenerator(stub.base_url, "m", shots=0)
        assert len(generator.generate(brief_en, 3, seed=5)) == 3
        bodies = [request["body"] for request in stub.requests]
    assert [body.get("n") for body in bodies] == [3, None, None, None]
    assert [body["seed"] for body in bodies[1:]] == [5, 6, 7]


def test_a_campaign_brief_keeps_its_mix(
    served: dict[str, str], brief_en, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The engine's own pool writes a campaign's copy with the generators its brief names."""
    from adloop.optimizer.engine import Engine
    from adloop.optimizer.errors import OptimizerError

    monkeypatch.setenv("ADLOOP_OPENAI_BASE_URL", served["base_url"])
    monkeypatch.setenv("ADLOOP_OPENAI_MODEL", served["model"])
    brief = brief_en.model_dump(mode="json")
    with Engine(tmp_path / "mix.duckdb", seed=1) as engine:
        # The served model alone: its nonsense is all dropped (the default pool's templates
        # would have filled the campaign), so creation fails naming the drops.
        with pytest.raises(OptimizerError, match="no valid candidate"):
            engine.create_campaign({**brief, "generators": ["openai"]}, n_candidates=2)
        view = engine.create_campaign(
            {**brief, "generators": {"template": 1, "openai": 1}}, n_candidates=4
        )
        stored = load_brief(engine.store.campaign(view["campaign_id"])["brief"])
    assert {g.name: g.share for g in stored.generators} == {"template": 1.0, "openai": 1.0}
    assert len(view["variants"]) == 4
