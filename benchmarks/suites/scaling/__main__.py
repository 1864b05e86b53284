"""The scaling suite's fresh-process workers: ``python -m benchmarks.suites.scaling method FOLDER
METHOD THREADS`` and ``python -m benchmarks.suites.scaling ddp FOLDER METHOD DEVICES OUT
THREADS`` and ``python -m benchmarks.suites.scaling ddp_unlearn ORIGINAL METHOD FORGET DEVICES
SEED OUT THREADS`` (Lightning's DDP launcher starts the second rank by re-running this
module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.suites._common import quiet
from benchmarks.suites.scaling._ddp import ddp_unlearn_worker, ddp_worker
from benchmarks.suites.scaling._methods import method_worker


def _main(argv: list[str]) -> None:
    """The fresh-process workers: ``method FOLDER METHOD THREADS`` prints one JSON line;
    ``ddp FOLDER METHOD DEVICES OUT THREADS`` writes rank 0's JSON to ``OUT``."""
    kind, folder, method, *rest = argv
    quiet(int(rest[-1]))
    if kind == "method":
        print(json.dumps(method_worker(Path(folder), method)))
    elif kind == "ddp":
        row = ddp_worker(Path(folder), method, int(rest[0]))
        if row is not None:
            Path(rest[1]).write_text(json.dumps(row))
    elif kind == "ddp_unlearn":
        forget, devices, seed, out = rest[:4]
        ddp_unlearn_worker(Path(folder), Path(forget), method, int(devices), int(seed), Path(out))
    else:
        raise SystemExit(f"unknown worker {kind!r}: method, ddp or ddp_unlearn")


if __name__ == "__main__":
    _main(sys.argv[1:])
