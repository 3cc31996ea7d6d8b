"""How many images does FD-cardiofair need? Real-vs-real spread at several sample sizes.

A Fréchet distance estimated from n images carries a bias and a spread that shrink with n; below
some n it measures its own noise, and a synthetic set can look as "real" as real images merely
because both figures are noise. This script draws n real held-out images (never trained on)
many times, computes each draw's FD-cardiofair and KD-cardiofair to the real training set, and
prints per n the mean, the spread (standard deviation over draws) and the 95% range over draws,
as `cardiofair quality` would measure them (evaluators trained on the training split, features
standardised on it). The threshold it prints is the smallest n above the feature dimension
(below it a set's covariance is singular) whose spread is at most one FD-cardiofair unit; on the
phantom it is the default of `quality.min_images` (docs/quality.md, "How many images a
distance needs"). It also prints the smallest n whose 95% range is narrower than the realism
target's margin (FD-cardiofair at most 3 times its real reference: a range wider than twice the
mean cannot tell a synthetic set at the target from one beyond it).

Without ``--real`` it prepares a phantom cohort; with ``--real`` it reads a cohort prepared and
split by `cardiofair prepare` and `cardiofair split` (a real one: nothing is written into it).

Prints figures; it is not a test. Run: python benchmarks/bench_quality_sample_size.py [--n 2400]
or python benchmarks/bench_quality_sample_size.py --real runs/<study>/prepare --sizes 25,50,100,200,400
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, write_splits
from cardiofair.metrics.quality import cached_evaluators, load_real_splits
from cardiofair.metrics.realism import frechet_distance, kernel_distance
from cardiofair.settings import PrepareSettings, QualitySettings

SIZES = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
STABLE_SD = 1.0  # largest spread (FD-cardiofair units) for a distance to count as measured
TARGET_RATIO = 3.0  # issue 33's realism target: FD-cardiofair at most 3 times its real reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2400, help="phantom subjects (half held out)")
    parser.add_argument("--real", type=Path, help="a prepared and split cohort to measure instead of the phantom")
    parser.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")), default=SIZES,
                        help="sample sizes, comma-separated")
    parser.add_argument("--draws", type=int, default=30, help="draws per sample size")
    parser.add_argument("--size", type=int, default=64, help="phantom image size in pixels")
    parser.add_argument("--steps", type=int, default=QualitySettings().steps, help="segmenter training steps")
    parser.add_argument("--classifier-steps", type=int, default=QualitySettings().classifier_steps,
                        help="attribute classifier training steps (its features are the distance's space)")
    args = parser.parse_args()
    cohort = f"the prepared cohort {args.real}" if args.real else f"{args.n} phantom subjects at {args.size} px"
    print(f"machine: {os.cpu_count()} cores; {cohort}, {args.draws} draws per n; "
          f"evaluators trained {args.steps} + {args.classifier_steps} steps")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.real
        if root is None:
            root = Path(tmp) / "phantom"
            prepare_phantom(args.n, 0, root, settings=PrepareSettings(size=args.size), progress=False)
            write_splits(root, assign_splits(read_manifest(root), test=0.4, val=0.1, seed=0))
        real = load_real_splits(root, progress=False)
        settings = QualitySettings(steps=args.steps, classifier_steps=args.classifier_steps)
        evaluators, _ = cached_evaluators(real, settings, Path(tmp) / "evaluators", log=print)
    train = evaluators.features(real["train"].images)
    held_out = evaluators.features(np.concatenate([real["val"].images, real["test"].images]))
    mean, std = train.mean(0), np.maximum(train.std(0), 1e-6)
    train, held_out = (train - mean) / std, (held_out - mean) / std
    print(f"{len(train)} training and {len(held_out)} held-out images, features from the "
          f"{evaluators.feature_network}; set-up {time.perf_counter() - started:.0f} s\n")

    rng = np.random.default_rng(0)
    print(f"{'n':>5s} {'mean FD':>9s} {'s.d.':>8s} {'95% range':>17s} {'range/mean':>11s} {'KD x1000':>9s} "
          f"{'95% range':>17s}")
    stable = within_margin = None
    for n in (s for s in args.sizes if s <= len(held_out)):
        draws = [held_out[rng.choice(len(held_out), n, replace=False)] for _ in range(args.draws)]
        fd = np.array([frechet_distance(train, draw) for draw in draws])
        kd = 1000 * np.array([kernel_distance(train, draw, subsets=10, subset_size=min(100, n), seed=k)[0]
                              for k, draw in enumerate(draws)])
        low, high = np.quantile(fd, [0.025, 0.975])
        if stable is None and n > train.shape[1] and fd.std() <= STABLE_SD:
            stable = n
        if within_margin is None and high - low <= (TARGET_RATIO - 1) * fd.mean():
            within_margin = n
        kd_low, kd_high = np.quantile(kd, [0.025, 0.975])
        print(f"{n:5d} {fd.mean():9.3f} {fd.std():8.3f} {f'[{low:.2f}, {high:.2f}]':>17s} "
              f"{(high - low) / fd.mean():11.2f} {kd.mean():9.2f} {f'[{kd_low:.1f}, {kd_high:.1f}]':>17s}")
    skipped = [s for s in args.sizes if s > len(held_out)]
    if skipped:
        print(f"not measured (more than the {len(held_out)} held-out images): n = {', '.join(map(str, skipped))}")
    print(f"\nfeature dimension {train.shape[1]}; smallest n above it with s.d. <= {STABLE_SD}: {stable}; smallest n "
          f"whose 95% range is at most {TARGET_RATIO - 1:g} times its mean (the 3x target's margin): {within_margin}")


if __name__ == "__main__":
    main()
