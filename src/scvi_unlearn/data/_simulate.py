"""Atlas-scale count data: a negative-binomial simulator calibrated on the offline real PBMCs.

The calibration (per-type gene profiles, dispersions and library sizes) is estimated once from
:func:`~scvi_unlearn.data.pbmc68k` and cached; :func:`simulate` then draws any number of cells
in chunks and assembles a sparse CSR matrix, so that hundreds of thousands of cells fit in
memory; :func:`~scvi_unlearn.data.simulate_to_soma` writes the same blocks to disk instead.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: pseudo-cells of the all-cell profile added to each type's mean profile (shrinkage)
_MEAN_PRIOR_CELLS = 1.0
#: pseudo-cells of the pooled per-gene dispersion added to each type's dispersion (shrinkage)
_DISPERSION_PRIOR_CELLS = 20.0
#: bounds of the NB over-dispersion ``1 / theta`` (1e-2: near Poisson; 50: very bursty)
_DISPERSION_BOUNDS = (1e-2, 50.0)
#: standard deviation of the log per-gene scale of genes added beyond the calibrated ones
_EXTRA_GENE_LOG_SD = 0.5
#: dense entries (cells x genes) drawn per chunk before conversion to CSR
_CHUNK_ENTRIES = 2_000_000


@dataclass(frozen=True)
class _Calibration:
    """Per-type NB parameters estimated from pbmc68k (read-only arrays)."""

    cell_types: np.ndarray  # (K,) str
    proportions: np.ndarray  # (K,) cell-type fractions
    profiles: np.ndarray  # (K, G) expected fraction of a cell's library per gene
    dispersions: np.ndarray  # (K, G) NB over-dispersion 1 / theta
    log_lib_mean: np.ndarray  # (K,) mean of log library size
    log_lib_sd: np.ndarray  # (K,) sd of log library size
    gene_names: np.ndarray  # (G,) str
    gene_order: np.ndarray  # (G,) gene indices, most variable first


def _method_of_moments_dispersion(counts: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Pooled ``1/theta`` per gene from ``Var = mu + mu^2 / theta`` (columns of ``counts``)."""
    excess = ((counts - mu) ** 2 - mu).sum(axis=0)
    return excess / np.maximum((mu**2).sum(axis=0), 1e-12)


@functools.lru_cache(maxsize=1)
def _calibration() -> _Calibration:
    from scvi_unlearn.data._pbmc68k import pbmc68k

    adata = pbmc68k()
    counts = np.asarray(adata.layers["counts"].toarray(), dtype=np.float64)
    lib = counts.sum(axis=1)
    types = adata.obs["cell_type"].cat.categories.to_numpy().astype(str)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    fractions = counts / lib[:, None]
    overall = fractions.mean(axis=0)
    n_types, n_genes = types.size, counts.shape[1]
    profiles = np.empty((n_types, n_genes))
    raw_dispersion = np.empty((n_types, n_genes))
    n_per_type = np.bincount(codes, minlength=n_types).astype(np.float64)
    log_lib_mean = np.empty(n_types)
    log_lib_sd = np.empty(n_types)
    mu = np.empty_like(counts)
    for k in range(n_types):
        cells = codes == k
        n_k = n_per_type[k]
        profiles[k] = (fractions[cells].sum(axis=0) + _MEAN_PRIOR_CELLS * overall) / (
            n_k + _MEAN_PRIOR_CELLS
        )
        mu[cells] = lib[cells, None] * profiles[k]
        raw_dispersion[k] = _method_of_moments_dispersion(counts[cells], mu[cells])
        log_lib = np.log(lib[cells])
        log_lib_mean[k] = log_lib.mean()
        log_lib_sd[k] = log_lib.std(ddof=1) if n_k > 1 else 0.0
    pooled = np.clip(_method_of_moments_dispersion(counts, mu), *_DISPERSION_BOUNDS)
    weight = (n_per_type / (n_per_type + _DISPERSION_PRIOR_CELLS))[:, None]
    dispersions = np.clip(
        weight * np.clip(raw_dispersion, *_DISPERSION_BOUNDS) + (1 - weight) * pooled,
        *_DISPERSION_BOUNDS,
    )
    log_expr = np.log1p(fractions * 1e4)
    gene_order = np.argsort(-log_expr.var(axis=0), kind="stable")
    calibration = _Calibration(
        cell_types=types,
        proportions=n_per_type / n_per_type.sum(),
        profiles=profiles,
        dispersions=dispersions,
        log_lib_mean=log_lib_mean,
        log_lib_sd=log_lib_sd,
        gene_names=np.asarray(adata.var_names, dtype=str),
        gene_order=gene_order,
    )
    for value in vars(calibration).values():
        value.setflags(write=False)
    return calibration


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _check_random_state(random_state) -> np.random.Generator:
    from scvi_unlearn._seeding import as_generator

    if random_state is None or isinstance(random_state, np.random.Generator):
        return as_generator(random_state)
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise ValueError(
            "random_state must be an int >= 0, a numpy.random.Generator or None, got "
            f"{random_state!r}."
        )
    if random_state < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}.")
    return as_generator(int(random_state))


def _type_proportions(cal: _Calibration, rare_fraction: float | None) -> np.ndarray:
    proportions = np.array(cal.proportions)
    if rare_fraction is None:
        return proportions
    if isinstance(rare_fraction, bool) or not isinstance(rare_fraction, numbers.Real):
        raise ValueError(f"rare_fraction must be a number in (0, 1), got {rare_fraction!r}.")
    if not 0 < rare_fraction < 1:
        raise ValueError(f"rare_fraction must be in (0, 1), got {rare_fraction!r}.")
    rare = int(np.argmin(proportions))
    others = np.arange(proportions.size) != rare
    proportions[others] *= (1 - rare_fraction) / proportions[others].sum()
    proportions[rare] = rare_fraction
    return proportions


def _gene_parameters(
    cal: _Calibration, n_genes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    n_real = cal.gene_names.size
    if n_genes <= n_real:
        source = np.sort(cal.gene_order[:n_genes])
        scale = np.ones(n_genes)
        names = cal.gene_names[source]
    else:
        extra = rng.integers(0, n_real, size=n_genes - n_real)
        source = np.concatenate([np.arange(n_real), extra])
        sd = _EXTRA_GENE_LOG_SD
        extra_scale = rng.lognormal(mean=-(sd**2) / 2, sigma=sd, size=extra.size)
        scale = np.concatenate([np.ones(n_real), extra_scale])
        extra_names = [f"{cal.gene_names[s]}-sim{j}" for j, s in enumerate(extra)]
        names = np.concatenate([cal.gene_names, np.asarray(extra_names, dtype=str)])
    profiles = cal.profiles[:, source] * scale
    dispersions = cal.dispersions[:, source]
    var = pd.DataFrame(
        {
            "source_gene": cal.gene_names[source],
            "scale": scale,
            "simulated": np.arange(n_genes) >= n_real,
        },
        index=pd.Index(names, dtype=str),
    )
    return profiles, dispersions, var


@dataclass
class _Plan:
    """Everything :func:`simulate` draws before the counts, and the generator it goes on with."""

    rng: np.random.Generator
    profiles: np.ndarray  # (K, G) per-type gene means (fractions of the library)
    shape: np.ndarray  # (K, G) gamma shape theta = 1 / dispersion
    batch_factor: np.ndarray  # (B, G) per-batch gene effects
    cell_type: np.ndarray  # (n,) type codes
    batch: np.ndarray  # (n,) batch codes
    library: np.ndarray  # (n,) library sizes
    var: pd.DataFrame
    cell_types: np.ndarray  # (K,) type names
    batch_names: list[str]
    record: dict  # uns["simulation"]


def _plan(n_cells, n_genes, n_batches, rare_fraction, random_state, batch_effect) -> _Plan:
    """Validate :func:`simulate`'s arguments and draw all per-cell quantities, in its order."""
    n_cells = _check_int("n_cells", n_cells, 1)
    n_genes = _check_int("n_genes", n_genes, 1)
    n_batches = _check_int("n_batches", n_batches, 1)
    if isinstance(batch_effect, bool) or not isinstance(batch_effect, numbers.Real):
        raise ValueError(f"batch_effect must be a number >= 0, got {batch_effect!r}.")
    if not batch_effect >= 0 or not np.isfinite(batch_effect):
        raise ValueError(f"batch_effect must be a finite number >= 0, got {batch_effect!r}.")
    rng = _check_random_state(random_state)
    cal = _calibration()
    proportions = _type_proportions(cal, rare_fraction)

    profiles, dispersions, var = _gene_parameters(cal, n_genes, rng)
    if n_batches > 1:
        batch_factor = rng.lognormal(0.0, batch_effect, size=(n_batches, n_genes))
    else:
        batch_factor = np.ones((1, n_genes))
    cell_type = rng.choice(proportions.size, size=n_cells, p=proportions)
    batch = rng.integers(0, n_batches, size=n_cells)
    library = rng.lognormal(cal.log_lib_mean[cell_type], cal.log_lib_sd[cell_type])
    record = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_batches": n_batches,
        "rare_fraction": rare_fraction,
        "batch_effect": float(batch_effect),
        "random_state": random_state if isinstance(random_state, numbers.Integral) else None,
        "calibration": "pbmc68k_reduced (scanpy): per-type NB means, dispersions, libraries",
    }
    return _Plan(
        rng=rng,
        profiles=profiles,
        shape=1.0 / dispersions,
        batch_factor=batch_factor,
        cell_type=cell_type,
        batch=batch,
        library=library,
        var=var,
        cell_types=cal.cell_types,
        batch_names=[f"batch_{i}" for i in range(n_batches)],
        record=record,
    )


def _count_blocks(plan: _Plan) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Draw the counts in consecutive row blocks: ``(first row, float32 CSR block)``.

    The blocks hold ``_CHUNK_ENTRIES // n_genes`` rows (at least one): the gamma and Poisson
    draws of a block are interleaved, so the block size is part of the random stream and
    every consumer (:func:`simulate`, :func:`~scvi_unlearn.data.simulate_to_soma`) must use
    these blocks to get the same counts.
    """
    rng, n_cells, n_genes = plan.rng, plan.cell_type.size, plan.profiles.shape[1]
    chunk = max(1, _CHUNK_ENTRIES // n_genes)
    for start in range(0, n_cells, chunk):
        rows = slice(start, min(start + chunk, n_cells))
        k, b = plan.cell_type[rows], plan.batch[rows]
        # mean = library * profile * batch factor, then scale = mean / theta, computed in
        # place (the same floating-point operations as the one-line expression, fewer copies)
        scale = plan.profiles[k]
        scale *= plan.library[rows, None]
        if plan.batch_factor.shape[0] > 1:  # a single batch's factors are all 1
            scale *= plan.batch_factor[b]
        theta = plan.shape[k]
        scale /= theta
        gamma = rng.gamma(theta, scale)
        del scale, theta
        counts = rng.poisson(gamma)
        del gamma
        yield start, sp.csr_matrix(counts.astype(np.float32))
        del counts


def _cell_names(start: int, stop: int) -> list[str]:
    """Cell names of rows ``start:stop`` (:func:`simulate`'s ``obs_names``)."""
    return [f"cell_{i}" for i in range(start, stop)]


def simulate(
    n_cells: int,
    n_genes: int = 2000,
    n_batches: int = 1,
    rare_fraction: float | None = None,
    random_state: int | np.random.Generator | None = 0,
    *,
    batch_effect: float = 0.25,
) -> ad.AnnData:
    """Simulate scRNA-seq counts calibrated on real PBMCs, at any number of cells.

    **Model.**  Cell ``c`` gets a cell type ``k`` (drawn with the type proportions), a batch
    ``b`` (uniform) and a library size ``l_c ~ LogNormal(m_k, s_k)``; its count of gene ``g``
    is negative binomial with mean ``l_c * p_kg * e_bg`` and over-dispersion ``phi_kg``
    (variance ``mu + phi_kg * mu^2``), drawn as a gamma-Poisson mixture.  ``e_bg`` is a per-batch
    multiplicative gene effect, ``exp(N(0, batch_effect^2))`` (all 1 when ``n_batches == 1``).

    **Calibration** (computed once per process from :func:`~scvi_unlearn.data.pbmc68k`, 700
    cells x 765 genes, 10 types, and cached):

    * ``p_kg``: mean over the type's cells of ``count / library``, shrunk towards the all-cell
      mean with one pseudo-cell (so no gene is exactly absent from a type);
    * ``phi_kg``: method of moments, ``sum((x - mu)^2 - mu) / sum(mu^2)`` with ``mu = l_c p_kg``
      over the type's cells, shrunk towards the same estimate pooled over all cells with a
      weight ``n_k / (n_k + 20)``, clipped to ``[0.01, 50]``;
    * ``m_k, s_k``: mean and standard deviation of the log total counts of the type's cells;
    * the type proportions: pbmc68k's; the rarest type, ``"CD4+/CD45RA+/CD25- Naive T"``,
      is 8 / 700 = 1.1% of the cells (see ``rare_fraction``).

    **Genes.**  ``n_genes <= 765`` keeps the ``n_genes`` most variable pbmc68k genes (variance
    of ``log1p(1e4 * count / library)``), in pbmc68k's order; library sizes then shrink with
    the gene set, as they would when subsetting real data.  ``n_genes > 765`` keeps all 765 and
    adds ``n_genes - 765`` synthetic genes (resampled with replacement): each takes a random
    calibrated gene's means in every type, multiplied by its own random scale
    ``LogNormal(-0.125, 0.5)`` (mean 1), and that gene's dispersions; their names are
    ``"<source gene>-sim<j>"`` and ``var["simulated"]`` is ``True``.  Total counts grow with
    the added genes (median about 2.7x pbmc68k's at 2,000 genes).

    Parameters
    ----------
    n_cells
        Number of cells (>= 1).
    n_genes
        Number of genes (>= 1); see above for more or fewer than pbmc68k's 765.
    n_batches
        Number of batches (>= 1), assigned uniformly at random to cells.
    rare_fraction
        If given, the fraction of cells of the rarest type, in ``(0, 1)``; the other types keep
        their relative proportions.  ``None``: pbmc68k's proportions.
    random_state
        Seed (int >= 0) or :class:`numpy.random.Generator` (consumed) of every draw; ``None``
        draws fresh entropy.  The global numpy random state is never used.
    batch_effect
        Standard deviation of the log of the per-batch gene effects ``e_bg`` (>= 0).

    Returns
    -------
    AnnData with ``n_cells x n_genes``:

    * ``X`` and ``layers["counts"]``: the counts, two separate sparse CSR float32 matrices
      holding integer values (so normalising ``X`` in place leaves the counts intact);
    * ``obs["cell_type"]`` (categorical, pbmc68k's 10 types), ``obs["batch"]`` (categorical,
      ``"batch_0"``, ...);
    * ``var["source_gene"]``, ``var["scale"]``, ``var["simulated"]``;
    * ``uns["simulation"]``: the arguments and the calibration source.

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong type.

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> adata = su.data.simulate(100_000, n_genes=2000, n_batches=4, random_state=0)
    >>> su.SCVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    """
    plan = _plan(n_cells, n_genes, n_batches, rare_fraction, random_state, batch_effect)
    n_cells, n_genes = plan.cell_type.size, plan.profiles.shape[1]
    data, indices, row_nnz = [], [], []
    for _, block in _count_blocks(plan):
        data.append(block.data)
        indices.append(block.indices.astype(np.int32, copy=False))
        row_nnz.append(np.diff(block.indptr))
        del block
    nnz = np.concatenate(row_nnz)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(nnz, out=indptr[1:])
    if indptr[-1] <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    matrix = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), indptr), shape=(n_cells, n_genes)
    )
    del data, indices

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(plan.cell_type, categories=plan.cell_types),
            "batch": pd.Categorical.from_codes(plan.batch, categories=plan.batch_names),
        },
        index=pd.Index(_cell_names(0, n_cells), dtype=str),
    )
    adata = ad.AnnData(X=matrix, obs=obs, var=plan.var, layers={"counts": matrix.copy()})
    adata.uns["simulation"] = plan.record
    return adata
