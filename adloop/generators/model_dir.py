"""Model directories: check that a folder holds a causal language model, name its version, load it.

A model directory is what ``transformers`` loads with ``AutoModelForCausalLM`` and
``AutoTokenizer`` (config, safetensors weights, tokenizer files), or a peft LoRA adapter
directory (``adapter_config.json``) whose base model is loaded first. Retraining writes
:data:`VERSION_FILE` into every version it trains, naming the version, its base and parent.
Nothing is ever downloaded: loads are ``local_files_only``. torch, transformers and peft are
imported inside :func:`load_causal_lm` only, so importing this module is cheap.

Example
-------
>>> from adloop.generators.model_dir import check_model_dir
>>> check_model_dir("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
ModelNotFoundError: no model directory at /nonexistent; ...
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

from adloop.generators.errors import MissingDependencyError, ModelNotFoundError

__all__ = [
    "PULL_HINT",
    "VERSION_FILE",
    "cache_keyword",
    "check_model_dir",
    "load_causal_lm",
    "model_version",
    "output_cache",
]

#: Version label file in a model directory (``version``, ``base``, ``parent``); retraining
#: writes it and :func:`model_version` reads it.
VERSION_FILE = "adloop_version.json"
PULL_HINT = "install the default model with `adloop models pull smollm2`, or pass --model DIR"
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(f"{path} is not readable JSON ({exc}); {PULL_HINT}") from exc
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path} does not hold a JSON object; {PULL_HINT}")
    return data


def check_model_dir(model_dir: str | Path) -> Path:
    """Cheap check (no torch import) that ``model_dir`` looks like a causal LM or LoRA adapter.

    Raises :class:`ModelNotFoundError` naming the path and saying how to get a model.
    """
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"no model directory at {path}; {PULL_HINT}")
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file, not a model directory; {PULL_HINT}")
    if (path / "adapter_config.json").is_file():
        _read_json(path / "adapter_config.json")
        return path
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{path} has no config.json, so it is not a transformers model directory; {PULL_HINT}"
        )
    config = _read_json(config_path)
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith(_CAUSAL_SUFFIXES) for a in architectures):
        raise ModelNotFoundError(
            f"{path} holds a {', '.join(map(str, architectures))}, not a causal language model; "
            f"{PULL_HINT}"
        )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.iterdir()):
        raise ModelNotFoundError(f"{path} has a config.json but no weight files; {PULL_HINT}")
    return path


def model_version(model_dir: str | Path) -> str:
    """A stable version string for the model in ``model_dir``.

    The ``version`` recorded in ``adloop_version.json`` when present (retraining writes one per
    run); otherwise ``<directory name>@<8 hex>`` hashed from the config files and the name,
    size and first 64 KiB of each weight file — cheap even for large models and different
    whenever the weights are.
    """
    path = check_model_dir(model_dir)
    version_file = path / VERSION_FILE
    if version_file.is_file():
        recorded = _read_json(version_file).get("version")
        if recorded:
            return str(recorded)
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        if file.suffix == ".json":
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{file.name}\0{file.stat().st_size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(65536))
    return f"{path.name}@{digest.hexdigest()[:8]}"


def _adapter_base(adapter_dir: Path) -> Path:
    """Where the base model of a LoRA adapter lives: adloop_version.json ``base`` first."""
    recorded: str | None = None
    if (adapter_dir / VERSION_FILE).is_file():
        recorded = _read_json(adapter_dir / VERSION_FILE).get("base")
    if not recorded:
        recorded = _read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not recorded:
        raise ModelNotFoundError(
            f"adapter {adapter_dir} records no base model (base_model_name_or_path); "
            "re-create it with its base path recorded"
        )
    for candidate in (Path(recorded).expanduser(), adapter_dir.parent / recorded):
        if candidate.is_dir():
            return candidate
    # A bare name such as "smollm2-135m-instruct": look in the model cache.
    from adloop.generators.models import resolve_model

    try:
        return resolve_model(recorded)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"adapter {adapter_dir} needs its base model {recorded!r}, which is not installed; "
            f"{PULL_HINT}"
        ) from exc


def require_lm_packages(model_dir: str | Path, needed_by: str = "lm") -> None:
    """Raise :class:`MissingDependencyError` unless the packages to load ``model_dir`` are there.

    torch and transformers always, peft too for an adapter directory. Only looks the packages
    up (no import), so it is cheap enough to call when a generator is built.
    """
    packages = ["torch", "transformers"]
    if (Path(model_dir) / "adapter_config.json").is_file():
        packages.append("peft")
    for package in packages:
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # a finder that refuses it, or a broken install
            found = False
        if not found:
            raise MissingDependencyError(package, needed_by)


def load_causal_lm(model_dir: str | Path, *, device: str | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a model directory or a LoRA adapter directory.

    A directory with ``adapter_config.json`` is a peft adapter: its base (recorded as ``base``
    in ``adloop_version.json`` or ``base_model_name_or_path`` in the adapter config; a path,
    or a name in the model cache) is loaded and the adapter applied on top. The tokenizer comes
    from the adapter directory when it has one, else from the base. The model is in eval mode,
    float32 on ``device`` (default CPU); the tokenizer pads on the left for batched sampling.

    Raises :class:`ModelNotFoundError` when the directory is missing or is not a causal LM.

    Example
    -------
    >>> model, tokenizer = load_causal_lm(resolve_model("smollm2"))  # doctest: +SKIP
    """
    path = check_model_dir(model_dir)
    require_lm_packages(path)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Loading a local 135M model takes well under a second: its per-tensor progress bar is noise
    # in the middle of our own progress output.
    transformers_logging.disable_progress_bar()

    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base_model, tokenizer = load_causal_lm(_adapter_base(path), device=device)
        with warnings.catch_warnings():
            # peft 0.21 reads a property transformers 5 deprecated; harmless, not ours to fix.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            model = PeftModel.from_pretrained(base_model, str(path), is_trainable=False)
        if (path / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
        except (ValueError, KeyError) as exc:
            raise ModelNotFoundError(
                f"{path} is not a causal language model transformers can load ({exc}); {PULL_HINT}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - corrupt weights raise library-specific errors
            raise ModelNotFoundError(
                f"cannot load the model in {path} ({type(exc).__name__}: {exc}); {PULL_HINT}"
            ) from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"{path} has no usable tokenizer ({exc}); save the tokenizer next to the model"
            ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    if device:
        model.to(device)
    return model, tokenizer


def cache_keyword(model: Any) -> str:
    """The name ``model.forward`` takes a key/value cache by: transformers renamed
    ``past_key_values`` to ``cache``; both spellings are supported."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The key/value cache a forward pass with ``use_cache=True`` returned (either spelling)."""
    cache = getattr(output, "cache", None)
    return getattr(output, "past_key_values", None) if cache is None else cache
