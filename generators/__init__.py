"""Ad copy generators: briefs, template / language-model / recombination generators, filters,
and the pool that combines them.

Importing this package is cheap: torch and transformers load only when a language model is
first used.

Example
-------
>>> from adloop.generators import GeneratorPool, load_brief
>>> brief = load_brief({"product": "bespoke rings", "brand": "Aurelle", "language": "en"})
>>> result = GeneratorPool(["template"]).generate(brief, 3, seed=0)
>>> len(result.candidates)
3
"""

from adloop.generators.brief import Brief, Channel, load_brief
from adloop.generators.candidate import Candidate
from adloop.generators.errors import BriefError, GeneratorError, ModelNotFoundError, ModelPullError
from adloop.generators.filters import (
    DROP_REASONS,
    FilterSettings,
    NearDuplicateIndex,
    check_candidate,
)
from adloop.generators.lm import (
    COMPLETION_PREFIX,
    LMGenerator,
    build_model_input,
    format_completion,
    load_causal_lm,
    model_version,
    parse_completion,
)
from adloop.generators.models import (
    DEFAULT_MODEL_NAME,
    default_model_dir,
    installed_models,
    pull_smollm2,
    resolve_model,
)
from adloop.generators.pool import GENERATOR_NAMES, GeneratorPool, PoolResult
from adloop.generators.recombine import RecombinationGenerator
from adloop.generators.scorer import CopyScorer, fit_scorer, load_scorer
from adloop.generators.templates import TemplateGenerator

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
