"""Bring your own model: a generator for any OpenAI-compatible chat-completions endpoint.

Ollama, vLLM, llama.cpp's ``llama-server``, ``transformers serve``, LM Studio and hosted APIs
all answer ``POST <base URL>/chat/completions`` the same way. :class:`OpenAIChatGenerator`
sends them the chat the local language-model generator reads (:func:`build_messages`: the
system message, the brief's :meth:`Brief.prompt` and, when winners are given, example ads)
and parses each answer with :func:`parse_completion`, so copy from a served model goes
through exactly the same parsing, term completion and filters as copy from a local one.

Settings come from the constructor or, when not given there, the environment:

==================  ================================================  ======================
setting             environment (first set wins)                      example
==================  ================================================  ======================
``base_url``        ``ADLOOP_OPENAI_BASE_URL``, ``OPENAI_BASE_URL``   ``http://127.0.0.1:11434/v1``
``model``           ``ADLOOP_OPENAI_MODEL``                           ``qwen2.5:7b-instruct``
``api_key``         ``ADLOOP_OPENAI_API_KEY``, ``OPENAI_API_KEY``     (local servers need none)
==================  ================================================  ======================

Only the standard library speaks HTTP here (``urllib``), so the generator adds no dependency.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from adloop.generators.brief import Brief
from adloop.generators.candidate import Candidate
from adloop.generators.errors import ConfigError, EndpointError
from adloop.generators.filters import candidates_from_drafts
from adloop.generators.lm_prompt import build_messages, few_shot_examples, parse_completion

__all__ = ["BASE_URL_ENV", "API_KEY_ENV", "MODEL_ENV", "OpenAIChatGenerator"]

#: Environment variables each setting is read from when not passed, first set wins.
BASE_URL_ENV = ("ADLOOP_OPENAI_BASE_URL", "OPENAI_BASE_URL")
MODEL_ENV = ("ADLOOP_OPENAI_MODEL",)
API_KEY_ENV = ("ADLOOP_OPENAI_API_KEY", "OPENAI_API_KEY")

# Rate limits and server-side trouble pass; anything else (400, 401, 404...) will not on retry.
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_MAX_WAIT_S = 30.0
# Reasoning models (Qwen3, DeepSeek-R1 via Ollama) may put their thinking in the content.
_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def _from_env(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class OpenAIChatGenerator:
    """Writes ads with a model served behind an OpenAI-compatible chat-completions API.

    Parameters
    ----------
    base_url: the API root, usually ending in ``/v1`` (``http://127.0.0.1:8000/v1``);
        ``/chat/completions`` is appended. Default: ``ADLOOP_OPENAI_BASE_URL``, then
        ``OPENAI_BASE_URL``.
    model: the model name the server knows (default ``ADLOOP_OPENAI_MODEL``).
    api_key: sent as ``Authorization: Bearer ...`` (default ``ADLOOP_OPENAI_API_KEY``, then
        ``OPENAI_API_KEY``; none is sent when unset, as local servers need none).
    temperature, top_p: sampling settings sent with each request.
    max_tokens: most tokens per answer; None picks 96 for English, 160 for Chinese.
    shots: example ads shown in the chat, the ``winners`` given to :meth:`generate` first
        (see :func:`few_shot_examples`); 0 sends the brief alone.
    timeout_s: seconds to wait for one answer.
    max_retries: retries of a request that got 408, 409, 429 or 5xx, or lost its connection,
        waiting ``backoff_s`` x 2^attempt (or the server's ``Retry-After``) in between.
    max_choices_per_request: most answers asked for in one request with ``n``. Servers that
        ignore ``n`` (``transformers serve``, Ollama) answer once; the rest then come from
        one request each, with consecutive seeds.

    Settings are checked at construction (:class:`ConfigError` names the setting, the
    environment variable and an example); failures while writing raise
    :class:`EndpointError` with the URL, the HTTP status and how to fix it. Every candidate
    records ``model_version`` ``openai:<model>@<host>``.

    Example
    -------
    >>> generator = OpenAIChatGenerator(base_url="http://127.0.0.1:11434/v1", model="qwen2.5")
    >>> generator.model_version
    'openai:qwen2.5@127.0.0.1:11434'
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.9,
        top_p: float = 0.95,
        max_tokens: int | None = None,
        shots: int = 2,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_choices_per_request: int = 16,
    ) -> None:
        base_url = (base_url or _from_env(BASE_URL_ENV) or "").strip()
        if not base_url:
            raise ConfigError(
                "OpenAIChatGenerator base_url is not set: pass base_url= or set "
                "ADLOOP_OPENAI_BASE_URL (e.g. http://127.0.0.1:11434/v1 for Ollama, "
                "http://127.0.0.1:8000/v1 for vLLM or transformers serve)"
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"OpenAIChatGenerator base_url must be an http(s) URL with a host, such as "
                f"http://127.0.0.1:8000/v1, got {base_url!r} (from base_url= or "
                "ADLOOP_OPENAI_BASE_URL)"
            )
        model = (model or _from_env(MODEL_ENV) or "").strip()
        if not model:
            raise ConfigError(
                "OpenAIChatGenerator model is not set: pass model= or set ADLOOP_OPENAI_MODEL "
                "to a model the server serves (its GET /v1/models lists them)"
            )
        if not temperature >= 0:
            raise ConfigError(
                f"OpenAIChatGenerator temperature must be >= 0 (e.g. 0.9), got {temperature!r}"
            )
        if not 0 < top_p <= 1:
            raise ConfigError(
                f"OpenAIChatGenerator top_p must be in (0, 1] (e.g. 0.95), got {top_p!r}"
            )
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(
                "OpenAIChatGenerator max_tokens must be >= 1 or None (per language default), "
                f"got {max_tokens!r}"
            )
        if shots < 0:
            raise ConfigError(f"OpenAIChatGenerator shots must be >= 0, got {shots!r}")
        if not timeout_s > 0:
            raise ConfigError(f"OpenAIChatGenerator timeout_s must be > 0, got {timeout_s!r}")
        if max_retries < 0 or not backoff_s >= 0:
            raise ConfigError(
                "OpenAIChatGenerator max_retries and backoff_s must be >= 0, "
                f"got {max_retries!r} and {backoff_s!r}"
            )
        if max_choices_per_request < 1:
            raise ConfigError(
                "OpenAIChatGenerator max_choices_per_request must be >= 1, "
                f"got {max_choices_per_request!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.shots = shots
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_choices_per_request = max_choices_per_request
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.model_version = f"openai:{model}@{host}"
        self._endpoint = f"{self.base_url}/chat/completions"
        self._api_key = (api_key or _from_env(API_KEY_ENV) or "").strip()  # never in repr
        self._honours_n: bool | None = None  # learnt from the first answer to n > 1

    def __repr__(self) -> str:
        return (
            f"OpenAIChatGenerator({self.base_url!r}, model={self.model!r}, "
            f"api_key={'set' if self._api_key else 'unset'}, temperature={self.temperature}, "
            f"top_p={self.top_p}, shots={self.shots})"
        )

    # ------------------------------------------------------------------ generation
    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]:
        """``n`` parsed candidates (some may fail the filters: the pool checks them).

        Each answer is parsed with :func:`parse_completion` and missing required terms are
        added where they fit, as for the local language model. Raises :class:`EndpointError`
        when the server cannot be reached or answers badly; never returns fewer than ``n``.
        """
        if n <= 0:
            return []
        shots = few_shot_examples(brief, winners, n_shots=self.shots, seed=seed)
        answers = self.complete(build_messages(brief, shots), n, seed=seed, brief=brief)
        drafts = [parse_completion(_THINKING.sub("", answer), brief) for answer in answers]
        return candidates_from_drafts(
            drafts, brief, self.name, seed=seed, model_version=self.model_version
        )

    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        n: int,
        *,
        seed: int = 0,
        brief: Brief | None = None,
    ) -> list[str]:
        """``n`` answers (message contents) to ``messages``, seeded; asks with ``n`` where the
        server honours it, else one request per answer with seeds ``seed``, ``seed + 1``, ...
        """
        max_tokens = self.max_tokens or (
            160 if brief is not None and brief.language == "zh" else 96
        )
        answers: list[str] = []
        request_index = 0
        while len(answers) < n:
            wanted = n - len(answers)
            ask = 1 if self._honours_n is False else min(wanted, self.max_choices_per_request)
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": [dict(m) for m in messages],
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_tokens": max_tokens,
                "seed": (int(seed) + request_index) % 2**31,
            }
            if ask > 1:
                payload["n"] = ask
            try:
                contents = self._choices(self._post(payload))
            except EndpointError as exc:
                # Some servers (llama.cpp's) refuse n > 1 outright: ask once per answer.
                if ask > 1 and self._honours_n is None and exc.status in (400, 422):
                    self._honours_n = False
                    continue
                raise
            if ask > 1 and self._honours_n is None:
                self._honours_n = len(contents) >= ask
            answers.extend(contents[:wanted])
            request_index += 1
        return answers

    # ------------------------------------------------------------------ HTTP
    def _post(self, payload: dict[str, Any]) -> Any:
        """The decoded JSON answer to one request, retrying what may pass."""
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self._endpoint, data=body, headers=headers)
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc.read())
                if exc.code not in _RETRY_STATUSES or attempt == self.max_retries:
                    raise self._http_error(exc.code, detail) from None
                retry_after = _seconds(exc.headers.get("Retry-After"))
            except TimeoutError as exc:
                raise EndpointError(
                    self._endpoint,
                    f"no answer within {self.timeout_s:g} s; pass a larger timeout_s or use a "
                    "faster model",
                ) from exc
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, ConnectionRefusedError):
                    raise EndpointError(
                        self._endpoint,
                        "connection refused: no server listens there; start it or point "
                        "ADLOOP_OPENAI_BASE_URL at a running one",
                    ) from exc
                if isinstance(reason, TimeoutError):
                    raise EndpointError(
                        self._endpoint,
                        f"no answer within {self.timeout_s:g} s; pass a larger timeout_s",
                    ) from exc
                if attempt == self.max_retries:
                    raise EndpointError(self._endpoint, f"cannot connect: {reason}") from exc
            except (ConnectionError, http.client.HTTPException) as exc:  # dropped mid-answer
                if attempt == self.max_retries:
                    raise EndpointError(self._endpoint, f"connection lost: {exc!r}") from exc
            else:
                try:
                    return json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise EndpointError(
                        self._endpoint,
                        f"answered with something that is not JSON ({_preview(raw)}); is "
                        "ADLOOP_OPENAI_BASE_URL the API root (usually ending in /v1)?",
                    ) from None
            wait = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            time.sleep(min(wait, _MAX_WAIT_S))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _http_error(self, status: int, detail: str) -> EndpointError:
        hints = {
            401: "the API key was refused; set ADLOOP_OPENAI_API_KEY (or OPENAI_API_KEY) to "
            "a key this server accepts",
            403: "the API key may not use this model; check ADLOOP_OPENAI_API_KEY and "
            "ADLOOP_OPENAI_MODEL",
            404: "no chat-completions endpoint or no such model there; the base URL usually "
            "ends in /v1 and ADLOOP_OPENAI_MODEL must be a model the server lists",
            429: "rate limited on every retry; wait, lower the request rate or raise max_retries",
        }
        hint = hints.get(status, "see the server's message above")
        if status >= 500 and status not in hints:
            hint = "the server failed on every retry; check its log"
        return EndpointError(self._endpoint, f"HTTP {status}: {detail}; {hint}", status=status)

    def _choices(self, data: Any) -> list[str]:
        """The message contents of a chat-completions answer (an absent content reads as '')."""
        if isinstance(data, Mapping) and "error" in data and "choices" not in data:
            raise EndpointError(self._endpoint, f"answered with an error: {data['error']}")
        choices = data.get("choices") if isinstance(data, Mapping) else None
        if not isinstance(choices, list) or not choices:
            raise EndpointError(
                self._endpoint,
                f"answer has no choices ({_preview(json.dumps(data).encode())}); is this an "
                "OpenAI-compatible chat-completions API?",
            )
        contents = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if not isinstance(message, Mapping):
                raise EndpointError(self._endpoint, f"a choice has no message: {choice!r}")
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, Mapping)
                )
            contents.append(content if isinstance(content, str) else "")
        return contents


def _error_detail(raw: bytes) -> str:
    """The server's own error message from an error body (OpenAI's ``{"error": {...}}``,
    FastAPI's ``{"detail": ...}``), else the start of the body."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _preview(raw)
    if isinstance(data, Mapping):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, Mapping) and "message" in error:
            return str(error["message"])
        return str(error)[:300]
    return _preview(raw)


def _preview(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text[:200] + ("..." if len(text) > 200 else "")) if text else "an empty body"


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff
