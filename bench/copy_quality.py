"""Copy-quality benchmark: is what each generator writes an ad a marketer would publish?

For every brief under ``bench/copy_data/briefs/`` (English and Chinese; five products that are
not in ``examples/``) plus the two example briefs, each generator writes ``--n`` candidates
(seed fixed), and every candidate is measured on its own, without the pool around it:

* **pass**: it passes the filters the pool applies (lengths, banned and required terms,
  language, repetition, the fluency gate, near-duplicates of an earlier candidate of the run);
* **fluent**: the fluency judge (:func:`adloop.generators.judge_fluency`: word-frequency
  lexicons, jieba segmentation and a unigram likelihood; never the generating model) scores it
  at or above the gate's threshold. Its own error on a hand-labelled set is
  ``bench/copy_data/fluency_labels.jsonl`` (``python -m bench.copy_judge``);
* **on brief**: it names the brand, a keyword or a product term, no banned term, and fits the
  channel's limits; **offer**: it mentions the brief's offer;
* **right language** and **distinct** (no near-copy of an earlier candidate of the same run);
* **audited not fluent**: the share of passing candidates that a careful reader labelled not
  fluent in ``bench/copy_data/audit_labels*.jsonl`` (labels are looked up by text; the
  denominator is the passing candidates that have a label). This is the check on the judge:
  the gate and the ``fluent`` column use the same judge, so among passing candidates the
  judge alone can never see a not-fluent one.

Generators: ``template``; ``lm-baseline``, the LM generator as it first sampled
(:data:`adloop.generators.BASELINE`: the brief alone, unconstrained, every sample kept, whole
ads in every language); the ideas one at a time (``lm+shots``: few-shot example ads;
``lm+shots+constrain``: constrained decoding as well); and ``lm``, the default (all of them,
up to 2 samples per candidate, the second drawn only while too few pass, ranked by the fluency
judge, and both languages written as phrases in template skeletons).

Time per candidate is wall time of ``generate`` with the model loaded (its loading is a row of
its own), on ``torch`` with one thread; peak memory is the process's resident peak after the
row. Run ``adloop bench copy [--quick] [--n 20] [--generators lm,template]``; results go to
``bench/results/copy.json`` and ``copy.md``, and the passing candidates of each LM row to
``copy_samples.jsonl`` beside them (what the audit labels are drawn from).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adloop.generators import (
    BASELINE,
    DEFAULT_MIN_FLUENCY,
    Brief,
    Candidate,
    LMGenerator,
    NearDuplicateIndex,
    TemplateGenerator,
    brief_terms,
    check_candidate,
    distinct_n,
    judge_fluency,
    load_brief,
    resolve_model,
)
from adloop.generators.brief import cjk_share, latin_share
from bench._common import max_rss_mb, write_results

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "copy_data"
BRIEFS = sorted((DATA / "briefs").glob("*.yaml")) + sorted((ROOT / "examples").glob("brief_*.yaml"))
AUDIT = DATA / "audit_labels.jsonl"
#: Later audits, one file per run of the default generator (labels are looked up by text).
AUDITS = (AUDIT, DATA / "audit_labels_phrases.jsonl", DATA / "audit_labels_one_stock.jsonl")
SEED = 0
#: Generator rows: name -> LMGenerator options (None: the template generator).
CONFIGS: dict[str, dict[str, Any] | None] = {
    "template": None,
    "lm-baseline": dict(BASELINE),
    "lm+shots": {"shots": 2, "constrain": False, "best_of": 1.0, "modes": "free"},
    "lm+shots+constrain": {"shots": 2, "constrain": True, "best_of": 1.0, "modes": "free"},
    "lm": {},
}
_LATIN_WORD = re.compile(r"[a-z0-9][a-z0-9'-]+")
_STOP = frozenset({"and", "the", "for", "with", "your", "our", "you", "in", "of", "to", "a", "an",
                   "on", "by", "from", "at"})  # fmt: skip


def _terms_of(brief: Brief) -> list[str]:
    """Words that make copy about this product: its keywords and product, whole or in part."""
    phrases = [brief.product, *brief.keywords]
    if brief.language == "zh":
        import jieba

        words = {w for p in phrases for w in jieba.lcut(p) if len(w) >= 2}
    else:
        words = {w for p in phrases for w in _LATIN_WORD.findall(p.lower()) if w not in _STOP}
    return sorted({p.lower() for p in phrases} | words, key=len, reverse=True)


def _within_limits(candidate: Candidate, brief: Brief) -> bool:
    channel = brief.channel
    return (
        channel.length(candidate.headline) <= channel.headline_max
        and channel.length(candidate.description) <= channel.description_max
    )


def _right_language(text: str, language: str) -> bool:
    return cjk_share(text) >= 0.4 if language == "zh" else latin_share(text) >= 0.9


def measure_candidates(candidates: Sequence[Candidate], brief: Brief) -> list[dict[str, Any]]:
    """One row of verdicts per candidate, in order (``pass`` as the pool would decide it)."""
    terms = _terms_of(brief)
    known = brief_terms(brief)
    accepted = NearDuplicateIndex(brief.language)
    seen = NearDuplicateIndex(brief.language)
    rows = []
    for candidate in candidates:
        text = candidate.text
        lowered = text.lower()
        reason = check_candidate(candidate, brief, accepted=accepted)
        if reason is None:
            accepted.add(text)
        rows.append(
            {
                "text": text,
                "pass": reason is None,
                "reason": reason or "",
                "fluent": judge_fluency(text, brief.language, known_terms=known).score
                >= DEFAULT_MIN_FLUENCY,
                "on_brief": (
                    (not brief.brand or brief.brand.lower() in lowered)
                    and any(term in lowered for term in terms)
                    and not any(b.lower() in lowered for b in brief.banned_terms)
                    and _within_limits(candidate, brief)
                ),
                "offer": bool(brief.offer) and brief.offer.lower() in lowered,
                "language": _right_language(text, brief.language),
                "distinct": bool(candidate.headline.strip()) and not seen.is_near_duplicate(text),
            }
        )
        seen.add(text)
    return rows


def _share(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 3) if rows else None


def load_audit(paths: Sequence[Path] = AUDITS) -> dict[tuple[str, str], bool]:
    """Hand labels of generated copy, by ``(language, text)``, from each file that exists."""
    labels = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                labels[(row["language"], row["text"])] = bool(row["fluent"])
    return labels


def summarise(
    name: str, language: str, per_brief: list[dict[str, Any]], audit: dict[tuple[str, str], bool]
) -> dict[str, Any]:
    """The table row of one generator and language, over its briefs."""
    rows = [row for run in per_brief for row in run["rows"]]
    passing = [row for row in rows if row["pass"]]
    labelled = [audit[(language, r["text"])] for r in passing if (language, r["text"]) in audit]
    seconds = sum(run["seconds"] for run in per_brief)
    reasons = Counter(r["reason"] for r in rows if r["reason"])
    return {
        "name": name,
        "system": "adloop" if name != "lm-baseline" else "adloop (first LM generator)",
        "language": language,
        "briefs": len(per_brief),
        "candidates": len(rows),
        "pass": _share(rows, "pass"),
        "fluent": _share(rows, "fluent"),
        "not_fluent_among_passing": (
            round(1 - sum(r["fluent"] for r in passing) / len(passing), 3) if passing else None
        ),
        "audited_not_fluent_among_passing": (
            round(labelled.count(False) / len(labelled), 3) if labelled else None
        ),
        "audited": len(labelled),
        "on_brief": _share(rows, "on_brief"),
        "offer": _share(rows, "offer"),
        "right_language": _share(rows, "language"),
        "distinct": _share(rows, "distinct"),
        "distinct_2": round(distinct_n([r["text"] for r in rows], 2), 3) if rows else None,
        "seconds_per_candidate": round(seconds / max(len(rows), 1), 3),
        "seconds_per_20": round(20 * seconds / max(len(rows), 1), 1),
        "peak_rss_mb": round(max(run["rss_mb"] for run in per_brief), 1),
        "top_drop_reasons": ", ".join(f"{k} {v}" for k, v in reasons.most_common(3)),
    }


def _generator(name: str, model_dir: Path) -> Any:
    options = CONFIGS[name]
    if options is None:
        return TemplateGenerator()
    return LMGenerator(model_dir, rerank=False, **options)


def run(
    names: Sequence[str], n: int, briefs: Sequence[Path], out: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure each generator on each brief; the table rows and the per-brief detail."""
    model_dir = resolve_model(None) if any(CONFIGS[x] is not None for x in names) else None
    audit = load_audit()
    loaded = [(path.stem, load_brief(path)) for path in briefs]
    rows: list[dict[str, Any]] = []
    detail: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    for name in names:
        start = time.perf_counter()
        generator = _generator(name, model_dir) if model_dir else TemplateGenerator()
        if CONFIGS[name] is not None:
            generator.load()
            rows.append({"name": f"{name}: load model", "system": "adloop", "language": "",
                         "seconds_per_20": round(time.perf_counter() - start, 1),
                         "peak_rss_mb": round(max_rss_mb(), 1)})  # fmt: skip
        by_language: dict[str, list[dict[str, Any]]] = {}
        for stem, brief in loaded:
            start = time.perf_counter()
            candidates = generator.generate(brief, n, seed=SEED)
            seconds = time.perf_counter() - start
            verdicts = measure_candidates(candidates, brief)
            run_detail = {"brief": stem, "seconds": seconds, "rss_mb": max_rss_mb(),
                          "rows": verdicts}  # fmt: skip
            by_language.setdefault(brief.language, []).append(run_detail)
            detail[f"{name}/{stem}"] = run_detail
            samples.extend(
                {"generator": name, "brief": stem, "language": brief.language, "text": r["text"]}
                for r in verdicts
                if r["pass"] and name != "template"
            )
            print(f"{name:>20} {stem:<18} {sum(r['pass'] for r in verdicts):>2}/{len(verdicts)} "
                  f"pass  {seconds:5.1f} s", flush=True)  # fmt: skip
        rows.extend(
            summarise(name, lang, runs, audit) for lang, runs in sorted(by_language.items())
        )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "copy_samples.jsonl").open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return rows, detail


NOTES = """
`pass`: share of candidates that pass the pool's filters (the fluency gate included);
`fluent`: share the fluency judge passes; `not_fluent_among_passing`: by the same judge, so 0
whenever the gate is on; `audited_not_fluent_among_passing`: by a reader's labels
(`bench/copy_data/audit_labels.jsonl`, `audited` of the passing candidates had a label);
`on_brief`: brand, a keyword or product term, no banned term, within the channel's limits;
`offer`: names the brief's offer; `distinct`: no near-copy of an earlier candidate of the run.
Time is per candidate with the model loaded (`seconds_per_20`: for 20), one torch thread.
"""


def main(
    out: Path = Path("bench/results"),
    quick: bool = False,
    n: int = 20,
    names: Sequence[str] = tuple(CONFIGS),
) -> None:
    """Run the benchmark and write ``copy.json``/``copy.md`` (with the per-brief detail)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown generator {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    briefs = BRIEFS[:2] + BRIEFS[-2:] if quick else BRIEFS
    rows, detail = run(names, 4 if quick else n, briefs, out)
    path = write_results("copy", rows, out, notes=NOTES)
    payload = json.loads(path.read_text())
    payload["detail"] = detail
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def resummarise(out: Path = Path("bench/results")) -> None:
    """Rebuild the table from ``copy.json``'s per-brief detail with the current audit labels
    (after labelling ``copy_samples.jsonl``), without generating again."""
    path = out / "copy.json"
    payload = json.loads(path.read_text())
    detail = payload["detail"]
    audit = load_audit()
    languages = {path.stem: load_brief(path).language for path in BRIEFS}
    kept = [row for row in payload["rows"] if row["name"].endswith(": load model")]
    rows = []
    for name in CONFIGS:
        if any(row["name"] == f"{name}: load model" for row in kept):
            rows.extend(row for row in kept if row["name"] == f"{name}: load model")
        by_language: dict[str, list[dict[str, Any]]] = {}
        for key, run_detail in detail.items():
            if key.split("/")[0] == name:
                language = languages[key.split("/", 1)[1]]
                by_language.setdefault(language, []).append(run_detail)
        for language, runs in sorted(by_language.items()):
            rows.append(summarise(name, language, runs, audit))
    path = write_results("copy", rows, out, notes=NOTES)
    payload = {**json.loads(path.read_text()), "machine": payload["machine"], "detail": detail}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def cli(argv: list[str]) -> None:
    """``adloop bench copy`` options."""
    parser = argparse.ArgumentParser(prog="adloop bench copy", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="4 briefs, 4 candidates each.")
    parser.add_argument("--n", type=int, default=20, help="Candidates per generator and brief.")
    parser.add_argument(
        "--generators", default=",".join(CONFIGS), help=f"Comma-separated: {', '.join(CONFIGS)}."
    )
    parser.add_argument(
        "--resummarise",
        action="store_true",
        help="Rebuild the table from the last run's copy.json with the current audit labels.",
    )
    args = parser.parse_args(argv)
    if args.resummarise:
        resummarise(args.out)
        return
    names = [name.strip() for name in args.generators.split(",") if name.strip()]
    main(out=args.out, quick=args.quick, n=args.n, names=names)


if __name__ == "__main__":
    import sys

    cli(sys.argv[1:])
