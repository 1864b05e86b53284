"""The ``across`` experiment: every approximate method with its defaults on other originals,
forget sets and simulated data (the settings, :class:`Evaluator`, :func:`run_setting`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from benchmarks._harness import Common, experiment
from benchmarks.suites._settings import APPROXIMATE, setup
from benchmarks.suites.defaults._across_tables import pivot, runs_table, summary

# ---------------------------------------------------------------------------- across settings

#: forget sets: every type with at least this many members
MIN_MEMBERS = 20
#: the random forget sets: (size, seed)
RANDOM_SETS = ((30, 1), (60, 2))


@dataclasses.dataclass
class AcrossParams(Common):
    """Parameters of the ``across`` experiment.

    Issue #12, item 5.  The defaults in ``docs/unlearning.md`` were chosen on one setting
    (pbmc68k members, a 400-epoch original, forget = the 22 CD56+ NK members; ``tuning``).  This
    study runs every approximate method with its defaults (one seed, the request's default
    seed 0)

    * on originals trained ``lengths`` epochs on the pbmc68k members (default ``su.SCVI``, seed
      0, ``train_size=0.9`` as in :func:`benchmarks.suites._settings.setup`), each with forget
      sets = the members of every cell type with >= 20 training members, plus two random sets
      of 30 and 60 members (``su.data.forget_random``, seeds 1 and 2);
    * on a simulated dataset (``su.data.simulate(sim_cells, sim_genes)``, the same 70/30
      membership split, a ``sim_epochs``-epoch original), forget = the members of one type
      (``sim_forget``).

    and records, per run: the held-out ELBO (``su.metrics.per_cell_elbo``, 8 draws, seed 0) of
    the held-out cells of the *other* types than the forget set (all held-out cells for a
    random forget set), relative to the original's (%; the 2% goal); the same for the held-out
    cells of the forgotten type; the relative ELBO drop on the retain *training* cells (what a
    guard without validation cells would see); the engine's retain-ELBO check
    (``unlearn_record_["checks"]``: drop on the retain validation cells, passed or not) and the
    wall time.  Negative changes are losses.  Tables: every run, one line per setting (a
    column per method), and a summary per method.

    Attributes
    ----------
    lengths
        Training epochs of the pbmc68k originals (cached in ``cache``).
    methods
        The methods run.
    types
        pbmc68k forget types (``"random"`` for both random sets; ``None``: all).
    sim
        Run the simulated dataset too.
    sim_epochs
        Training epochs of the simulated original.
    sim_forget
        The forgotten type of the simulated dataset.
    sim_cells
        Simulated cells.
    sim_genes
        Simulated genes.
    sim_train_size
        ``train_size`` of the simulated original (1.0: no validation split).
    kwargs
        Hyper-parameters passed to every method.
    jsonl
        Append every row to this file.
    table
        Only print the tables of the rows in this JSONL file.
    check_heldout
        ``unlearn(check_cells=...)``: the check scores the held-out cells of the other types.
    cache
        Folder of the cached originals.
    """

    lengths: list[int] = dataclasses.field(default_factory=lambda: [60, 200, 400])
    methods: list[str] = dataclasses.field(default_factory=lambda: list(APPROXIMATE))
    types: list[str] | None = None
    sim: bool = True
    sim_epochs: int = 200
    sim_forget: str = "CD56+ NK"
    sim_cells: int = 2000
    sim_genes: int = 765
    sim_train_size: float = 0.9
    kwargs: dict | None = None
    jsonl: str | None = None
    table: str | None = None
    check_heldout: bool = False
    cache: str = os.path.join(tempfile.gettempdir(), "su_defaults")


def _train(members, epochs: int, path: str, train_size: float = 0.9):
    import scvi_unlearn as su
    from scvi_unlearn._seeding import isolated_seed

    if os.path.exists(path):
        return su.SCVI.load(path, adata=members)
    with isolated_seed(0):
        model = su.SCVI(members)
        model.train(max_epochs=epochs, train_size=train_size, enable_progress_bar=False)
    model.save(path, overwrite=True)
    return model


def pbmc_setting(cache: str, threads: int | None, epochs: int):
    """(members, heldout, original) on pbmc68k; the split of :func:`setup`."""
    model, members, heldout, _ = setup(cache, threads)  # 400 epochs (the heuristic), cached
    if epochs != 400:
        model = _train(members, epochs, os.path.join(cache, f"original_{epochs}"))
    return members, heldout, model


def sim_setting(cache: str, epochs: int, n_cells: int = 2000, n_genes: int = 765, train_size=0.9):
    import scvi_unlearn as su

    adata = su.data.simulate(n_cells, n_genes, random_state=0)
    su.data.membership_split(adata, holdout=0.3, stratify="cell_type", seed=0)
    members = adata[adata.obs["membership"] == "train"].copy()
    heldout = adata[adata.obs["membership"] == "heldout"].copy()
    su.SCVI.setup_anndata(members, layer="counts", labels_key="cell_type")
    path = os.path.join(cache, f"sim_{n_cells}x{n_genes}_{epochs}ep_ts{train_size}")
    return members, heldout, _train(members, epochs, path, train_size)


def type_forget_sets(members, types: list[str] | None) -> list[tuple[str, str | None, np.ndarray]]:
    """(name, forgotten type or None, obs_names) for every type with >= 20 members + random."""
    import scvi_unlearn as su

    counts = members.obs["cell_type"].value_counts()
    labels = [t for t, n in counts.items() if n >= MIN_MEMBERS]
    if types is not None:
        labels = [t for t in labels if t in types]
    sets = [(t, t, members.obs_names[members.obs["cell_type"] == t].to_numpy()) for t in labels]
    if types is None or "random" in types:
        for n, seed in RANDOM_SETS:
            sets.append((f"random {n}", None, su.data.forget_random(members, n, seed=seed)))
    return sets


class Evaluator:
    """Per-cell held-out and retain-training ELBO of a model vs the original's."""

    def __init__(self, original, members, heldout):
        from scvi_unlearn.metrics import per_cell_elbo

        self._elbo = per_cell_elbo
        self.members, self.heldout = members, heldout
        self.types = heldout.obs["cell_type"].to_numpy()
        self.base_heldout = per_cell_elbo(original, heldout)["elbo"].to_numpy()
        self.base_members = per_cell_elbo(original, members)["elbo"].to_numpy()
        self.train_names = set(original.train_obs_names_)

    def __call__(self, model, forget_type, forget_names) -> dict[str, float]:
        h = self._elbo(model, self.heldout)["elbo"].to_numpy()
        other = self.types != forget_type if forget_type is not None else np.ones(len(h), bool)

        def change(new, base):
            return float((new.mean() - base.mean()) / abs(base.mean()))

        out = {"other_change": change(h[other], self.base_heldout[other])}
        out["same_change"] = (
            change(h[~other], self.base_heldout[~other]) if (~other).any() else float("nan")
        )
        forget = set(forget_names)
        keep = np.array(
            [n in self.train_names and n not in forget for n in self.members.obs_names]
        )
        m = self._elbo(model, self.members[keep].copy())["elbo"].to_numpy()
        out["train_drop"] = -change(m, self.base_members[keep])
        return out


def run_setting(dataset, epochs, members, heldout, original, sets, args, out_rows) -> None:
    """Every method of ``args`` on every forget set of one setting; rows to ``out_rows``."""
    ev = Evaluator(original, members, heldout)
    for name, ftype, names in sets:
        for method in args.methods:
            kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
            kwargs.update(args.kwargs or {})
            row = {
                "dataset": dataset,
                "epochs": epochs,
                "forget": name,
                "n_forget": int(len(names)),
                "method": method + (f" {json.dumps(args.kwargs)}" if args.kwargs else ""),
            }
            if args.check_heldout:  # the check scores the held-out cells of the other types
                other = ev.types != ftype if ftype is not None else np.ones(heldout.n_obs, bool)
                kwargs["check_cells"] = heldout[other]
                row["method"] += " [check_cells]"
            t = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    new = original.unlearn(names, method=method, on_degradation="warn", **kwargs)
            except Exception as err:  # report and continue the study
                row.update(error=f"{type(err).__name__}: {err}"[:200])
                print(json.dumps(row), flush=True)
                out_rows.append(row)
                continue
            row["seconds"] = time.perf_counter() - t
            checks = new.unlearn_record_["checks"]
            row.update(
                guard_drop=float(checks["relative_drop"]),
                guard_se=float(checks["relative_drop_se"]),
                guard_passed=bool(checks["passed"]),
                guard_cells=checks["retain_cells"],
            )
            row.update(ev(new, ftype, names))
            noise = [e for e in new.unlearn_record_["log"] if "alpha" in e]
            if noise:  # fisher: the noise scale used (calibrated by default)
                row["alpha"] = float(noise[-1]["alpha"])
            out_rows.append(row)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            print(
                f"{dataset} {epochs:3d}ep {name:30s} {method:16s} other "
                f"{100 * row['other_change']:+6.2f}% same {100 * row['same_change']:+6.2f}% "
                f"train-drop {100 * row['train_drop']:5.2f}% "
                f"guard {100 * row['guard_drop']:5.2f}% "
                f"({'pass' if row['guard_passed'] else 'FAIL'}) {row['seconds']:5.1f}s",
                flush=True,
            )


@experiment("across", AcrossParams)
def across(args: AcrossParams) -> dict[str, pd.DataFrame]:
    """Do the approximate methods' defaults hold beyond the setting they were tuned on?"""
    if args.table:
        with open(args.table) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    else:
        import scvi

        scvi.settings.seed = 0
        os.makedirs(args.cache, exist_ok=True)
        rows = []
        for epochs in args.lengths:
            members, heldout, original = pbmc_setting(args.cache, args.threads, epochs)
            sets = type_forget_sets(members, args.types)
            run_setting("pbmc68k", epochs, members, heldout, original, sets, args, rows)
        if args.sim:
            members, heldout, original = sim_setting(
                args.cache, args.sim_epochs, args.sim_cells, args.sim_genes, args.sim_train_size
            )
            names = members.obs_names[members.obs["cell_type"] == args.sim_forget].to_numpy()
            sets = [(args.sim_forget, args.sim_forget, names)]
            label = f"simulated {args.sim_cells}x{args.sim_genes}"
            if args.sim_train_size != 0.9:
                label += f" train_size={args.sim_train_size:g}"
            run_setting(label, args.sim_epochs, members, heldout, original, sets, args, rows)
    return {"runs": runs_table(rows), "by setting": pivot(rows), "by method": summary(rows)}
