"""Errors raised by the generators package.

Hierarchy::

    GeneratorError                 base class; catch this to handle any generator failure
    ├── BriefError                 a brief lacks a field or has a bad value (``.field`` names it)
    ├── ConfigError                a setting or argument (generator, pool, filter, scorer) is out
    │                              of range; also a ``ValueError``
    ├── EndpointError              an OpenAI-compatible model server could not be reached or
    │                              answered badly (refused, 401, 5xx, not JSON); names the URL
    ├── GenerationFailedError      a generator raised while writing; names the generator
    ├── MissingDependencyError     an optional package (transformers, torch, peft) is not
    │                              installed; says which and how to install it; also an
    │                              ``ImportError``
    ├── ModelNotFoundError         a model directory is missing or is not a causal language model
    ├── ModelPullError             ``adloop models pull`` could not fetch or convert a model
    ├── ScorerError                an outcome scorer is used before it is fitted, or its saved
    │                              files are missing, unreadable or from other embedding models
    └── TrainingError              fine-tuning could not run: bad settings, no data, bad model

Every message says what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BriefError",
    "ConfigError",
    "EndpointError",
    "GenerationFailedError",
    "GeneratorError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "ModelPullError",
    "ScorerError",
    "TrainingError",
]


class GeneratorError(Exception):
    """Base class for every error raised by :mod:`adloop.generators`."""


class BriefError(GeneratorError, ValueError):
    """A brief that cannot be used; ``field`` is the dotted path of the offending field.

    Example: ``BriefError("language", "unknown language 'fr' (use 'en' or 'zh')")``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(GeneratorError, ValueError):
    """A setting or argument out of range; the message names it and the values it accepts.

    Example: ``ConfigError("LMGenerator temperature must be > 0, got 0; pass e.g. 0.9")``.
    A ``ValueError`` too, so callers that validate input generically still catch it.
    """


class EndpointError(GeneratorError):
    """An OpenAI-compatible model server that could not be reached or answered badly.

    ``url`` is the endpoint asked and ``status`` the HTTP status (None when no answer came).
    Example: ``EndpointError("http://127.0.0.1:8000/v1/chat/completions", "connection refused:
    no server listens there; start it or point ADLOOP_OPENAI_BASE_URL at a running one")``.
    """

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}")


class GenerationFailedError(GeneratorError):
    """A generator raised while writing candidates; ``generator`` names it.

    The pool stops rather than quietly writing with the others: a broken generator is a
    fault to fix, not a smaller result to accept.
    """

    def __init__(self, generator: str, error: BaseException) -> None:
        self.generator = generator
        super().__init__(f"the {generator} generator failed: {type(error).__name__}: {error}")


class MissingDependencyError(GeneratorError, ImportError):
    """An optional package a generator needs is not installed; the message says how to add it.

    Example: ``MissingDependencyError("transformers", "lm")``.
    """

    def __init__(self, package: str, needed_by: str, extra: str = "lm") -> None:
        self.package = package
        super().__init__(
            f"the {needed_by} generator needs the {package!r} package, which is not installed; "
            f"install it with: pip install 'adloop[{extra}]'",
            name=package,
        )


class ModelNotFoundError(GeneratorError, FileNotFoundError):
    """A model directory that does not exist or does not hold a causal language model."""


class ModelPullError(GeneratorError, RuntimeError):
    """Fetching or converting a model for the local cache failed."""


class ScorerError(GeneratorError):
    """An outcome scorer that cannot be used: not fitted, or saved files unusable here.

    Example: ``ScorerError("the outcome scorer is not fitted; call fit() or load() first")``.
    """


class TrainingError(GeneratorError):
    """Training could not run: bad configuration, no data, or a model directory that is unusable."""
