"""The retrain target: how detectable the forget cells are under models that never saw them.

A forgotten cell should be as (un)detectable as under a model retrained without it (DESIGN
section 7).  :func:`retrain_target` attacks several retrained models (different seeds) with
the same protocol and turns their advantages into a 95% interval; a candidate (an unlearned
model) passes when its advantage is inside that interval's upper end and its held-out ELBO is
within a stated tolerance of the retrains'.  One retrain and one seed, as in the seed study
(DESIGN section 8, bug 4), cannot tell seed noise from a leak; at least three are required.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData

from scvi_unlearn.attack._audit import (
    CellsLike,
    heldout_elbo,
    resolve_cells,
    run_membership_attack,
)
from scvi_unlearn.attack._equivalence import ScoreCache, equivalence_test
from scvi_unlearn.attack._equivalence_report import EquivalenceReport
from scvi_unlearn.attack._evaluation_data import check_never_trained_on, heldout_names
from scvi_unlearn.attack._power import DEFAULT_MARGIN, forget_power
from scvi_unlearn.attack._report import AttackReport, TargetCheck
from scvi_unlearn.attack._utility import MIN_TYPE_CELLS, SAME_TYPE_MARGIN

#: protocol entries that must agree between the target and a candidate's report.
_PROTOCOL_KEYS = (
    "attack",
    "score",
    "feature_set",
    "n_shadow",
    "n_draws",
    "seed",
    "n_splits",
    "n_neighbors",
    "n_bootstrap",
    "variance",
    "cross_fit",
)


@dataclass
class RetrainTarget:
    """The retrain interval of membership advantages and the pass / fail rule.

    Attributes
    ----------
    reports
        The audit of each retrained model (same protocol).
    interval
        ``(low, high)``: the central ``level`` interval of the retrain advantages, pooled over
        seeds *and* over each audit's stratified bootstrap replicates, so it carries both the
        seed-to-seed spread of retraining and the sampling noise of the finite cell sets.
    level
        Coverage of ``interval`` (default 0.95).
    heldout_elbos
        Mean held-out ELBO of each retrained model.
    elbo_tolerance
        Relative tolerance of the utility rule (see :meth:`check`).
    heldout
        ``obs_names`` of the held-out cells the ELBO is measured on.
    adata
        The dataset the cells come from (not copied; never modified).
    models
        The retrained models (reference models of the calibrated attack).
    protocol
        The audit options shared by every report (``run_membership_attack`` keywords).
    score_cache
        Per-cell ELBO tables of the retrains, reused by :meth:`equivalence`.
    power
        How well these retrains can judge the forget cells per cell, from their null spread
        at the default margin (:func:`~scvi_unlearn.attack.references_needed`): ``null_scale``,
        ``half_width`` of the decision's interval, ``power`` (probability that another retrain
        is declared equivalent), ``n_references``, ``references_needed``, ``margin``.
    """

    reports: list[AttackReport]
    interval: tuple[float, float]
    level: float
    heldout_elbos: np.ndarray
    elbo_tolerance: float
    heldout: np.ndarray
    adata: AnnData | None = field(repr=False, default=None)
    models: list[Any] = field(repr=False, default_factory=list)
    protocol: dict[str, Any] = field(repr=False, default_factory=dict)
    score_cache: ScoreCache | None = field(repr=False, default=None)
    power: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def advantages(self) -> np.ndarray:
        """Point advantage of each retrained model."""
        return np.array([r.advantage for r in self.reports])

    @property
    def elbo_floor(self) -> float:
        """Lowest acceptable mean held-out ELBO: retrain mean minus the tolerance."""
        mean = float(np.mean(self.heldout_elbos))
        return mean - self.elbo_tolerance * abs(mean)

    def check(self, report: AttackReport, heldout_elbo: float | None = None) -> TargetCheck:
        """Pass / fail of a candidate's audit against the target.

        Rule: ``advantage <= interval[1]`` (the retrain interval's upper end: an advantage below
        the retrains' is at least as close to chance; an AUC far below 0.5 has a large
        advantage and fails) **and** ``heldout_elbo >= elbo_floor`` (mean held-out ELBO no
        worse than the retrains' mean by more than ``elbo_tolerance`` of its magnitude).  A
        report without a held-out ELBO fails ("utility not measured").
        """
        self.check_protocol(report)
        elbo = heldout_elbo if heldout_elbo is not None else report.heldout_elbo
        lo, hi = self.interval
        adv = report.advantage
        adv_ok = bool(adv <= hi)
        adv_txt = (
            f"advantage {adv:.3f} {'within' if adv_ok else 'above'} retrain interval "
            f"[{lo:.3f}, {hi:.3f}] ({len(self.reports)} retrains)"
        )
        if elbo is None:
            return TargetCheck(False, adv_ok, None, f"{adv_txt}; held-out ELBO not measured")
        ut_ok = bool(elbo >= self.elbo_floor)
        ut_txt = (
            f"held-out ELBO {elbo:.1f} {'>=' if ut_ok else '<'} floor {self.elbo_floor:.1f} "
            f"(retrain {np.mean(self.heldout_elbos):.1f}, tolerance {self.elbo_tolerance:.0%})"
        )
        return TargetCheck(adv_ok and ut_ok, adv_ok, ut_ok, f"{adv_txt}; {ut_txt}")

    def check_protocol(self, report: AttackReport) -> None:
        diff = [
            k for k in _PROTOCOL_KEYS if report.protocol.get(k) != self.reports[0].protocol.get(k)
        ]
        for key in ("members", "nonmembers"):
            a, b = report.protocol.get(key), self.reports[0].protocol.get(key)
            if a is None or b is None or not np.array_equal(np.sort(a), np.sort(b)):
                diff.append(key)
        if diff:
            raise ValueError(
                f"The report's protocol differs from the retrain target's in {diff}: audit the "
                "candidate with the same protocol (target.evaluate(model) does)."
            )

    def attach(self, model, report: AttackReport, adata: AnnData | None) -> None:
        """Measure ``model``'s held-out ELBO into ``report`` and link the target to it."""
        source = adata if adata is not None else self.adata
        if source is None:
            raise ValueError("Pass adata= (the dataset holding the held-out cells).")
        report.heldout_elbo = heldout_elbo(
            model, source, self.heldout, self.protocol.get("n_draws", 8), self.protocol["seed"]
        )
        report.target = self

    def evaluate(self, model, adata: AnnData | None = None) -> AttackReport:
        """Audit a candidate ``model`` with the target's protocol; the report carries it."""
        kwargs = dict(self.protocol)
        members = kwargs.pop("members")
        nonmembers = kwargs.pop("nonmembers")
        return run_membership_attack(
            model,
            members,
            nonmembers,
            adata=adata if adata is not None else self.adata,
            target=self,
            **kwargs,
        )

    def equivalence(
        self,
        model,
        adata: AnnData | None = None,
        *,
        null_models: Sequence[Any] = (),
        margin: float = DEFAULT_MARGIN,
        alpha: float = 0.05,
        statistic: str = "elbo",
        max_heldout: int | None = 500,
        exact: bool | None = None,
        same_type_margin: float = SAME_TYPE_MARGIN,
        min_type_cells: int = MIN_TYPE_CELLS,
    ) -> EquivalenceReport:
        """Per-cell retrain-equivalence test of ``model`` against this target's retrains.

        The target's retrains are the references, its members the forget cells, its held-out
        cells (split by the forget cells' types) the non-members; draws and seed are the
        audit's.  The references' per-cell scores are computed once and reused for every
        candidate.  See :func:`scvi_unlearn.attack.equivalence_test` for the statistics and
        ``null_models`` (extra retrains that sharpen the null).  A ``model`` that is one of
        this target's own retrains is tested against the *other* retrains (which needs at
        least four): what a retrain gets, for comparison with the candidates.

        ``exact=None`` reads whether ``model`` is exact by construction from its
        ``unlearn_record_`` (a method in :data:`scvi_unlearn.unlearn.FROM_SCRATCH`); an exact
        candidate passes on the utility checks alone (``same_type_margin``, ``min_type_cells``
        and the target's ``elbo_tolerance``: see
        :class:`~scvi_unlearn.attack.EquivalenceReport`).  The reference-power warning was
        given when the target was built (:attr:`power`); it is not repeated here unless
        ``margin`` or ``null_models`` change the test.
        """
        source = adata if adata is not None else self.adata
        if source is None:
            raise ValueError("Pass adata= (the dataset holding the forget and held-out cells).")
        n_draws, seed = self.protocol.get("n_draws", 8), self.protocol["seed"]
        cache = self.score_cache
        if cache is None or cache.adata is not source:
            cache = self.score_cache = ScoreCache(source, n_draws, seed)
        references = [m for m in self.models if m is not model]
        warn_power = not (
            self.power
            and margin == self.power.get("margin")
            and not null_models
            and len(references) == len(self.models)
        )
        return equivalence_test(
            model,
            references,
            self.protocol["members"],
            adata=source,
            heldout=self.heldout,
            null_models=null_models,
            label_key=self.protocol.get("label_key", "cell_type"),
            statistic=statistic,
            margin=margin,
            alpha=alpha,
            elbo_tolerance=self.elbo_tolerance,
            same_type_margin=same_type_margin,
            min_type_cells=min_type_cells,
            exact=exact,
            n_draws=n_draws,
            seed=seed,
            max_heldout=max_heldout,
            cache=cache,
            warn_power=warn_power,
        )

    def to_frame(self):
        """One row per retrained model: its audit metrics and held-out ELBO."""
        import pandas as pd

        frames = [r.to_frame() for r in self.reports]
        out = pd.concat(frames, ignore_index=True)
        out["heldout_elbo"] = self.heldout_elbos
        out["target_low"], out["target_high"] = self.interval
        return out

    def __repr__(self) -> str:
        lo, hi = self.interval
        adv = ", ".join(f"{a:.3f}" for a in self.advantages)
        return (
            f"RetrainTarget({self.protocol.get('attack')} attack, {len(self.reports)} retrains)\n"
            f"  advantages      {adv}\n"
            f"  {int(round(self.level * 100))}% interval    [{lo:.3f}, {hi:.3f}]\n"
            f"  held-out ELBO   {np.mean(self.heldout_elbos):.1f} "
            f"(floor {self.elbo_floor:.1f}, tolerance {self.elbo_tolerance:.0%})\n"
            f"  rule            pass iff advantage <= {hi:.3f} and held-out ELBO >= "
            f"{self.elbo_floor:.1f}"
        ) + (
            f"\n  per-cell test   +/-{self.power['half_width']:.2f} at margin "
            f"+/-{self.power['margin']:g} (power {self.power['power']:.0%}; references needed: "
            f"{self.power['references_needed'] or 'no number reaches it'})"
            if self.power
            else ""
        )


def retrain_target(
    retrain_models: Sequence[Any],
    members: CellsLike,
    nonmembers: CellsLike | None = None,
    *,
    adata: AnnData | None = None,
    heldout: Sequence[str] | None = None,
    attack: str = "mlp",
    level: float = 0.95,
    elbo_tolerance: float = 0.02,
    seed: int = 0,
    n_draws: int = 8,
    **attack_kwargs,
) -> RetrainTarget:
    """Audit >= 3 retrained models with one protocol and return the retrain target.

    Parameters
    ----------
    retrain_models
        At least three models trained without ``members`` (different seeds), e.g. from
        ``model.unlearn(forget, method="retrain", seed=s)``.
    members, nonmembers, adata
        The evaluated cells, as in ``membership_attack`` (``nonmembers=None`` matches held-out
        cells from ``adata``).  The matched set is drawn once and shared by every audit.
    heldout
        ``obs_names`` of held-out cells for the utility rule; default the cells of ``adata``
        with ``obs["membership"] == "heldout"`` (the non-members included: no model trained on
        them).
    attack
        Attack of every audit.  With ``"calibrated"`` and no ``reference_models``, each
        retrain is calibrated against the *other* retrains (leave-one-out), and candidates
        later against all of them.
    level
        Coverage of the interval.
    elbo_tolerance
        Relative held-out ELBO tolerance of the pass rule (default 2%: a candidate may lose at
        most 2% of the retrains' mean held-out ELBO magnitude).
    seed, n_draws
        As in ``membership_attack``; shared by every audit.
    attack_kwargs
        Further ``membership_attack`` options, shared by every audit.

    Returns
    -------
    :class:`RetrainTarget`

    Warns
    -----
    ReferencePowerWarning
        When the retrains disagree so much about the members that the per-cell equivalence
        test (:meth:`RetrainTarget.equivalence`, default margin) would declare another retrain
        equivalent with probability below 0.8: the message gives the interval half-width and
        how many references would be needed, if any number would
        (:func:`~scvi_unlearn.attack.references_needed`; ``docs/equivalence.md``, "How many
        references").  By size alone, a forget set of >= 20 cells needs 5 references and a
        smaller one 8 (the measured power study); a small *whole* cluster may need more than
        any number.  The members are scored once under every retrain for this (an ELBO pass;
        the scores are reused by :meth:`RetrainTarget.equivalence`).
    """
    models = list(retrain_models)
    if len(models) < 3:
        raise ValueError(
            f"A retrain target needs at least 3 retrained models (different seeds), got "
            f"{len(models)}: one retrain cannot separate seed noise from a leak."
        )
    if len({id(m) for m in models}) != len(models):
        raise ValueError("retrain_models contains the same model more than once.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if elbo_tolerance < 0:
        raise ValueError(f"elbo_tolerance must be >= 0, got {elbo_tolerance}.")
    match_method = attack_kwargs.pop("match_method", "auto")
    label_key = attack_kwargs.pop("label_key", "cell_type")
    member_names, nonmember_names, _ = resolve_cells(
        members, nonmembers, adata, match_method, label_key, seed
    )
    for m in models:
        check_never_trained_on(m, member_names, "members", "retrained model")
    # the cells are fixed now: pass them as AnnData-free names with the source AnnData
    if adata is None:
        raise ValueError("Pass adata= (the dataset holding members, non-members, held-out).")
    heldout_cells = heldout_names(adata, heldout, member_names)
    user_refs = attack_kwargs.pop("reference_models", None)
    reports = []
    for i, m in enumerate(models):
        refs = user_refs
        if attack == "calibrated" and refs is None:
            refs = [r for j, r in enumerate(models) if j != i]
        reports.append(
            run_membership_attack(
                m,
                member_names,
                nonmember_names,
                adata=adata,
                attack=attack,
                seed=seed,
                n_draws=n_draws,
                reference_models=refs,
                level=level,
                **attack_kwargs,
            )
        )
    pooled = np.concatenate([r.bootstrap["advantage"] for r in reports])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(pooled, [alpha, 1.0 - alpha])
    points = np.array([r.advantage for r in reports])
    interval = (float(min(lo, points.min())), float(max(hi, points.max())))
    elbos = np.array([heldout_elbo(m, adata, heldout_cells, n_draws, seed) for m in models])
    protocol = dict(
        attack=attack,
        seed=seed,
        n_draws=n_draws,
        level=level,
        members=member_names,
        nonmembers=nonmember_names,
        reference_models=user_refs,
        label_key=label_key,
        **attack_kwargs,
    )
    target = RetrainTarget(
        reports=reports,
        interval=interval,
        level=level,
        heldout_elbos=elbos,
        elbo_tolerance=float(elbo_tolerance),
        heldout=heldout_cells,
        adata=adata,
        models=models,
        protocol=protocol,
    )
    for report, elbo in zip(reports, elbos):  # each retrain's audit, judged like a candidate
        report.heldout_elbo = float(elbo)
        report.target = target
    target.score_cache = ScoreCache(adata, n_draws, seed)
    target.power = forget_power(models, member_names, target.score_cache)
    return target
