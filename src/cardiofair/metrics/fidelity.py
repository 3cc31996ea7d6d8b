"""Mask fidelity (does the image follow its mask?) and prompt fidelity (does it carry its
prompted attributes?), each reported beside the same measure on real test images."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardiofair.data.records import STRUCTURES
from cardiofair.prompts import UNKNOWN


def dice_table(predicted: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    """Dice per image for each structure and frame (columns ED_LV ... ES_RV); a structure absent
    from both prediction and mask counts as 1."""
    columns = {}
    for frame, name in enumerate(("ED", "ES")):
        for label, structure in STRUCTURES.items():
            p = (predicted[:, frame] == label).reshape(len(predicted), -1)
            g = (masks[:, frame] == label).reshape(len(masks), -1)
            overlap, total = (p & g).sum(1), p.sum(1) + g.sum(1)
            columns[f"{name}_{structure}"] = np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)
    return pd.DataFrame(columns)


def balanced_accuracy(truth: pd.Series, predicted: pd.Series, weights: np.ndarray | None = None) -> float:
    """Mean recall over the true classes present (records whose truth is unknown are skipped);
    chance is 1 / number of classes whatever the class balance. With ``weights``, each record
    counts that much in its class's recall (a reference reweighted to another set's mix)."""
    truth, predicted = pd.Series(truth).reset_index(drop=True), pd.Series(predicted).reset_index(drop=True)
    weights = pd.Series(np.ones(len(truth)) if weights is None else np.asarray(weights, dtype=np.float64))
    known = (truth != UNKNOWN) & (weights > 0)
    truth, predicted, weights = truth[known], predicted[known], weights[known]
    if truth.empty:
        return float("nan")
    return float(np.mean([np.average(predicted[truth == value] == value, weights=weights[truth == value])
                          for value in truth.unique()]))


def prompt_fidelity(predicted: pd.DataFrame, prompted: pd.DataFrame,
                    weights: np.ndarray | None = None) -> dict[str, float]:
    """Balanced accuracy of the evaluator's predictions against the prompted attributes."""
    return {name: balanced_accuracy(prompted[name], predicted[name], weights) for name in predicted.columns
            if name in prompted.columns}
