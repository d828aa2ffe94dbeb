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
shows it example ads, constrains its sampling, samples more than asked and keeps the fluent,
on-brief, mutually different candidates; for Chinese it fills template skeletons with
phrases the model picks (:mod:`adloop.generators.skeleton`). ``LMGenerator(dir, **BASELINE)``
samples as the first version did (brief only, unconstrained, no selection).
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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
    check_model_dir,
    load_causal_lm,
    model_version,
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
_DEFAULT_MODES = {"en": "free", "zh": "skeleton"}
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
    best_of: sample this many times as many ads as asked for and keep the fluent, on-brief,
        mutually different ones (1: keep every sample; a scorer raises it to its oversample).
    modes: ``free`` or ``skeleton`` for every language, or a mapping language -> mode
        (default: English ``free``, Chinese ``skeleton``, where a small model's free Chinese
        is rarely readable).

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
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        device: str | None = None,
        num_threads: int | None = 1,
        rerank: bool = True,
        shots: int = 2,
        constrain: bool = True,
        best_of: float = 2.0,
        modes: str | Mapping[str, str] | None = None,
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
        self.modes = _check_modes(modes)
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
            f"reranked={self.scorer is not None})"
        )

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``."""
        with self._lock:
            if self._loaded is None:
                self._loaded = load_causal_lm(self.model_dir, device=self.device)
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
                    copy.deepcopy(cache),
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
        the prompt's first examples. With ``best_of`` > 1 (or a scorer), more are sampled and
        ``n`` come back: those that pass the filters, read fluently and differ from each other
        and from the examples first, best first (by the scorer when there is one, else by
        fluency).
        """
        if n <= 0:
            return []
        shots = few_shot_examples(brief, winners, n_shots=self.shots)
        factor = max(self.best_of, self.scorer.oversample if self.scorer is not None else 1)
        wanted = math.ceil(n * factor)
        if self.mode_for(brief.language) == "skeleton":
            from adloop.generators.skeleton import fill_skeletons

            drafts = fill_skeletons(self, brief, wanted, seed=seed, shots=shots)
        else:
            drafts = [
                parse_completion(completion, brief)
                for completion in self.sample(brief, wanted, seed=seed, shots=shots)
            ]
        candidates = candidates_from_drafts(
            drafts, brief, self.name, seed=seed, model_version=self.model_version
        )
        if wanted > n:
            candidates = select_candidates(candidates, n, brief, shots=shots, scorer=self.scorer)
        return candidates


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
    # transformers renamed ``past_key_values`` to ``cache``; support both spellings.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    key = "cache" if "cache" in parameters else "past_key_values"
    kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
    if cache is not None:
        kwargs[key] = cache
    if "logits_to_keep" in parameters:
        kwargs["logits_to_keep"] = 1
    output = model(**kwargs)
    new_cache = getattr(output, "cache", None)
    if new_cache is None:
        new_cache = getattr(output, "past_key_values", None)
    return output.logits[:, -1, :], new_cache


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
    cache, which this call consumes) with temperature and nucleus (top-p) sampling, masked by
    ``constraints`` when given."""
    import torch

    with torch.inference_mode():
        cache.batch_repeat_interleave(size)
        logits = prompt_logits.expand(size, -1)
        device = logits.device
        tokens: list[list[int]] = [[] for _ in range(size)]
        active = list(range(size))  # batch row -> sequence index
        for _ in range(max_new_tokens):
            logits = logits.float()
            if constraints is not None:
                logits = constraints.mask(
                    logits,
                    [tokens[s] for s in active],
                    stop_ids,
                    None if plans is None else [plans[s] for s in active],
                )
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
                outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
                sorted_probs = sorted_probs.masked_fill(outside, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)
            keep: list[int] = []
            for row, sequence in enumerate(active):
                token = int(next_ids[row])
                if token in stop_ids:
                    continue
                tokens[sequence].append(token)
                if not is_finished(tokens[sequence]):
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                cache.batch_select_indices(torch.tensor(keep, device=device))
                active = [active[row] for row in keep]
                next_ids = next_ids[keep]
            logits, cache = _forward(model, next_ids.to(device)[:, None], cache)
    return tokens


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
