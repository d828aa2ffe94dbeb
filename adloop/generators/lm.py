"""Language-model generator: any local causal LM writes headlines and descriptions.

The model is a directory ``transformers`` can load with ``AutoModelForCausalLM`` and
``AutoTokenizer`` (safetensors + tokenizer files), or a peft LoRA adapter directory
(``adapter_config.json``) whose base model is loaded first. Nothing is ever downloaded: loads
are ``local_files_only``, so ``HF_HUB_OFFLINE=1`` deployments behave exactly as online ones
(checking, versioning and loading a model directory: :mod:`adloop.generators.model_dir`).
torch, transformers and peft are imported inside functions only, so importing this module is
cheap.

What the model reads and writes (the brief, few-shot example ads, the ``Headline:`` /
``Description:`` format) is :mod:`adloop.generators.lm_prompt`; what it may write at each step
(banned terms, lengths, invented numbers, script) is :mod:`adloop.generators.lm_constraints`.
A small model writes much copy that no marketer would publish, so by default the generator
shows it example ads, constrains its sampling, samples more while too few pass and keeps the
fluent, on-brief, mutually different candidates; in English and Chinese it fills template
skeletons with phrases the model picks (:mod:`adloop.generators.skeleton`).
``LMGenerator(dir, **BASELINE)`` samples as the first version did (brief only, unconstrained,
no selection).
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from adloop.generators.brief import Brief
from adloop.generators.candidate import Candidate
from adloop.generators.errors import ConfigError
from adloop.generators.filters import (
    FilterSettings,
    NearDuplicateIndex,
    brief_terms,
    candidates_from_drafts,
    check_candidate,
)
from adloop.generators.fluency import judge_fluency
from adloop.generators.lm_constraints import Constraints, Plan, TokenTable
from adloop.generators.lm_prompt import (
    COMPLETION_PREFIX,
    SYSTEM_MESSAGE,
    Shot,
    build_model_input,
    few_shot_examples,
    format_completion,
    parse_completion,
)
from adloop.generators.model_dir import (
    cache_keyword,
    check_model_dir,
    load_causal_lm,
    model_version,
    output_cache,
    require_lm_packages,
)
from adloop.generators.scorer import CopyScorer, load_scorer

__all__ = [
    "BASELINE",
    "COMPLETION_PREFIX",
    "LMGenerator",
    "MODES",
    "SYSTEM_MESSAGE",
    "build_model_input",
    "format_completion",
    "parse_completion",
]

#: How the model writes: ``free`` whole ads; ``skeleton`` phrases in template skeletons.
MODES = ("free", "skeleton")
#: The options that make :class:`LMGenerator` sample as its first version did: the brief
#: alone, no constraints, no selection, whole ads in every language (the benchmark's baseline).
BASELINE: Mapping[str, Any] = {"shots": 0, "constrain": False, "best_of": 1.0, "modes": "free"}
_DEFAULT_MODES = {"en": "skeleton", "zh": "skeleton"}
#: The weights' type while sampling (see :class:`LMGenerator`).
DTYPES = ("auto", "float32", "bfloat16")
_PROMPT_CACHE_SIZE = 2


class LMGenerator:
    """Samples ads from a local causal LM (or LoRA adapter) directory.

    Parameters
    ----------
    model_dir: model or adapter directory (see :func:`load_causal_lm`).
    temperature, top_p: sampling settings.
    batch_size: sequences sampled per forward batch.
    max_new_tokens: tokens per completion; None picks 64 for English, 120 for Chinese
        (Chinese takes more tokens per character in most tokenizers).
    device: torch device, default CPU.
    num_threads: torch CPU threads while sampling (restored afterwards). Default 1: on a small
        shared machine one thread leaves a core to the serving path and, measured on 2 busy
        cores, ran a decoding step 5x faster than two threads contending for them. None keeps
        torch's setting.
    rerank: when the directory holds a copy scorer (``scorer.json``, written by retraining;
        see :mod:`adloop.generators.scorer`), the candidates kept are the ones it ranks high
        (among those that pass the filters and read fluently). False ignores the scorer.
    shots: example ads shown in the prompt: the ``winners`` passed to :meth:`generate` first,
        then ads the template grammar writes for the brief (0: the brief alone).
    constrain: constrain sampling to copy the brief allows (banned terms, channel lengths,
        no invented numbers, the brief's script, no repeated phrases).
    best_of: sample up to this many times as many ads as asked for, more only while too few
        pass the filters, and keep the fluent, on-brief, mutually different ones (1: keep
        every sample; a scorer raises it to its oversample and draws them all at once).
    modes: ``free`` or ``skeleton`` for every language, or a mapping language -> mode
        (default: ``skeleton`` for both: a small model's free Chinese is rarely readable, and
        its free English, though made of real words, was judged not fluent by a reader in 51
        of 80 ads that passed the filters).
    dtype: the weights' type while sampling: ``float32``, ``bfloat16``, or ``auto``
        (bfloat16 on a CPU with bfloat16 instructions, where a decoding step of SmolLM2-135M
        runs about 3x faster than in float32; float32 elsewhere, where bfloat16 is slow).

    The model is loaded on the first :meth:`generate` and kept. Raises
    :class:`ModelNotFoundError` at construction when the directory is missing or not a causal LM,
    and :class:`MissingDependencyError` when torch or transformers is not installed.

    Example
    -------
    >>> generator = LMGenerator(default_model_dir() / "smollm2-135m-instruct")  # doctest: +SKIP
    >>> generator.generate(brief, 8, seed=0)  # doctest: +SKIP
    """

    name = "lm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        temperature: float = 0.9,
        top_p: float = 0.95,
        batch_size: int = 64,
        max_new_tokens: int | None = None,
        device: str | None = None,
        num_threads: int | None = 1,
        rerank: bool = True,
        shots: int = 2,
        constrain: bool = True,
        best_of: float = 2.0,
        modes: str | Mapping[str, str] | None = None,
        dtype: str = "auto",
    ) -> None:
        if not temperature > 0:
            raise ConfigError(
                f"LMGenerator temperature must be > 0 (e.g. 0.9), got {temperature!r}"
            )
        if not 0 < top_p <= 1:
            raise ConfigError(f"LMGenerator top_p must be in (0, 1] (e.g. 0.95), got {top_p!r}")
        if batch_size < 1:
            raise ConfigError(f"LMGenerator batch_size must be >= 1, got {batch_size!r}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ConfigError(
                f"LMGenerator max_new_tokens must be >= 1 or None (per language default), "
                f"got {max_new_tokens!r}"
            )
        if num_threads is not None and num_threads < 1:
            raise ConfigError(
                "LMGenerator num_threads must be >= 1 or None (keep torch's setting), "
                f"got {num_threads!r}"
            )
        if shots < 0:
            raise ConfigError(f"LMGenerator shots must be >= 0 (0: no examples), got {shots!r}")
        if not best_of >= 1:
            raise ConfigError(
                f"LMGenerator best_of must be >= 1 (1 keeps every sample), got {best_of!r}"
            )
        if dtype not in DTYPES:
            raise ConfigError(
                f"LMGenerator dtype must be one of {', '.join(DTYPES)}, got {dtype!r}"
            )
        self.modes = _check_modes(modes)
        self.dtype = dtype
        self.model_dir = check_model_dir(model_dir)
        require_lm_packages(self.model_dir, self.name)
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.num_threads = num_threads
        self.shots = shots
        self.constrain = constrain
        self.best_of = best_of
        self.model_version = model_version(self.model_dir)
        self.rerank = rerank
        self.scorer = load_scorer(self.model_dir) if rerank else None
        self._loaded: tuple[Any, Any] | None = None
        self._table: TokenTable | None = None
        self._prompts: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LMGenerator({str(self.model_dir)!r}, temperature={self.temperature}, "
            f"top_p={self.top_p}, batch_size={self.batch_size}, shots={self.shots}, "
            f"constrain={self.constrain}, best_of={self.best_of}, modes={self.modes}, "
            f"dtype={self.dtype!r}, "
            f"reranked={self.scorer is not None})"
        )

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``."""
        with self._lock:
            if self._loaded is None:
                model, tokenizer = load_causal_lm(self.model_dir, device=self.device)
                if _sampling_dtype(self.dtype, model) == "bfloat16":
                    _linear_layers_in_bfloat16(model)
                self._loaded = (model, tokenizer)
            return self._loaded

    def token_table(self) -> TokenTable:
        """The tokenizer's vocabulary as bytes and lengths (built once), for constraints."""
        _, tokenizer = self.load()
        with self._lock:
            if self._table is None:
                self._table = TokenTable(tokenizer)
            return self._table

    def mode_for(self, language: str) -> str:
        """How this generator writes ``language``: ``free`` or ``skeleton``."""
        return self.modes.get(language, "free")

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        brief: Brief,
        n: int,
        *,
        seed: int = 0,
        shots: Sequence[Shot] = (),
        plans: Sequence[Plan] | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """``n`` raw completions (the text after :data:`COMPLETION_PREFIX`), seeded.

        The prompt is the same for every sequence, so it is encoded once (and kept for the
        next call with the same prompt) and its key/value cache copied across the batch;
        each sequence then stops on its own as soon as it has written its headline and
        description lines (or an end-of-turn token), and finished sequences leave the batch.
        Sampling uses its own ``torch.Generator``, so the global torch RNG is untouched and the
        same seed gives the same completions. With ``constrain`` (or ``plans``: per sequence,
        what it must write around its own words) sampling is constrained (:class:`Constraints`).
        """
        import torch

        model, tokenizer = self.load()
        text = build_model_input(tokenizer, brief, shots) + COMPLETION_PREFIX
        constraints = None
        if self.constrain or plans is not None:
            constraints = Constraints(self.token_table(), brief)
        budget = max_new_tokens or self.max_new_tokens or (120 if brief.language == "zh" else 64)
        stop_ids = set(_eos_token_ids(model, tokenizer))
        generator = torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)
        completions: list[str] = []
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            logits, cache = self._encode_prompt(model, tokenizer, text)
            while len(completions) < n:
                size = min(self.batch_size, n - len(completions))
                done = len(completions)
                token_lists = _sample_batch(
                    model,
                    logits,
                    cache,
                    size,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=budget,
                    stop_ids=stop_ids,
                    is_finished=lambda ids: _is_complete(
                        tokenizer.decode(ids, skip_special_tokens=True), brief
                    ),
                    generator=generator,
                    constraints=constraints,
                    plans=None if plans is None else plans[done : done + size],
                )
                completions.extend(
                    tokenizer.decode(ids, skip_special_tokens=True) for ids in token_lists
                )
        finally:
            torch.set_num_threads(previous_threads)
        return completions

    def _encode_prompt(self, model: Any, tokenizer: Any, text: str) -> tuple[Any, Any]:
        """Last-position logits and key/value cache of ``text`` (computed once per prompt).

        The pool asks a generator several times per call with the same brief, and few-shot
        examples make the prompt several hundred tokens long: encoding it is a good part of
        a small request, so the last prompts' states are kept (callers copy the cache).
        """
        with self._lock:
            if text in self._prompts:
                self._prompts.move_to_end(text)
                return self._prompts[text]
        import torch

        has_template = bool(getattr(tokenizer, "chat_template", None))
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=not has_template)
        device = next(model.parameters()).device
        with torch.inference_mode():
            state = _forward(model, encoded["input_ids"].to(device), None)
        with self._lock:
            self._prompts[text] = state
            while len(self._prompts) > _PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return state

    # ------------------------------------------------------------------ generation
    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]:
        """``n`` parsed candidates (some may fail the filters: the pool checks them).

        ``winners`` (dicts with ``headline``/``description`` or ``text``, best first) become
        the prompt's first examples. With ``best_of`` > 1, ``n`` are sampled first and more
        only while fewer than ``n`` are usable (pass the filters and differ from each other
        and from the examples), up to ``best_of`` x ``n`` in all; ``n`` come back, the usable
        ones first, best first by fluency. A scorer ranks all of its ``oversample`` x ``n``
        samples, so they are drawn at once.
        """
        if n <= 0:
            return []
        shots = few_shot_examples(brief, winners, n_shots=self.shots)
        if self.scorer is not None:
            wanted = math.ceil(n * max(self.best_of, self.scorer.oversample))
            candidates = self._draw(brief, wanted, seed=seed, shots=shots)
            if wanted > n:
                candidates = select_candidates(
                    candidates, n, brief, shots=shots, scorer=self.scorer
                )
            return candidates
        most = math.ceil(n * self.best_of)
        candidates = self._draw(brief, n, seed=seed, shots=shots)
        round_index = 0
        while len(candidates) < most:
            missing = n - _count_usable(candidates, brief, shots)
            if missing <= 0:
                break
            round_index += 1
            # A few more than missing: some of the extra samples fail as well.
            extra = min(most - len(candidates), missing + max(2, missing // 2))
            round_seed = (seed * 1_000_003 + round_index) % 2**63
            more = self._draw(brief, extra, seed=round_seed, shots=shots)
            candidates += [replace(c, seed=seed) for c in more]
        if len(candidates) > n:
            candidates = select_candidates(candidates, n, brief, shots=shots)
        return candidates

    def _draw(self, brief: Brief, n: int, *, seed: int, shots: Sequence[Shot]) -> list[Candidate]:
        """``n`` candidates as sampled, in this generator's mode for the brief's language."""
        if self.mode_for(brief.language) == "skeleton":
            from adloop.generators.skeleton import fill_skeletons

            drafts = fill_skeletons(self, brief, n, seed=seed, shots=shots)
        else:
            drafts = [
                parse_completion(completion, brief)
                for completion in self.sample(brief, n, seed=seed, shots=shots)
            ]
        return candidates_from_drafts(
            drafts, brief, self.name, seed=seed, model_version=self.model_version
        )


def _count_usable(candidates: Sequence[Candidate], brief: Brief, shots: Sequence[Shot]) -> int:
    """How many of ``candidates`` pass the filters and are no near-copy of an example or of
    an earlier usable one (what :func:`select_candidates` picks first)."""
    settings = FilterSettings()
    examples = NearDuplicateIndex(brief.language, max_similarity=settings.max_similarity)
    for headline, description in shots:
        examples.add(Candidate(headline, description, brief.language, "shot").text)
    accepted = NearDuplicateIndex(brief.language, max_similarity=settings.max_similarity)
    usable = 0
    for candidate in candidates:
        if check_candidate(candidate, brief, settings=settings, existing=examples,
                           accepted=accepted) is None:  # fmt: skip
            accepted.add(candidate.text)
            usable += 1
    return usable


def select_candidates(
    candidates: Sequence[Candidate],
    n: int,
    brief: Brief,
    *,
    shots: Sequence[Shot] = (),
    scorer: CopyScorer | None = None,
    redundancy_penalty: float = 1.0,
) -> list[Candidate]:
    """``n`` of ``candidates``: first those that pass the brief's filters, read fluently
    (the filters' fluency judge) and are no near-copy of an example shown to
    the model or of one already picked, best first; the rest after them.

    "Best" is the scorer's ranking when there is one (:meth:`CopyScorer.select`), else the
    fluency score less ``redundancy_penalty`` x the largest n-gram similarity to a candidate
    already picked (so the picks differ from each other, not only from near-copies).
    """
    settings = FilterSettings()
    terms = brief_terms(brief)
    examples = NearDuplicateIndex(brief.language, max_similarity=settings.max_similarity)
    for headline, description in shots:
        examples.add(Candidate(headline, description, brief.language, "shot").text)
    texts = [c.text for c in candidates]
    quality = []
    eligible = []
    for candidate in candidates:
        # The filters include the fluency judge; its score ranks the candidates that pass.
        eligible.append(
            check_candidate(candidate, brief, settings=settings, existing=examples) is None
        )
        quality.append(judge_fluency(candidate.text, brief.language, known_terms=terms).score)
    if scorer is not None:
        return [candidates[i] for i in scorer.select(texts, n, eligible=eligible)]
    picked = NearDuplicateIndex(brief.language, max_similarity=settings.max_similarity)
    chosen: list[int] = []
    remaining = list(range(len(candidates)))
    while remaining and len(chosen) < n:
        merits = []
        for i in remaining:
            similarity = picked.max_similarity_to(texts[i])
            novel = eligible[i] and similarity <= settings.max_similarity
            merits.append((novel, quality[i] - redundancy_penalty * similarity, -i))
        best = -max(merits)[2]
        remaining.remove(best)
        chosen.append(best)
        picked.add(texts[best])
    return [candidates[i] for i in chosen]


def _sampling_dtype(dtype: str, model: Any) -> str:
    """``float32`` or ``bfloat16``: ``dtype`` itself, or for ``auto`` bfloat16 when the model is
    on a CPU that has bfloat16 instructions (AVX-512 BF16 or AMX)."""
    if dtype != "auto":
        return dtype
    import torch

    if next(model.parameters()).device.type != "cpu":
        return "float32"
    try:
        fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without the probes: stay on the safe side
        fast = False
    return "bfloat16" if fast else "float32"


def _linear_layers_in_bfloat16(model: Any) -> None:
    """Run every linear layer of ``model`` in bfloat16, all else (attention, norms, the cache)
    in float32: each layer's input is cast down and its output back up.

    The linear layers are nearly all of a decoding step's arithmetic and run about 3x faster
    in bfloat16 on a CPU that has bfloat16 instructions, while CPU attention in bfloat16 runs
    about 7x slower than in float32 (measured on SmolLM2-135M, one thread). A linear layer
    whose weight is tied to the embeddings (the output layer) gets a copy of its own.
    """
    import torch

    def cast_input(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].to(torch.bfloat16), *args[1:])

    def cast_output(_module: Any, _args: Any, output: Any) -> Any:
        return output.float()

    for module in list(model.modules()):
        if isinstance(module, torch.nn.Linear):
            module.weight = torch.nn.Parameter(
                module.weight.detach().to(torch.bfloat16), requires_grad=False
            )
            if module.bias is not None:
                module.bias = torch.nn.Parameter(
                    module.bias.detach().to(torch.bfloat16), requires_grad=False
                )
            module.register_forward_pre_hook(cast_input)
            module.register_forward_hook(cast_output)


def _check_modes(modes: str | Mapping[str, str] | None) -> dict[str, str]:
    if modes is None:
        return dict(_DEFAULT_MODES)
    chosen = {language: modes for language in _DEFAULT_MODES} if isinstance(modes, str) else modes
    for language, mode in chosen.items():
        if mode not in MODES:
            raise ConfigError(
                f"LMGenerator modes[{language!r}] must be one of {', '.join(MODES)}, got {mode!r}"
            )
    return {**_DEFAULT_MODES, **dict(chosen)}


def _is_complete(text: str, brief: Brief) -> bool:
    """True once a completion cannot improve: it holds its headline (and description) lines,
    has ended with a blank line, or has run so far past the channel's limits that the rest
    would be cut or dropped anyway (this bounds the cost of a rambling sample)."""
    if "\n\n" in text.lstrip():
        return True
    wanted = 2 if brief.channel.description_max > 0 else 1
    complete = text.split("\n")[:-1]
    if sum(1 for line in complete if line.strip()) >= wanted:
        return True
    channel = brief.channel
    first_line = text.lstrip("\n").split("\n", 1)[0]
    if channel.length(first_line) > 2 * channel.headline_max + 10:
        return True
    return channel.length(text) > channel.headline_max + channel.description_max + 40


def _forward(model: Any, input_ids: Any, cache: Any) -> Any:
    """One forward pass that keeps only the last position's logits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
    if cache is not None:
        kwargs[cache_keyword(model)] = cache
    if "logits_to_keep" in parameters:
        kwargs["logits_to_keep"] = 1
    output = model(**kwargs)
    return output.logits[:, -1, :], output_cache(output)


def _sample_batch(
    model: Any,
    prompt_logits: Any,
    cache: Any,
    size: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop_ids: set[int],
    is_finished: Any,
    generator: Any,
    constraints: Constraints | None = None,
    plans: Sequence[Plan] | None = None,
) -> list[list[int]]:
    """Sample ``size`` continuations of one encoded prompt (its last logits and key/value
    cache, which this call leaves as it was) with temperature and nucleus (top-p) sampling,
    masked by ``constraints`` when given.

    A finished sequence stays in the batch (its row computes nothing anyone reads) until a
    quarter of the rows are finished; then the batch is compacted. Compacting copies the
    whole cache, so doing it at every finish cost more than the rows it saved.
    """
    import torch

    with torch.inference_mode():
        cache = _batch_cache(cache, size, max_new_tokens)
        logits = prompt_logits.expand(size, -1)
        device = logits.device
        tokens: list[list[int]] = [[] for _ in range(size)]
        rows: list[int | None] = list(range(size))  # batch row -> sequence (None: finished)
        next_ids = torch.zeros(size, dtype=torch.long)
        for _ in range(max_new_tokens):
            live = [row for row, sequence in enumerate(rows) if sequence is not None]
            live_logits = logits[live].float()
            if constraints is not None:
                live_logits = constraints.mask(
                    live_logits,
                    [tokens[rows[row]] for row in live],
                    stop_ids,
                    None if plans is None else [plans[rows[row]] for row in live],
                )
            sampled = _sample_nucleus(live_logits / temperature, top_p, generator)
            next_ids[live] = sampled
            for row, token in zip(live, sampled.tolist(), strict=True):
                sequence = rows[row]
                if token in stop_ids:
                    rows[row] = None
                    continue
                tokens[sequence].append(token)
                if is_finished(tokens[sequence]):
                    rows[row] = None
            n_live = sum(sequence is not None for sequence in rows)
            if n_live == 0:
                break
            if n_live <= 0.75 * len(rows):
                keep = [row for row, sequence in enumerate(rows) if sequence is not None]
                cache.batch_select_indices(torch.tensor(keep, device=device))
                rows = [rows[row] for row in keep]
                next_ids = next_ids[keep]
            logits, cache = _forward(model, next_ids.to(device)[:, None], cache)
    return tokens


#: Tokens a nucleus is first looked for among; a flatter distribution falls back to a sort of
#: the whole vocabulary. Sorting 50k logits per row per step was a sixth of English sampling.
_NUCLEUS_CANDIDATES = 256


def _sample_nucleus(scaled_logits: Any, top_p: float, generator: Any) -> Any:
    """One token id per row, sampled from the smallest set of tokens holding ``top_p`` of the
    probability (all of them when ``top_p`` is 1).

    The nucleus is found among the ``_NUCLEUS_CANDIDATES`` likeliest tokens when they hold
    ``top_p`` (nearly always, once constraints have masked most of the vocabulary); a row
    whose nucleus is wider is sorted in full, so the result is the same either way.
    """
    import torch

    probs = torch.softmax(scaled_logits, dim=-1).cpu()
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    k = min(_NUCLEUS_CANDIDATES, probs.shape[-1])
    top_probs, order = torch.topk(probs, k, dim=-1)
    if bool((top_probs.sum(dim=-1) < top_p).any()) and k < probs.shape[-1]:
        top_probs, order = torch.sort(probs, dim=-1, descending=True)
    outside = top_probs.cumsum(dim=-1) - top_probs > top_p
    top_probs = top_probs.masked_fill(outside, 0.0)
    picked = torch.multinomial(top_probs, 1, generator=generator)
    return order.gather(-1, picked).squeeze(1)


def _batch_cache(prompt_cache: Any, size: int, extra: int) -> Any:
    """A cache for ``size`` sequences that continue the prompt: each layer's keys and values
    in a buffer with the prompt's written ``size`` times and room for ``extra`` positions more,
    filled in place as sampling goes. ``prompt_cache`` is left as it was.

    The default cache appends a position by concatenation, which copies the whole cache (the
    prompt repeated for every sequence) at every step in every layer: over a third of the time
    of a Chinese batch. A cache of another kind is copied and repeated the default way.
    """
    from transformers.cache_utils import DynamicLayer

    layers = getattr(prompt_cache, "layers", None)
    if (
        not layers
        or any(type(layer) is not DynamicLayer for layer in layers)
        or any(not layer.is_initialized or layer.keys.dim() != 4 for layer in layers)
    ):
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(size)
        return cache
    layer_class = _preallocated_layer_class()
    cache = copy.copy(prompt_cache)
    cache.layers = [layer_class(layer, size, extra) for layer in layers]
    return cache


@lru_cache(maxsize=1)
def _preallocated_layer_class() -> type:
    """The preallocated cache layer (defined on first use: transformers is imported lazily)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A :class:`DynamicLayer` whose keys and values are views of a larger buffer."""

        def __init__(self, layer: Any, size: int, extra: int) -> None:
            super().__init__()
            _, heads, length, dim = layer.keys.shape
            shape = (size, heads, length + max(extra, 1), dim)
            self._key_buffer = layer.keys.new_empty(shape)
            self._value_buffer = layer.values.new_empty(shape)
            self._key_buffer[:, :, :length] = layer.keys
            self._value_buffer[:, :, :length] = layer.values
            self.device = layer.keys.device
            self.is_initialized = True
            self._length = length
            self._views()

        def _views(self) -> None:
            self.keys = self._key_buffer[:, :, : self._length]
            self.values = self._value_buffer[:, :, : self._length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            end = self._length + key_states.shape[-2]
            if end > self._key_buffer.shape[-2]:  # past the room asked for: grow by doubling
                grow = max(end, 2 * self._key_buffer.shape[-2]) - self._key_buffer.shape[-2]
                pad = (0, 0, 0, grow)
                self._key_buffer = torch.nn.functional.pad(self._key_buffer, pad)
                self._value_buffer = torch.nn.functional.pad(self._value_buffer, pad)
            self._key_buffer[:, :, self._length : end] = key_states
            self._value_buffer[:, :, self._length : end] = value_states
            self._length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._length

        def batch_select_indices(self, indices: Any) -> None:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._key_buffer = self._key_buffer.repeat_interleave(repeats, dim=0)
            self._value_buffer = self._value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0:
                self._length = max(self._length + tokens_to_remove, 0)
                self._views()
            else:
                super().crop(tokens_to_remove)

    return PreallocatedLayer


def _eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif isinstance(configured, list | tuple):
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    # Chat models end a turn with a special token; stop there too.
    for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        token_id = (
            tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        )
        if isinstance(token_id, int) and token_id >= 0:
            ids.append(token_id)
    return list(dict.fromkeys(ids))
