"""Mixture-of-Gaussians data, forget sets and the scVI simulation driver."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import scvi_unlearn as su
from scvi_unlearn.toy import (
    FORGET_KINDS,
    SEPARATIONS,
    make_mog_anndata,
    mog_forget_set,
    mog_vae_experiment,
    summarize_mog_vae,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one thread avoids oversubscription on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mog_anndata_shape_labels_and_geometry():
    a = make_mog_anndata(300, 12, 3, separation="separated", random_state=0)
    assert a.shape == (300, 12)
    assert a.obs["cell_type"].value_counts().to_dict() == {"C0": 100, "C1": 100, "C2": 100}
    assert np.array_equal(a.X, a.layers["counts"]) and a.X.dtype == np.float32
    assert (a.X >= 0).all() and (a.X.sum(1) > 0).all()
    means = a.uns["mog"]["means"]
    # component means are sqrt(2) * separation apart (orthonormal directions)
    dist = np.linalg.norm(means[0] - means[1])
    assert dist == pytest.approx(np.sqrt(2) * SEPARATIONS["separated"], rel=1e-6)
    # each component's sample sits at its mean with unit noise
    c0 = a.X[a.obs["cell_type"].to_numpy() == "C0"]
    assert np.abs(c0.mean(0) - means[0]).max() < 0.5
    assert c0.std(0).mean() == pytest.approx(1.0, rel=0.15)


def test_mog_separation_controls_overlap():
    def bayes_accuracy(sep):
        # nearest true mean = the Bayes classifier for equal weights and isotropic noise
        a = make_mog_anndata(400, 10, 2, separation=sep, random_state=1)
        means = a.uns["mog"]["means"]
        pred = np.argmin(((a.X[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        return (pred == a.obs["cell_type"].cat.codes.to_numpy()).mean()

    assert bayes_accuracy("separated") > 0.99
    assert bayes_accuracy("overlapping") < 0.85


def test_mog_is_reproducible_and_validates():
    a = make_mog_anndata(60, 5, 2, random_state=3)
    assert np.array_equal(a.X, make_mog_anndata(60, 5, 2, random_state=3).X)
    assert not np.array_equal(a.X, make_mog_anndata(60, 5, 2, random_state=4).X)
    with pytest.raises(ValueError, match="separation"):
        make_mog_anndata(60, 5, 2, separation="far")
    with pytest.raises(ValueError, match="n_components"):
        make_mog_anndata(60, 2, 3)
    with pytest.raises(ValueError, match="weights"):
        make_mog_anndata(60, 5, 2, weights=(1.0, -1.0))
    b = make_mog_anndata(100, 5, 2, weights=(0.8, 0.2), random_state=0)
    assert b.obs["cell_type"].value_counts().to_dict() == {"C0": 80, "C1": 20}


def test_forget_sets_are_members_of_the_right_kind():
    a = make_mog_anndata(300, 8, 3, random_state=0)
    su.data.membership_split(a, holdout=0.3, stratify="cell_type", seed=0)
    members = set(a.obs_names[a.obs["membership"] == "train"])
    comp = mog_forget_set(a, "component")
    part = mog_forget_set(a, "partial", fraction=0.5, seed=1)
    scat = mog_forget_set(a, "scattered", fraction=0.5, seed=1)
    labels = a.obs["cell_type"]
    assert set(comp) <= members and set(part) <= members and set(scat) <= members
    assert (labels[comp] == "C0").all() and len(comp) == (labels[list(members)] == "C0").sum()
    assert set(part) < set(comp) and len(part) == round(0.5 * len(comp))
    assert len(scat) == len(part) and labels[scat].nunique() > 1
    assert np.array_equal(part, mog_forget_set(a, "partial", fraction=0.5, seed=1))
    with pytest.raises(ValueError, match="kind"):
        mog_forget_set(a, "half")
    with pytest.raises(ValueError, match="fraction"):
        mog_forget_set(a, "partial", fraction=0.0)


def test_summary_flags_measurable_memorization():
    runs = pd.DataFrame(
        {
            "separation": ["s"] * 3 + ["o"] * 3,
            "forget": ["component"] * 6,
            "model": ["original", "retrain", "finetune"] * 2,
            "n_forget": [10] * 6,
            "auc": [0.8, 0.55, 0.56, 0.52, 0.5, 0.51],
            "auc_low": [0.7, 0.45, 0.46, 0.40, 0.38, 0.40],
            "auc_high": [0.9, 0.65, 0.66, 0.64, 0.62, 0.63],
        }
    )
    table = summarize_mog_vae(runs)
    assert table.loc[("s", "component"), "memorization_measurable"]
    assert not table.loc[("o", "component"), "memorization_measurable"]
    assert table.loc[("s", "component"), "removed_finetune"]
    with pytest.raises(ValueError, match="retrain"):
        summarize_mog_vae(runs[runs["model"] != "retrain"])


def test_experiment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="forget_kinds"):
        mog_vae_experiment(forget_kinds=("all",))
    with pytest.raises(ValueError, match="unknown unlearning method"):
        mog_vae_experiment(methods=("magic",))


def test_simulation_end_to_end_small():
    """Trains on a tiny separated mixture, forgets a component, audits original and retrain."""
    runs = mog_vae_experiment(
        separations=("separated",),
        forget_kinds=("component",),
        n_cells=150,
        n_features=8,
        max_epochs=15,
        n_bootstrap=50,
        seed=0,
    )
    assert list(runs["model"]) == ["original", "retrain"]
    assert runs["auc"].between(0, 1).all()
    assert (runs["auc_low"] <= runs["auc"]).all() and (runs["auc"] <= runs["auc_high"]).all()
    assert (runs["n_forget"] == 35).all()  # 70% of the 50 cells of C0
    table = summarize_mog_vae(runs)
    assert table.index.tolist() == [("separated", "component")]
    assert set(FORGET_KINDS) >= set(runs["forget"])
