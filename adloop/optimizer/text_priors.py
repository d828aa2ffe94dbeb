"""Text-informed priors in serving: each new variant starts from its tenant's outcome scorer.

With ``EngineConfig(policy="ts_text")``, a campaign's allocation is
:class:`~adloop.bandits.TextPriorThompson`: Thompson sampling whose prior also holds the
scorer's prediction for each variant's copy, as much evidence as the scorer's calibration on the
tenant's finished campaigns says it is worth (``adloop scorer fit`` fits both). A strong-looking
newcomer gets traffic sooner and a weak one less; once clicks come in they outweigh it. A tenant
without a scorer, or whose scorer did not validate (its slope is not clearly above zero), is
allocated exactly as by ``ts``.

:class:`TenantTextPriors` finds the tenant's newest scorer version (checked at every build, so
a new ``adloop scorer fit`` takes effect at the next refresh) and keeps each variant's score,
so a refresh scores only variants it has not seen.

Example::

    priors = TenantTextPriors(store)
    evidence = priors.evidence("acme", variants)  # TextEvidence, or None: plain Thompson sampling
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adloop.bandits import TextCalibration, TextEvidence
from adloop.optimizer.tenant_scorer import (
    TenantScorer,
    load_tenant_scorer,
    newest_scorer_version,
    scorers_root,
    variant_text,
)

__all__ = ["MAX_SHARE_EXPLAINED", "TenantTextPriors", "capped"]

#: The most of the spread between a campaign's variants a scorer is trusted to explain in
#: serving. A calibration fitted on a few campaigns can find a scorer that explains nearly all
#: of it (residual variance at its floor): the text would then claim tens of thousands of
#: impressions of evidence and a newcomer it dislikes would never be shown. At 0.75 a perfect
#: scorer's precision is 3 / between variance: about 2,400 impressions a variant at a 2 % rate
#: when variants' log-odds vary by 0.06 (Upworthy's).
MAX_SHARE_EXPLAINED = 0.75


def capped(calibration: TextCalibration) -> TextCalibration:
    """``calibration`` with its residual variance at least ``1 - MAX_SHARE_EXPLAINED`` of the
    variance between variants (unchanged when it already is)."""
    floor = (1.0 - MAX_SHARE_EXPLAINED) * calibration.between_variance
    if calibration.residual_variance >= floor:
        return calibration
    return replace(calibration, residual_variance=floor)


class TenantTextPriors:
    """The text evidence of a campaign's variants, from its tenant's newest outcome scorer."""

    def __init__(self, store: Any, *, root: str | Path | None = None) -> None:
        self._store = store
        self._root = root
        self._lock = threading.Lock()
        self._loaded: dict[str, TenantScorer | None] = {}
        self._scores: dict[tuple[str, str, str], float] = {}

    def scorer(self, tenant: str) -> TenantScorer | None:
        """The tenant's newest scorer version (reloaded when a newer one appears)."""
        if self._root is None:  # the store's identity is a database read: once is enough
            self._root = scorers_root(self._store)
        newest = newest_scorer_version(self._store, tenant, root=self._root)
        with self._lock:
            current = self._loaded.get(tenant)
            if current is not None and current.version == newest:
                return current
        loaded = load_tenant_scorer(self._store, tenant, root=self._root) if newest else None
        with self._lock:
            self._loaded[tenant] = loaded
        return loaded

    def evidence(self, tenant: str, variants: Sequence[dict[str, Any]]) -> TextEvidence | None:
        """The evidence for ``variants`` (stored variant dicts, in arm order), or None when the
        tenant has no calibrated, informative scorer."""
        loaded = self.scorer(tenant)
        calibration = loaded.calibration if loaded is not None else None
        if loaded is None or calibration is None or not calibration.informative:
            return None
        texts = [variant_text(v) for v in variants]
        keys = [(loaded.version, v["variant_id"], t) for v, t in zip(variants, texts, strict=True)]
        with self._lock:
            missing = [i for i, key in enumerate(keys) if key not in self._scores]
        if missing:
            predicted = loaded.scorer.predict([texts[i] for i in missing])
            with self._lock:
                for i, value in zip(missing, predicted, strict=True):
                    self._scores[keys[i]] = float(value)
        with self._lock:
            scores = np.array([self._scores[key] for key in keys])
        return capped(calibration).evidence(scores)
