"""The Lightning callbacks of the suites (their own module: listing the suites needs no Lightning).

* :class:`DataInit`: a data-dependent start for ``fast_retrain`` (the verdict suite's
  ``data_init`` variant);
* :class:`GroupTrace`: the mean ELBO of groups of cells after every epoch (trajectory suite);
* :class:`AverageTrace`: the validation fit of the weights and of moving averages of them
  within epochs (trajectory suite);
* :class:`EpochTimes`: when each training epoch ended (atlas suite).
"""

from __future__ import annotations

import math
import time

import torch
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS


class DataInit(Callback):
    """Start from the data: before the first step, one pass over the training minibatches (the
    retain training cells; no forward pass) sets the decoder's mean-expression bias to the log of
    each gene's pooled share of the counts, ``p_g = sum x_g / sum l`` (``l`` the library size),
    and the gene dispersion ``log theta`` to its method-of-moments estimate under
    ``x ~ NB(l p_g, theta_g)``, ``theta_g = sum (l p_g)^2 / sum ((x_g - l p_g)^2 - l p_g)``
    (clipped to ``[1e-2, 1e4]``).  Exact: only cells the new model trains on are read.  The
    pass draws one epoch's shuffle, so the minibatch order differs from the default start's, as
    it would with another seed."""

    def on_train_start(self, trainer, pl_module) -> None:
        module = pl_module.module
        sx = sx2 = sxl = 0.0
        sl = sl2 = 0.0
        for batch in trainer.train_dataloader:
            x = batch[REGISTRY_KEYS.X_KEY].double()
            lib = x.sum(1, keepdim=True)
            sx, sx2, sxl = sx + x.sum(0), sx2 + (x * x).sum(0), sxl + (x * lib).sum(0)
            sl, sl2 = sl + float(lib.sum()), sl2 + float((lib * lib).sum())
        p = sx / sl
        excess = sx2 - 2 * p * sxl + p * p * sl2 - p * sl
        theta = (p * p * sl2 / excess.clamp_min(1e-12)).clamp(1e-2, 1e4)
        bias = torch.log(p + 1e-8)
        with torch.no_grad():
            linear = module.decoder.px_scale_decoder[0]
            linear.bias.copy_((bias - bias.mean()).to(linear.bias))
            module.px_r.copy_(torch.log(theta).to(module.px_r))


class GroupTrace(Callback):
    """After every epoch, ``score(module)`` (the mean ELBO of each group of cells) of the
    returned weights: the method's moving average when it keeps one, else the weights."""

    def __init__(self, score):
        self.score = score
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        from scvi_unlearn.unlearn.core._averaging import ExponentialAveraging

        averaged = [c for c in trainer.callbacks if isinstance(c, ExponentialAveraging)]
        module = averaged[0].module if averaged else pl_module.module
        self.rows.append({"epoch": len(self.rows) + 1, **self.score(module)})


class AverageTrace(Callback):
    """Every ``1 / checks`` of an epoch, the validation ELBO of the weights and their averages.

    Takes the method's own fit-matching callback (for its cells and target, which it sets out of
    reach so that training runs the given epochs) and its averaging callback.
    """

    def __init__(self, taus: list[float], checks: int):
        self.taus, self.checks = taus, checks
        self.rows: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        from scvi_unlearn.unlearn.core._averaging import ExponentialAveraging, exponential_average
        from scvi_unlearn.unlearn.core._fit_match import FitMatchStopping

        self.stopper = next(c for c in trainer.callbacks if isinstance(c, FitMatchStopping))
        self.own = next(c for c in trainer.callbacks if isinstance(c, ExponentialAveraging))
        self.target, self.stopper.target = self.stopper.target, math.inf
        self.per_epoch = int(trainer.num_training_batches)
        self.every = max(1, self.per_epoch // self.checks)
        self.averages = {tau: exponential_average(pl_module.module, tau) for tau in self.taus}
        self.step, self.t0 = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from scvi_unlearn.unlearn.core._guard import mean_elbo

        self.step += 1
        for average in self.averages.values():
            average.update_parameters(pl_module.module)
        if self.step % self.every:
            return
        modules = {"weights": pl_module.module}
        modules |= {f"{tau:g} steps": a.module for tau, a in self.averages.items()}
        modules["method's average"] = self.own.module
        row = {"step": self.step, "epoch": round(self.step / self.per_epoch, 2)}
        for name, module in modules.items():
            row[name] = mean_elbo(module, self.stopper.manager, self.stopper.cells)
        self.rows.append(row)
        print({k: round(v, 2) for k, v in row.items()}, f"({time.perf_counter() - self.t0:.0f} s)")


class EpochTimes(Callback):
    """``ends``: ``time.perf_counter()`` at the end of each training epoch (its validation
    included).  Module-level so a model whose recipe records it still pickles."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ends.append(time.perf_counter())
