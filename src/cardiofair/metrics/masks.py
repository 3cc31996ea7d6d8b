"""Judging the synthetic masks themselves: are they hearts, hearts of their cell, and new ones?

Whatever the mask policy, each synthetic mask pair is measured as a reader would (no torch):

- validity: the share that passes the anatomical checks (:mod:`cardiofair.masks.anatomy`), and
  for drawn masks the share of draws the generator rejected on the way;
- geometry per cell: the distribution of the ED LV cavity area, the ED myocardial thickness, the
  ED RV area and the contraction index, against real held-out masks of the cell (the reference:
  the cell's real training masks against the same held-out masks, i.e. two independent real
  samples). On a phantom cohort the true distribution is known: fresh subjects of the cell from
  the phantom model, against which the synthetic masks and, as the reference, as many other
  fresh subjects are measured;
- novelty: each synthetic mask's distance to its nearest real training mask, beside the same for
  real held-out masks (real patients who are not in training); a borrowed mask is at distance 0.

Distances are in units of the training masks' spread per measure, so they compare across cells.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cardiofair.data.prepare import PhantomModel, draw_fresh
from cardiofair.masks.anatomy import GEOMETRY, failed_checks, geometry, geometry_distance, nearest_masks
from cardiofair.metrics.privacy import COPY_PERCENTILE

# Fresh phantom subjects per cell: at least this many, so the truth is known well even where the
# synthetic set is small; the reference draws as many again per synthetic record (two samples).
MIN_FRESH = 50
REFERENCE_SAMPLES = 2


def fresh_masks(model: PhantomModel, cell: Mapping[str, str], count: int) -> np.ndarray:
    """(count, 2, H, W) masks of new phantom subjects of ``cell``, prepared as the dataset was, from
    a random stream no prepared, test or oracle subject uses."""
    return draw_fresh(model, [cell] * count, "masks", mid_slice_only=True).masks


def mask_quality(synthetic: np.ndarray, synthetic_keys: pd.Series, train: np.ndarray, train_keys: pd.Series,
                 held_out: np.ndarray, held_out_keys: pd.Series, val_count: int, attributes: Sequence[str],
                 spacing_mm: float, draws: np.ndarray | None = None, phantom: PhantomModel | None = None,
                 progress: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """The ``mask_geometry`` section of ``synthetic_quality.json`` and a per-mask table (source,
    cell, geometry) for the histograms. ``held_out`` lists the ``val_count`` validation masks
    first, then the test ones; ``draws`` are the generator's draws
    per drawn mask (absent for borrowed masks)."""
    scale = np.maximum(geometry(train, spacing_mm).std(0), 1e-9)
    measured = {"synthetic": geometry(synthetic, spacing_mm), "real train": geometry(train, spacing_mm),
                "real held-out": geometry(held_out, spacing_mm)}
    nearest = {"synthetic": nearest_masks(synthetic, train)[0], "real held-out": nearest_masks(held_out, train)[0]}
    threshold = float(np.percentile(nearest["real held-out"][val_count:], COPY_PERCENTILE))
    valid = np.array([not failed_checks(mask, spacing_mm) for mask in synthetic])
    section: dict[str, Any] = {
        "measures": list(GEOMETRY), "scale": dict(zip(GEOMETRY, scale.tolist())),
        "validity": {"n": len(synthetic), "valid_share": float(valid.mean()) if len(valid) else math.nan},
        "novelty": {"median_nearest_training_distance": {"synthetic": _median(nearest["synthetic"]),
                                                         "real_reference": _median(nearest["real held-out"])},
                    "threshold": threshold,
                    "copy_rate": {"synthetic": float((nearest["synthetic"] < threshold).mean()),
                                  "real_reference": float((nearest["real held-out"][:val_count] < threshold).mean())},
                    "of": f"the {COPY_PERCENTILE:g}th percentile of real test masks' distances to the nearest "
                          "training mask; real validation masks give the reference rate"},
        "cells": {}}
    if draws is not None and len(draws):
        section["validity"]["rejected_share_of_draws"] = float((draws.sum() - len(draws)) / draws.sum())
    tables = [pd.DataFrame(measured["synthetic"], columns=GEOMETRY).assign(source="synthetic",
                                                                           cell=synthetic_keys.to_numpy())]
    cells = sorted(synthetic_keys.unique())
    for cell in tqdm(cells, desc="mask geometry per cell", unit="cell", disable=not progress, leave=False):
        own = {name: (keys == cell).to_numpy() for name, keys in
               (("synthetic", synthetic_keys), ("real train", train_keys), ("real held-out", held_out_keys))}
        syn, held = measured["synthetic"][own["synthetic"]], measured["real held-out"][own["real held-out"]]
        scope = {"n_synthetic": len(syn), "n_real_held_out": len(held), "n_real_train": int(own["real train"].sum()),
                 "valid_share": float(valid[own["synthetic"]].mean()),
                 "median_nearest_training_distance": {"synthetic": _median(nearest["synthetic"][own["synthetic"]]),
                                                      "real_reference": _median(nearest["real held-out"][own["real held-out"]])},
                 "distance_to_real_held_out": {"synthetic": geometry_distance(syn, held, scale),
                                               "real_reference": geometry_distance(measured["real train"][own["real train"]],
                                                                                   held, scale)}}
        tables.append(pd.DataFrame(held, columns=GEOMETRY).assign(source="real held-out", cell=cell))
        if phantom is not None:
            values = dict(zip(attributes, cell.split("|")))
            truth_count, n = max(MIN_FRESH, len(syn)), len(syn)
            drawn = fresh_masks(phantom, values, truth_count + REFERENCE_SAMPLES * n)
            fresh = geometry(drawn, spacing_mm)
            truth, others = fresh[:truth_count], fresh[truth_count:]
            # New subjects of the cell: how near a training mask a new patient of this cell lies.
            scope["median_nearest_training_distance"]["phantom_truth"] = _median(
                nearest_masks(drawn[:truth_count], train)[0])
            reference = float(np.mean([geometry_distance(others[i * n:(i + 1) * n], truth, scale)
                                       for i in range(REFERENCE_SAMPLES)]))
            synthetic_distance = geometry_distance(syn, truth, scale)
            scope["distance_to_phantom_truth"] = {"synthetic": synthetic_distance, "real_reference": reference,
                                                  "ratio": synthetic_distance / reference if reference > 0 else math.nan,
                                                  "n_truth": truth_count}
            tables.append(pd.DataFrame(truth, columns=GEOMETRY).assign(source="phantom truth", cell=cell))
        section["cells"][cell] = scope
    per_mask = pd.concat(tables, ignore_index=True)
    return section, per_mask


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan
