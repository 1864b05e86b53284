"""Several devices: how many processes a Lightning DDP run has, and the per-process minibatch
that keeps every optimizer step the one-device step.

Under DDP each of ``W`` processes takes its own minibatch and the gradients are averaged, so with
the one-device batch size on every process a step sees ``W`` times the cells and an epoch has
``W`` times fewer steps: at the same epoch budget the model is less trained (2 CPU processes:
held-out ELBO 1.2-1.9% lower, ``docs/scale.md``).  Unlearning splits the one-device minibatch
over the processes instead (``batch_size // W`` cells each): the same cells per step, the same
steps per epoch, the same epoch budgets and schedules, and each device does ``1 / W`` of the work.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch
from scvi.model._utils import use_distributed_sampler


def _count_devices(accelerator: str, devices: Any) -> int:
    """Devices of one node, as Lightning resolves ``devices`` for ``accelerator``."""
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if text.lstrip("-").isdigit():
            devices = int(text)
        elif text == "auto":
            devices = "auto"
        else:
            raise ValueError(f"devices must be an int, a list or 'auto', got {devices!r}.")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = accelerator in ("gpu", "cuda")
    if devices == "auto":
        return torch.cuda.device_count() if gpu else 1
    if isinstance(devices, bool) or not isinstance(devices, int):
        raise ValueError(f"devices must be an int, a list or 'auto', got {devices!r}.")
    if devices == -1:
        return torch.cuda.device_count() if gpu else os.cpu_count() or 1
    if devices < 1:
        raise ValueError(f"devices must be >= 1 or -1, got {devices}.")
    return devices


def n_processes(
    strategy: Any = None, accelerator: str = "auto", devices: Any = "auto", num_nodes: int = 1
) -> int:
    """Processes of a training run with these :class:`~lightning.pytorch.Trainer` arguments:
    ``devices x num_nodes`` under a DDP strategy (scvi-tools'
    :func:`~scvi.model._utils.use_distributed_sampler`), else 1."""
    if strategy is None or not use_distributed_sampler(strategy):
        return 1
    return _count_devices(accelerator or "auto", devices) * int(num_nodes or 1)


def per_process_batch(batch_size: int, processes: int) -> int:
    """Cells each of ``processes`` DDP processes takes a step so that a step sees
    ``batch_size`` cells, as on one device (rounded down).

    Raises
    ------
    ValueError
        With more processes than cells in a minibatch.
    """
    if processes > batch_size:
        raise ValueError(
            f"batch_size {batch_size} is smaller than the {processes} DDP processes: each "
            "process takes batch_size // processes cells a step; raise batch_size."
        )
    return int(batch_size) // int(processes)


class ExpectProcesses(pl.Callback):
    """Stops a run at its start when Lightning's world size is not the ``processes`` the
    minibatches were split for (e.g. ``devices="auto"`` resolved otherwise than expected)."""

    def __init__(self, processes: int):
        self.processes = int(processes)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size != self.processes:
            raise RuntimeError(
                f"The minibatches were split over {self.processes} DDP processes, but the "
                f"Trainer runs {trainer.world_size}: pass devices (and num_nodes) explicitly."
            )


def processes_of(run: dict) -> int:
    """:func:`n_processes` of a run's ``Trainer`` arguments (``strategy``, ``accelerator``,
    ``devices``, ``num_nodes``; Lightning's defaults for those not given)."""
    return n_processes(
        run.get("strategy"),
        run.get("accelerator", "auto"),
        run.get("devices", "auto"),
        run.get("num_nodes", 1),
    )


def split_over_processes(
    batch_size: int, trainer_kwargs: dict, budget: dict, **device_args
) -> tuple[int, int]:
    """``(per-process batch, processes)`` for a run with ``trainer_kwargs`` and
    ``device_args`` (e.g. ``accelerator``, ``devices`` given apart from the rest).  With several
    processes, appends an :class:`ExpectProcesses` to ``trainer_kwargs["callbacks"]`` (in place)
    and records ``processes`` and ``batch_size_per_process`` in ``budget``."""
    processes = processes_of({**trainer_kwargs, **device_args})
    if processes == 1:
        return int(batch_size), 1
    per_process = per_process_batch(batch_size, processes)
    callbacks = list(trainer_kwargs.get("callbacks") or [])
    trainer_kwargs["callbacks"] = [*callbacks, ExpectProcesses(processes)]
    budget["processes"] = processes
    budget["batch_size_per_process"] = per_process
    return per_process, processes
