"""The seeds' two-Gaussian toy: MI estimators, batched classifiers, data, the four arms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from scvi_unlearn.toy import (
    ARMS,
    make_two_gaussian,
    notebook_mutual_information,
    plugin_mutual_information,
    summarize_two_gaussian,
    two_gaussian_experiment,
    two_gaussian_table,
)
from scvi_unlearn.toy._batched_mlp import (
    batched_mlp_forward,
    init_batched_mlp,
    train_batched_mlp,
)
from scvi_unlearn.toy._two_gaussian_data import bayes_posterior

# a small, fast version of the task: one point among 1,000 is memorized more visibly than among
# 5,000, and the tests stay well inside their time budget
SMALL = dict(n_samples=1000, train_epochs=100, continue_epochs=20)


def _notebook_reference(predicted_outputs, labels):
    """The seed notebook's compute_mutual_information_direct, as written there (for checking)."""
    probabilities = torch.softmax(predicted_outputs, dim=1)
    probabilities = torch.clamp(probabilities, 1e-10, 1.0 - 1e-10)
    p_z = torch.mean(labels.float())
    p_not_z = 1 - p_z
    joint_p_z = probabilities[:, 1] * p_z
    joint_p_not_z = probabilities[:, 0] * p_not_z
    p_y_hat = joint_p_z + joint_p_not_z
    return torch.mean(
        joint_p_z * torch.log(joint_p_z / (p_y_hat * p_z) + 1e-10)
        + joint_p_not_z * torch.log(joint_p_not_z / (p_y_hat * p_not_z) + 1e-10)
    )


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny matmuls: one thread avoids oversubscription on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- mutual information estimators


def test_notebook_mi_matches_the_notebook_formula_and_batches():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 2, generator=gen) * 3
    z = (torch.rand(50, generator=gen) < 0.3).float()
    batched = notebook_mutual_information(logits, z)
    assert batched.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(batched[i], _notebook_reference(logits[i], z))


def test_notebook_mi_ignores_which_samples_are_members():
    # quirk documented in the docstring: only mean(z) enters
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 2, generator=gen)
    z = torch.zeros(40)
    z[:10] = 1
    z_perm = z[torch.randperm(40, generator=gen)]
    torch.testing.assert_close(
        notebook_mutual_information(logits, z), notebook_mutual_information(logits, z_perm)
    )


def test_notebook_mi_is_a_confidence_penalty_at_half_membership():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(100, 2, generator=gen) * 2
    z = torch.tensor([0.0, 1.0]).repeat(50)
    p = torch.softmax(logits, dim=1)
    mean_entropy = -(p * p.log()).sum(1).mean()
    expected = 0.5 * (math.log(2) - mean_entropy)
    torch.testing.assert_close(notebook_mutual_information(logits, z), expected, atol=1e-6, rtol=0)


def test_plugin_mi_zero_when_groups_predict_alike_and_log2_when_prediction_reveals_z():
    logits = torch.tensor([[1.0, -1.0], [0.3, 0.2]]).repeat(10, 1)  # same mix in both groups
    z = torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(5)
    assert abs(plugin_mutual_information(logits, z).item()) < 1e-6

    z = torch.tensor([0.0, 1.0]).repeat(20)
    revealing = torch.stack([-50 * (2 * z - 1), 50 * (2 * z - 1)], dim=1)  # predicts z exactly
    torch.testing.assert_close(
        plugin_mutual_information(revealing, z), torch.tensor(math.log(2)), atol=1e-5, rtol=0
    )


def test_plugin_mi_matches_discrete_mi_for_hard_predictions():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(3)
    z = rng.integers(0, 2, 300)
    yhat = np.where(rng.random(300) < 0.8, z, rng.integers(0, 3, 300))  # 3 classes, noisy
    logits = torch.full((300, 3), -40.0)
    logits[torch.arange(300), torch.as_tensor(yhat)] = 40.0
    ours = plugin_mutual_information(logits, torch.as_tensor(z)).item()
    assert ours == pytest.approx(mutual_info_score(z, yhat), abs=1e-5)


def test_plugin_mi_is_differentiable_and_bounded():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 60, 2, generator=gen, requires_grad=True)
    z = (torch.arange(60) % 3 == 0).float()
    mi = plugin_mutual_information(logits, z)
    assert mi.shape == (2,)
    p1 = z.mean().item()
    h_z = -(p1 * math.log(p1) + (1 - p1) * math.log(1 - p1))
    assert torch.all(mi >= -1e-7) and torch.all(mi <= h_z + 1e-6)
    mi.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("z", "match"),
    [
        (torch.tensor([0.0, 1.0, 2.0, 0.0]), "only 0 and 1"),
        (torch.tensor([0.0, 1.0]), "one entry per sample"),
    ],
)
def test_mi_estimators_reject_bad_membership(z, match):
    logits = torch.zeros(4, 2)
    for fn in (notebook_mutual_information, plugin_mutual_information):
        with pytest.raises(ValueError, match=match):
            fn(logits, z)
    with pytest.raises(ValueError, match="both members"):
        plugin_mutual_information(logits, torch.ones(4))
    with pytest.raises(ValueError, match="2 classes"):
        notebook_mutual_information(torch.zeros(4, 3), torch.tensor([0.0, 1, 0, 1]))


# ---------------------------------------------------------------------- batched classifiers


def test_batched_training_equals_independent_torch_models():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 10, generator=gen)
    y = (x[:, 0] > 0).long()
    params = init_batched_mlp(10, 2, seeds=[11, 12])
    trained = train_batched_mlp(params, x, y, epochs=15, lr=0.01)
    for m in range(2):
        net = torch.nn.Sequential(
            torch.nn.Linear(10, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 2),
        )
        with torch.no_grad():
            for i, layer in enumerate(net[::2]):
                layer.weight.copy_(params[2 * i][m].T)
                layer.bias.copy_(params[2 * i + 1][m, 0])
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(15):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        torch.testing.assert_close(
            batched_mlp_forward([p[m : m + 1] for p in trained], x)[0], net(x).detach(),
            atol=1e-5, rtol=1e-4,
        )  # fmt: skip
    # the inputs were not modified
    torch.testing.assert_close(params[0], init_batched_mlp(10, 2, seeds=[11, 12])[0])


def test_init_is_seeded_and_follows_nn_linear_bounds():
    a = init_batched_mlp(10, 2, seeds=[1, 2])
    b = init_batched_mlp(10, 2, seeds=[1, 2])
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0][0], a[0][1])
    assert a[0].abs().max() <= 1 / math.sqrt(10) and a[2].abs().max() <= 1 / 8
    with pytest.raises(ValueError, match="at least one"):
        init_batched_mlp(10, 2, seeds=[])


# ------------------------------------------------------------------------------------- data


def test_make_two_gaussian_shapes_labels_and_reproducibility():
    d = make_two_gaussian(1000, 10, random_state=7)
    assert d.X.shape == (1000, 10) and d.X.dtype == torch.float32
    assert d.y.tolist() == [0] * 500 + [1] * 500
    assert d.x.shape == (10,) and d.x_label == 0
    assert d.means.shape == (2, 10) and (d.means >= 0).all() and (d.means <= 10).all()
    # component 0's sample is around its mean, with variance ~10
    assert np.allclose(d.X[:500].numpy().mean(0), d.means[0], atol=0.6)
    assert d.X[:500].numpy().var(0).mean() == pytest.approx(10, rel=0.15)
    assert torch.equal(make_two_gaussian(1000, 10, random_state=7).x, d.x)
    assert not torch.equal(make_two_gaussian(1000, 10, random_state=8).x, d.x)


def test_make_two_gaussian_conditions_x_on_its_bayes_posterior():
    for seed in range(5):
        d = make_two_gaussian(200, 10, x_posterior_range=(0.2, 0.8), random_state=seed)
        post = bayes_posterior(d.x.numpy().astype(float), d.means, 10.0)
        assert 0.2 <= post[0] <= 0.8
    with pytest.raises(ValueError, match="x_posterior_range"):
        make_two_gaussian(200, x_posterior_range=(0.9, 0.1))
    with pytest.raises(RuntimeError, match="widen"):
        make_two_gaussian(200, x_posterior_range=(0.5, 0.5000001), max_tries=5)
    with pytest.raises(ValueError, match="even"):
        make_two_gaussian(201)


# ------------------------------------------------------------------------------ the four arms


@pytest.fixture(scope="module")
def small_runs():
    np_state = np.random.get_state()  # noqa: NPY002
    torch_state = torch.random.get_rng_state()
    runs = two_gaussian_experiment(n_repeats=10, seed=3, **SMALL)
    # the global random generators were neither used nor reseeded
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np_after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(a, b) for a, b in zip(np_after, np_state))
    return runs


def test_experiment_rows_and_columns(small_runs):
    assert list(small_runs.columns) == [
        "arm", "repeat", "train_accuracy", "p_x_class", "mi_notebook", "mi_plugin",
    ]  # fmt: skip
    assert small_runs.groupby("arm").size().to_dict() == {a: 10 for a in ARMS}
    assert small_runs["p_x_class"].between(0, 1).all()
    assert (small_runs["train_accuracy"] > 0.75).all()


def test_original_remembers_x_more_than_retrain(small_runs):
    wide = small_runs.pivot(index="repeat", columns="arm", values="p_x_class")
    gain = wide["original"] - wide["retrain_scratch"]
    assert gain.mean() > 0.2
    assert (gain > 0).mean() >= 0.7


def test_mi_unlearning_lowers_confidence_and_has_real_spread(small_runs):
    table = summarize_two_gaussian(small_runs)
    # every repetition fine-tunes its own original: the spread is real (the notebook's was 0)
    assert table.loc["mi_unlearn", "p_x_class_std"] > 1e-3
    assert table.loc["mi_unlearn", "train_accuracy_std"] > 0
    assert table.loc["retrain_scratch", "p_x_minus_retrain_mean"] == 0
    # the notebook formula is a confidence penalty: penalising it lowers it in every repetition
    mi = small_runs.pivot(index="repeat", columns="arm", values="mi_notebook")
    assert (mi["mi_unlearn"] < mi["original"]).all()


def test_mi_unlearning_lowers_p_x_under_the_notebook_protocol():
    # with the notebook's stray MI gradient the originals are not saturated at x, and the MI
    # penalty lowers the probability of x's class, as the seed reported (0.968 -> 0.781)
    runs = two_gaussian_experiment(
        n_repeats=6, seed=3, n_samples=1000, replicate_notebook_defects=True,
        arms=("original", "mi_unlearn"),
    )  # fmt: skip
    wide = runs.pivot(index="repeat", columns="arm", values="p_x_class")
    assert wide["mi_unlearn"].mean() < wide["original"].mean() - 0.05
    assert (wide["mi_unlearn"] < wide["original"]).mean() >= 0.8


def test_experiment_is_reproducible_and_seed_dependent():
    kw = dict(n_repeats=2, n_samples=200, train_epochs=20, continue_epochs=5, unlearn_epochs=2)
    a = two_gaussian_experiment(seed=0, **kw)
    pd.testing.assert_frame_equal(a, two_gaussian_experiment(seed=0, **kw))
    assert not np.allclose(a["p_x_class"], two_gaussian_experiment(seed=1, **kw)["p_x_class"])


def test_notebook_defects_switch_changes_training():
    kw = dict(n_repeats=2, seed=0, n_samples=200, train_epochs=20, continue_epochs=5,
              unlearn_epochs=2, arms=("original",))  # fmt: skip
    fixed = two_gaussian_experiment(**kw)
    buggy = two_gaussian_experiment(replicate_notebook_defects=True, **kw)
    # the stray MI gradient is a confidence penalty: it lowers the notebook MI of the original
    assert (buggy["mi_notebook"].to_numpy() < fixed["mi_notebook"].to_numpy()).all()


def test_table_summarises_one_call():
    table = two_gaussian_table(
        n_repeats=3, seed=0, n_samples=200, train_epochs=10, continue_epochs=5, unlearn_epochs=2,
        arms=("original", "retrain_scratch"),
    )  # fmt: skip
    assert list(table.index) == ["original", "retrain_scratch"]
    assert (table["n_repeats"] == 3).all()
    assert {"p_x_class_mean", "p_x_class_std", "train_accuracy_mean"} <= set(table.columns)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_repeats=0), "n_repeats"),
        (dict(arms=("nope",)), "arms"),
        (dict(mi_estimator="kde"), "mi_estimator"),
        (dict(finetune_on="forget"), "finetune_on"),
        (dict(unlearn_epochs=-1), "unlearn_epochs"),
    ],
)
def test_experiment_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        two_gaussian_experiment(**{"n_samples": 200, **kwargs})
