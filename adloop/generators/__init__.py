"""Ad copy generators: briefs, template / language-model / recombination generators, filters,
and the pool that combines them.

Also the fine-tuning API that retraining uses: :class:`SFTExample` and :class:`PreferencePair`
(training data), :class:`TrainingConfig`, :func:`fine_tune`, :func:`train_version` (write a new
model version), the likelihood scores the promotion gate compares (:func:`preference_accuracy`)
and :func:`distinct_n`.

Importing this package is cheap: torch and transformers load only when a language model is
first used or trained.

Example
-------
>>> from adloop.generators import GeneratorPool, load_brief
>>> brief = load_brief({"product": "bespoke rings", "brand": "Aurelle", "language": "en"})
>>> result = GeneratorPool(["template"]).generate(brief, 3, seed=0)
>>> len(result.candidates)
3
"""

from adloop.generators.brief import KNOWN_GENERATORS, Brief, Channel, GeneratorShare, load_brief
from adloop.generators.candidate import Candidate
from adloop.generators.checkpoints import TRAINING_RECORD, TrainingResult, train_version
from adloop.generators.errors import (
    BriefError,
    ConfigError,
    EndpointError,
    GenerationFailedError,
    GeneratorError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelPullError,
    ScorerError,
    TrainingError,
)
from adloop.generators.filters import (
    DROP_REASONS,
    FilterSettings,
    NearDuplicateIndex,
    brief_terms,
    check_candidate,
)
from adloop.generators.fluency import (
    DEFAULT_MIN_FLUENCY,
    FluencyScore,
    is_fluent,
    judge_fluency,
)
from adloop.generators.likelihood import (
    completion_logprobs,
    pair_credit,
    preference_accuracy,
    preference_margins,
    sft_loss,
)
from adloop.generators.lm import (
    BASELINE,
    COMPLETION_PREFIX,
    LMGenerator,
    build_model_input,
    format_completion,
    parse_completion,
)
from adloop.generators.model_dir import check_model_dir, load_causal_lm, model_version
from adloop.generators.models import (
    DEFAULT_MODEL_NAME,
    default_model_dir,
    installed_models,
    pull_smollm2,
    resolve_model,
)
from adloop.generators.openai_chat import OpenAIChatGenerator
from adloop.generators.outcome_scorer import (
    OutcomeScorer,
    OutcomeScorerConfig,
    cross_fitted_predictions,
)
from adloop.generators.pool import GENERATOR_NAMES, GeneratorPool, PoolResult
from adloop.generators.recombine import RecombinationGenerator
from adloop.generators.scorer import CopyScorer, fit_scorer, load_scorer
from adloop.generators.templates import TemplateGenerator
from adloop.generators.textmetrics import distinct_n
from adloop.generators.training import fine_tune
from adloop.generators.training_config import TrainingConfig
from adloop.generators.training_data import PreferencePair, SFTExample, dataset_hash

__all__ = [
    "BASELINE",
    "COMPLETION_PREFIX",
    "DEFAULT_MIN_FLUENCY",
    "DEFAULT_MODEL_NAME",
    "DROP_REASONS",
    "GENERATOR_NAMES",
    "KNOWN_GENERATORS",
    "TRAINING_RECORD",
    "Brief",
    "BriefError",
    "Candidate",
    "Channel",
    "ConfigError",
    "CopyScorer",
    "EndpointError",
    "FilterSettings",
    "FluencyScore",
    "GenerationFailedError",
    "GeneratorError",
    "MissingDependencyError",
    "GeneratorPool",
    "GeneratorShare",
    "LMGenerator",
    "ModelNotFoundError",
    "ModelPullError",
    "NearDuplicateIndex",
    "OpenAIChatGenerator",
    "OutcomeScorer",
    "OutcomeScorerConfig",
    "PoolResult",
    "PreferencePair",
    "RecombinationGenerator",
    "SFTExample",
    "ScorerError",
    "TemplateGenerator",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "brief_terms",
    "build_model_input",
    "check_candidate",
    "check_model_dir",
    "completion_logprobs",
    "cross_fitted_predictions",
    "dataset_hash",
    "default_model_dir",
    "distinct_n",
    "fine_tune",
    "fit_scorer",
    "format_completion",
    "installed_models",
    "is_fluent",
    "judge_fluency",
    "load_brief",
    "load_causal_lm",
    "load_scorer",
    "model_version",
    "pair_credit",
    "parse_completion",
    "preference_accuracy",
    "preference_margins",
    "pull_smollm2",
    "resolve_model",
    "sft_loss",
    "train_version",
]
