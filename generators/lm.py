"""Language-model generator: any local causal LM writes headlines and descriptions.

The model is a directory ``transformers`` can load with ``AutoModelForCausalLM`` and
``AutoTokenizer`` (safetensors + tokenizer files), or a peft LoRA adapter directory
(``adapter_config.json``) whose base model is loaded first. Nothing is ever downloaded: loads
are ``local_files_only``, so ``HF_HUB_OFFLINE=1`` deployments behave exactly as online ones
(checking, versioning and loading a model directory: :mod:`adloop.generators.model_dir`).
torch, transformers and peft are imported inside functions only, so importing this module is
cheap.

How prompt and completion fit together (retraining relies on this):

* :func:`build_model_input` wraps :meth:`Brief.prompt` in the tokenizer's chat template (a
  plain ``prompt + "\\n\\n"`` when the tokenizer has none);
* the model continues after :data:`COMPLETION_PREFIX` (``"Headline:"``), so sampling starts
  inside the answer format;
* :func:`format_completion` writes the target text for a known ad —
  ``"Headline: <headline>\\nDescription: <description>"`` — which begins with the same prefix,
  so ``build_model_input(...) + format_completion(...)`` is exactly what generation produces
  for that ad.
"""

from __future__ import annotations

import inspect
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adloop.generators.brief import Brief
from adloop.generators.candidate import Candidate
from adloop.generators.errors import ConfigError
from adloop.generators.filters import check_candidate, complete_required_terms
from adloop.generators.model_dir import (
    check_model_dir,
    load_causal_lm,
    model_version,
    require_lm_packages,
)
from adloop.generators.scorer import CopyScorer, load_scorer

__all__ = [
    "COMPLETION_PREFIX",
    "LMGenerator",
    "SYSTEM_MESSAGE",
    "build_model_input",
    "format_completion",
    "parse_completion",
]

COMPLETION_PREFIX = "Headline:"
SYSTEM_MESSAGE = "You are a copywriter. You write short, accurate search ads that follow the brief."


# ---------------------------------------------------------------------------- prompt and parsing
def build_model_input(tokenizer: Any, brief: Brief) -> str:
    """The text the model sees before :data:`COMPLETION_PREFIX`: the brief in the chat template.

    Deterministic for a given tokenizer and brief; retraining builds its prompts with it.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": brief.prompt()},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return brief.prompt() + "\n\n"


def format_completion(headline: str, description: str = "") -> str:
    """The completion for a known ad, in the format the generator parses.

    Example
    -------
    >>> format_completion("Bespoke Rings", "Book a fitting.")
    'Headline: Bespoke Rings\\nDescription: Book a fitting.'
    """
    text = f"{COMPLETION_PREFIX} {headline}"
    if description:
        text += f"\nDescription: {description}"
    return text


_LABEL = re.compile(
    r"^\s*(?:\**\s*)(headline|title|description|desc|标题|描述|广告语)\s*\**\s*[:：]\s*",
    re.IGNORECASE,
)
_INLINE_LABEL = re.compile(
    r"\b(?:headline|title|description|descrip|desc)\s*[:：]\s*|(?:标题|描述|广告语)\s*[:：]\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`「」『』*#"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def _clean(text: str) -> str:
    text = "".join(c for c in text if unicodedata.category(c) not in ("So", "Cc", "Cf", "Cs", "Co"))
    text = re.sub(r"<[^>]{0,40}>", "", text)  # placeholders such as <headline> echoed back
    text = _INLINE_LABEL.sub("", text)  # a label the model wrote mid-line ("... Descrip: ...")
    text = re.sub(r"\s+", " ", text).strip()
    text = text.strip(_QUOTES).strip()
    text = text.lstrip("-–•:： ").strip()
    if text.count('"') % 2:  # a stray quote left by truncation reads as a typo in an ad
        text = text.replace('"', "")
    return text.strip(_QUOTES).strip()


def _fit_sentences(text: str, brief: Brief) -> str:
    """Whole leading sentences of ``text`` that fit the description limit (all of it if it fits)."""
    limit = brief.channel.description_max
    if brief.channel.length(text) <= limit:
        return text
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        trial = (kept + (" " if kept and brief.language == "en" else "") + sentence).strip()
        if brief.channel.length(trial) > limit:
            break
        kept = trial
    return kept or text


_HEADLINE_BREAKS = (":", "：", " | ", "｜", " - ", " – ", " — ", ",", "，", "!", "！")


def _shorten_headline(headline: str, brief: Brief) -> str:
    """A headline over the limit keeps its first phrase when that phrase fits and says something.

    Small models often write "Short Title: a long elaboration"; the short title is the headline.
    """
    channel = brief.channel
    if channel.length(headline) <= channel.headline_max:
        return headline
    for mark in _HEADLINE_BREAKS:
        head = headline.split(mark, 1)[0].strip()
        substantial = len(head) >= 4 if brief.language == "zh" else len(head.split()) >= 2
        if head != headline and substantial and channel.length(head) <= channel.headline_max:
            return head
    return headline


def parse_completion(completion: str, brief: Brief) -> tuple[str, str]:
    """Headline and description from the text a model wrote after :data:`COMPLETION_PREFIX`.

    Labels (``Headline:``, ``Description:``, ``标题：``, ``描述：``), quotes, markdown and emoji
    are removed; a description longer than the channel allows keeps its leading whole
    sentences. Unparseable output gives an empty headline (the filters then drop it as
    ``empty``).

    Example
    -------
    >>> brief = Brief(product="rings", language="en")
    >>> parse_completion(' "Bespoke Rings"\\nDescription: Book a fitting.', brief)
    ('Bespoke Rings', 'Book a fitting.')
    """
    lines = [line for line in completion.replace("\r", "\n").split("\n") if line.strip()]
    headline, description = "", ""
    for index, line in enumerate(lines):
        match = _LABEL.match(line)
        label = match.group(1).lower() if match else None
        body = _clean(line[match.end() :] if match else line)
        if not body:
            continue
        if label in ("description", "desc", "描述"):
            description = body
            break
        if not headline:
            headline = body
            continue
        if label is None and index > 0:
            description = body
            break
        if label in ("headline", "title", "标题", "广告语"):
            break  # the model started a second ad; keep the first
    if brief.language == "en":
        headline = headline.rstrip(".")
    headline = _shorten_headline(headline, brief)
    if brief.channel.description_max == 0:
        description = ""
    elif description:
        description = _fit_sentences(description, brief)
    return headline, description


# ---------------------------------------------------------------------------- generator
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
        see :mod:`adloop.generators.scorer`), sample ``oversample`` times as many completions and
        keep well-scored ones that differ from each other. False samples plainly.

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
        batch_size: int = 16,
        max_new_tokens: int | None = None,
        device: str | None = None,
        num_threads: int | None = 1,
        rerank: bool = True,
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
        self.model_dir = check_model_dir(model_dir)
        require_lm_packages(self.model_dir, self.name)
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        if num_threads is not None and num_threads < 1:
            raise ConfigError(
                "LMGenerator num_threads must be >= 1 or None (keep torch's setting), "
                f"got {num_threads!r}"
            )
        self.device = device
        self.num_threads = num_threads
        self.model_version = model_version(self.model_dir)
        self.rerank = rerank
        self.scorer = load_scorer(self.model_dir) if rerank else None
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LMGenerator({str(self.model_dir)!r}, temperature={self.temperature}, "
            f"top_p={self.top_p}, batch_size={self.batch_size}, "
            f"reranked={self.scorer is not None})"
        )

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``."""
        with self._lock:
            if self._loaded is None:
                self._loaded = load_causal_lm(self.model_dir, device=self.device)
            return self._loaded

    def sample(self, brief: Brief, n: int, *, seed: int = 0) -> list[str]:
        """``n`` raw completions (the text after :data:`COMPLETION_PREFIX`), seeded.

        The prompt is the same for every sequence, so it is encoded once and its key/value
        cache copied across the batch; each sequence then stops on its own as soon as it has
        written its headline and description lines (or an end-of-turn token), and finished
        sequences leave the batch. Sampling uses its own ``torch.Generator``, so the global
        torch RNG is untouched and the same seed gives the same completions.
        """
        import torch

        model, tokenizer = self.load()
        prompt = build_model_input(tokenizer, brief) + COMPLETION_PREFIX
        has_template = bool(getattr(tokenizer, "chat_template", None))
        encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=not has_template)
        device = next(model.parameters()).device
        prompt_ids = encoded["input_ids"].to(device)
        max_new_tokens = self.max_new_tokens or (120 if brief.language == "zh" else 64)
        stop_ids = set(_eos_token_ids(model, tokenizer))
        generator = torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)
        completions: list[str] = []
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            while len(completions) < n:
                size = min(self.batch_size, n - len(completions))
                token_lists = _sample_batch(
                    model,
                    prompt_ids,
                    size,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=max_new_tokens,
                    stop_ids=stop_ids,
                    is_finished=lambda ids: _is_complete(
                        tokenizer.decode(ids, skip_special_tokens=True), brief
                    ),
                    generator=generator,
                )
                completions.extend(
                    tokenizer.decode(ids, skip_special_tokens=True) for ids in token_lists
                )
        finally:
            torch.set_num_threads(previous_threads)
        return completions

    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]:
        """``n`` parsed candidates (some may fail the filters: the pool checks them).

        With a scorer, ``n x oversample`` are sampled and ``n`` distinct ones come back that
        score well and differ from each other (:meth:`CopyScorer.select`), in the order picked.
        """
        del winners  # the model writes from the brief; retraining is how winners reach it
        if n <= 0:
            return []
        candidates = []
        factor = self.scorer.oversample if self.scorer is not None else 1
        for completion in self.sample(brief, n * factor, seed=seed):
            headline, description = parse_completion(completion, brief)
            if headline:
                headline, description = complete_required_terms(headline, description, brief)
            candidates.append(
                Candidate.for_brief(
                    brief,
                    headline,
                    description,
                    self.name,
                    seed=seed,
                    model_version=self.model_version,
                )
            )
        if factor > 1:
            candidates = _rerank(self.scorer, candidates, n, brief)
        return candidates


def _rerank(
    scorer: CopyScorer, candidates: list[Candidate], n: int, brief: Brief
) -> list[Candidate]:
    """``n`` well-scored, mutually different candidates; those the brief's filters (lengths,
    terms, language) would drop come last, so a scorer that likes short copy cannot fill the
    selection with copy that lacks its brand name or headline."""
    texts = [c.text for c in candidates]
    valid = [check_candidate(c, brief) is None for c in candidates]
    picked = scorer.select(texts, n, eligible=valid)
    return [candidates[i] for i in picked]


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
    prompt_ids: Any,
    size: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop_ids: set[int],
    is_finished: Any,
    generator: Any,
) -> list[list[int]]:
    """Sample ``size`` continuations of one prompt with temperature and nucleus (top-p) sampling."""
    import torch

    with torch.inference_mode():
        logits, cache = _forward(model, prompt_ids, None)
        cache.batch_repeat_interleave(size)
        logits = logits.expand(size, -1)
        tokens: list[list[int]] = [[] for _ in range(size)]
        active = list(range(size))  # batch row -> sequence index
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits.float() / temperature, dim=-1)
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
                cache.batch_select_indices(torch.tensor(keep, device=prompt_ids.device))
                active = [active[row] for row in keep]
                next_ids = next_ids[keep]
            logits, cache = _forward(model, next_ids.to(prompt_ids.device)[:, None], cache)
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
