"""The benchmark harness: suites of experiments, declarative configs, one entry point.

A **suite** is a module (or a package, when it holds more than a module should) of
:mod:`benchmarks.suites` (its name is the module's name, its description the first line of its
docstring).  It holds one or more **experiments**:
functions registered with :func:`experiment`, each taking a parameters object (a dataclass whose
fields are the experiment's parameters, with documented defaults) and returning its tables.

A **config** is a TOML file under ``benchmarks/configs/<suite>/``::

    experiment = "grid"                   # which experiment of the suite
    description = "reinit_finetune against fast_retrain on pbmc68k (lost; kept as a record)"
    result = "RESULTS.md#reinit_finetune-per-cell-verdict-against-fast_retrain"

    [params]                              # fields of the experiment's parameters dataclass
    seeds = 3
    sets = ["CD56+ NK (22)", "CD14+ Monocyte (90)"]

Unknown keys are errors naming the accepted ones.  ``python -m benchmarks run SUITE
[--config NAME_OR_FILE] [--set key=value ...]`` runs one (``--config`` defaults to the suite's
``default.toml``); every table it prints is headed by the command that regenerates it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

#: folder of this package (``benchmarks/``)
ROOT = Path(__file__).resolve().parent
#: folder of the configs, one sub-folder per suite
CONFIGS = ROOT / "configs"


@dataclasses.dataclass
class Common:
    """Parameters every experiment takes (a parameters dataclass subclasses this).

    Attributes
    ----------
    threads
        torch intra-op threads (1 is fastest for these small models on 2 cores).
    cache
        Folder of trained models that several runs share (originals, reference retrains).
    out
        Folder for the CSV of every table (``None``: print only).
    """

    threads: int = 1
    cache: str = ".benchmark_cache"
    out: str | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One registered experiment: ``func(params) -> tables``."""

    suite: str
    name: str
    func: Callable[[Any], Any]
    params: type

    @property
    def description(self) -> str:
        return (self.func.__doc__ or "").strip().splitlines()[0] if self.func.__doc__ else ""


#: registered experiments: ``EXPERIMENTS[suite][name]``
EXPERIMENTS: dict[str, dict[str, Experiment]] = {}


def experiment(name: str, params: type = Common) -> Callable[[Callable], Callable]:
    """Register the decorated function as experiment ``name`` of the suite (module) it is in.

    ``params`` is a dataclass subclassing :class:`Common`; the function receives an instance
    built from the config's ``[params]`` (defaults filled in) and returns a
    :class:`pandas.DataFrame` or a ``{title: DataFrame}`` dict (the tables it measured).
    """
    if not (dataclasses.is_dataclass(params) and issubclass(params, Common)):
        raise TypeError(f"experiment {name!r}: params must be a dataclass subclassing Common")

    def decorator(func: Callable) -> Callable:
        # the suite is the module (or package) right below benchmarks.suites
        parts = func.__module__.split(".")
        suite = parts[2] if parts[:2] == ["benchmarks", "suites"] and len(parts) > 2 else parts[-1]
        EXPERIMENTS.setdefault(suite, {})[name] = Experiment(suite, name, func, params)
        return func

    return decorator


def commit() -> str:
    """The short hash of the checked-out commit (``+dirty`` with tracked changes), or
    ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_suites() -> dict[str, str]:
    """Import every suite module; return ``{suite: description}``."""
    import benchmarks.suites as package

    described = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"benchmarks.suites.{info.name}")
        described[info.name] = (module.__doc__ or "").strip().splitlines()[0]
    return described


def configs_of(suite: str) -> list[Path]:
    """The config files of ``suite``, by name."""
    return sorted((CONFIGS / suite).glob("*.toml"))


def resolve_config(suite: str, config: str | None) -> Path:
    """The config file for ``--config``: a path, or a name under ``configs/<suite>/``."""
    if config is None:
        config = "default"
    path = Path(config)
    if path.suffix == ".toml" and path.exists():
        return path
    named = CONFIGS / suite / f"{path.stem}.toml"
    if named.exists():
        return named
    known = ", ".join(p.stem for p in configs_of(suite)) or "none"
    raise SystemExit(f"No config {config!r} for suite {suite!r}. Its configs: {known}.")


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``seeds=3``, ``sets=["random (50)"]``, ``lr=1e-2``);
    a value that is not TOML is taken as a string (``method=scrub``)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"--set takes key=value, got {item!r}.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def build(suite: str, path: Path, overrides: dict[str, Any]) -> tuple[Experiment, Any, dict]:
    """The experiment, its parameters and the raw config of a config file plus overrides."""
    raw = tomllib.loads(path.read_text())
    unknown = sorted(set(raw) - {"experiment", "description", "result", "params"})
    if unknown:
        raise SystemExit(
            f"{path}: unknown top-level key(s) {unknown}; "
            "a config has experiment, description, result and [params]."
        )
    experiments = EXPERIMENTS.get(suite, {})
    name = raw.get("experiment")
    if name not in experiments:
        raise SystemExit(
            f"{path}: experiment {name!r} is not in suite {suite!r}; it has {sorted(experiments)}."
        )
    exp = experiments[name]
    values = {**raw.get("params", {}), **overrides}
    fields = {f.name for f in dataclasses.fields(exp.params)}
    bad = sorted(set(values) - fields)
    if bad:
        raise SystemExit(
            f"{path}: unknown parameter(s) {bad} for {suite}/{name}; it accepts {sorted(fields)}."
        )
    return exp, exp.params(**values), raw


def as_tables(result: Any) -> dict[str, pd.DataFrame]:
    """An experiment's return value as ``{title: DataFrame}``."""
    if result is None:
        return {}
    if isinstance(result, pd.DataFrame):
        return {"result": result}
    if isinstance(result, dict) and all(isinstance(v, pd.DataFrame) for v in result.values()):
        return dict(result)
    raise TypeError(f"an experiment returns a DataFrame or a dict of them, got {type(result)}")


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, values as ``str`` gives them (pandas' ``to_markdown``
    needs the optional tabulate package)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float) and value != value:  # NaN: a column this row does not have
        return "-"
    return str(value).replace("|", "\\|")
