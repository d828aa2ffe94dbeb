"""Does an ad read as fluent language? A judge that never asks the model that wrote the ad.

The generating language model cannot grade its own gibberish (it rates its own samples as
likely), so this judge uses independent, offline evidence:

* **Lexicons.** ``wordfreq`` word frequencies for English and Chinese; ``jieba`` segments
  Chinese into words (its own dictionary, no HMM guessing of unknown words), and a run of
  rare single characters that no dictionary joins into a word ("艺朽", "疯毁", "厘利戒") counts
  as a non-word, as does a misspelling one edit away from a far more common word ("Forwad").
* **A likelihood signal.** The mean Zipf frequency (log10 of occurrences per billion words) of
  the words, or for Chinese of the word each character belongs to: a unigram language model
  of the text that is not the generator.
* **Cheap structure checks**, each a defect on its own: an echoed label ("Headlines:",
  "Bid:", "标题："), a long digit string or ISO date, Japanese kana or a character Simplified
  Chinese does not use ("携帯"), a part that ends mid-phrase ("… for the", "Dear Fiona,",
  "… Please Visit"), stray markup, a bare list of four or more words ("Fashion, Luxury,
  Designing, Please Visit").

The brief's own terms (brand, product, keywords, offer, ...) are real words for that brief even
when no lexicon holds them: pass them as ``known_terms``.

Score: ``real_word_share ** k x frequency factor`` (k = 8 for English, 4 for Chinese), 0 on
any structure defect or a character Simplified Chinese does not use; an ad is fluent when its
score reaches :data:`DEFAULT_MIN_FLUENCY`. The threshold was chosen on one seeded half
of the hand-labelled set ``bench/copy_data/fluency_labels.jsonl`` and its error is reported on
the other half by ``bench/copy_judge.py``; what the judge cannot see is fluent-looking nonsense
made of real words in a plausible order.

wordfreq and jieba are imported on first use; loading both takes about a second, after which
a judgement takes tens of microseconds.

Example
-------
>>> judge_fluency("Bespoke Rings — Book your consultation.", "en").why
''
>>> is_fluent("Gold Mining — Aurelle: Forwad Gold Mining", "en", known_terms=["Aurelle"])
False
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from adloop.generators.errors import ConfigError

__all__ = ["DEFAULT_MIN_FLUENCY", "FluencyScore", "content_words", "is_fluent", "judge_fluency"]

#: Least score a fluent ad reaches (chosen on the training half of the labelled set).
DEFAULT_MIN_FLUENCY = 0.8

_ZIPF_OFFSET = 9.0  # Zipf = log10(frequency per word) + 9
# A word rarer than this (about 3 per billion words) is not a word for ad copy.
_MIN_WORD_ZIPF = 1.5
# A word this rare that sits one edit from a word 1.5 Zipf (30x) more common is a misspelling.
_TYPO_MAX_ZIPF = 3.0
_TYPO_MIN_GAIN = 1.5
# A Chinese character that stands alone as a word at least this often is a real one-character
# word (的, 为, 您, 更, 快 ...); rarer ones alone are fragments of a word that is not there.
_STANDALONE_ZIPF = 5.0
# A character Simplified Chinese barely uses (Japanese shinjitai, traditional forms, typos).
_RARE_CHARACTER_ZIPF = 2.0
# Lexical factor: real_word_share to this power. An English non-word is nearly always a slip;
# a Chinese character pair no dictionary joins is sometimes new jargon (直采), so it weighs less.
_SHARE_EXPONENT = {"en": 8, "zh": 4}
# Frequency factor: mean Zipf at or below ``low`` scores 0, at or above ``high`` scores 1.
# (Chinese is per character, where a two-character word of Zipf 3 counts 6 per character.)
_FREQUENCY_RANGE = {"en": (2.5, 4.0), "zh": (4.5, 5.5)}
# A few words say little about a text's frequency: the mean is shrunk towards that of
# ordinary ad copy as if this many words of it had been seen too.
_PRIOR_MEAN = {"en": 4.5, "zh": 6.0}
_PRIOR_WORDS = 3

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_LATIN_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_LABEL = re.compile(
    r"(?:^|[\s—|｜:：,，.。!！?？(（])"
    r"(headlines?|descriptions?|desc|title|subtitle|tagline|slogan|sentence|name|author|blog|"
    r"brand|keywords?|bid|cta|call to action|ad copy|copy|text|audience|tone|"
    r"must include|never use|标题|描述|广告语|关键词|品牌|"
    r"文案|作者|名称|出价)\s*[:：]",
    re.IGNORECASE,
)
_DIGIT_NOISE = re.compile(r"\d{6,}|\d{4}-\d{1,2}-\d{1,2}|\d+(?:[,.\-/]\d+){3,}")
_MARKUP = re.compile(r"[*_#@<>{}\[\]\\~^`=]|\([^)]*$|（[^）]*$")
_SEPARATOR = re.compile(r"\s+—\s+")
_GLUED_SENTENCE = re.compile(r"[a-z]{2}[.!?][A-Z][a-z]")  # "consultation.Never"
_CLAUSE_END = re.compile(r"[.!?。！？;；]")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_EN_DANGLING = _word_set(
    "a an the and or but nor of to for with without in on at by from into onto about as "
    "than your our my their its this these those is are was were be will can very more "
    "most so such every each please"
)
_OPENING_LABEL = re.compile(r"\s*(headlines?|descriptions?)\b", re.IGNORECASE)
_DETERMINERS = _word_set("a an the your our my their its this these those every each")
_PREPOSITIONS = _word_set("of for in at on to with by from into onto about")
_PREPOSITION_PAIRS = frozenset({("in", "to"), ("on", "to")})  # "log in to", "hold on to"
_ZH_DANGLING = frozenset("的和与及或为在把被让从对向给将是之而且但")
_ZH_GRAMMAR = _ZH_DANGLING | frozenset(
    "了您你我他她们就都也又更很不没每这那其所以于由着过得地到即再还才只等"
)
_EN_FUNCTION = (_EN_DANGLING - {"please"}) | _word_set(
    "you it we i us they he she them who what how why when where not no all that which "
    "across over under through after before during within between against along around "
    "behind beyond up down out off then there here also just only even if while until"
)
_EN_COMPOUND = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")  # same-day is one word here

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class FluencyScore:
    """How fluent one ad text reads.

    Parameters
    ----------
    score: in [0, 1]; ``real_word_share ** k`` times the frequency factor, 0 on a defect.
    real_word_share: share of words (for Chinese: characters) that are real words or the
        brief's known terms.
    mean_log_frequency: mean Zipf frequency of the words that are not known terms (for
        Chinese, per character, of the word the character belongs to); 0 when there are none.
    why: the first problem found ("non-word 'Forwad'", "echoed label 'Bid:'"), "" if none.
    """

    score: float
    real_word_share: float
    mean_log_frequency: float
    why: str = ""


def judge_fluency(text: str, language: str, *, known_terms: Iterable[str] = ()) -> FluencyScore:
    """Score how fluently ``text`` reads in ``language`` (``"en"`` or ``"zh"``).

    ``known_terms`` are the brief's own words (brand, product, keywords, offer, ...), real for
    this ad even when no lexicon has them. Headline and description may be joined with
    `` — `` as :attr:`Candidate.text` joins them; each part is checked for ending mid-phrase.

    Example
    -------
    >>> judge_fluency("Aurelle Rings — Book a fitting.", "en", known_terms=["Aurelle"]).score
    1.0
    """
    if language not in ("en", "zh"):
        raise ConfigError(f"judge_fluency: language must be 'en' or 'zh', got {language!r}")
    terms = tuple(sorted({t.strip() for t in known_terms if t and t.strip()}, key=len))[::-1]
    text = unicodedata.normalize("NFKC", text).strip() if language == "en" else text.strip()
    defect = _structure_defect(text, language)
    if language == "zh":
        real, total, frequencies, word_defect = _chinese_words(text, terms)
    else:
        real, total, frequencies, word_defect = _english_words(text, terms)
    if total == 0:
        return FluencyScore(0.0, 0.0, 0.0, "no words")
    share = real / total
    mean = sum(frequencies) / len(frequencies) if frequencies else 0.0
    shrunk = (sum(frequencies) + _PRIOR_WORDS * _PRIOR_MEAN[language]) / (
        len(frequencies) + _PRIOR_WORDS
    )
    low, high = _FREQUENCY_RANGE[language]
    frequency_factor = min(max((shrunk - low) / (high - low), 0.0), 1.0)
    # A character Simplified Chinese barely uses is a defect on its own (携帯, 葉).
    fatal = word_defect.startswith("rare character")
    lexical = share ** _SHARE_EXPONENT[language]
    score = 0.0 if defect or fatal else round(lexical * frequency_factor, 4)
    why = defect or word_defect
    if not why and frequency_factor < 1.0:
        why = f"rare words (mean Zipf frequency {mean:.1f})"
    return FluencyScore(score, round(share, 4), round(mean, 3), why)


def is_fluent(
    text: str,
    language: str,
    *,
    known_terms: Iterable[str] = (),
    min_score: float = DEFAULT_MIN_FLUENCY,
) -> bool:
    """True when ``text`` scores at least ``min_score`` (see :func:`judge_fluency`).

    >>> is_fluent("玩饱、疯毁 — 奥蕾尔：厘利戒快行自言肉", "zh", known_terms=["奥蕾尔"])
    False
    """
    return judge_fluency(text, language, known_terms=known_terms).score >= min_score


# ---------------------------------------------------------------------------- structure
def _structure_defect(text: str, language: str) -> str:
    """The first structural defect of ``text``, or ""."""
    label = _LABEL.search(text)
    if label:
        return f"echoed label {label.group(1)!r}"
    digits = _DIGIT_NOISE.search(text)
    if digits:
        return f"digit string {digits.group(0)!r}"
    kana = _KANA.search(text)
    if kana:
        return f"Japanese kana {kana.group(0)!r}"
    markup = _MARKUP.search(text)
    if markup:
        return f"stray markup {markup.group(0)!r}"
    for part in _SEPARATOR.split(text):
        opening = _OPENING_LABEL.match(part)
        if opening:
            return f"echoed label {opening.group(1)!r}"
        ending = _dangling_end(part, language)
        if ending:
            return f"ends mid-phrase ({ending!r})"
        if _is_bare_list(part, language):
            return "a bare list of words"
        problem = _english_grammar(part) if language == "en" else _chinese_grammar(part)
        if problem:
            return problem
    return ""


def _chinese_grammar(part: str) -> str:
    """Twelve or more characters without a break or a single grammatical character (的, 为,
    与, 您 ...): names and keywords strung together ("新婚伴侣高端礼品买家时尚达人"), else ""."""
    for stretch in re.findall(r"[^\s\W_]{12,}", part):
        if not set(stretch) & _ZH_GRAMMAR:
            return "a pile of words with no grammar"
    return ""


def _english_grammar(part: str) -> str:
    """A word pair English never writes ("for of", "the with"), or six or more words between
    punctuation with no article, preposition, pronoun or conjunction (a pile of keywords)."""
    if _GLUED_SENTENCE.search(part):
        return "a sentence runs into the next without a space"
    words = [w for w in _LATIN_WORD.findall(part.lower())]
    for first, second in zip(words, words[1:], strict=False):
        impossible = (first in _DETERMINERS and second in _DETERMINERS | _PREPOSITIONS) or (
            first in _PREPOSITIONS and second in _PREPOSITIONS
        )
        if impossible and (first, second) not in _PREPOSITION_PAIRS:
            return f"broken grammar ({first!r} {second!r})"
    for chunk in re.split(r"[,.:;!?|&()]", part.lower()):
        chunk_words = _EN_COMPOUND.findall(chunk)
        if len(chunk_words) >= 6 and not any(w in _EN_FUNCTION for w in chunk_words):
            return "a pile of words with no grammar"
    return ""


def _dangling_end(part: str, language: str) -> str:
    """The end of ``part`` when it stops mid-phrase ("Dear Fiona,", "… for the"), else ""."""
    stripped = part.rstrip()
    if not stripped:
        return ""
    if stripped[-1] in ",，、:：;；&+-–|｜/":
        return stripped[-12:]
    if language == "zh":
        tail = stripped.rstrip("。！？!?.")
        return tail[-4:] if tail and tail[-1] in _ZH_DANGLING and tail == stripped else ""
    words = _LATIN_WORD.findall(stripped.lower())
    if words and stripped[-1] not in ".!?" and words[-1] in _EN_DANGLING:
        return " ".join(words[-2:])
    if len(words) >= 2 and words[-2] == "please":
        return " ".join(words[-2:])
    return ""


def _is_bare_list(part: str, language: str) -> bool:
    """Four or more items joined by commas alone, most of them single words (Chinese: of at
    most three characters), with no word that builds a sentence."""
    if _CLAUSE_END.search(part.rstrip(".。!！?？")):
        return False
    items = [i.strip() for i in re.split(r"[,，、:：]", part) if i.strip()]
    if len(items) < 4:
        return False
    if language == "zh":
        # Four-character phrases in a row are ordinary Chinese ad style; bare nouns are not.
        return all(len(i) <= 3 for i in items)
    words = [w for i in items for w in _LATIN_WORD.findall(i.lower())]
    # Mostly single words: "Fashion, Luxury, Designing"; "bespoke look, bespoke care, ..."
    # is a figure of speech, not a list of keywords.
    single = sum(len(_LATIN_WORD.findall(i)) == 1 for i in items)
    short = all(len(_LATIN_WORD.findall(i)) <= 3 for i in items)
    return short and single * 4 >= len(items) * 3 and not any(w in _EN_FUNCTION for w in words)


def content_words(text: str, language: str) -> list[str]:
    """The words of ``text`` that carry meaning, lower-cased: no function words.

    English splits on letters (``same-day`` stays one word); Chinese runs are segmented by
    jieba and keep words of two or more characters, whose single characters are mostly
    particles; in Chinese text its Chinese words come first, then its Latin ones. Used to say
    which words go with a higher CTR (creative insights).

    >>> content_words("Rings for the bride, made to measure", "en")
    ['rings', 'bride', 'made', 'measure']
    """
    words = [w.lower() for w in _EN_COMPOUND.findall(_CJK.sub(" ", text))]
    latin = [w for w in words if w not in _EN_FUNCTION and len(w) > 1]
    if language != "zh":
        return latin
    chinese = [
        w
        for run in re.findall(f"(?:{_CJK.pattern})+", text)
        for w in _segmenter().lcut(run)
        if len(w) > 1
    ]
    return chinese + latin


# ---------------------------------------------------------------------------- lexicons
def _frequencies(language: str) -> dict[str, float]:
    """wordfreq's word -> frequency table for ``language``, loaded once."""
    key = f"freq_{language}"
    if key not in _STATE:
        with _LOCK:
            if key not in _STATE:
                from wordfreq import get_frequency_dict

                _STATE[key] = get_frequency_dict(language)
    return _STATE[key]


def _segmenter() -> Any:
    """A jieba tokenizer with its own dictionary (one instance, so nobody else's added words
    change our segmentation), quiet on stderr."""
    if "jieba" not in _STATE:
        with _LOCK:
            if "jieba" not in _STATE:
                with warnings.catch_warnings():
                    # jieba imports setuptools' deprecated pkg_resources where it exists
                    warnings.simplefilter("ignore")
                    import jieba

                jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading on stderr
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _STATE["jieba"] = tokenizer
    return _STATE["jieba"]


def _bigrams() -> frozenset[str]:
    """Every pair of neighbouring characters inside a Chinese word wordfreq knows."""
    if "bigrams" not in _STATE:
        words = _frequencies("zh")
        with _LOCK:
            if "bigrams" not in _STATE:
                _STATE["bigrams"] = frozenset(
                    w[i : i + 2] for w in words if len(w) > 1 for i in range(len(w) - 1)
                )
    return _STATE["bigrams"]


def _zipf(word: str, language: str) -> float:
    frequency = _frequencies(language).get(word, 0.0)
    return math.log10(frequency) + _ZIPF_OFFSET if frequency > 0 else 0.0


@lru_cache(maxsize=65536)
def _english_word(word: str) -> tuple[float, str]:
    """(Zipf frequency, problem) of one lower-cased English word; problem is "" when real."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    word = word.replace("’", "'")
    zipf = _zipf(word, "en")
    if zipf < _MIN_WORD_ZIPF:
        return zipf, "non-word"
    if zipf < _TYPO_MAX_ZIPF and len(word) >= 4:
        # An edit in the last two letters is more often another form of the word
        # (sustainably, sustainable) than a slip, so only edits before them count.
        stem = word[:-2]
        frequencies = _frequencies("en")
        needed = 10 ** (zipf + _TYPO_MIN_GAIN - _ZIPF_OFFSET)
        if any(frequencies.get(n, 0.0) >= needed for n in _edits(word) if not n.startswith(stem)):
            return zipf, "misspelling"
    return zipf, ""


def _edits(word: str) -> set[str]:
    """Every string one deletion, transposition, replacement or insertion away from ``word``."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    transposes = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaces = [a + c + b[1:] for a, b in splits if b for c in letters]
    inserts = [a + c + b for a, b in splits for c in letters]
    return set(deletes + transposes + replaces + inserts) - {word}


def _is_latin(word: str) -> bool:
    return all("LATIN" in unicodedata.name(c, "") for c in word if c.isalpha())


@lru_cache(maxsize=256)
def _known_words(terms: tuple[str, ...]) -> frozenset[str]:
    return frozenset(w for t in terms for w in _LATIN_WORD.findall(t.lower()))


def _english_words(text: str, terms: tuple[str, ...]) -> tuple[int, int, list[float], str]:
    """(real words, words, Zipf of each unknown word, first problem) for English text."""
    known = _known_words(terms)
    real, total, frequencies, problem = 0, 0, [], ""
    for token in _LATIN_WORD.findall(text):
        for word in token.split("-"):
            total += 1
            lowered = word.lower()
            if lowered in known:
                real += 1
                # A known word the lexicon also knows still tells how common the text's words are.
                zipf = _zipf(lowered, "en")
                if zipf >= _MIN_WORD_ZIPF:
                    frequencies.append(zipf)
                continue
            if not word.isascii() and not _is_latin(word):
                problem = problem or f"not English {word!r}"
                continue
            zipf, issue = _english_word(lowered)
            frequencies.append(zipf)
            if issue:
                problem = problem or f"{issue} {word!r}"
            else:
                real += 1
    return real, total, frequencies, problem


def _chinese_words(text: str, terms: tuple[str, ...]) -> tuple[int, int, list[float], str]:
    """(real units, units, Zipf per unit of unknown words, first problem) for Chinese text.

    Units are CJK characters and Latin words. Known terms are cut out first; the rest of each
    CJK run is segmented, and its characters are real when they belong to a dictionary word
    or stand alone as a common one-character word.
    """
    pieces = _split_known(text, _known_spans(terms))
    real, total, frequencies, problem = 0, 0, [], ""
    for piece, is_known in pieces:
        if is_known:
            n_units = len(_CJK.findall(piece)) + len(_LATIN_WORD.findall(_CJK.sub(" ", piece)))
            real += n_units
            total += n_units
            continue
        for word in _LATIN_WORD.findall(_CJK.sub(" ", piece)):
            total += 1
            # A short acronym (VIP, DIY, K of 18K) is usual in Chinese ads; an English word is not.
            if word.isupper() and len(word) <= 4 or word.lower() in _known_words(terms):
                real += 1
            else:
                problem = problem or f"English word {word!r} in Chinese"
        for run in re.findall(f"(?:{_CJK.pattern})+", piece):
            n_real, n_chars, run_frequencies, run_problem = _chinese_run(run)
            real += n_real
            total += n_chars
            frequencies.extend(run_frequencies)
            if run_problem.startswith("rare character") and not problem.startswith("rare"):
                problem = run_problem  # the defect that decides the score comes first
            problem = problem or run_problem
    return real, total, frequencies, problem


@lru_cache(maxsize=65536)
def _chinese_run(run: str) -> tuple[int, int, tuple[float, ...], str]:
    """Score one run of CJK characters with no known term inside it.

    jieba cuts the run into words; a stretch of one-character tokens is then covered, where it
    can be, by wordfreq's larger list of words (新客, 首单 are there, not in jieba). What stays
    uncovered and is no common word alone is a fragment; two fragments side by side ("艺朽",
    "疯毁") are a non-word, and a character rare even alone (帯) is a non-word by itself.
    """
    tokens = list(_segmenter().cut(run, HMM=False))
    pieces: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and len(tokens[j]) == 1:
            j += 1
        if j == i:
            pieces.append(tokens[i])
            i += 1
        else:
            pieces.extend(_cover("".join(tokens[i:j])))
            i = j
    frequencies: list[float] = []
    fragment = []
    for piece in pieces:
        zipf = _zipf(piece, "zh")
        if len(piece) > 1:
            zipf = zipf or _MIN_WORD_ZIPF  # in jieba's dictionary, too rare for wordfreq's
        # Per character, the Zipf scale of the word's log-probability shared over its
        # characters: a unigram model's likelihood of the text, in comparable units.
        frequencies.extend([_ZIPF_OFFSET + (zipf - _ZIPF_OFFSET) / len(piece)] * len(piece))
        fragment.append(len(piece) == 1 and zipf < _STANDALONE_ZIPF)
    unreal = []
    for k, piece in enumerate(pieces):
        rare = fragment[k] and _zipf(piece, "zh") < _RARE_CHARACTER_ZIPF
        # Two fragments side by side are a non-word unless some word holds the pair (品饮).
        beside = (k > 0 and fragment[k - 1] and pieces[k - 1] + piece not in _bigrams()) or (
            k + 1 < len(pieces) and fragment[k + 1] and piece + pieces[k + 1] not in _bigrams()
        )
        if rare or (fragment[k] and beside):
            unreal.append(piece)
    problem = ""
    rare_characters = [p for p in unreal if _zipf(p, "zh") < _RARE_CHARACTER_ZIPF]
    if rare_characters:
        problem = f"rare character {rare_characters[0]!r}"
    elif unreal:
        problem = f"no word joins {''.join(unreal)!r}"
    return len(run) - len(unreal), len(run), tuple(frequencies), problem


def _cover(characters: str) -> list[str]:
    """``characters`` cut into the most characters wordfreq words of 2-4 characters can cover
    (single characters where none does), by dynamic programming."""
    n = len(characters)
    # best[i]: (characters covered, -pieces) for characters[i:], and the length taken at i
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    take = [1] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = (best[i + 1][0], best[i + 1][1] - 1)
        for length in range(2, min(4, n - i) + 1):
            if _zipf(characters[i : i + length], "zh") > 0:
                option = (best[i + length][0] + length, best[i + length][1] - 1)
                if option > best[i]:
                    best[i], take[i] = option, length
    pieces, i = [], 0
    while i < n:
        pieces.append(characters[i : i + take[i]])
        i += take[i]
    return pieces


@lru_cache(maxsize=256)
def _known_spans(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """Known terms, plus in Chinese terms the fragments no dictionary joins (工坊 of 巴黎工坊),
    as one pattern matching the longest first, so a paraphrase that reuses them keeps them
    real; None when there are no terms."""
    spans = set(terms)
    for term in terms:
        for run in re.findall(f"(?:{_CJK.pattern})+", term):
            tokens = list(_segmenter().cut(run, HMM=False))
            fragment = ""
            for token in [*tokens, ""]:
                if len(token) == 1:
                    fragment += token
                    continue
                if len(fragment) >= 2:
                    spans.add(fragment)
                fragment = ""
    if not spans:
        return None
    ordered = sorted(spans, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE)


def _split_known(text: str, pattern: re.Pattern[str] | None) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is a known term) pieces, case-insensitively."""
    if pattern is None:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            pieces.append((text[position : match.start()], False))
        pieces.append((match.group(0), True))
        position = match.end()
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces
