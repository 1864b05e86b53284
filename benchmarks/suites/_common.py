"""Plumbing the suites share: quiet processes, peak memory, child processes."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import warnings


def quiet(threads: int | None = None) -> None:
    """One benchmark process's settings: ``threads`` torch threads, no warnings or notes."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak() -> float:
    """Start measuring a step's own peak memory: reset this process's peak resident memory
    (Linux: ``/proc/self/clear_refs``) and return its resident memory now, in MB.  Where the
    reset is not available, the peak keeps counting from the process's start."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return rss_mb()
    return _status_mb("VmRSS") or rss_mb()


def peak_mb() -> float:
    """Peak resident memory since :func:`reset_peak` (or the process's start), in MB."""
    return _status_mb("VmHWM") or rss_mb()


def run_child(module: str, *args: str) -> dict:
    """Run ``python -m module *args`` in a fresh process (its own peak memory); return the JSON
    object on its last line of output.  A failing child raises with the end of its stderr."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
