"""One entry point for every benchmark: ``python -m benchmarks`` (from the repository root).

    python -m benchmarks --list                          # every suite, its experiments, configs
    python -m benchmarks run SUITE [--config NAME] [--set key=value ...] [--threads N]
    python -m benchmarks compare OLD.json NEW.json       # two runs of the track suite

``run`` prints each table the experiment measured, headed by the command that regenerates it,
and writes them as CSV (plus the config and the commit) to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks import _harness as h


def _list() -> int:
    for suite, description in h.load_suites().items():
        print(f"{suite}: {description}")
        for name, exp in sorted(h.EXPERIMENTS.get(suite, {}).items()):
            print(f"    experiment {name}: {exp.description}")
        for path in h.configs_of(suite):
            raw = h.tomllib.loads(path.read_text())
            print(f"    config {path.stem}: {raw.get('description', '')}")
    return 0


def _command(suite: str, path: Path, overrides: list[str]) -> str:
    config = path.stem if path.parent == h.CONFIGS / suite else str(path)
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return f"python -m benchmarks run {suite} --config {config}{sets}"


def _run(args: argparse.Namespace) -> int:
    suites = h.load_suites()
    if args.suite not in suites:
        raise SystemExit(f"Unknown suite {args.suite!r}; suites: {', '.join(suites)}.")
    path = h.resolve_config(args.suite, args.config)
    overrides = dict(h.parse_override(o) for o in args.set)
    for key in ("threads", "cache", "out"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    exp, params, raw = h.build(args.suite, path, overrides)
    from benchmarks.suites._common import quiet

    os.environ.setdefault("OMP_NUM_THREADS", str(params.threads))
    quiet(params.threads)
    command = _command(args.suite, path, args.set)
    print(f"# {command}\n# {raw.get('description', exp.description)}", flush=True)
    t0 = time.perf_counter()
    tables = h.as_tables(exp.func(params))
    seconds = time.perf_counter() - t0
    for title, table in tables.items():
        print(f"\n## {title}\n\n`{command}`\n\n{h.markdown(table)}")
    commit = h.commit()
    print(f"\n({seconds:.0f} s, commit {commit})")
    if params.out:
        out = Path(params.out)
        out.mkdir(parents=True, exist_ok=True)
        for title, table in tables.items():
            stem = "".join(c if c.isalnum() else "_" for c in title).strip("_") or "result"
            table.to_csv(out / f"{stem}.csv", index=False)
        meta = {
            "command": command,
            "suite": args.suite,
            "experiment": exp.name,
            "config": str(path),
            "params": vars(params),
            "commit": commit,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": seconds,
        }
        (out / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from benchmarks.suites.track import compare

    table = compare(Path(args.old), Path(args.new), threshold=args.threshold)
    print(h.markdown(table))
    return 1 if args.fail and (table["flag"] != "").any() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--list", action="store_true", help="every suite and config")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a suite's config")
    run.add_argument("suite")
    run.add_argument("--config", default=None, help="a config name or a .toml file")
    run.add_argument("--set", action="append", default=[], help="override a parameter")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("--cache", default=None, help="folder of shared trained models")
    run.add_argument("--out", default=None, help="folder for the tables as CSV")
    cmp_ = sub.add_parser("compare", help="speed and peak memory of two track runs")
    cmp_.add_argument("old")
    cmp_.add_argument("new")
    cmp_.add_argument("--threshold", type=float, default=1.2, help="flag ratios above this")
    cmp_.add_argument("--fail", action="store_true", help="exit 1 when anything is flagged")
    args = parser.parse_args(argv)
    if args.list:
        return _list()
    if args.command == "run":
        return _run(args)
    if args.command == "compare":
        return _compare(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
