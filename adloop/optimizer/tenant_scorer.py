"""Per-tenant outcome scorers: learnt from a tenant's own finished campaigns, versioned, explained.

Each completed campaign of a tenant is one A/B test: its variants' impressions and clicks
teach an :class:`~adloop.generators.OutcomeScorer` which copy wins within a campaign. A public
A/B archive (``corpus``) can add general knowledge, and tenants that opted in to sharing
(:func:`share_tenant_data`) can be pooled; no other tenant's data is ever read.

Every fit is a new version, ``<root>/<tenant>/s0001``, ``s0002``, ..., written to a temporary
sibling folder and renamed into place, with a ``manifest.json`` naming its data (campaigns,
pooled tenants, the corpus and its fingerprint), its configuration and a validation figure:
the pairwise accuracy on the tenant's own significant pairs, each campaign predicted by a fit
that never saw it. The default root is ``<model cache>/versions/<store identity>/scorers``, so
two databases never share a version.

Example::

    from adloop.generators import OutcomeScorerConfig
    from adloop.storage import Store

    with Store("adloop.duckdb") as store:
        report = fit_tenant_scorer(
            store, "acme", corpus="upworthy.parquet",
            config=OutcomeScorerConfig(blocks=("features",)),
        )
        print(report.version, report.validation["pair_accuracy"])
        for row in explain_campaign(store, "acme", "c_000000000042")["variants"]:
            print(row["offset"], row["text"], [f["feature"] for f in row["features"]])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from adloop.bandits import InvalidCountsError, TextCalibration, fit_text_calibration
from adloop.generators import OutcomeScorer, OutcomeScorerConfig, default_model_dir
from adloop.generators.candidate import TEXT_SEPARATOR
from adloop.generators.embeddings import default_embedding_cache
from adloop.generators.outcome_ridge import ArmData, group_folds
from adloop.optimizer.auth import validate_tenant
from adloop.optimizer.errors import CampaignNotFound, InvalidRequest
from adloop.storage import StoreBackend, store_identity, utc_now

__all__ = [
    "MANIFEST",
    "MIN_GROUPS",
    "MIN_VALIDATION_PAIRS",
    "ArmRow",
    "TenantScorer",
    "TenantScorerReport",
    "corpus_arms",
    "explain_campaign",
    "fit_tenant_scorer",
    "load_tenant_scorer",
    "newest_scorer_version",
    "scorers_root",
    "share_tenant_data",
    "tenant_arms",
    "tenant_scorer_versions",
    "variant_text",
]

#: File of each version folder that records what the version was fitted on.
MANIFEST = "manifest.json"
#: Campaigns (or archive tests) with two arms or more that a fit needs, all sources together.
MIN_GROUPS = 3
#: Significant pairs of the tenant's own arms below which no validation figure is reported.
MIN_VALIDATION_PAIRS = 5
#: Grouped folds of the tenant's campaigns for the validation figure (fewer with fewer campaigns).
VALIDATION_FOLDS = 5
_SHARING_FILE = "sharing.json"
_STATUSES = ("active", "paused", "completed")
_CORPUS_COLUMNS = ("test_id", "headline", "impressions", "clicks")
_VERSION_NAME = re.compile(r"^s(\d{4,})$")


class ArmRow(NamedTuple):
    """One arm of one test: its copy, its test (campaign or archive test) and its counts."""

    text: str
    group: str
    impressions: float
    clicks: float


@dataclass(frozen=True)
class TenantScorerReport:
    """What :func:`fit_tenant_scorer` wrote: the version, its folder, data and validation."""

    tenant: str
    version: str
    path: Path
    n_arms: int
    n_groups: int
    campaigns: tuple[str, ...]
    pooled_tenants: tuple[str, ...]
    validation: dict[str, Any]


@dataclass(frozen=True)
class TenantScorer:
    """A saved version, loaded: the fitted scorer, its version name, folder and manifest."""

    scorer: OutcomeScorer
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def calibration(self) -> TextCalibration | None:
        """How far its predictions may move a new variant's prior (None: not calibrated)."""
        fields = self.manifest.get("calibration") or {}
        if "slope" not in fields:
            return None
        return TextCalibration(**fields)


# -- data ------------------------------------------------------------------------------------


def variant_text(variant: dict[str, Any]) -> str:
    """A stored variant's copy: ``headline — description`` (or its ``text`` without headline)."""
    parts = [variant.get("headline"), variant.get("description")]
    if not parts[0]:
        return str(variant.get("text") or "").strip()
    return TEXT_SEPARATOR.join(str(p).strip() for p in parts if p and str(p).strip())


def _with_partners(rows: Iterable[ArmRow]) -> list[ArmRow]:
    """Only arms whose test has another arm: a lone arm teaches nothing about differences."""
    rows = list(rows)
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row.group] = sizes.get(row.group, 0) + 1
    return [row for row in rows if sizes[row.group] >= 2]


def _campaign_arms(store: StoreBackend, campaign_id: str, min_impressions: int) -> list[ArmRow]:
    stats = {row["variant_id"]: row for row in store.arm_stats(campaign_id).iter_rows(named=True)}
    rows = []
    for variant in store.variants(campaign_id):
        counts = stats.get(variant["variant_id"])
        text = variant_text(variant)
        if text and counts and counts["impressions"] >= max(min_impressions, 1):
            shown = float(counts["impressions"])
            rows.append(ArmRow(text, campaign_id, shown, min(float(counts["clicks"]), shown)))
    return _with_partners(rows)


def tenant_arms(
    store: StoreBackend,
    tenant: str,
    *,
    min_impressions: int = 100,
    statuses: Sequence[str] = ("completed",),
) -> list[ArmRow]:
    """The arms of ``tenant``'s campaigns whose status is in ``statuses`` (finished ones).

    An arm needs ``min_impressions`` impressions and non-empty copy; a campaign left with one
    arm is dropped. ``group`` is the campaign id.

    Example::

        rows = tenant_arms(store, "acme")
        rows[0].text, rows[0].group, rows[0].impressions, rows[0].clicks
    """
    validate_tenant(tenant)
    unknown = sorted(set(statuses) - set(_STATUSES))
    if unknown:
        raise InvalidRequest("statuses", f"unknown status(es) {unknown}; use any of {_STATUSES}")
    rows: list[ArmRow] = []
    for campaign in store.campaigns(tenant):
        if campaign["tenant"] == tenant and campaign["status"] in statuses:
            rows += _campaign_arms(store, campaign["campaign_id"], min_impressions)
    return rows


def corpus_arms(path: str | Path, *, min_impressions: int = 100) -> list[ArmRow]:
    """The arms of a Parquet A/B archive (``test_id``, ``headline``, ``impressions``,
    ``clicks``, one row per arm); ``group`` is the test id.

    Example::

        rows = corpus_arms("upworthy_dev.parquet", min_impressions=1000)
    """
    import polars as pl

    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidRequest("corpus", f"no A/B archive at {path}; pass a Parquet file path")
    missing = [c for c in _CORPUS_COLUMNS if c not in pl.read_parquet_schema(path)]
    if missing:
        raise InvalidRequest(
            "corpus", f"{path} lacks the column(s) {missing}; an archive has one row per arm "
            f"with {list(_CORPUS_COLUMNS)}"
        )  # fmt: skip
    frame = (
        pl.read_parquet(path, columns=list(_CORPUS_COLUMNS))
        .drop_nulls()
        .with_columns(pl.col("headline").cast(pl.String).str.strip_chars())
        .filter((pl.col("impressions") >= max(min_impressions, 1)) & (pl.col("headline") != ""))
    )
    return _with_partners(
        ArmRow(headline, str(test_id), float(shown), min(float(clicked), float(shown)))
        for test_id, headline, shown, clicked in frame.iter_rows()
    )


# -- folders, sharing, versions -------------------------------------------------------------


def scorers_root(store: StoreBackend) -> Path:
    """The default folder of a store's tenant scorers: ``<model cache>/versions/<store
    identity>/scorers``, beside the store's model versions."""
    return Path(default_model_dir()) / "versions" / store_identity(store) / "scorers"


def _tenant_folder(store: StoreBackend, tenant: str, root: str | Path | None) -> Path:
    validate_tenant(tenant)
    return Path(scorers_root(store) if root is None else root).expanduser() / tenant


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all: a temporary sibling, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(payload, indent=1, ensure_ascii=False, default=str) + "\n")
    os.replace(temporary, path)


def share_tenant_data(
    store: StoreBackend,
    tenant: str,
    *,
    opt_in: bool = True,
    root: str | Path | None = None,
    clock: Callable[[], datetime] | None = None,
) -> bool:
    """Record that ``tenant`` lets other tenants' scorers learn from its finished campaigns
    (``opt_in=False`` withdraws it); returns whether the tenant now shares.

    Example::

        share_tenant_data(store, "globex")
        fit_tenant_scorer(store, "acme", pooled_tenants=["globex"])
    """
    path = _tenant_folder(store, tenant, root) / _SHARING_FILE
    if opt_in:
        _write_json(path, {"tenant": tenant, "shares_data": True, "since": (clock or utc_now)()})
    else:
        path.unlink(missing_ok=True)
    return opt_in


def _shares_data(store: StoreBackend, tenant: str, root: str | Path | None) -> bool:
    return (_tenant_folder(store, tenant, root) / _SHARING_FILE).is_file()


def _version_folders(folder: Path) -> list[Path]:
    """Finished version folders, oldest first (temporary ones start with a dot)."""
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if _VERSION_NAME.match(p.name) and (p / MANIFEST).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[1:]))


def tenant_scorer_versions(
    store: StoreBackend, tenant: str, *, root: str | Path | None = None
) -> list[dict[str, Any]]:
    """The manifests of ``tenant``'s scorer versions, oldest first.

    Example::

        [m["version"] for m in tenant_scorer_versions(store, "acme")]  # ['s0001', 's0002']
    """
    folder = _tenant_folder(store, tenant, root)
    return [json.loads((p / MANIFEST).read_text("utf-8")) for p in _version_folders(folder)]


def newest_scorer_version(
    store: StoreBackend, tenant: str, *, root: str | Path | None = None
) -> str | None:
    """The name of ``tenant``'s newest scorer version (``s0003``), or None; reads no file."""
    folders = _version_folders(_tenant_folder(store, tenant, root))
    return folders[-1].name if folders else None


def load_tenant_scorer(
    store: StoreBackend,
    tenant: str,
    version: str | None = None,
    *,
    root: str | Path | None = None,
) -> TenantScorer | None:
    """``tenant``'s scorer ``version`` (default: the newest), or None when it has none yet.

    Raises :class:`InvalidRequest` when a named version does not exist.

    Example::

        loaded = load_tenant_scorer(store, "acme")
        loaded.version, loaded.scorer.predict(["Why rings?"])
    """
    folders = _version_folders(_tenant_folder(store, tenant, root))
    if version is not None:
        folders = [p for p in folders if p.name == version]
        if not folders:
            raise InvalidRequest(
                "version", f"tenant {tenant!r} has no scorer version {version!r}; list them "
                "with tenant_scorer_versions (adloop scorer list)"
            )  # fmt: skip
    if not folders:
        return None
    path = folders[-1]
    manifest = json.loads((path / MANIFEST).read_text("utf-8"))
    scorer = OutcomeScorer.load(path, cache_dir=default_embedding_cache())
    return TenantScorer(scorer=scorer, version=path.name, path=path, manifest=manifest)


def _next_version(folder: Path) -> str:
    folders = _version_folders(folder)
    return f"s{int(folders[-1].name[1:]) + 1 if folders else 1:04d}"


def _publish(folder: Path, scorer: OutcomeScorer, manifest: dict[str, Any]) -> Path:
    """Save the scorer and manifest in a temporary sibling, then rename it to the next version.

    A rename onto a version another process has just published fails; the next number is tried.
    """
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fitting-", dir=folder))
    try:
        scorer.save(staging)
        for _ in range(20):
            manifest["version"] = _next_version(folder)
            _write_json(staging / MANIFEST, manifest)
            target = folder / manifest["version"]
            try:
                os.replace(staging, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        raise OSError(f"could not publish a scorer version in {folder}; retry the fit")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Training:
    """Every arm a fit uses, as arrays; ``own`` marks the tenant's own arms."""

    texts: list[str]
    groups: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    own: np.ndarray

    @classmethod
    def build(cls, sources: dict[str, list[ArmRow]]) -> _Training:
        rows = [(source, row) for source, items in sources.items() for row in items]
        labels = {key: i for i, key in enumerate(dict.fromkeys((s, r.group) for s, r in rows))}
        return cls(
            texts=[row.text for _, row in rows],
            groups=np.array([labels[(s, r.group)] for s, r in rows], dtype=np.int64),
            impressions=np.array([row.impressions for _, row in rows]),
            clicks=np.array([row.clicks for _, row in rows]),
            own=np.array([source == "own" for source, _ in rows], dtype=bool),
        )

    def n_groups(self, mask: np.ndarray | None = None) -> int:
        return len(np.unique(self.groups if mask is None else self.groups[mask]))


def _pooled(
    store: StoreBackend, tenant: str, pooled_tenants: Iterable[str], root: str | Path | None
) -> tuple[str, ...]:
    pooled = tuple(dict.fromkeys(pooled_tenants))
    for other in pooled:
        if other == tenant:
            raise InvalidRequest(
                "pooled_tenants", f"{tenant!r} is the tenant being fitted; its own campaigns "
                "are always used, so leave it out of the pooled tenants"
            )  # fmt: skip
        if not _shares_data(store, other, root):
            raise InvalidRequest(
                "pooled_tenants", f"tenant {other!r} has not opted in to sharing its data; it "
                f"must opt in first (share_tenant_data(store, {other!r}), or `adloop scorer "
                f"share --tenant {other}`), or leave it out of the pooled tenants"
            )  # fmt: skip
    return pooled


def _require_enough(tenant: str, data: _Training, min_impressions: int) -> None:
    if data.n_groups() >= MIN_GROUPS:
        return
    raise InvalidRequest(
        "tenant", f"too little data for tenant {tenant!r}'s scorer: {data.n_groups(data.own)} "
        f"completed campaign(s) of its own and {data.n_groups()} test(s) in all have two or more "
        f"variants with >= {min_impressions} impressions; a fit needs {MIN_GROUPS}. Complete "
        "more campaigns, pass corpus (a Parquet A/B archive), or pool tenants that opted in"
    )  # fmt: skip


def _out_of_fold(
    config: OutcomeScorerConfig,
    matrices: dict[str, np.ndarray],
    data: _Training,
    fold_of: np.ndarray,
    folds: int,
) -> np.ndarray:
    """Each arm of folds ``0..folds-1`` predicted by a fit on every other arm (``-1``: never
    predicted, always in training); 0 for the arms never predicted."""
    predictions = np.zeros(len(data.texts))
    for fold in range(folds):
        held = fold_of == fold
        fitted = OutcomeScorer(config).fit_matrices(
            {b: m[~held] for b, m in matrices.items()},
            data.groups[~held], data.impressions[~held], data.clicks[~held],
        )  # fmt: skip
        predictions[held] = fitted.predict_matrices({b: m[held] for b, m in matrices.items()})
    return predictions


def _validate(
    config: OutcomeScorerConfig, matrices: dict[str, np.ndarray], data: _Training
) -> dict[str, Any]:
    """Pairwise accuracy on the tenant's significant pairs, each campaign predicted by a fit
    on everything else (the corpus and pooled arms always train)."""
    own_groups = data.n_groups(data.own)
    if own_groups < 2:
        reason = f"{own_groups} usable campaign(s) of the tenant's own; validation needs 2"
        return {"pair_accuracy": None, "pairs": 0, "folds": None, "reason": reason}
    mask = data.own
    own = ArmData.from_counts(data.impressions[mask], data.clicks[mask], data.groups[mask])
    n_pairs = int(own.validation(np.zeros(len(own.y)), 1)["cv_pairs"])
    if n_pairs < MIN_VALIDATION_PAIRS:
        reason = (
            f"{n_pairs} significant pair(s) among the tenant's own arms; validation needs "
            f"{MIN_VALIDATION_PAIRS}"
        )
        return {"pair_accuracy": None, "pairs": n_pairs, "folds": None, "reason": reason}
    folds = min(VALIDATION_FOLDS, own_groups)
    fold_of = np.full(len(data.texts), -1)
    fold_of[mask] = group_folds(data.groups[mask], folds, config.seed)
    predictions = _out_of_fold(config, matrices, data, fold_of, folds)
    figures = own.validation(predictions[mask], folds)
    return {
        "pair_accuracy": figures["cv_pair_accuracy"],
        "pairs": int(figures["cv_pairs"]),
        "folds": folds,
        "weighted_r2": figures["cv_weighted_r2"],
        "reason": None,
    }


def _without_corpus(
    config: OutcomeScorerConfig,
    matrices: dict[str, np.ndarray],
    sources: dict[str, list[ArmRow]],
    with_corpus: dict[str, Any],
) -> tuple[_Training, dict[str, np.ndarray], dict[str, Any]] | None:
    """The data, its feature matrices and validation without the corpus, when that predicts
    the tenant's own campaigns strictly better than with it (None: keep the corpus, or there
    is none). The corpus's arms come last in ``matrices``, so the rest are its first rows."""
    if not sources["corpus"] or with_corpus["pair_accuracy"] is None:
        return None
    data = _Training.build({**sources, "corpus": []})
    if data.n_groups() < MIN_GROUPS:
        return None
    matrices = {block: m[: len(data.texts)] for block, m in matrices.items()}
    validation = _validate(config, matrices, data)
    if validation["pair_accuracy"] is None:
        return None
    if validation["pair_accuracy"] <= with_corpus["pair_accuracy"]:
        return None
    validation["with_corpus"] = with_corpus
    return data, matrices, validation


def _calibration(
    config: OutcomeScorerConfig, matrices: dict[str, np.ndarray], data: _Training
) -> dict[str, Any]:
    """How far the scorer may be trusted as a prior (:func:`~adloop.bandits.fit_text_calibration`
    on every arm's prediction by a fit that never saw its campaign or test), as a plain dict;
    ``{"reason": ...}`` when there is too little data to tell."""
    n_groups = data.n_groups()
    if n_groups < MIN_GROUPS:
        return {"reason": f"{n_groups} campaigns or tests; calibration needs {MIN_GROUPS}"}
    folds = min(VALIDATION_FOLDS, n_groups)
    fold_of = group_folds(data.groups, folds, config.seed)
    predictions = _out_of_fold(config, matrices, data, fold_of, folds)
    try:
        fitted_calibration = fit_text_calibration(
            predictions, data.clicks.astype(float), data.impressions.astype(float), data.groups
        )
    except InvalidCountsError as error:
        return {"reason": str(error)}
    return asdict(fitted_calibration)


def _corpus_record(corpus: str | Path | None) -> dict[str, str] | None:
    """The corpus's path and a fingerprint of its bytes (16 hex digits of SHA-256)."""
    if corpus is None:
        return None
    path = Path(corpus).expanduser()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "fingerprint": digest.hexdigest()[:16]}


def fit_tenant_scorer(
    store: StoreBackend,
    tenant: str,
    *,
    corpus: str | Path | None = None,
    config: OutcomeScorerConfig | None = None,
    pooled_tenants: Iterable[str] = (),
    root: str | Path | None = None,
    clock: Callable[[], datetime] | None = None,
    min_impressions: int = 100,
) -> TenantScorerReport:
    """Fit ``tenant``'s outcome scorer and save it as its next version.

    Parameters
    ----------
    store
        The store whose completed campaigns teach the scorer.
    tenant
        Whose scorer: its completed campaigns are the core of the data.
    corpus
        Optional Parquet A/B archive (see :func:`corpus_arms`) added to the data.
    config
        Scorer settings; default :class:`~adloop.generators.OutcomeScorerConfig`.
    pooled_tenants
        Other tenants whose completed campaigns are added; each must have opted in
        (:func:`share_tenant_data`), else :class:`InvalidRequest` names it.
    root
        Folder of the tenants' scorer folders; default under the model cache, per store.
    clock
        Returns "now" (naive UTC) for the manifest; default the wall clock.
    min_impressions
        Impressions an arm needs to count.

    Raises :class:`InvalidRequest` (``field`` ``tenant``) when fewer than :data:`MIN_GROUPS`
    campaigns or tests with two usable arms are found.

    Example::

        report = fit_tenant_scorer(store, "acme", config=OutcomeScorerConfig(blocks=("features",)))
        report.version, report.validation
    """
    folder = _tenant_folder(store, tenant, root)
    pooled = _pooled(store, tenant, pooled_tenants, root)
    sources = {"own": tenant_arms(store, tenant, min_impressions=min_impressions)}
    sources["pooled"] = [
        row
        for other in pooled
        for row in tenant_arms(store, other, min_impressions=min_impressions)
    ]
    sources["corpus"] = corpus_arms(corpus, min_impressions=min_impressions) if corpus else []
    data = _Training.build(sources)
    _require_enough(tenant, data, min_impressions)
    config = config or OutcomeScorerConfig()
    scorer = OutcomeScorer(config, cache_dir=default_embedding_cache())
    matrices = scorer.block_matrices(data.texts)
    validation = _validate(config, matrices, data)
    without = _without_corpus(config, matrices, sources, validation)
    if without is not None:
        # The corpus can outweigh a tenant's few campaigns and teach it another market's
        # tastes: it is kept only when it predicts the tenant's own campaigns better.
        data, matrices, validation = without
        sources = {**sources, "corpus": []}
    calibration = _calibration(config, matrices, data)
    scorer.fit(data.texts, data.groups, data.impressions, data.clicks)
    campaigns = tuple(dict.fromkeys(row.group for row in sources["own"]))
    manifest = {
        "version": None,
        "tenant": tenant,
        "created_at": (clock or utc_now)(),
        "store": store_identity(store),
        "corpus": _corpus_record(corpus),
        "corpus_used": bool(sources["corpus"]),
        "campaigns": list(campaigns),
        "pooled_tenants": list(pooled),
        "pooled_campaigns": sorted({row.group for row in sources["pooled"]}),
        "counts": {
            "arms": len(data.texts),
            "groups": data.n_groups(),
            **{f"{source}_arms": len(rows) for source, rows in sources.items()},
        },
        "min_impressions": min_impressions,
        "config": config.to_dict(),
        "data_fingerprint": scorer.record.get("data_fingerprint"),
        "validation": validation,
        "calibration": calibration,
    }
    path = _publish(folder, scorer, manifest)
    return TenantScorerReport(
        tenant=tenant,
        version=path.name,
        path=path,
        n_arms=len(data.texts),
        n_groups=data.n_groups(),
        campaigns=campaigns,
        pooled_tenants=pooled,
        validation=validation,
    )


# -- explaining ------------------------------------------------------------------------------


def explain_campaign(
    store: StoreBackend,
    tenant: str,
    campaign_id: str,
    *,
    top: int = 3,
    version: str | None = None,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """What ``tenant``'s scorer predicts for each variant of one of its campaigns, and why.

    Returns ``campaign_id``, ``tenant``, ``version`` and ``variants``: per variant its
    ``variant_id``, ``status``, ``text``, ``offset`` (predicted CTR log-odds offset from the
    campaign's average arm; higher wins more often) and ``features`` (the ``top`` interpretable
    features moving it most, see :meth:`~adloop.generators.OutcomeScorer.explain`).

    Raises :class:`CampaignNotFound` for a campaign of another tenant (or none), and
    :class:`InvalidRequest` when the tenant has no scorer yet.

    Example::

        rows = explain_campaign(store, "acme", "c_000000000042", top=2)["variants"]
    """
    validate_tenant(tenant)
    campaign = store.campaign(campaign_id)
    if campaign is None or campaign["tenant"] != tenant:
        raise CampaignNotFound(campaign_id)
    loaded = load_tenant_scorer(store, tenant, version, root=root)
    if loaded is None:
        raise InvalidRequest(
            "tenant", f"tenant {tenant!r} has no scorer yet; fit one first "
            f"(fit_tenant_scorer, or `adloop scorer fit --tenant {tenant}`)"
        )  # fmt: skip
    variants = [v for v in store.variants(campaign_id) if variant_text(v)]
    texts = [variant_text(v) for v in variants]
    offsets = loaded.scorer.predict(texts) if texts else np.zeros(0)
    reasons = loaded.scorer.explain(texts, top) if texts else []
    rows = [
        {"variant_id": v["variant_id"], "status": v["status"], "text": text,
         "offset": float(offset), "features": features}
        for v, text, offset, features in zip(variants, texts, offsets, reasons, strict=True)
    ]  # fmt: skip
    return {
        "campaign_id": campaign_id,
        "tenant": tenant,
        "version": loaded.version,
        "variants": rows,
    }
