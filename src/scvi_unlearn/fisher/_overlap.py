"""Overlap statistics between two diagonal Fisher vectors (e.g. forget cells vs retain cells).

All cosines are plain cosines of the non-negative Fisher vectors: no damping constant, no
parameter that receives no gradient (those are absent from the Fisher dictionaries), so two
Fishers with disjoint supports have cosine exactly 0 and a Fisher has cosine 1 with itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pandas as pd
import torch

Fisher = Mapping[str, torch.Tensor]

#: Top-k fractions of the parameters used by :func:`topk_overlap`.
TOPK_FRACTIONS = (0.001, 0.01, 0.1)

#: Categories of scVI parameters, in display order.
VAE_CATEGORIES = (
    "encoder",
    "latent heads",
    "decoder hidden",
    "decoder output",
    "label offsets",
    "dispersion",
)


def vae_category(name: str) -> str:
    """Category of an scVI (:class:`scvi.module.VAE`) parameter name.

    ``encoder``: hidden layers of ``z_encoder`` / ``l_encoder``; ``latent heads``: their mean
    and variance heads; ``decoder hidden``: ``decoder.px_decoder``; ``decoder output``: the
    gene-wise output heads (``px_scale_decoder``, ``px_dropout_decoder``); ``dispersion``:
    ``px_r`` and ``px_r_decoder``; ``label offsets``: the per-label gene offsets of a
    :class:`~scvi_unlearn.ConditionalSCVI` (``decoder.px_label_offset``); anything else
    ``other``.
    """
    if name == "px_r" or name.startswith("decoder.px_r_decoder"):
        return "dispersion"
    if name.startswith("decoder.px_label_offset"):
        return "label offsets"
    if name.startswith(("z_encoder.encoder.", "l_encoder.encoder.")):
        return "encoder"
    if name.startswith(("z_encoder.", "l_encoder.")):
        return "latent heads"
    if name.startswith("decoder.px_decoder."):
        return "decoder hidden"
    if name.startswith(("decoder.px_scale_decoder", "decoder.px_dropout_decoder")):
        return "decoder output"
    return "other"


def _common(a: Fisher, b: Fisher, names=None) -> list[str]:
    if names is None:
        names = [k for k in a if k in b]
    missing = [k for k in names if k not in a or k not in b]
    if missing:
        raise KeyError(f"parameters missing from one of the Fishers: {missing[:5]}")
    for k in names:
        if a[k].shape != b[k].shape:
            raise ValueError(f"shape mismatch for {k!r}: {a[k].shape} vs {b[k].shape}")
    return list(names)


def _flat(f: Fisher, names) -> torch.Tensor:
    if not names:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([f[k].detach().reshape(-1).double().cpu() for k in names])


def _cos(x: torch.Tensor, y: torch.Tensor) -> float:
    nx, ny = torch.linalg.vector_norm(x), torch.linalg.vector_norm(y)
    if nx == 0 or ny == 0:
        return float("nan")  # undefined: one vector carries no information at all
    return float(torch.dot(x, y) / (nx * ny))


def cosine(a: Fisher, b: Fisher, names=None) -> float:
    """Cosine of two Fishers over ``names`` (default: the parameters present in both).

    ``nan`` if one of them is identically zero over ``names``.
    """
    names = _common(a, b, names)
    return _cos(_flat(a, names), _flat(b, names))


def cosine_by_tensor(a: Fisher, b: Fisher, category: Callable[[str], str] = vae_category):
    """One row per parameter tensor: category, size, cosine and both norms."""
    rows = []
    for k in _common(a, b):
        x, y = _flat(a, [k]), _flat(b, [k])
        rows.append(
            {
                "tensor": k,
                "category": category(k),
                "n_parameters": x.numel(),
                "cosine": _cos(x, y),
                "norm_a": float(torch.linalg.vector_norm(x)),
                "norm_b": float(torch.linalg.vector_norm(y)),
            }
        )
    return pd.DataFrame(rows).set_index("tensor")


def cosine_by_category(
    a: Fisher, b: Fisher, category: Callable[[str], str] = vae_category, order=None
) -> pd.DataFrame:
    """One row per category: number of tensors and parameters, cosine over the category."""
    names = _common(a, b)
    groups: dict[str, list[str]] = {}
    for k in names:
        groups.setdefault(category(k), []).append(k)
    cats = [c for c in (order or ()) if c in groups] + [
        c for c in groups if c not in (order or ())
    ]
    rows = []
    for c in cats:
        ks = groups[c]
        rows.append(
            {
                "category": c,
                "n_tensors": len(ks),
                "n_parameters": int(sum(a[k].numel() for k in ks)),
                "cosine": cosine(a, b, ks),
            }
        )
    return pd.DataFrame(rows).set_index("category")


def normalized_cosine(a: Fisher, b: Fisher, names=None) -> float:
    """Magnitude-normalised aggregate cosine.

    Each tensor of both Fishers is divided by the tensor's pooled root-mean-square
    :math:`\\sqrt{\\mathrm{mean}((a_t^2 + b_t^2)/2)}` before the global cosine, so every
    tensor counts by its number of entries rather than by its Fisher magnitude (a few
    high-curvature tensors, typically the gene-wise output heads, otherwise dominate), while
    the relative size of ``a`` and ``b`` within a tensor is kept.  A tensor zero in both is
    skipped.
    """
    names = _common(a, b, names)
    xs, ys = [], []
    for k in names:
        x, y = _flat(a, [k]), _flat(b, [k])
        scale = torch.sqrt(((x * x + y * y) / 2).mean())
        if scale == 0:
            continue
        xs.append(x / scale)
        ys.append(y / scale)
    if not xs:
        return float("nan")
    return _cos(torch.cat(xs), torch.cat(ys))


def topk_overlap(a: Fisher, b: Fisher, fractions=TOPK_FRACTIONS, names=None) -> pd.DataFrame:
    """Share of the top-k most important parameters of ``a`` that are also top-k in ``b``.

    ``k = ceil(fraction x n_parameters)``; ``overlap = |top_k(a) & top_k(b)| / k``; ``chance``
    is the expected overlap of two random subsets (``k / n``).  Ties are broken by index.
    """
    names = _common(a, b, names)
    x, y = _flat(a, names), _flat(b, names)
    n = x.numel()
    rows = []
    for frac in fractions:
        if not 0 < frac <= 1:
            raise ValueError(f"top-k fractions must be in (0, 1], got {frac}.")
        k = max(1, math.ceil(frac * n))
        ia = torch.topk(x, k, sorted=False).indices
        ib = torch.topk(y, k, sorted=False).indices
        mask = torch.zeros(n, dtype=torch.bool)
        mask[ia] = True
        shared = int(mask[ib].sum())
        rows.append({"fraction": frac, "k": k, "overlap": shared / k, "chance": k / n})
    return pd.DataFrame(rows)


def effective_rank(f: Fisher, names=None) -> float:
    """Effective rank of the diagonal Fisher :cite:p:`Roy07`: ``exp(entropy(F / sum F))``.

    The eigenvalues of a diagonal matrix are its entries, so this is the effective number of
    parameters carrying the Fisher information (1 if one parameter carries it all, ``n`` if
    it is uniform).
    """
    names = list(f) if names is None else list(names)
    x = _flat(f, names)
    total = x.sum()
    if total <= 0:
        return float("nan")
    p = x[x > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def log_correlation(a: Fisher, b: Fisher, names=None) -> tuple[float, int]:
    """Pearson correlation of ``log a`` and ``log b`` over the entries positive in both.

    No damping constant is added: entries that are exactly zero in either Fisher are left out
    and counted (second return value).
    """
    names = _common(a, b, names)
    x, y = _flat(a, names), _flat(b, names)
    keep = (x > 0) & (y > 0)
    n_zero = int((~keep).sum())
    if int(keep.sum()) < 3:
        return float("nan"), n_zero
    lx, ly = x[keep].log(), y[keep].log()
    lx, ly = lx - lx.mean(), ly - ly.mean()
    denom = torch.linalg.vector_norm(lx) * torch.linalg.vector_norm(ly)
    if denom == 0:
        return float("nan"), n_zero
    return float((lx * ly).sum() / denom), n_zero


def proposition1(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """The study's Proposition 1 for one output layer: product prediction vs measured cosine.

    For a weight matrix :math:`W \\in \\mathbb{R}^{D \\times H}` (outputs x hidden units), the
    per-example gradient is :math:`g_d a_h` (output gradient times input activation), so the
    diagonal Fisher is :math:`F_{dh} = \\mathbb{E}[g_d^2 a_h^2]`.  If the two factors are
    uncorrelated, :math:`F_{dh} = \\sigma_d \\nu_h` with :math:`\\sigma_d = \\mathbb{E}[g_d^2]`
    and :math:`\\nu_h = \\mathbb{E}[a_h^2]`: the Fisher matrix is rank one and equal to the
    outer product of its row and column marginals divided by its total,
    :math:`F \\approx r c^\\top / \\mathbf{1}^\\top F \\mathbf{1}` with
    :math:`r = F\\mathbf{1}`, :math:`c = F^\\top \\mathbf{1}`.  The cosine of two outer
    products factorises, so the predicted forget/retain cosine is

    .. math:: \\cos(F^a, F^b) \\approx \\cos(r^a, r^b)\\,\\cos(c^a, c^b).

    Returns ``measured`` (the cosine of the two matrices), ``predicted`` (the product),
    ``cos_rows``, ``cos_cols``, ``rank_one_a`` / ``rank_one_b`` (share of the squared
    Frobenius norm in the leading singular value: 1 for an exact product), and, per output
    unit (gene), the median cosine of the rows and the share of rows with cosine > 0.5.
    """
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"proposition1 needs two weight matrices of one shape, got {a.shape} and {b.shape}."
        )
    cos_rows = _cos(a.sum(1), b.sum(1))
    cos_cols = _cos(a.sum(0), b.sum(0))

    def rank_one(m):
        s = torch.linalg.svdvals(m)
        return float(s[0] ** 2 / (s**2).sum()) if s.numel() and s[0] > 0 else float("nan")

    na, nb = torch.linalg.vector_norm(a, dim=1), torch.linalg.vector_norm(b, dim=1)
    ok = (na > 0) & (nb > 0)
    row_cos = (a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok])
    return {
        "measured": _cos(a.reshape(-1), b.reshape(-1)),
        "predicted": cos_rows * cos_cols,
        "cos_rows": cos_rows,
        "cos_cols": cos_cols,
        "rank_one_a": rank_one(a),
        "rank_one_b": rank_one(b),
        "row_cosine_median": float(row_cos.median()) if row_cos.numel() else float("nan"),
        "row_cosine_share_above_0.5": float((row_cos > 0.5).double().mean())
        if row_cos.numel()
        else float("nan"),
    }


def overlap_statistics(
    a: Fisher,
    b: Fisher,
    category: Callable[[str], str] = vae_category,
    order=VAE_CATEGORIES,
) -> dict:
    """Every overlap statistic between two Fishers, as plain Python / pandas objects."""
    names = _common(a, b)
    if not names:
        raise ValueError("The two Fishers share no parameter.")
    corr, n_zero = log_correlation(a, b)
    n = int(sum(a[k].numel() for k in names))
    return {
        "global_cosine": cosine(a, b),
        "normalized_cosine": normalized_cosine(a, b),
        "by_tensor": cosine_by_tensor(a, b, category),
        "by_category": cosine_by_category(a, b, category, order),
        "topk": topk_overlap(a, b),
        "effective_rank": {
            "a": effective_rank(a, names),
            "b": effective_rank(b, names),
            "n_parameters": n,
        },
        "log_correlation": corr,
        "log_correlation_excluded": n_zero,
    }
