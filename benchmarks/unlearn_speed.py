"""Wall time of every unlearning method relative to ``retrain``, measured in one run.

Same setting as ``benchmarks/unlearn_defaults.py``: the offline PBMC data, the members of a
stratified 70 / 30 split, an ``su.SCVI`` with the default architecture and recipe (400 epochs by
scvi-tools' heuristic) and the "CD56+ NK" members (22 cells) as the forget set.  Each method runs
with its defaults (``retrain`` = the recorded recipe); the time is ``unlearn_record_
["wall_time_s"]`` (the whole ``unlearn`` call: data copy, method, checks).  Progress bars off.

Run::

    python benchmarks/unlearn_speed.py [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from unlearn_defaults import _quiet, setup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (median)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "su_unlearn"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    _quiet()
    os.makedirs(args.cache, exist_ok=True)
    import scvi_unlearn as su

    model, _, _, forget = setup(args.cache, args.threads)
    methods = ["retrain"] + [m for m in su.unlearn.METHODS if m != "retrain"]
    times: dict[str, float] = {}
    for method in methods:
        kwargs = {} if method == "ssd" else {"enable_progress_bar": False}
        runs = []
        for r in range(args.repeats):
            new = model.unlearn(forget, method=method, seed=r, on_degradation="warn", **kwargs)
            runs.append(new.unlearn_record_["wall_time_s"])
        times[method] = float(np.median(runs))
        print(f"{method:16s} {times[method]:8.2f} s", flush=True)
    print("\n| method | wall time (s) | time / retrain |\n|---|---:|---:|")
    for method in methods:
        print(f"| {method} | {times[method]:.2f} | {times[method] / times['retrain']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
