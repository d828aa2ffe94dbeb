"""Ad copy generators: briefs, template / language-model / recombination generators, filters,
and the pool that combines them.

Importing this package is cheap: torch and transformers load only when a language model is
first used.

Example
-------
>>> from generators import GeneratorPool, load_brief
>>> brief = load_brief({"product": "bespoke rings", "brand": "Aurelle", "language": "en"})
>>> result = GeneratorPool(["template"]).generate(brief, 3, seed=0)
>>> len(result.candidates)
3
"""

from generators.brief import Brief, Channel, load_brief
from generators.candidate import Candidate
from generators.errors import BriefError, GeneratorError, ModelNotFoundError, ModelPullError
from generators.filters import DROP_REASONS, FilterSettings, NearDuplicateIndex, check_candidate
from generators.lm import (
    COMPLETION_PREFIX,
    LMGenerator,
    build_model_input,
    format_completion,
    load_causal_lm,
    model_version,
    parse_completion,
)
from generators.models import (
    DEFAULT_MODEL_NAME,
    default_model_dir,
    installed_models,
    pull_smollm2,
    resolve_model,
)
from generators.pool import GENERATOR_NAMES, GeneratorPool, PoolResult
from generators.recombine import RecombinationGenerator
from generators.scorer import CopyScorer, fit_scorer, load_scorer
from generators.templates import TemplateGenerator

__all__ = [
    "COMPLETION_PREFIX",
    "DEFAULT_MODEL_NAME",
    "DROP_REASONS",
    "GENERATOR_NAMES",
    "Brief",
    "BriefError",
    "Candidate",
    "Channel",
    "CopyScorer",
    "FilterSettings",
    "GeneratorError",
    "GeneratorPool",
    "LMGenerator",
    "ModelNotFoundError",
    "ModelPullError",
    "NearDuplicateIndex",
    "PoolResult",
    "RecombinationGenerator",
    "TemplateGenerator",
    "build_model_input",
    "check_candidate",
    "default_model_dir",
    "fit_scorer",
    "format_completion",
    "installed_models",
    "load_brief",
    "load_causal_lm",
    "load_scorer",
    "model_version",
    "parse_completion",
    "pull_smollm2",
    "resolve_model",
]
