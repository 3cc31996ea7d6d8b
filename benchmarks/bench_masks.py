"""Mask generators compared on a split phantom dataset, where the true anatomy of a cell is known.

For every cell the default plan fills (prevalence 25 % by sex x age), draws as many masks as
the plan asks for from each method and prints their geometry distance to fresh phantom subjects
of the cell (:mod:`cardiofair.metrics.masks`), beside the distance of as many other fresh
subjects (the reference: two independent real samples), the validity rate of the draws, and the
median distance to the nearest training mask (novelty) beside that of fresh subjects:

- ``shared``: the shipped model, additive attribute effects and a residual per sex x diagnosis;
- ``per-cell``: a Gaussian in the same shape space fitted to the training masks of the cell
  alone (no sharing across cells), decoded the same way;
- ``matched``: real training masks chosen by the matched policy (what `generate` borrows today).

    python benchmarks/bench_masks.py DATASET [--components 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cardiofair.data.prepare import phantom_model
from cardiofair.data.records import read_manifest
from cardiofair.data.split import training_rows
from cardiofair.data.summary import with_cells
from cardiofair.generate import choose_mask_source
from cardiofair.masks import read_masks
from cardiofair.masks.anatomy import failed_checks, geometry, geometry_distance, nearest_masks
from cardiofair.masks.shape_model import fit_shape_model, labels_from_distances, signed_distances
from cardiofair.metrics.masks import MIN_FRESH, fresh_masks
from cardiofair.plan import PlanSettings, plan_synthesis

DRAWS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a split phantom dataset (cardiofair prepare + split)")
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = training_rows(read_manifest(args.dataset)).reset_index(drop=True)
    binned = with_cells(rows)
    train, spacing = read_masks(args.dataset, rows, progress=False)
    started = time.perf_counter()
    model = fit_shape_model(train, binned, spacing, args.components, {})
    print(f"shared model: {args.components} modes, {100 * model.info['explained_variance']:.1f}% of the variance, "
          f"fitted in {time.perf_counter() - started:.1f} s on {len(train)} training masks")
    latents = (signed_distances(train).astype(np.float64) - model.mean) @ model.components.T
    scale = geometry(train, spacing).std(0)
    phantom = phantom_model(args.dataset)
    plan = plan_synthesis(rows, PlanSettings(strategy="prevalence", target_prevalence=0.25, attributes=("sex", "age")))
    rng = np.random.default_rng(args.seed)
    print(f"{'cell':34s} {'n':>4s} {'train':>5s} | distance to truth: {'shared':>7s} {'per-cell':>8s} {'matched':>7s} "
          f"{'ref':>6s} | valid {'shared':>6s} {'cell':>6s} | nearest-train median {'shared':>6s} {'fresh':>6s}")
    for row in plan[plan["synthetic_count"] > 0].to_dict("records"):
        cell = {k: row[k] for k in ("sex", "age", "diagnosis")}
        n = int(row["synthetic_count"])
        own = np.all([binned[k] == v for k, v in cell.items()], axis=0)
        truth_count = max(MIN_FRESH, n)
        fresh = fresh_masks(phantom, cell, truth_count + 2 * n)
        truth = geometry(fresh[:truth_count], spacing)
        reference = np.mean([geometry_distance(geometry(fresh[truth_count + i * n:truth_count + (i + 1) * n], spacing),
                                               truth, scale) for i in range(2)])
        completing = rows.index[own] if own.any() else rows.index
        shared, shared_draws = [], 0
        for _ in range(n):
            attributes = {**cell, "bmi": binned.loc[completing[rng.integers(len(completing))], "bmi"]}
            for _ in range(DRAWS):
                shared_draws += 1
                mask = model.draw(attributes, rng)
                if not failed_checks(mask, spacing):
                    shared.append(mask)
                    break
        per_cell, cell_draws = [], 0
        if own.sum() > 2:
            mean, covariance = latents[own].mean(0), np.cov(latents[own], rowvar=False)
            for _ in range(n):
                for _ in range(DRAWS):
                    cell_draws += 1
                    latent = rng.multivariate_normal(mean, covariance, method="eigh")
                    mask = labels_from_distances((model.mean + latent @ model.components)[None], model.size)[0]
                    if not failed_checks(mask, spacing):
                        per_cell.append(mask)
                        break
        matched = train[[choose_mask_source("matched", cell, rows, binned, rng) for _ in range(n)]]
        distances = [geometry_distance(geometry(np.stack(m), spacing), truth, scale) if len(m) else float("nan")
                     for m in (shared, per_cell, matched)]
        print(f"{row['cell']:34s} {n:4d} {int(own.sum()):5d} | {'':19s} {distances[0]:7.3f} {distances[1]:8.3f} "
              f"{distances[2]:7.3f} {reference:6.3f} | {'':5s} {len(shared) / shared_draws:6.1%} "
              f"{len(per_cell) / max(cell_draws, 1):6.1%} | {'':21s} "
              f"{np.median(nearest_masks(np.stack(shared), train)[0]):6.3f} "
              f"{np.median(nearest_masks(fresh[:n], train)[0]):6.3f}")


if __name__ == "__main__":
    main()
