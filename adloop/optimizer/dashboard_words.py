"""Numbers and findings in words, shared by the dashboard and the static report.

One module says how a rate, an interval, a probability and each data-quality finding are
written, so the live dashboard (``/ui``) and ``report.html`` read the same: percentages
instead of raw decimals, intervals beside estimates, a probability that never reads "0",
and every data-quality count turned into a sentence with what to do about it.

Example::

    percent(0.02153)                       # '2.15 %'
    rate_with_interval(0.0215, 0.019, 0.024)  # '2.15 % (1.90–2.40 %)'
    probability(0.9995)                    # '> 99.9 %'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Finding",
    "change_with_interval",
    "duration",
    "insight_cells",
    "percent",
    "probability",
    "quality_findings",
    "rate_with_interval",
    "variant_label",
]


def variant_label(index: int) -> str:
    """Short name of the ``index``-th variant (creation order): A, B, ... Z, AA, AB, ..."""
    label = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        label = chr(ord("A") + remainder) + label
    return label


def percent(value: float | None, digits: int | None = None) -> str:
    """``value`` (a share) as a percentage; digits adapt so small rates keep 3 figures."""
    if value is None or not math.isfinite(value):
        return "–"
    scaled = value * 100
    if digits is None:
        size = abs(scaled)
        digits = 2 if size < 10 else 1
        if 0 < size < 0.1:
            digits = 3
    return f"{scaled:.{digits}f} %"


def rate_with_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A rate with its 95 % interval: ``'2.15 % (1.90–2.40 %)'``."""
    if mean is None:
        return "–"
    if low is None or high is None:
        return percent(mean)
    digits = _shared_digits(mean, low, high)
    inside = f"{percent(low, digits)[:-2]}–{percent(high, digits)}"
    return f"{percent(mean, digits)} ({inside})"


def change_with_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A relative change with its 95 % interval: ``'+21 % (+5 to +39 %)'``."""
    if mean is None or not math.isfinite(mean):
        return "–"
    text = f"{mean * 100:+.0f} %"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return text
    return f"{text} ({low * 100:+.0f} to {high * 100:+.0f} %)"


#: Header of a creative-insights table and how each reading is worded.
INSIGHT_HEADER = ("Element", "Variants with / without", "CTR with", "CTR without", "Difference",
                  "Reading")  # fmt: skip
_READINGS = {"higher": "higher CTR", "lower": "lower CTR",
             "unclear": "no clear difference"}  # fmt: skip


def insight_cells(row: Mapping[str, Any]) -> list[str]:
    """One creative-insights row (``insights.creative_insights``) as the texts of its cells."""
    return [
        row["element"],
        f"{row['variants_with']} / {row['variants_without']}",
        rate_with_interval(*row["with"]),
        rate_with_interval(*row["without"]),
        change_with_interval(*row["lift"]),
        _READINGS[row["reading"]],
    ]


def _shared_digits(*values: float) -> int:
    """Decimals that keep three significant figures of the smallest non-zero value."""
    smallest = min((abs(v) * 100 for v in values if v), default=1.0)
    return 3 if smallest < 0.1 else (2 if smallest < 10 else 1)


def probability(value: float | None) -> str:
    """A probability as a percentage with one decimal, never rounded to 0 or 100.

    Monte Carlo estimates of "probability best" are good to about a tenth of a percent, so
    more digits would be noise, and a reader should never see "0" for "below one in a
    thousand draws".
    """
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 0.9995:
        return "> 99.9 %"
    if value < 0.0005:
        return "< 0.1 %"
    return f"{value * 100:.1f} %"


def duration(seconds: float) -> str:
    """A rough duration in words: 'about 40 minutes', 'about 2 days'."""
    minutes = seconds / 60
    unit, size = next(
        (unit, size) for unit, size in (("day", 1440), ("hour", 60), ("minute", 1))
        if minutes >= size or unit == "minute"
    )  # fmt: skip
    return f"about {_plural(max(1, round(minutes / size)), unit)}"


@dataclass(frozen=True)
class Finding:
    """One data-quality finding: how bad (``ok``, ``info``, ``warn``, ``bad``), what, what to do."""

    level: str
    title: str
    detail: str
    action: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain dict (for JSON and CSV)."""
        return {"level": self.level, "title": self.title, "detail": self.detail,
                "action": self.action}  # fmt: skip


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (plural or word + 's')}"


def quality_findings(
    quality: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> list[Finding]:
    """The campaign's ``data_quality`` (as the API returns it) as findings in words.

    Every check appears, clean ones as ``ok``, so a reader sees what was checked; problems
    come first and each says what to do. ``labels`` maps variant ids to their short names.
    """
    labels = labels or {}
    problems: list[Finding] = []
    fine: list[Finding] = []
    srm = quality.get("srm") or {}
    if srm.get("flagged"):
        problems.append(Finding(
            "bad", "Traffic split does not match the assignments (sample ratio mismatch)",
            f"Impressions per variant differ from what the chooser assigned "
            f"(chi-square p = {srm.get('p_value', 0):.2g}); results may be biased.",
            "Check that your ad server reports each decision's impression exactly once, and "
            "reports none for ads adloop did not choose.",
        ))  # fmt: skip
    elif srm.get("p_value") is None:
        fine.append(Finding("info", "Traffic split not checked yet", _srm_wait(srm)))
    else:
        fine.append(Finding(
            "ok", "Traffic split matches the assignments",
            f"No sample ratio mismatch (chi-square p = {srm['p_value']:.2g}).",
        ))  # fmt: skip
    without = int(srm.get("impressions_without_assignment") or 0)
    if without:
        problems.append(Finding(
            "warn", f"{_plural(without, 'impression')} for variants never assigned",
            "Impressions arrived for variants the chooser never picked in this campaign.",
            "Make sure impressions carry the variant id the choose call returned.",
        ))  # fmt: skip
    orphans = int(quality.get("orphan_clicks") or 0) + int(quality.get("orphan_conversions") or 0)
    if orphans:
        problems.append(Finding(
            "warn", f"{_plural(orphans, 'orphan click')} or conversions",
            f"{_plural(int(quality.get('orphan_clicks') or 0), 'click')} and "
            f"{_plural(int(quality.get('orphan_conversions') or 0), 'conversion')} name a "
            "decision whose impression was never reported.",
            "Report the impression of every decision (or let choose log it), and send clicks "
            "with the decision_id of the ad that was shown.",
        ))  # fmt: skip
    else:
        fine.append(Finding("ok", "No orphan clicks", "Every click follows a reported impression."))
    unattributed = int(quality.get("unattributed_events") or 0)
    if unattributed:
        problems.append(Finding(
            "info", f"{_plural(unattributed, 'event')} without a decision id",
            "They count, but cannot be matched to an impression or checked.",
            "Send the decision_id with every click and conversion.",
        ))  # fmt: skip
    duplicates = int(quality.get("duplicate_deliveries") or 0)
    if duplicates:
        problems.append(Finding(
            "info", _plural(duplicates, "duplicate delivery", "duplicate deliveries"),
            "Events sent again with an event id already stored were counted once.",
            "Nothing to do while retries explain them; if the number keeps growing, check "
            "that your sender does not resend acknowledged batches.",
        ))  # fmt: skip
    else:
        fine.append(Finding("ok", "No duplicates", "No event was delivered twice."))
    rejected = int(quality.get("rejected_rows") or 0)
    if rejected:
        problems.append(Finding(
            "warn", f"{_plural(rejected, 'rejected row')}",
            "Rows with missing or invalid fields were refused and not stored.",
            "The events API's answer names each refused row's field; fix the sender.",
        ))  # fmt: skip
    exceed: Sequence[str] = quality.get("clicks_exceed_impressions") or []
    if exceed:
        names = ", ".join(labels.get(v, v) for v in exceed)
        problems.append(Finding(
            "warn", f"More clicks than impressions: {names}",
            "Impressions are missing for these variants, so their CTR reads too high.",
            "Check that impressions are reported for every ad shown.",
        ))  # fmt: skip
    late = int(quality.get("events_for_retired_variants") or 0)
    if late:
        problems.append(Finding(
            "info", f"{_plural(late, 'event')} after retirement",
            "Events arrived for variants after they were retired (ads still cached?). "
            "They are kept and counted.",
            "Make sure the ad server stops showing a variant once it is retired.",
        ))  # fmt: skip
    out_of_range = int(quality.get("values_out_of_range") or 0)
    if out_of_range:
        problems.append(Finding(
            "warn", f"{_plural(out_of_range, 'event')} with an invalid value",
            "Stored conversion values are negative, infinite or too large; they count as 0 "
            "(or the largest value allowed).",
            "Correct the values at the source.",
        ))  # fmt: skip
    failure = quality.get("refresh_failure")
    if failure:
        problems.append(Finding(
            "bad", "The traffic split cannot be updated",
            f"Rebuilding the allocation fails ({failure.get('error', failure)}); the campaign "
            "keeps serving its last allocation.",
            "Look at the campaign's data quality above; the operator's log has the details.",
        ))  # fmt: skip
    if quality.get("posterior_error"):
        problems.append(Finding(
            "bad", "Estimates cannot be computed",
            f"The campaign's counts are inconsistent: {quality['posterior_error']}.",
            "Fix or remove the corrupt rows; counts are still shown.",
        ))  # fmt: skip
    order = {"bad": 0, "warn": 1, "info": 2, "ok": 3}
    return sorted(problems, key=lambda f: order[f.level]) + fine


def _srm_wait(srm: Mapping[str, Any]) -> str:
    seen = int(srm.get("impressions") or 0)
    return (
        f"The check needs at least two variants with traffic and enough impressions "
        f"({seen:,} so far)."
    )
