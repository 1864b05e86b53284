"""Benchmark runner, its tables and figures, and the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scvi_unlearn as su
from scvi_unlearn.benchmark import mean_ci
from scvi_unlearn.cli import build_parser, main


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2.0 < hi
    assert np.isnan(mean_ci([1.0])[1])
    assert np.isnan(mean_ci([])[0])


@pytest.fixture(scope="module")
def small_benchmark(pbmc, trained_model, forget_names):
    return su.benchmark.run(
        pbmc,
        forget_names,
        methods=["finetune"],
        seeds=1,
        retrain_seeds=4,
        model=trained_model,
        budgets=(0.5,),
        n_draws=2,
        n_bootstrap=100,
        progress=False,
        umap=False,
    )


def test_benchmark_table(small_benchmark, trained_model):
    t = small_benchmark.table
    assert small_benchmark.attacks == ["calibrated", "shadow"]
    for attack in ("calibrated", "shadow"):
        assert list(t.loc[t["attack"] == attack, "method"]) == [
            "original",
            "retrain",
            "retrain",
            "retrain",
            "retrain",
            "retrain_50pct",
            "finetune",
        ]
    # utility is a property of the model, not of the attack
    u = t.pivot_table(index=["method", "seed"], columns="attack", values="utility_elbo_mean")
    assert np.allclose(u["calibrated"], u["shadow"])
    for col in ("auc", "auc_low", "auc_high", "advantage", "yeom_advantage", "passed"):
        assert col in t
    assert ((t["auc_low"] <= t["auc"]) & (t["auc"] <= t["auc_high"])).all()
    assert np.allclose(t["advantage"], 2 * (t["auc"] - 0.5).abs())
    assert t.filter(like="utility_").shape[1] >= 8
    retrain = t[t["method"] == "retrain"]
    assert np.isclose(retrain["time_vs_retrain"].mean(), 1.0)
    # the calibrated attack detects the original on its memorised cells more than a retrain
    cal = t[t["attack"] == "calibrated"].set_index("method")
    assert cal.loc["original", "auc"] > cal.loc["retrain", "auc"].mean()
    assert np.isnan(t.loc[t["method"] == "original", "wall_time_s"]).all()  # trained elsewhere
    # the cost-matched retrain ran half the original's epochs, so it is cheaper
    half = t[t["method"] == "retrain_50pct"]["time_vs_retrain"].iloc[0]
    assert half < 1.0
    # the original model is untouched by the benchmark
    assert trained_model.train_obs_names_ is not None


def test_benchmark_rows_carry_the_equivalence_verdict(small_benchmark):
    t = small_benchmark.table
    for col in ("eq_decision", "eq_mean_z", "eq_p_value", "eq_membership_contrast"):
        assert t[col].notna().all(), col
    assert set(t["eq_decision"]) <= {"equivalent", "remembers", "over-forgets", "no power"}
    # a model passes only if it passes the membership audit and the equivalence test
    assert (t["passed"] == (t["membership_passed"] & t["eq_passed"].astype(bool))).all()
    # the equivalence is a property of the model: the same on both attacks' rows
    eq = t.pivot_table(index=["method", "seed"], columns="attack", values="eq_mean_z")
    assert np.allclose(eq["calibrated"], eq["shadow"])
    keys = set(small_benchmark.equivalences)
    assert ("original", 0) in keys and ("finetune", 0) in keys
    assert {("retrain", s) for s in range(4)} <= keys  # each retrain against the other three
    orig = small_benchmark.equivalences[("original", 0)]
    assert orig.protocol["n_references"] == 4
    assert small_benchmark.equivalences[("retrain", 0)].protocol["n_references"] == 3
    # the original trained on the forget cells: it fits them better than the retrains do
    retrain_z = t.loc[t["method"] == "retrain", "eq_mean_z"]
    assert orig.statistic > retrain_z.max()


def test_benchmark_summary_and_files(small_benchmark, tmp_path):
    s = small_benchmark.summary
    assert set(s["method"]) == {"original", "retrain", "retrain_50pct", "finetune"}
    assert len(s) == 8  # 4 methods x 2 attacks
    row = s.set_index(["attack", "method"]).loc[("shadow", "retrain")]
    assert row["n_runs"] == 4 and row["advantage_ci_low"] <= row["advantage"]
    assert "eq_decisions" in s and s["eq_pass_rate"].between(0, 1).all()
    md = small_benchmark.to_markdown()
    for attack in small_benchmark.attacks:
        powered = small_benchmark.audit_has_power(attack)
        orig = small_benchmark.table.query("attack == @attack and method == 'original'")
        assert powered == bool(
            orig["advantage"].iloc[0] > small_benchmark.targets[attack].interval[1]
        )
        assert powered or "No power" in md
    assert (
        "**calibrated attack**" in md
        and "**shadow attack**" in md
        and "Membership pass: advantage" in md
    )
    assert "forget mean z" in md and "equivalence" in md
    table, summary = small_benchmark.to_csv(tmp_path)
    assert pd.read_csv(table).shape[0] == 14 and pd.read_csv(summary).shape[0] == 8
    figs = small_benchmark.save_figures(tmp_path)
    assert {p.name for p in figs} == {
        "roc_calibrated.png",
        "advantage_vs_cost_calibrated.png",
        "roc_shadow.png",
        "advantage_vs_cost_shadow.png",
        "equivalence_vs_cost.png",
    }
    assert all(p.stat().st_size > 1000 for p in figs)


def test_benchmark_bad_input(pbmc, trained_model, forget_names):
    with pytest.raises(ValueError, match="Unknown unlearning method"):
        su.benchmark.run(pbmc, forget_names, methods=["nope"], model=trained_model)
    with pytest.raises(ValueError, match="at least 3"):
        su.benchmark.run(pbmc, forget_names, retrain_seeds=2, model=trained_model)
    with pytest.raises(ValueError, match="empty"):
        su.benchmark.run(pbmc, [], model=trained_model)
    with pytest.raises(ValueError, match="membership"):
        su.benchmark.run(su.data.pbmc68k(), forget_names, model=trained_model)
    with pytest.raises(ValueError, match="budgets"):
        su.benchmark.run(pbmc, forget_names, budgets=(1.5,), model=trained_model)
    with pytest.raises(ValueError, match="Unknown attack"):
        su.benchmark.run(pbmc, forget_names, attacks=["drift"], model=trained_model)


def test_original_keeps_a_checkpoint_only_for_rewind():
    from scvi_unlearn.benchmark._arguments import REWIND_FRACTION, original_train_kwargs

    assert "rewind" in su.benchmark.ALL_METHODS
    assert original_train_kwargs(["finetune"], {"max_epochs": 50}) == {"max_epochs": 50}
    assert original_train_kwargs("all", {"max_epochs": 50}) == {
        "max_epochs": 50,
        "rewind_epoch": int(REWIND_FRACTION * 50),
    }
    assert original_train_kwargs("rewind")["rewind_epoch"] == int(REWIND_FRACTION * 200)
    given = {"max_epochs": 50, "rewind_epoch": 5}
    assert original_train_kwargs(["rewind"], given) == given
    assert given == {"max_epochs": 50, "rewind_epoch": 5}  # the caller's dict is not changed


def test_rewind_needs_a_checkpointed_original(pbmc, trained_model, forget_names):
    assert trained_model.rewind_checkpoint_ is None
    with pytest.raises(ValueError, match="rewind_epoch"):
        su.benchmark.run(pbmc, forget_names, methods=["finetune", "rewind"], model=trained_model)
    # under "all" the given model runs without rewind (a warning); retrain_seeds=2 then stops
    # the run before any training
    with pytest.warns(UserWarning, match="without 'rewind'"):
        with pytest.raises(ValueError, match="at least 3"):
            su.benchmark.run(pbmc, forget_names, retrain_seeds=2, model=trained_model)


def test_benchmark_trains_a_checkpointed_original_for_rewind(pbmc, forget_names):
    res = su.benchmark.run(
        pbmc,
        forget_names,
        methods=["rewind"],
        seeds=1,
        retrain_seeds=3,
        train_kwargs={"max_epochs": 10, "enable_progress_bar": False},
        method_kwargs={"rewind": {"max_epochs": 2, "on_degradation": "warn"}},
        budgets=(),
        attacks=["calibrated"],
        n_draws=2,
        n_bootstrap=50,
        progress=False,
        umap=False,
    )
    t = res.table
    assert list(t["method"]) == ["original", "retrain", "retrain", "retrain", "rewind"]
    assert np.isfinite(t.loc[t["method"] == "rewind", "eq_mean_z"]).all()


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert main(["demo", "--method", "nope", "--out", "unused"]) == 2
    assert "Unknown unlearning method" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--max-epochs", "5"])
    assert args.max_epochs == 5 and args.forget_label == "CD56+ NK"


def test_cli_benchmark_bad_arguments(capsys, tmp_path):
    assert main(["benchmark", "--forget-label", "Nope", "--out", str(tmp_path)]) == 2
    assert "Unknown label" in capsys.readouterr().err
    assert main(["benchmark", "--forget-label", "CD34+", "--methods", "nope", "--out", "x"]) == 2
    assert main(["benchmark", "--forget-label", "CD34+", "--label-key", "x", "--out", "x"]) == 2
    assert "--label-key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--out", str(tmp_path)])  # --forget-label is required


@pytest.mark.slow  # two benchmark runs with 3 retrains each (about 20 s): the slow job
def test_parallel_runs_match_sequential(pbmc, trained_model, forget_names, tmp_path):
    kw = dict(
        methods=["ssd"],
        seeds=1,
        retrain_seeds=3,
        model=trained_model,
        budgets=(),
        attacks=["calibrated"],
        n_draws=2,
        n_bootstrap=50,
        progress=False,
        umap=False,
    )
    seq = su.benchmark.run(pbmc, forget_names, n_jobs=1, **kw).table
    par = su.benchmark.run(pbmc, forget_names, n_jobs=2, scratch_dir=str(tmp_path), **kw).table
    cols = ["attack", "method", "seed", "auc", "heldout_elbo", "utility_ari"]
    pd.testing.assert_frame_equal(seq[cols], par[cols])
    assert list(tmp_path.iterdir()) == []  # the workers' scratch space is cleaned up


@pytest.mark.slow  # the whole demo, the README's main job (25-35 s): the slow job
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--max-epochs", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    default = su.unlearn.DEFAULT_METHOD
    assert "**calibrated attack**" in printed and default in printed
    assert f"per-cell equivalence of '{default}':" in printed
    for name in ("benchmark_table.csv", "summary.md", "roc_calibrated.png", "latent_umap.png"):
        assert (out / name).stat().st_size > 0
    table = pd.read_csv(out / "benchmark_table.csv")
    assert set(table["method"]) == {"original", "retrain", "retrain_25pct", default}
