"""How many images does FD-cardiofair need? Real-vs-real spread at several sample sizes.

A Fréchet distance estimated from n images carries a bias and a spread that shrink with n; below
some n it measures its own noise, and a synthetic set can look as "real" as real images merely
because both figures are noise. This script draws n real held-out images (never trained on)
many times, computes each draw's FD-cardiofair to the real training set, and prints the mean
and the spread (standard deviation over draws) per n, as `cardiofair quality` would measure them
(evaluators trained on the training split, features standardised on it). The threshold it
prints is the smallest n above the feature dimension (below it a set's covariance is singular)
whose spread is at most one FD-cardiofair unit; it is the default of `quality.min_images`
(docs/quality.md, "How many images a distance needs").

Prints figures; it is not a test. Run: python benchmarks/bench_quality_sample_size.py [--n 2400]
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
from cardiofair.metrics.realism import frechet_distance
from cardiofair.settings import PrepareSettings, QualitySettings

SIZES = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
STABLE_SD = 1.0  # largest spread (FD-cardiofair units) for a distance to count as measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2400, help="phantom subjects (half held out)")
    parser.add_argument("--draws", type=int, default=30, help="draws per sample size")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--steps", type=int, default=QualitySettings().steps, help="segmenter training steps")
    parser.add_argument("--classifier-steps", type=int, default=QualitySettings().classifier_steps,
                        help="attribute classifier training steps (its features are the distance's space)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; {args.n} phantom subjects at {args.size} px, {args.draws} draws per n; "
          f"evaluators trained {args.steps} + {args.classifier_steps} steps")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
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
    print(f"{len(train)} training and {len(held_out)} held-out images; set-up {time.perf_counter() - started:.0f} s\n")

    rng = np.random.default_rng(0)
    print(f"{'n':>5s} {'mean FD':>9s} {'s.d.':>8s} {'s.d./mean':>10s}")
    threshold = None
    for n in (s for s in SIZES if s <= len(held_out)):
        values = np.array([frechet_distance(train, held_out[rng.choice(len(held_out), n, replace=False)])
                           for _ in range(args.draws)])
        if threshold is None and n > train.shape[1] and values.std() <= STABLE_SD:
            threshold = n
        print(f"{n:5d} {values.mean():9.3f} {values.std():8.3f} {values.std() / values.mean():10.3f}")
    print(f"\nfeature dimension {train.shape[1]}; smallest n above it with s.d. <= {STABLE_SD}: {threshold}")


if __name__ == "__main__":
    main()
