"""The second seed's two-Gaussian data: two Gaussian components and one extra point x.

:func:`make_two_gaussian` draws a data set (optionally with x conditioned on its Bayes
posterior, :func:`bayes_posterior`) as a :class:`TwoGaussianData`; :func:`_stack_data` stacks
the draws of several repetitions for :func:`~scvi_unlearn.toy.two_gaussian_experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TwoGaussianData:
    """One draw of the two-Gaussian task.

    Attributes
    ----------
    X
        ``(n_samples, n_features)`` float32 training inputs (without x), component 0 first.
    y
        ``(n_samples,)`` int64 component labels.
    x
        ``(n_features,)`` float32, the extra point to be learned and unlearned.
    x_label
        Label given to x (0, the component it was drawn around).
    means
        ``(2, n_features)`` component means.
    """

    X: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    x_label: int
    means: np.ndarray


def make_two_gaussian(
    n_samples: int = 5000,
    n_features: int = 10,
    *,
    mean_scale: float = 10.0,
    component_variance: float = 10.0,
    x_variance: float = 20.0,
    x_posterior_range: tuple[float, float] | None = None,
    random_state: int | np.random.Generator | None = 0,
    max_tries: int = 100_000,
) -> TwoGaussianData:
    """Draw the seed notebook's two-Gaussian data set and its extra point x.

    As in the notebook: component means are ``U(0, mean_scale)^d``; each component has
    ``n_samples // 2`` points from ``N(mean_k, component_variance * I)``; x is drawn from
    ``N(mean of component 0's sample, x_variance * I)`` and labelled 0.

    Parameters
    ----------
    n_samples
        Total number of training points without x (must be even and >= 2).
    n_features
        Dimension.
    mean_scale, component_variance, x_variance
        Scale of the component means and the two covariances (notebook: 10, 10, 20).
    x_posterior_range
        ``None`` (the notebook): x is one draw. ``(lo, hi)``: x is drawn from the same law
        conditioned on the Bayes posterior probability of its label (true means and covariance,
        equal priors) lying in ``[lo, hi]``, by rejection sampling. With the notebook's
        settings most draws of x lie deep inside component 0 (Bayes posterior > 0.999), where
        every model gives x's class probability ~1 and there is nothing to unlearn;
        conditioning on an ambiguous x makes the experiment measure memorization.
    random_state
        Seed or :class:`numpy.random.Generator`; the global RNG is never used.
    max_tries
        Maximum number of rejection-sampling draws of x.
    """
    if n_samples < 2 or n_samples % 2:
        raise ValueError(f"n_samples must be an even number >= 2; got {n_samples}.")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1; got {n_features}.")
    if min(component_variance, x_variance) <= 0:
        raise ValueError("component_variance and x_variance must be positive.")
    if x_posterior_range is not None:
        lo, hi = x_posterior_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(
                "x_posterior_range must be (lo, hi) with 0 <= lo < hi <= 1; "
                f"got {x_posterior_range}."
            )
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    half = n_samples // 2
    means = rng.random((2, n_features)) * mean_scale
    comps = [
        m + np.sqrt(component_variance) * rng.standard_normal((half, n_features)) for m in means
    ]
    center = comps[0].mean(axis=0)
    for _ in range(max_tries):
        x = center + np.sqrt(x_variance) * rng.standard_normal(n_features)
        if x_posterior_range is None:
            break
        if lo <= bayes_posterior(x, means, component_variance)[0] <= hi:
            break
    else:
        raise RuntimeError(
            f"no x with Bayes posterior in {x_posterior_range} in {max_tries} draws; "
            "widen the range."
        )
    return TwoGaussianData(
        X=torch.as_tensor(np.vstack(comps), dtype=torch.float32),
        y=torch.as_tensor(np.repeat([0, 1], half), dtype=torch.int64),
        x=torch.as_tensor(x, dtype=torch.float32),
        x_label=0,
        means=means,
    )


def bayes_posterior(x: np.ndarray, means: np.ndarray, variance: float) -> np.ndarray:
    """Bayes posterior of each component at ``x`` (isotropic Gaussians, equal priors)."""
    x = np.atleast_2d(x)
    log_lik = -((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * variance)
    log_lik -= log_lik.max(axis=1, keepdims=True)
    post = np.exp(log_lik)
    post /= post.sum(axis=1, keepdims=True)
    return post[0] if post.shape[0] == 1 else post


def _stack_data(datas: list[TwoGaussianData]) -> dict[str, torch.Tensor]:
    """Stack per-repetition data into ``(R, ...)`` tensors (or shared ``(...)`` for one draw)."""

    def stack(f):
        vals = [f(d) for d in datas]
        return vals[0] if len(vals) == 1 else torch.stack(vals)

    x_row = lambda d: d.x.unsqueeze(0)  # noqa: E731
    out = {
        "X": stack(lambda d: d.X),
        "y": stack(lambda d: d.y),
        "x": stack(x_row),  # (1, d) or (R, 1, d)
        "X_with_x": stack(lambda d: torch.cat([d.X, x_row(d)])),
        "y_with_x": stack(lambda d: torch.cat([d.y, torch.tensor([d.x_label])])),
        # the notebook's membership set: X_0 = X + [x] with Z = 0, X_1 = X with Z = 1
        "X_mi": stack(lambda d: torch.cat([d.X, x_row(d), d.X])),
    }
    n = datas[0].X.shape[0]
    out["z_mi"] = torch.cat([torch.zeros(n + 1), torch.ones(n)])
    out["x_label"] = torch.tensor([d.x_label for d in datas])
    return out
