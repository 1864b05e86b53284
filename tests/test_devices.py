"""Several devices: a DDP step shares the one-device minibatch out over the processes
(``scvi_unlearn.unlearn.core._devices``), so steps, epochs and budgets stay the one-device ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scvi_unlearn.unlearn.core._devices import (
    ExpectProcesses,
    n_processes,
    per_process_batch,
    split_over_processes,
)

QUIET = {"enable_progress_bar": False}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 1),
        ({"devices": 4}, 1),  # no DDP strategy: one process whatever the devices
        ({"strategy": "ddp", "accelerator": "cpu", "devices": 2}, 2),
        ({"strategy": "ddp_find_unused_parameters_true", "devices": [0, 1, 2]}, 3),
        ({"strategy": "ddp", "accelerator": "cpu", "devices": "0,1"}, 2),
        ({"strategy": "ddp", "accelerator": "cpu", "devices": "2"}, 2),
        ({"strategy": "ddp", "accelerator": "cpu", "devices": 2, "num_nodes": 3}, 6),
        ({"strategy": "ddp", "accelerator": "cpu", "devices": "auto"}, 1),
    ],
)
def test_n_processes_follows_lightning_arguments(kwargs, expected):
    assert n_processes(**kwargs) == expected


@pytest.mark.parametrize("devices", [0, -2, "two", 1.5])
def test_n_processes_rejects_bad_devices(devices):
    with pytest.raises(ValueError, match="devices"):
        n_processes("ddp", "cpu", devices)


def test_per_process_batch_splits_the_step():
    assert per_process_batch(128, 1) == 128
    assert per_process_batch(128, 2) == 64
    assert per_process_batch(128, 3) == 42  # rounded down
    with pytest.raises(ValueError, match="smaller than the 4 DDP processes"):
        per_process_batch(3, 4)


def test_split_over_processes_records_and_guards():
    budget, run = {}, {"strategy": "ddp", "callbacks": []}
    assert split_over_processes(128, run, budget, accelerator="cpu", devices=2) == (64, 2)
    assert budget == {"processes": 2, "batch_size_per_process": 64}
    assert [type(c) for c in run["callbacks"]] == [ExpectProcesses]
    one, run1 = {}, {"accelerator": "cpu"}
    assert split_over_processes(128, run1, one) == (128, 1)
    assert one == {} and "callbacks" not in run1


def test_expect_processes_stops_a_run_of_another_size(fresh_train):
    """A run whose world size is not the one the batches were split for stops at its start."""
    import scvi_unlearn as su

    model = su.SCVI(fresh_train, n_latent=4)
    with pytest.raises(RuntimeError, match="split over 2 DDP processes, but the Trainer runs 1"):
        model.train(max_epochs=1, callbacks=[ExpectProcesses(2)], accelerator="cpu", **QUIET)


def test_datamodule_share_halves_every_minibatch(trained_model, forget_names):
    from scvi_unlearn.unlearn.core._datamodule import RetainForgetDataModule

    manager = trained_model.adata_manager
    train = np.asarray(trained_model.train_indices)
    dm = RetainForgetDataModule(manager, train, np.asarray(trained_model.validation_indices),
                                batch_size=128, forget_batch_size=16)  # fmt: skip
    dm.share(2)
    assert dm.distributed
    assert (dm.batch_size, dm.forget_batch_size) == (64, 8)


def _run(folder: Path, method: str, devices: int) -> dict:
    out = folder / f"{method}-{devices}.json"
    script = Path(__file__).with_name("ddp_unlearn.py")
    done = subprocess.run(
        [sys.executable, str(script), str(folder), method, str(devices), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # two processes started per DDP run (about 30 s each): the slow job
@pytest.mark.parametrize("method", ["finetune", "fast_retrain", "retrain"])
def test_ddp_keeps_the_one_device_steps(tmp_path, trained_model, forget_names, method):
    """On 2 CPU processes every epoch takes the one-process number of steps, each process
    with half the minibatch; the fit-matched stop is taken by both processes together."""
    trained_model.save(str(tmp_path / "model"), save_anndata=True)
    (tmp_path / "forget.json").write_text(json.dumps([str(n) for n in forget_names]))
    one, two = _run(tmp_path, method, 1), _run(tmp_path, method, 2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["budget"]["processes"] == 2
    assert two["budget"]["batch_size_per_process"] * 2 == 128
    assert "processes" not in one["budget"]
    assert two["batches_per_epoch"] == pytest.approx(one["batches_per_epoch"], abs=1)
    if method != "fast_retrain":  # fixed epochs: the same number of steps
        assert two["steps"] == pytest.approx(one["steps"], abs=2)
