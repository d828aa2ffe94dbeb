"""How often the fluency judge disagrees with a careful reader: its error on a labelled set.

``bench/copy_data/fluency_labels.jsonl`` holds ad texts (headline and description joined as
``Candidate.text`` joins them), each labelled fluent or not by a native-level reader, never by
the judge. One row: ``{"text", "language": "en"|"zh", "fluent": bool, "source",
"known_terms"}``, where ``known_terms`` are the terms of the brief the text was written for (what
the filters pass the judge: :func:`adloop.generators.brief_terms`; empty for copy with no brief).
Sources: the issue's examples, raw language-model output, template output, handwritten good
copy and handwritten failures.

The threshold is chosen on a fixed half of the set (a seeded split, stratified by language and
label) and the error is reported on the other half, so the figures are not flattered by the
choice; whole-set figures come alongside. The error that matters for the copy target ("of the
candidates that pass the filters at most 5 % read as not fluent") is the false-accept rate:
the share of not-fluent texts the judge lets through.

Run ``python -m bench.copy_judge`` to print the figures as JSON.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators import DEFAULT_MIN_FLUENCY, judge_fluency

DEFAULT_LABELS = Path(__file__).parent / "copy_data" / "fluency_labels.jsonl"
SPLIT_SEED = 2024
LANGUAGES = ("en", "zh")
# What the judge is held to on the held-out half (tests/test_fluency.py checks it). Measured at
# the default threshold 0.8: false accepts en 15/42 = 0.36, zh 10/46 = 0.22; false rejects
# en 1/32 = 0.03, zh 4/30 = 0.13. The bounds leave room for a few texts, not for a regression.
# Most false accepts are nonsense built from real words in a plausible order ("Camels in
# Thrills | Ridgeline"), which a lexicon cannot see.
FALSE_ACCEPT_BOUND = {"en": 0.45, "zh": 0.30}
FALSE_REJECT_BOUND = {"en": 0.10, "zh": 0.20}
# Candidate thresholds: the score is in [0, 1]; a 0.05 grid is finer than the set can resolve.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def load_labels(path: str | Path = DEFAULT_LABELS) -> list[dict[str, Any]]:
    """The labelled rows of ``path`` (JSON lines), checked for the four fields."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"text", "language", "fluent", "source"} - set(row)
        if missing or row["language"] not in LANGUAGES or not isinstance(row["fluent"], bool):
            raise ValueError(
                f"{path}:{number}: each row needs text, language ('en'/'zh'), fluent "
                f"(true/false) and source; got {row!r}"
            )
        rows.append(row)
    return rows


def split_labels(
    rows: Sequence[dict[str, Any]], seed: int = SPLIT_SEED
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(choose half, held-out half): each (language, label) group shuffled with ``seed`` and
    cut in two, so both halves hold both languages and both labels in the set's proportions."""
    rng = np.random.default_rng(seed)
    choose, held_out = [], []
    for language in LANGUAGES:
        for fluent in (True, False):
            group = [r for r in rows if r["language"] == language and r["fluent"] is fluent]
            order = rng.permutation(len(group))
            half = len(group) // 2
            choose.extend(group[i] for i in order[:half])
            held_out.extend(group[i] for i in order[half:])
    return choose, held_out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion (0, 1 when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(centre - half, 0.0), 4), round(min(centre + half, 1.0), 4)


def _rate(k: int, n: int) -> dict[str, Any]:
    return {
        "rate": round(k / n, 4) if n else None,
        "count": k,
        "of": n,
        "ci95": list(wilson_interval(k, n)),
    }


def error_figures(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Accuracy, false-accept and false-reject rates (each with a Wilson 95 % interval) of the
    judge at ``threshold`` on ``rows``, which carry their ``score``."""
    accepted = [r["score"] >= threshold for r in rows]
    fluent = [r["fluent"] for r in rows]
    n_fluent = sum(fluent)
    n_not = len(rows) - n_fluent
    correct = sum(a == f for a, f in zip(accepted, fluent, strict=True))
    false_accepts = sum(a and not f for a, f in zip(accepted, fluent, strict=True))
    false_rejects = sum(f and not a for a, f in zip(accepted, fluent, strict=True))
    n_accepted = sum(accepted)
    return {
        "n": len(rows),
        "n_fluent": n_fluent,
        "n_not_fluent": n_not,
        "accuracy": _rate(correct, len(rows)),
        # not-fluent texts the judge accepts / all not-fluent texts
        "false_accept": _rate(false_accepts, n_not),
        # fluent texts the judge rejects / all fluent texts
        "false_reject": _rate(false_rejects, n_fluent),
        # not-fluent texts among those accepted; depends on this set's mix of labels
        "not_fluent_among_accepted": _rate(false_accepts, n_accepted),
    }


def choose_threshold(rows: Sequence[dict[str, Any]]) -> float:
    """The grid threshold with the least balanced error (mean of false-accept and false-reject
    rates, averaged over the languages) on ``rows``. Scores bunch near 0 and 1, so many
    thresholds tie; the middle of the tied ones keeps the widest margin on both sides."""

    def balanced_error(threshold: float) -> float:
        errors = []
        for language in LANGUAGES:
            subset = [r for r in rows if r["language"] == language]
            figures = error_figures(subset, threshold)
            errors.append((figures["false_accept"]["rate"] + figures["false_reject"]["rate"]) / 2)
        return sum(errors) / len(errors)

    errors = {t: balanced_error(t) for t in THRESHOLD_GRID}
    best = [t for t in THRESHOLD_GRID if errors[t] == min(errors.values())]
    return best[(len(best) - 1) // 2]


def _by_language(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    figures = {}
    for lang in LANGUAGES:
        figures[lang] = error_figures([r for r in rows if r["language"] == lang], threshold)
    figures["all"] = error_figures(rows, threshold)
    return figures


def evaluate_judge(
    path: str | Path = DEFAULT_LABELS, threshold: float | None = None, seed: int = SPLIT_SEED
) -> dict[str, Any]:
    """The fluency judge's error on the labelled set, per language and overall.

    Parameters
    ----------
    path: the labelled JSON-lines file.
    threshold: score an ad needs to count as fluent; None chooses it on the choosing half
        (:func:`choose_threshold`), which is how :data:`DEFAULT_MIN_FLUENCY` was set.
    seed: the split's seed.

    Returns a dict::

        {"path", "n_rows", "split_seed",
         "threshold",            # the threshold the figures use
         "chosen_threshold",     # what the choosing half picks
         "default_threshold",    # DEFAULT_MIN_FLUENCY, the filter's default
         "held_out":  {"en": F, "zh": F, "all": F},   # the half not used to choose
         "whole_set": {"en": F, "zh": F, "all": F},
         "held_out_mistakes": [{"text", "language", "fluent", "score", "why", "source"}]}

    where each ``F`` is :func:`error_figures`: ``n``, ``n_fluent``, ``n_not_fluent`` and
    ``accuracy``, ``false_accept``, ``false_reject``, ``not_fluent_among_accepted``, each
    ``{"rate", "count", "of", "ci95": [low, high]}`` (Wilson 95 %).

    Example
    -------
    >>> evaluate_judge()["held_out"]["en"]["false_accept"]["rate"]  # doctest: +SKIP
    """
    rows = load_labels(path)
    scored = []
    for row in rows:
        judged = judge_fluency(row["text"], row["language"], known_terms=row.get("known_terms", ()))
        scored.append({**row, "score": judged.score, "why": judged.why})
    choose, held_out = split_labels(scored, seed)
    chosen = choose_threshold(choose)
    used = chosen if threshold is None else threshold
    mistakes = [
        {k: r[k] for k in ("text", "language", "fluent", "score", "why", "source")}
        for r in held_out
        if (r["score"] >= used) != r["fluent"]
    ]
    return {
        "path": str(path),
        "n_rows": len(rows),
        "split_seed": seed,
        "threshold": used,
        "chosen_threshold": chosen,
        "default_threshold": DEFAULT_MIN_FLUENCY,
        "held_out": _by_language(held_out, used),
        "whole_set": _by_language(scored, used),
        "held_out_mistakes": mistakes,
    }


if __name__ == "__main__":
    print(json.dumps(evaluate_judge(*sys.argv[1:2]), ensure_ascii=False, indent=1))
