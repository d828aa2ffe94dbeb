"""What the language model reads and writes: the prompt (with few-shot examples), the
completion format, and parsing the completion back into a headline and a description.

How prompt and completion fit together (retraining relies on this):

* :func:`build_messages` is the chat: the system message, the brief (:meth:`Brief.prompt`) as
  the user's turn, then for each few-shot example an assistant turn holding that example ad
  and a user turn asking for another ad (:data:`ANOTHER_AD`);
* :func:`build_model_input` renders it with the tokenizer's chat template (plain text with
  blank lines when the tokenizer has none), ending where the assistant's answer starts;
* the model continues after :data:`COMPLETION_PREFIX` (``"Headline:"``);
* :func:`format_completion` writes the target text for a known ad —
  ``"Headline: <headline>\\nDescription: <description>"`` — which begins with the same prefix,
  and every few-shot example is written with it too.

Without examples the input is the brief alone, exactly the prompt that retraining trains
winners on (:func:`adloop.generators.training_data.format_prompt`): a retrained model learns
"brief -> winning ad", and at generation time the examples come before that same final turn.
Winners are left out of the training prompt on purpose: a winner shown in its own training
prompt would teach the model to copy its examples.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from adloop.generators.brief import Brief
from adloop.generators.candidate import Candidate
from adloop.generators.filters import NearDuplicateIndex, check_candidate
from adloop.generators.recombine import split_winner
from adloop.generators.templates import TemplateGenerator

__all__ = [
    "ANOTHER_AD",
    "COMPLETION_PREFIX",
    "SYSTEM_MESSAGE",
    "build_messages",
    "build_model_input",
    "few_shot_examples",
    "format_completion",
    "parse_completion",
]

COMPLETION_PREFIX = "Headline:"
SYSTEM_MESSAGE = "You are a copywriter. You write short, accurate search ads that follow the brief."
#: The user's turn after each few-shot example: the next answer must differ from the last.
ANOTHER_AD = "Write another ad for the same brief, in different words."

Shot = tuple[str, str]


# ---------------------------------------------------------------------------- prompt
def build_messages(brief: Brief, shots: Sequence[Shot] = ()) -> list[dict[str, str]]:
    """The chat the model answers: the brief, then each example ad and a request for another.

    Example
    -------
    >>> brief = Brief(product="rings", brand="Aurelle", language="en")
    >>> [m["role"] for m in build_messages(brief, [("Aurelle Rings", "Made for you.")])]
    ['system', 'user', 'assistant', 'user']
    """
    messages = [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": brief.prompt()},
    ]
    for headline, description in shots:
        messages.append({"role": "assistant", "content": format_completion(headline, description)})
        messages.append({"role": "user", "content": ANOTHER_AD})
    return messages


def build_model_input(tokenizer: Any, brief: Brief, shots: Sequence[Shot] = ()) -> str:
    """The text the model sees before :data:`COMPLETION_PREFIX`: :func:`build_messages` in the
    tokenizer's chat template (a plain rendering when the tokenizer has none).

    Deterministic for a given tokenizer, brief and examples; without examples it is the
    prompt retraining trains on.
    """
    messages = build_messages(brief, shots)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The plain rendering of a chat: the turns separated by blank lines, the system turn
    # left out (a base model reads it as part of the text to continue).
    return "".join(m["content"] + "\n\n" for m in messages[1:])


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


def few_shot_examples(
    brief: Brief, winners: Sequence[dict] = (), *, n_shots: int = 2, seed: int = 0
) -> list[Shot]:
    """Up to ``n_shots`` example ads for the prompt: the campaign's proven winners first (in the
    order given: best first), then ads the template grammar writes for this brief.

    Only examples that pass the brief's filters are shown (a winner written under other limits
    or terms would teach the wrong thing), and no two are near-copies. The same brief, winners
    and seed give the same examples, so the prompt (and its cached key/value state) is stable.

    Example
    -------
    >>> brief = Brief(product="rings", brand="Aurelle", language="en", keywords=["gold rings"])
    >>> len(few_shot_examples(brief, n_shots=2))
    2
    """
    if n_shots <= 0:
        return []
    shown = NearDuplicateIndex(brief.language, max_similarity=0.5)
    shots: list[Shot] = []

    def offer(headline: str, description: str) -> None:
        candidate = Candidate(headline, description, brief.language, "shot")
        if len(shots) < n_shots and check_candidate(candidate, brief, accepted=shown) is None:
            shown.add(candidate.text)
            shots.append((headline, description))

    for winner in winners:
        offer(*split_winner(winner))
    if len(shots) < n_shots:
        for candidate in TemplateGenerator().generate(brief, 4 * n_shots, seed=seed):
            offer(candidate.headline, candidate.description)
    return shots


# ---------------------------------------------------------------------------- parsing
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
