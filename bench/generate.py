"""Generation benchmark: ``adloop generate`` end to end on the example briefs, and template speed.

Rows:

* ``adloop generate`` run as a subprocess (start-up, brief loading, model loading, sampling,
  filtering, JSON output — what a user waits for) on the English and Chinese jewellery briefs,
  with the installed default model (template + lm) and with templates only;
* in-process template-only throughput of the pool (candidates per second, filters included).

Run with ``python -m bench generate [--quick]``. The LM rows are skipped, with a note, when no
model is installed (``adloop models pull smollm2``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._common import best_of, write_results

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BRIEFS = {"en": EXAMPLES / "brief_jewelry_en.yaml", "zh": EXAMPLES / "brief_jewelry_zh.yaml"}


def _run_cli(brief: Path, n: int, generators: str) -> dict:
    script = Path(sys.executable).with_name("adloop")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "adloop.cli"]
    command = [
        *launcher,
        "generate",
        "--brief",
        str(brief),
        "--n",
        str(n),
        "--generators",
        generators,
        "--seed",
        "0",
        "--json",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = usage.ru_utime - usage_before.ru_utime + usage.ru_stime - usage_before.ru_stime
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr[-800:]}")
    rows = json.loads(completed.stdout)
    by_generator: dict[str, int] = {}
    for row in rows:
        by_generator[row["generator"]] = by_generator.get(row["generator"], 0) + 1
    dropped = next(
        (line for line in completed.stderr.splitlines() if line.startswith("dropped")), ""
    )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "candidates": len(rows),
        "by_generator": by_generator,
        "dropped": dropped,
    }


def main(out: Path, quick: bool) -> None:
    """Measure and write ``<out>/generate.json`` and ``<out>/generate.md``."""
    from adloop.generators import GeneratorPool, ModelNotFoundError, load_brief, resolve_model

    n = 5 if quick else 20
    notes: list[str] = []
    try:
        model_dir = resolve_model(None)
        notes.append(f"model: {model_dir.name} in {model_dir.parent}")
    except ModelNotFoundError:
        model_dir = None
        notes.append("no language model installed: LM rows skipped (adloop models pull smollm2)")
    rows = []
    for language, brief_path in BRIEFS.items():
        setups = [("template", "template")]
        if model_dir is not None:
            setups.insert(0, ("template+lm", "template,lm"))
        for label, generators in setups:
            result = _run_cli(brief_path, n, generators)
            rows.append(
                {
                    "name": f"adloop generate --n {n}",
                    "system": "adloop",
                    "brief": language,
                    "generators": label,
                    "candidates": result["candidates"],
                    "from_lm": result["by_generator"].get("lm", 0),
                    "wall_s": round(result["seconds"], 2),
                    "cpu_s": round(result["cpu_seconds"], 2),
                    "target_s": 60 if label == "template+lm" else "",
                    "drops": result["dropped"].removeprefix("dropped ") or "none",
                }
            )
    size = 50 if quick else 200
    for language, brief_path in BRIEFS.items():
        brief = load_brief(brief_path)
        pool = GeneratorPool(["template"])
        produced = len(pool.generate(brief, size, seed=0).candidates)
        seconds = best_of(
            lambda pool=pool, brief=brief: pool.generate(brief, size, seed=0), repeat=3
        )
        rows.append(
            {
                "name": f"template pool in-process, n={size}",
                "system": "adloop",
                "brief": language,
                "generators": "template",
                "candidates": produced,
                "wall_s": round(seconds, 4),
                "candidates_per_s": round(produced / seconds, 1),
            }
        )
    notes.append(
        f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f} "
        "(other work on the machine slows the LM rows; cpu_s is the command's own CPU time, "
        "which the language model spends on one thread by default)."
    )
    write_results("generate", rows, out, "\n".join(notes))
