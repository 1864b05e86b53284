"""Worker of ``test_devices.py``: unlearn a saved model on ``devices`` CPU processes.

``python tests/ddp_unlearn.py FOLDER METHOD DEVICES OUT``.  Lightning's DDP launcher starts the
other ranks by running this same command again; rank 0 writes the result to ``OUT``.
"""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)


def main(folder: str, method: str, devices: int, out: str) -> None:
    import scvi

    import scvi_unlearn as su

    scvi.settings.seed = 0
    model = su.SCVI.load(os.path.join(folder, "model"))
    forget = json.loads(open(os.path.join(folder, "forget.json")).read())
    kwargs = {"max_epochs": 2} if method != "fast_retrain" else {}
    if devices > 1:
        kwargs |= {"devices": devices, "strategy": "ddp_find_unused_parameters_true"}
    new = model.unlearn(
        forget, method=method, seed=0, accelerator="cpu", enable_progress_bar=False,
        on_degradation="warn", **kwargs,
    )  # fmt: skip
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    trainer = new.trainer if getattr(new, "trainer", None) is not None else None
    result = {
        "budget": new.unlearn_record_["budget"],
        "steps": None if trainer is None else int(trainer.global_step),
        "batches_per_epoch": None if trainer is None else int(trainer.num_training_batches),
        "world_size": None if trainer is None else int(trainer.world_size),
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
