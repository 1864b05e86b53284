"""``python -m scvi_unlearn.toy``: print the two-Gaussian and the MoG-VAE tables."""

from __future__ import annotations

import argparse
import time

import pandas as pd


def main(argv: list[str] | None = None) -> None:
    """Print both toy tables (sizes small enough for about a minute on 2 CPU cores)."""
    from scvi_unlearn.toy import mog_vae_table, two_gaussian_table

    parser = argparse.ArgumentParser(prog="python -m scvi_unlearn.toy", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="base seed of both tables (0)")
    parser.add_argument(
        "--n-repeats", type=int, default=10, help="two-Gaussian repetitions per arm (10)"
    )
    parser.add_argument(
        "--skip-mog", action="store_true", help="print the two-Gaussian table only"
    )
    parser.add_argument(
        "--mog-epochs", type=int, default=100, help="training epochs of the MoG VAEs (100)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: these models are tiny, and more threads than free cores "
        "slow them down many-fold on a shared machine; 0 keeps torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        t0 = time.perf_counter()
        table = two_gaussian_table(n_repeats=args.n_repeats, seed=args.seed)
        print(
            f"Two-Gaussian MI unlearning ({args.n_repeats} repetitions per arm, seed "
            f"{args.seed}, {time.perf_counter() - t0:.1f} s)"
        )
        print(table.round(3).to_string())
        if not args.skip_mog:
            t0 = time.perf_counter()
            mog = mog_vae_table(seed=args.seed, max_epochs=args.mog_epochs)
            print(
                f"\nMixture-of-Gaussians scVI (normal likelihood), threshold-ELBO audit "
                f"(seed {args.seed}, {time.perf_counter() - t0:.1f} s)"
            )
            print(mog.round(3).to_string())


if __name__ == "__main__":
    main()
