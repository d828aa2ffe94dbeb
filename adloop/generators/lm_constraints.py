"""Constrained sampling: what the language model may write next, token by token.

A small model left alone writes banned terms, headlines twice the channel's limit, invented
figures ("Bid: 2279000386"), words in the wrong script and the same phrase twice. Each of these
can be ruled out while sampling instead of filtered out afterwards, so every sample has a
chance to be usable. :class:`Constraints` masks, at every step and for every sequence:

* a token that would complete a banned term (case-insensitive, across token boundaries: the
  vocabulary is handled as bytes, so a term split over several tokens is caught too);
* a token that would take the current line past the channel's limit (headline, then
  description, counted in channel units); the line must then end;
* a digit, unless it continues a number the brief itself states (no invented prices, dates
  or percentages);
* letters of another script: for English, non-Latin letters; for Chinese, Latin letters
  other than those the brief uses (``18K``);
* a token that repeats a three-token phrase already in the line;
* markup and symbols no ad uses (``#``, ``*``, ``<``, ``[``...) and special tokens;

and once the headline line has ended, it makes the model write the ``Description:`` label
(the format the parser reads), so the label is never misspelt or replaced.

:class:`TokenTable` is the tokenizer's vocabulary as bytes and channel lengths; it is built
once per tokenizer (about a second for a 50k vocabulary). torch is imported inside methods.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from adloop.generators.brief import Brief

__all__ = ["FREE", "Constraints", "PhraseLexicon", "Plan", "TokenTable", "whole_phrase_prefix"]

#: Characters no search ad uses; a token holding one is never sampled.
_SYMBOLS = frozenset("#*<>[]{}_=\\~^`@$|")
_LABEL = "Description:"
_LABEL_LINE = re.compile(r"^\s*description\s*:\s*", re.IGNORECASE)
_NO_REPEAT = 3


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def _units(data: bytes, cjk_width: int) -> int:
    """Channel units of UTF-8 ``data`` counted by lead bytes: a byte cut off from its character
    counts nothing, a wide character's (CJK, full-width forms, emoji) lead counts ``cjk_width``."""
    total = 0
    for byte in data:
        if byte < 0x80 or 0xC0 <= byte < 0xE3 or byte == 0xEE:
            total += 1
        elif byte >= 0xE3:
            total += cjk_width
    return total


class TokenTable:
    """A tokenizer's vocabulary as raw bytes, with the facts the constraints need per token.

    Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM) map back exactly; SentencePiece ones
    (``▁`` for a space, ``<0x0A>`` byte tokens) too; any other token is decoded as text.
    """

    def __init__(self, tokenizer: Any) -> None:
        vocab = tokenizer.get_vocab()
        size = max(len(tokenizer), max(vocab.values()) + 1)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        decoder = _byte_decoder()
        byte_level = all(c in decoder for token in list(vocab)[:2000] for c in token) and any(
            "Ġ" in token for token in vocab
        )
        self.size = size
        self.special = sorted(i for i in special if i < size)
        self.bytes: list[bytes] = [b""] * size
        for token, index in vocab.items():
            if index in special:
                continue
            if byte_level and all(c in decoder for c in token):
                self.bytes[index] = bytes(decoder[c] for c in token)
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                self.bytes[index] = bytes([int(token[3:5], 16)])
            elif "▁" in token:
                self.bytes[index] = token.replace("▁", " ").encode("utf-8")
            else:
                self.bytes[index] = tokenizer.decode([index]).encode("utf-8")
        self.lower = [b.lower() for b in self.bytes]
        self._sorted = sorted((b, i) for i, b in enumerate(self.lower) if b)
        self._sorted_keys = [b for b, _ in self._sorted]
        self.label_ids = tokenizer(_LABEL, add_special_tokens=False)["input_ids"]
        self._units: dict[int, Any] = {}

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose lower-cased bytes start with ``prefix``."""
        start = bisect.bisect_left(self._sorted_keys, prefix)
        end = bisect.bisect_left(self._sorted_keys, prefix + b"\xff")
        return [i for _, i in self._sorted[start:end]]

    def units_before_newline(self, cjk_width: int) -> Any:
        """Per token, channel units of its bytes up to its first newline (a float tensor)."""
        if cjk_width not in self._units:
            import torch

            self._units[cjk_width] = torch.tensor(
                [_units(b.split(b"\n", 1)[0], cjk_width) for b in self.bytes],
                dtype=torch.float32,
            )
        return self._units[cjk_width]


def _script_blocked(data: bytes, language: str, brief_letters: frozenset[str]) -> bool:
    """True when a token's bytes hold letters of a script the brief's language does not use."""
    en = language != "zh"
    if not en:
        letters = {chr(b).lower() for b in data if chr(b).isascii() and chr(b).isalpha()}
        if not letters <= brief_letters:
            return True
    # Punctuation is fine in both; lead bytes of Greek, Cyrillic, Arabic ... (0xC9-0xDF), of
    # Hangul and Yi (0xEA-0xED) and of 4-byte characters (emoji) never are; accented Latin
    # letters (0xC3-0xC8) only in English, CJK (0xE3-0xE9) only in Chinese.
    return any(
        0xC9 <= b <= 0xDF
        or 0xEA <= b <= 0xED
        or b >= 0xF0
        or (0xE3 <= b <= 0xE9 if en else 0xC3 <= b <= 0xC8)
        for b in data
    )


@dataclass(frozen=True)
class Plan:
    """What one sequence must write around the model's own words (a template skeleton).

    Parameters
    ----------
    headline_start: token ids forced at the start of the headline (e.g. ``"Aurelle |"``).
    description_start: token ids forced after the ``Description:`` label.
    headline_reserve, description_reserve: channel units kept free in each line for text
        added after sampling (e.g. the call to action that ends a description).
    headline_lexicon, description_lexicon: when given, what the model writes in that line
        may only be these phrases.
    """

    headline_start: tuple[int, ...] = ()
    description_start: tuple[int, ...] = ()
    headline_reserve: int = 0
    description_reserve: int = 0
    headline_lexicon: PhraseLexicon | None = None
    description_lexicon: PhraseLexicon | None = None


FREE = Plan()


def whole_phrase_prefix(text: str, phrases: Sequence[str], separators: Sequence[str]) -> str:
    """The longest start of ``text`` made of whole ``phrases``, ``separators`` between them.

    A line that the length limit or the end of sampling cut inside a phrase keeps only the
    phrases it finished, so no half word reaches an ad.

    >>> whole_phrase_prefix("匠心，定", ["匠心", "定制"], ["，"])
    '匠心'
    >>> whole_phrase_prefix("定制匠心", ["匠心", "定制"], ["，"])
    '定制匠心'
    """
    reachable, best = {0}, 0
    for i in range(len(text) + 1):
        if i not in reachable:
            continue
        for phrase in phrases:
            if phrase and text.startswith(phrase, i):
                end = i + len(phrase)
                best = max(best, end)
                reachable.add(end)
                reachable.update(end + len(s) for s in separators if text.startswith(s, end))
    return text[:best]


class PhraseLexicon:
    """Phrases a line may be made of: up to ``max_phrases`` of them, each followed by nothing
    or one of ``separators`` (always one, with ``require_separator``, so two phrases never run
    together into a word nobody wrote), matched on bytes (so across tokens), case-sensitively.

    With ``leading_space`` every phrase starts with a space (English words, as a byte-level
    tokenizer writes them after a label or a word) and what the line holds is matched as it
    is; without it, spaces before the first phrase are ignored.

    :meth:`allowed` lists the tokens that keep a line on a path through the phrases; the
    lists are cached per state, so a batch pays for each state once.
    """

    def __init__(
        self,
        table: TokenTable,
        phrases: Sequence[str],
        *,
        separators: Sequence[str] = ("，",),
        max_phrases: int = 2,
        cjk_width: int = 2,
        require_separator: bool = False,
        leading_space: bool = False,
    ) -> None:
        self.table = table
        self.leading_space = leading_space
        self.require_separator = require_separator
        self.cjk_width = cjk_width
        self._finish: dict[int, float] = {}
        self.phrases = tuple(dict.fromkeys(p for p in phrases if p))
        self.separators = tuple(separators)
        self.max_phrases = max_phrases
        # One byte trie for phrases (root 0) and one for separators (root 1).
        self._children: list[dict[int, int]] = [{}, {}]
        self._terminal: list[bool] = [False, False]
        self._is_phrase: list[bool] = [True, False]
        for root, words in ((0, self.phrases), (1, tuple(separators))):
            for word in words:
                node = root
                for byte in word.encode("utf-8"):
                    if byte not in self._children[node]:
                        self._children.append({})
                        self._terminal.append(False)
                        self._is_phrase.append(root == 0)
                        self._children[node][byte] = len(self._children) - 1
                    node = self._children[node][byte]
                self._terminal[node] = True
        joined = b"\x00".join(w.encode("utf-8") for w in (*self.phrases, *separators))
        self._candidates = [i for i, b in enumerate(table.bytes) if b and b in joined]
        self._cache: dict[frozenset[tuple[int, int]], tuple[list[int], list[float], bool]] = {}

    def whole_prefix(self, text: str) -> str:
        """The longest start of ``text`` made of whole phrases (see :func:`whole_phrase_prefix`),
        without leading or trailing spaces."""
        if self.leading_space:
            text = " " + text.lstrip()
        return whole_phrase_prefix(text, self.phrases, self.separators).strip()

    def _step(self, states: frozenset[tuple[int, int]], byte: int) -> frozenset[tuple[int, int]]:
        """States after one more byte. A state is (trie node, phrases completed); node -1 is
        the end of the line, reachable right after a phrase."""
        out = set()
        for node, done in states:
            child = self._children[node].get(byte) if node >= 0 else None
            if child is None:
                continue
            out.add((child, done))
            if not self._terminal[child]:
                continue
            if self._is_phrase[child]:
                out.add((-1, done + 1))
                if done + 1 < self.max_phrases:
                    out.add((1, done + 1))  # a separator (and then a phrase) ...
                    if not self.require_separator:
                        out.add((0, done + 1))  # ... or the next phrase at once
            else:
                out.add((0, done))  # after a separator comes a phrase
        return frozenset(out)

    def _finish_units(self, node: int) -> float:
        """Fewest channel units from trie ``node`` to the end of a phrase (0 at the end)."""
        if node < 0:
            return 0.0
        if node not in self._finish:
            self._finish[node] = math.inf  # guards the recursion; a trie has no cycles
            best = 0.0 if self._terminal[node] and self._is_phrase[node] else math.inf
            for byte, child in self._children[node].items():
                step = _units(bytes([byte]), self.cjk_width)
                if self._terminal[child] and not self._is_phrase[child]:
                    best = min(best, step + self._finish_units(0))  # a separator, a phrase
                else:
                    best = min(best, step + self._finish_units(child))
            self._finish[node] = best
        return self._finish[node]

    def _states(self, written: bytes) -> frozenset[tuple[int, int]]:
        states = frozenset([(0, 0)])
        for byte in written:
            states = self._step(states, byte)
        return states

    def allowed(self, written: bytes) -> tuple[list[int], list[float], bool]:
        """After ``written``: the tokens that may come next, the fewest channel units each
        takes to the end of a phrase (so a token that cannot finish one within the line's
        limit can be masked), and whether the line may end here."""
        states = self._states(written if self.leading_space else written.lstrip(b" "))
        if states not in self._cache:
            ids, needs = [], []
            for index in self._candidates:
                walked = states
                for byte in self.table.bytes[index]:
                    walked = self._step(walked, byte)
                    if not walked:
                        break
                if walked:
                    ids.append(index)
                    finish = min(self._finish_units(node) for node, _ in walked)
                    needs.append(_units(self.table.bytes[index], self.cjk_width) + finish)
            self._cache[states] = (ids, needs, any(node == -1 for node, _ in states))
        return self._cache[states]


class Constraints:
    """Masks for one brief over one :class:`TokenTable`; see the module docstring.

    Example
    -------
    >>> constraints = Constraints(generator.token_table(), brief)  # doctest: +SKIP
    >>> logits = constraints.mask(logits, token_lists, stop_ids={2})  # doctest: +SKIP
    """

    def __init__(self, table: TokenTable, brief: Brief) -> None:
        import torch

        self.table = table
        self.brief = brief
        self.language = brief.language
        channel = brief.channel
        self.limits = (channel.headline_max, channel.description_max)
        self.units = table.units_before_newline(channel.cjk_width)
        brief_text = " ".join(
            [brief.product, brief.brand, brief.description, brief.offer, brief.call_to_action,
             *brief.keywords, *brief.segments, *brief.required_terms]
        )  # fmt: skip
        letters = frozenset(c.lower() for c in brief_text if c.isascii() and c.isalpha())
        numbers = set(re.findall(r"[0-9]+", brief_text))
        self._number_prefixes = {n[:k] for n in numbers for k in range(1, len(n) + 1)}
        self._banned = [t.lower().encode("utf-8") for t in brief.banned_terms if t]
        blocked = torch.zeros(table.size, dtype=torch.bool)
        self._digit_tokens: list[int] = []
        self._newline = [i for i, b in enumerate(table.bytes) if b == b"\n"]
        for index, data in enumerate(table.bytes):
            text = data.decode("utf-8", errors="ignore")
            newline = data.find(b"\n")
            if (
                not data
                or any(term in table.lower[index] for term in self._banned)
                or any(c in _SYMBOLS for c in text)
                or (newline >= 0 and newline != len(data) - 1)  # "\n\n", "\nHeadline"
                or _script_blocked(data, self.language, letters)
            ):
                blocked[index] = True
            elif re.search(r"[0-9]", text):
                self._digit_tokens.append(index)
        self._blocked = blocked
        # Per banned term and split point k: tokens that complete the term after its first k
        # bytes were written.
        self._completing = [
            [(term[:k], table.starting_with(term[k:])) for k in range(1, len(term))]
            for term in self._banned
        ]
        self._digits_allowed: dict[str, list[int]] = {}

    def _digits_blocked(self, run: str) -> list[int]:
        """Digit tokens not allowed after a trailing digit run ``run`` (cached per run)."""
        if run not in self._digits_allowed:
            bad = []
            for index in self._digit_tokens:
                text = self.table.bytes[index].decode("utf-8", errors="ignore")
                runs = re.findall(r"[0-9]+", text)
                first = run + runs[0] if text[:1].isdigit() else runs[0]
                if any(r not in self._number_prefixes for r in [first, *runs[1:]]):
                    bad.append(index)
            self._digits_allowed[run] = bad
        return self._digits_allowed[run]

    def _stage(self, tokens: list[int], plan: Plan) -> tuple[int | None, int, bytes, bytes]:
        """(forced next token or None, line index, the line's text so far without its label,
        the model's own bytes in the line so far) of one sequence under ``plan``."""
        bytes_of = self.table.bytes
        start = plan.headline_start
        if len(tokens) < len(start):
            return start[len(tokens)], 0, b"", b""
        rest = tokens[len(start) :]
        newline = next((j for j, t in enumerate(rest) if b"\n" in bytes_of[t]), None)
        if newline is None:
            return (
                None,
                0,
                b"".join(bytes_of[t] for t in tokens),
                b"".join(bytes_of[t] for t in rest),
            )
        after = rest[newline + 1 :]
        forced = (*self.table.label_ids, *plan.description_start)
        if len(after) < len(forced):
            return forced[len(after)], 1, b"", b""
        body = b"".join(bytes_of[t] for t in after[len(self.table.label_ids) :])
        own = b"".join(bytes_of[t] for t in after[len(forced) :])
        return None, 1, body, own

    def mask(
        self,
        logits: Any,
        token_lists: Sequence[list[int]],
        stop_ids: set[int],
        plans: Sequence[Plan] | None = None,
    ) -> Any:
        """``logits`` (one row per sequence) with every disallowed next token at -inf.

        ``token_lists`` are the sequences' tokens so far, ``plans`` what each must write
        around its own words (default: nothing; the ``Description:`` label is always forced).
        """
        import torch

        logits = logits.masked_fill(self._blocked, float("-inf"))
        remaining = []
        for row, tokens in enumerate(token_lists):
            plan = plans[row] if plans is not None else FREE
            forced, line_index, body, own = self._stage(tokens, plan)
            if forced is not None:
                only = torch.full_like(logits[row], float("-inf"))
                only[forced] = 0.0
                logits[row] = only
                remaining.append(float("inf"))
                continue
            data = b"".join(self.table.bytes[t] for t in tokens)
            bad: list[int] = []
            lower = data.lower()
            for completions in self._completing:
                for head, ids in completions:
                    if lower.endswith(head):
                        bad.extend(ids)
            run = re.search(rb"[0-9]*$", data).group().decode()
            bad.extend(self._digits_blocked(run))
            line_tokens = tokens[len(tokens) - self._tokens_in_line(tokens) :]
            for i in range(len(line_tokens) - _NO_REPEAT + 1):
                if line_tokens[i : i + _NO_REPEAT - 1] == line_tokens[len(line_tokens) - 2 :]:
                    bad.append(line_tokens[i + _NO_REPEAT - 1])
            reserve = plan.description_reserve if line_index else plan.headline_reserve
            text = body.decode("utf-8", errors="ignore").strip()
            room = self.limits[line_index] - reserve - self.brief.channel.length(text)
            if not own.strip():
                # A line of the model's own must say something before it ends.
                bad.extend(self._newline)
                bad.extend(stop_ids)
            if bad:
                logits[row, bad] = float("-inf")
            lexicon = plan.description_lexicon if line_index else plan.headline_lexicon
            if lexicon is not None:
                allowed, needs, may_end = lexicon.allowed(own)
                keep = [t for t, need in zip(allowed, needs, strict=True) if need <= room]
                if may_end:
                    keep += self._newline + (list(stop_ids) if line_index else [])
                only = torch.full_like(logits[row], float("-inf"))
                only[keep] = logits[row, keep]
                logits[row] = only
            remaining.append(room)
        over = self.units[None, :] > torch.tensor(remaining)[:, None]
        logits = logits.masked_fill(over.to(logits.device), float("-inf"))
        # A row with nothing left to write may always stop.
        dead = torch.isinf(logits).all(dim=-1)
        if bool(dead.any()):
            for stop in stop_ids:
                logits[dead, stop] = 0.0
        return logits

    def _tokens_in_line(self, tokens: list[int]) -> int:
        for back, token in enumerate(reversed(tokens)):
            if b"\n" in self.table.bytes[token]:
                return back
        return len(tokens)
