"""A Lightning data module yielding retain and forget minibatches in the same training step."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import CombinedLoader
from scvi import settings
from scvi.dataloaders import AnnDataLoader
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from scvi_unlearn.unlearn.core._budget import sample_positions
from scvi_unlearn.unlearn.core._devices import per_process_batch

#: minibatches smaller than this are dropped from the retain loader (scVI's BatchNorm needs >= 2
#: cells, and scvi-tools' DataSplitter moves such tails out of the training set for this reason)
MIN_LAST_BATCH = 3


def drops_last_batch(n_cells: int, batch_size: int) -> bool:
    """Whether an epoch of ``n_cells`` in batches of ``batch_size`` drops its last batch: more
    than one batch, and a last one of fewer than :data:`MIN_LAST_BATCH` cells."""
    return n_cells > batch_size and 0 < n_cells % batch_size < MIN_LAST_BATCH


class RetainForgetDataModule(pl.LightningDataModule):
    """Training batches ``{"retain": tensors, "forget": tensors | None}``; validation on retain.

    One epoch is one pass over the retain training cells, or over a fresh random sample of
    ``retain_sample`` of them (drawn without replacement, anew every epoch, from the global torch
    generator, which the unlearning request seeds); the forget cells (usually far fewer) are
    cycled (``CombinedLoader(mode="max_size_cycle")``) so that every step sees a forget
    minibatch.  Attributes ``train_idx`` / ``val_idx`` / ``test_idx`` / ``n_train`` / ``n_val``
    follow :class:`scvi.dataloaders.DataSplitter`, so :class:`scvi.train.TrainRunner` records the
    retain split as the model's ``train_indices`` / ``validation_indices``.

    Parameters
    ----------
    retain_manager
        :class:`~scvi.data.AnnDataManager` of the retain AnnData (the new model's).
    train_indices, validation_indices
        Positions of the retain training / validation cells in that AnnData.
    forget_manager
        Manager of an AnnData holding the forget cells (``None``: no forget batches).
    forget_indices
        Positions of the forget cells in the forget AnnData (default: all).
    batch_size
        Retain cells per minibatch.
    forget_batch_size
        Forget cells per minibatch (default ``batch_size``).
    retain_sample
        Retain training cells per epoch (``None`` or at least the number of training cells: all
        of them, shuffled).  See :func:`~scvi_unlearn.unlearn.retain_sample_size`.
    seed
        Seed of the fixed retain sample used under DDP (see :attr:`distributed`).

    Attributes
    ----------
    distributed
        Set by :meth:`share` (:meth:`UnlearningTask.fit` under a DDP strategy): every loader
        then shards its minibatches over the processes with scvi-tools'
        ``BatchDistributedSampler`` (as scvi-tools' own ``DataSplitter`` does), and a retain
        sample is drawn once (seeded, the same on every process) instead of anew every epoch.
    """

    def __init__(
        self,
        retain_manager,
        train_indices: np.ndarray,
        validation_indices: np.ndarray,
        forget_manager=None,
        forget_indices: np.ndarray | None = None,
        batch_size: int = 128,
        forget_batch_size: int | None = None,
        retain_sample: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.distributed = False
        self.seed = int(seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.retain_manager = retain_manager
        self.forget_manager = forget_manager
        self.train_idx = np.asarray(train_indices, dtype=int)
        self.val_idx = np.asarray(validation_indices, dtype=int)
        self.test_idx = np.asarray([], dtype=int)
        if forget_manager is not None and forget_indices is None:
            forget_indices = np.arange(forget_manager.adata.n_obs)
        self.forget_idx = None if forget_indices is None else np.asarray(forget_indices, int)
        self.n_train = int(self.train_idx.size)
        self.n_val = int(self.val_idx.size)
        if self.n_train == 0:
            raise ValueError("No retain training cells to train on.")
        self.batch_size = int(batch_size)
        self.forget_batch_size = int(forget_batch_size or batch_size)
        if retain_sample is not None and retain_sample < 1:
            raise ValueError(f"retain_sample must be >= 1, got {retain_sample}.")
        self.retain_sample = (
            None if retain_sample is None or retain_sample >= self.n_train else int(retain_sample)
        )
        self.drop_last = drops_last_batch(self.cells_per_epoch, self.batch_size)

    def share(self, processes: int) -> None:
        """Split every minibatch over ``processes`` DDP processes (:attr:`distributed`): each
        takes ``batch_size // processes`` retain cells (and forget cells) a step, so that a step
        sees the one-device minibatch and an epoch has the one-device number of steps
        (:mod:`~scvi_unlearn.unlearn.core._devices`)."""
        self.distributed = True
        self.batch_size = per_process_batch(self.batch_size, processes)
        self.forget_batch_size = max(1, self.forget_batch_size // processes)
        self.drop_last = drops_last_batch(self.cells_per_epoch // processes, self.batch_size)

    @property
    def cells_per_epoch(self) -> int:
        """Retain training cells one epoch passes over."""
        return self.n_train if self.retain_sample is None else self.retain_sample

    def setup(self, stage: str | None = None):
        pass

    def train_dataloader(self):
        """``CombinedLoader({"retain": ..., "forget": ...})`` cycling the forget cells."""
        loaders = {"retain": self._retain_loader()}
        if self.forget_manager is not None:
            loaders["forget"] = AnnDataLoader(
                self.forget_manager,
                indices=self.forget_idx,
                batch_size=self.forget_batch_size,
                shuffle=True,
                drop_last=False,
                distributed_sampler=self.distributed,
            )
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _retain_loader(self):
        if self.retain_sample is None or self.distributed:
            indices = self.train_idx
            if self.retain_sample is not None:
                indices = sample_positions(indices, self.retain_sample, self.seed)
            return AnnDataLoader(
                self.retain_manager,
                indices=indices,
                batch_size=self.batch_size,
                shuffle=True,
                drop_last=self.drop_last,
                distributed_sampler=self.distributed,
            )
        # the minibatch path of AnnDataLoader (a BatchSampler as the sampler, no automatic
        # batching: fast slicing of sparse counts) over a per-epoch random sample
        dataset = self.retain_manager.create_torch_dataset(indices=self.train_idx)
        sampler = BatchSampler(
            RandomSampler(dataset, replacement=False, num_samples=self.retain_sample),
            batch_size=self.batch_size,
            drop_last=self.drop_last,
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=settings.dl_num_workers,
            persistent_workers=settings.dl_persistent_workers and settings.dl_num_workers > 0,
        )

    def val_dataloader(self):
        """Retain validation cells (plain batches), or ``None`` without validation cells."""
        if self.n_val == 0:
            return None
        return AnnDataLoader(
            self.retain_manager,
            indices=self.val_idx,
            batch_size=self.batch_size,
            shuffle=False,
            distributed_sampler=self.distributed,
        )
