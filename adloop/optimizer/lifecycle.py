"""The campaign lifecycle: create, add, review and retire variants, refill the pool, declare
a winner.

Every change goes to the store first (the source of truth) and then rebuilds the campaign's
serving tables at once, so the next decision already follows it.

Generated variants start ``pending``: they serve only once a person approves them
(:meth:`CampaignLifecycle.review`), unless the campaign was created with ``auto_approve``
(the simulator, which has no person, does that). Variants listed by hand start ``active``.

Targeting (a variant's ``segments``; see ``optimizer.serving``): a targeted variant competes
inside its segments only. So the retire rule compares variants with the same targeting, a
refill writes a retired targeted variant's replacement for its segment, and the winner rule
runs over the untargeted variants (the copy every request may see); a declared winner takes
the untargeted traffic while targeted variants go on competing with it in their segments. A
campaign whose variants are all targeted never declares a campaign-wide winner: each segment's
allocation settles on its best copy instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from adloop.bandits import OBJECTIVES, ThompsonSampling, decide_winner, retire_candidates
from adloop.optimizer.arm_stats import arm_counts, stats_by_variant
from adloop.optimizer.config import EngineConfig
from adloop.optimizer.errors import InvalidRequest, ReviewConflict, VariantNotFound
from adloop.optimizer.serving import SERVABLE, ServingTables
from adloop.optimizer.variants import (
    VariantFactory,
    load_brief,
    public_variant,
    seed_for,
    targeting_groups,
)
from adloop.storage import ConflictError, InvalidArgumentError, NotFoundError

__all__ = ["CampaignLifecycle"]

_MAX_GENERATED = 200  # most candidates one request may ask the generators for
_N_PARENTS = 3  # current leaders handed to the generators as parents on a refill
# Statuses that count toward a pool's size: variants awaiting review will serve once approved.
_POOLED = (*SERVABLE, "pending")


class CampaignLifecycle:
    """Changes to campaigns and their variant pools, for one engine.

    ``lock`` is the engine's lock (store writes + table rebuilds happen under it);
    ``refresh`` flushes queued decisions and rebuilds one campaign's tables, so the
    decisions to retire or to stop see every decision made so far.
    """

    def __init__(
        self,
        *,
        store: Any,
        tables: ServingTables,
        factory: VariantFactory,
        config: EngineConfig,
        clock: Callable[[], datetime],
        rng: np.random.Generator,
        lock: threading.RLock,
        refresh: Callable[[str], None],
    ) -> None:
        self._store = store
        self._tables = tables
        self._factory = factory
        self._config = config
        self._clock = clock
        self._rng = rng
        self._lock = lock
        self._refresh = refresh

    def create(
        self,
        brief: Any,
        *,
        tenant: str,
        n_candidates: int,
        objective: str,
        variants: Sequence[Mapping[str, Any]] | None,
        impressions_reported_separately: bool,
        name: str | None,
        seed: int | None,
        auto_approve: bool = False,
        per_segment: bool = False,
    ) -> str:
        """Store a new campaign with its first pool and start serving it; return its id.

        A brief dict may carry ``variants`` and ``auto_approve`` (as brief files do). With
        ``per_segment``, generated variants are written for the brief's segments in turn, each
        targeted to its segment (refills follow suit).
        """
        if objective not in OBJECTIVES:
            raise InvalidRequest("objective", f"must be one of {OBJECTIVES}, got {objective!r}")
        _check_count("n_candidates", n_candidates)
        if not isinstance(tenant, str) or not tenant:
            raise InvalidRequest("tenant", "must be a non-empty string")
        listed: Any = None
        if isinstance(brief, Mapping):
            listed = brief.get("variants")
            auto_approve = auto_approve or brief.get("auto_approve", False)
            brief = {k: v for k, v in brief.items() if k not in ("variants", "auto_approve")}
        if not isinstance(auto_approve, bool):
            raise InvalidRequest("auto_approve", f"must be true or false, got {auto_approve!r}")
        brief = load_brief(brief)
        explicit = variants if variants is not None else listed
        segments = _copy_segments(brief, per_segment)
        campaign_id = self._factory.new_id("c_")
        now = self._clock()
        if explicit:
            rows = self._factory.manual(campaign_id, explicit, brief, now, "variants", by=tenant)
            self._check_pool_size("variants", 0, len(rows))
            n_target = len(rows)
        else:
            self._check_pool_size("n_candidates", 0, n_candidates)
            rows, result = self._factory.generate(
                campaign_id,
                brief,
                n_candidates,
                seed=seed_for(seed, campaign_id),
                now=now,
                status=_new_status(auto_approve),
                segments=segments,
            )
            if not rows:
                raise InvalidRequest(
                    "brief",
                    "the generators produced no valid candidate "
                    f"(drops: {dict(result.drop_counts)}); relax the limits or list variants",
                )
            n_target = max(n_candidates, len(rows))
        campaign = {
            "campaign_id": campaign_id,
            "tenant": tenant,
            "name": name or str(getattr(brief, "product", campaign_id)),
            "brief": brief.model_dump(mode="json"),
            "objective": objective,
            "status": "active",
            "settings": {
                "n_candidates": n_target,
                "impressions_reported_separately": bool(impressions_reported_separately),
                "auto_approve": auto_approve,
                "per_segment": bool(segments),
            },
            "created_at": now,
        }
        with self._lock:
            self._store.insert_campaign(campaign, rows)
            self._tables.build(campaign_id)
        return campaign_id

    def add_variants(
        self,
        campaign_id: str,
        variants: Sequence[Mapping[str, Any]] | None,
        *,
        n: int | None,
        tenant: str | None,
        seed: int | None,
        segment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add the given variants (they serve at once), or ``n`` (default 1) generated ones
        (``pending`` until approved, unless the campaign auto-approves), written for and
        targeted to ``segment`` when given."""
        row = self._tables.visible_row(campaign_id, tenant)
        if segment is not None and variants:
            raise InvalidRequest(
                "segment", "applies to generated variants; give listed variants 'segments'"
            )
        brief = load_brief(row["brief"])
        now = self._clock()
        stored = self._store.variants(campaign_id)
        existing = [v["text"] for v in stored]
        n_servable = sum(v["status"] in _POOLED for v in stored)
        if variants:
            rows = self._factory.manual(
                campaign_id, variants, brief, now, "variants", by=tenant or row["tenant"]
            )
            for i, new in enumerate(rows):
                if new["text"] in existing:
                    raise InvalidRequest(f"variants.{i}.text", "the campaign already has this text")
            self._check_pool_size("variants", n_servable, len(rows))
        else:
            n = 1 if n is None else n
            _check_count("n", n)
            self._check_pool_size("n", n_servable, n)
            rows, _ = self._factory.generate(
                campaign_id,
                brief,
                n,
                seed=_refill_seed(seed, campaign_id, existing),
                now=now,
                existing_texts=existing,
                status=_new_status(_auto_approves(row)),
                segments=None if segment is None else [segment],
            )
        if rows:
            with self._lock:
                # Checked again under the lock: a concurrent request may have added some.
                self._check_pool_size("variants", self._n_servable(campaign_id), len(rows))
                self._store.insert_variants(campaign_id, rows)
                self._tables.build(campaign_id)
        return [public_variant(r) for r in rows]

    def review(
        self,
        campaign_id: str,
        variant_id: str,
        action: str,
        *,
        reviewer: str,
        note: str | None,
        tenant: str | None,
    ) -> dict[str, Any]:
        """Approve or reject a variant, record who did it, and serve accordingly at once.

        Returns the review (``variant_id, action, reviewer, note, reviewed_at``) and the
        variant's new ``status``.

        Raises:
            CampaignNotFound: no such campaign for ``tenant``.
            VariantNotFound: the campaign has no such variant.
            ReviewConflict: the variant's status does not allow it (only a pending or rejected
                variant can be approved, only a pending one rejected).
            InvalidRequest: ``action`` is not approve/reject, or ``note`` is too long.
        """
        self._tables.visible_row(campaign_id, tenant)
        if action not in ("approve", "reject"):
            raise InvalidRequest("action", f"must be approve or reject, got {action!r}")
        with self._lock:
            try:
                review = self._store.review_variant(
                    campaign_id, variant_id, action, reviewer=reviewer, note=note
                )
            except NotFoundError:
                raise VariantNotFound(campaign_id, variant_id) from None
            except ConflictError as exc:
                raise ReviewConflict(campaign_id, variant_id, str(exc)) from None
            except InvalidArgumentError as exc:
                raise InvalidRequest("note", str(exc)) from None
            self._tables.build(campaign_id)
        review["status"] = "active" if action == "approve" else "rejected"
        return review

    def retire(self, campaign_id: str, variant_id: str, *, tenant: str | None) -> None:
        """Retire one variant; refuses to retire the last one that serves."""
        self._tables.visible_row(campaign_id, tenant)
        with self._lock:
            variants = self._store.variants(campaign_id)
            target = next((v for v in variants if v["variant_id"] == variant_id), None)
            if target is None:
                raise VariantNotFound(campaign_id, variant_id)
            if target["status"] == "retired":
                return
            if sum(v["status"] in SERVABLE for v in variants) <= 1:
                raise InvalidRequest(
                    "variant_id", "cannot retire the last active variant; add variants first"
                )
            self._store.set_variant_status(campaign_id, variant_id, "retired")
            self._tables.build(campaign_id)

    def retire_and_refill(self, campaign_id: str, *, seed: int | None) -> dict[str, Any]:
        """Retire clear losers, then top the pool up to its size with new candidates.

        The engine's lock is held only for the short store changes (retiring, inserting),
        never while the generators write (a language model can take a minute), so choosing
        and every other campaign's changes go on meanwhile.
        """
        row = self._tables.visible_row(campaign_id, None)
        objective = row.get("objective") or "ctr"
        self._refresh(campaign_id)
        with self._lock:
            variants = self._store.variants(campaign_id, statuses=("active",))
            ids = [v["variant_id"] for v in variants]
            retired: list[str] = []
            leaders: list[Mapping[str, Any]] = list(variants)
            if len(ids) >= 2:
                stats = stats_by_variant(self._store.arm_stats(campaign_id))
                counts = arm_counts(ids, stats)
                # A variant competes with those of the same targeting (same audience).
                groups = targeting_groups(variants)
                for group in groups:
                    if len(group) < 2:
                        continue
                    losers = retire_candidates(
                        arm_counts([ids[i] for i in group], stats),
                        objective=objective,
                        floor=self._config.retire_floor,
                        min_impressions=self._config.retire_min_impressions,
                        rng=self._rng,
                    )
                    # never retire a whole group: keep at least its best arm
                    retired += [ids[group[int(i)]] for i in losers][: len(group) - 1]
                for variant_id in retired:
                    self._store.set_variant_status(campaign_id, variant_id, "retired")
                policy = ThompsonSampling(objective, n_draws=self._config.n_draws)
                order = np.argsort(-policy.probability_best(counts, self._rng))
                leaders = [
                    variants[int(i)]
                    # targeted copy: every segment picks its own parents from the whole order
                    for i in order[: _N_PARENTS if len(groups) == 1 else len(order)]
                    if ids[int(i)] not in retired
                ]
            if retired:
                self._tables.build(campaign_id)
            existing = [v["text"] for v in self._store.variants(campaign_id)]
        target = min(
            int((row.get("settings") or {}).get("n_candidates", len(ids))),
            self._config.max_variants_per_campaign,
        )
        # variants awaiting review count as part of the pool: refills never pile up more
        n_active = (
            len(ids) - len(retired) + len(self._store.variants(campaign_id, statuses=("pending",)))
        )
        # every retired variant is replaced, and a pool below its size is topped up
        n_new = max(len(retired), target - n_active) if retired else max(0, target - n_active)
        n_new = min(n_new, self._config.max_variants_per_campaign - n_active)
        added: list[dict[str, Any]] = []
        notes: list[str] = []
        if n_new > 0:
            by_id = {v["variant_id"]: v for v in variants}
            rows, _ = self._factory.generate(
                campaign_id,
                load_brief(row["brief"]),
                n_new,
                seed=_refill_seed(seed, campaign_id, existing),
                now=self._clock(),
                existing_texts=existing,
                winners=leaders,
                notes=notes,
                status=_new_status(_auto_approves(row)),
                segments=_refill_segments(row, [by_id[v] for v in retired], n_new),
            )
            with self._lock:
                # The pool may have changed while the generators wrote: skip texts added
                # meanwhile and stay within the limit.
                current = self._store.variants(campaign_id)
                texts = {v["text"] for v in current}
                room = self._config.max_variants_per_campaign - sum(
                    v["status"] in _POOLED for v in current
                )
                fresh = [r for r in rows if r["text"] not in texts]
                if len(fresh) > max(0, room):
                    notes.append(
                        f"kept {max(0, room)} of {len(fresh)} new candidates: the campaign is at "
                        f"max_variants_per_campaign={self._config.max_variants_per_campaign}"
                    )
                    fresh = fresh[: max(0, room)]
                if fresh:
                    self._store.insert_variants(campaign_id, fresh)
                    self._tables.build(campaign_id)
                added = [public_variant(r) for r in fresh]
        return {"campaign_id": campaign_id, "retired": retired, "added": added, "notes": notes}

    def declare_winner(self, campaign_id: str, *, tenant: str | None) -> dict[str, Any] | None:
        """Declare a winner if the stopping rule allows it (see ``Engine.declare_winner``)."""
        row = self._tables.visible_row(campaign_id, tenant)
        if row.get("winner_variant_id"):
            return {"variant_id": row["winner_variant_id"], "reason": "already declared"}
        self._refresh(campaign_id)
        with self._lock:
            variants = self._store.variants(campaign_id, statuses=("active",))
            # Only copy that serves every request can win the campaign (module docstring).
            ids = [v["variant_id"] for v in variants if not v.get("segments")]
            if len(ids) < 2:
                return None
            counts = arm_counts(ids, stats_by_variant(self._store.arm_stats(campaign_id)))
            decision = decide_winner(
                counts,
                objective=row.get("objective") or "ctr",
                threshold=self._config.winner_threshold,
                value_remaining=self._config.value_remaining,
                n_draws=self._config.n_draws,
                rng=self._rng,
            )
            if decision.winner is None:
                return None
            winner_id = ids[int(decision.winner)]
            self._store.set_variant_status(campaign_id, winner_id, "winner")
            self._store.set_campaign_status(campaign_id, "completed", winner_variant_id=winner_id)
            self._tables.build(campaign_id)
        return {
            "variant_id": winner_id,
            "probability_best": float(decision.probability_best[int(decision.winner)]),
            "value_remaining": float(decision.value_remaining),
            "reason": decision.reason,
        }

    def _n_servable(self, campaign_id: str) -> int:
        return sum(v["status"] in _POOLED for v in self._store.variants(campaign_id))

    def _check_pool_size(self, field: str, n_servable: int, n_new: int) -> None:
        """Refuse to grow a pool past ``EngineConfig.max_variants_per_campaign``."""
        limit = self._config.max_variants_per_campaign
        if n_servable + n_new > limit:
            raise InvalidRequest(
                field,
                f"the campaign would have {n_servable + n_new} variants (serving or awaiting "
                "review), over the "
                f"limit of {limit} (EngineConfig.max_variants_per_campaign); retire variants "
                "first (POST /v1/campaigns/{id}/retire/{variant_id}) or ask for fewer",
            )


def _copy_segments(brief: Any, per_segment: Any) -> list[str] | None:
    """The brief's segments when copy is written per segment, else None."""
    if not isinstance(per_segment, bool):
        raise InvalidRequest("per_segment", f"must be true or false, got {per_segment!r}")
    if not per_segment:
        return None
    if not brief.segments:
        raise InvalidRequest(
            "per_segment", "the brief lists no segments to write for; add 'segments' to it"
        )
    return list(brief.segments)


def _refill_segments(
    row: Mapping[str, Any], retired: Sequence[Mapping[str, Any]], n_new: int
) -> list[str | None] | None:
    """Whom each of a refill's ``n_new`` variants is written for (None: everyone).

    A retired targeted variant is replaced by copy for its segment (when the brief has that
    segment); in a per-segment campaign the rest go to the brief's segments in turn. None
    when the whole refill is for everyone, as it always was.
    """
    brief_segments = list((row.get("brief") or {}).get("segments") or ())
    per_segment = bool((row.get("settings") or {}).get("per_segment")) and brief_segments
    order: list[str | None] = [
        v["segments"][0] if v.get("segments") and v["segments"][0] in brief_segments else None
        for v in retired
    ]
    order += [
        brief_segments[i % len(brief_segments)] if per_segment else None
        for i in range(max(0, n_new - len(order)))
    ]
    order = order[:n_new]
    return order if any(s is not None for s in order) else None


def _auto_approves(row: Mapping[str, Any]) -> bool:
    """Whether the campaign's generated variants serve without review (its settings say so)."""
    return bool((row.get("settings") or {}).get("auto_approve", False))


def _new_status(auto_approve: bool) -> str:
    """The status generated variants start with."""
    return "active" if auto_approve else "pending"


def _check_count(field: str, n: Any) -> None:
    if not isinstance(n, int) or not 1 <= n <= _MAX_GENERATED:
        raise InvalidRequest(field, f"must be an integer in 1..{_MAX_GENERATED}, got {n!r}")


def _refill_seed(seed: int | None, campaign_id: str, existing: Sequence[str]) -> int:
    """A refill's seed: keyed by the pool's size, so successive refills differ but repeat."""
    return seed_for(seed, f"{campaign_id}:{len(existing)}")
