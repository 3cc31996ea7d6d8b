"""`cardiofair masks`: the mask generator, new (ED, ES) label-map pairs for a subgroup cell.

Borrowed masks (``copy``, ``matched``, ``random``, optionally warped) show the classifier the
same few real hearts of a thin cell again under new texture. The mask generator draws new
anatomy for a cell from what it learned across all cells (:mod:`cardiofair.masks.shape_model`),
and every drawn pair is checked as a reader would check it (:mod:`cardiofair.masks.anatomy`).
It learns from the dataset's training split only, and records hashes of the subjects it learned
from, so that generation can refuse a model that saw validation or test subjects.

Pure numpy and scipy (no torch): training takes seconds on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cardiofair.data.records import read_manifest, read_pair_nifti
from cardiofair.data.split import subject_hashes, training_rows
from cardiofair.data.summary import cell_counts, with_cells
from cardiofair.errors import InputError
from cardiofair.masks.shape_model import ShapeModel, fit_shape_model
from cardiofair.prompts import DEFAULT_SCHEMA
from cardiofair.settings import MaskSettings


def read_masks(dataset: str | os.PathLike, rows: pd.DataFrame, progress: bool = True) -> tuple[np.ndarray, float]:
    """The (N, 2, H, W) mask pairs of manifest ``rows`` (images are not read) and their common
    pixel spacing; records of several sizes or fields of view are an error."""
    masks, spacings = [], []
    for path in tqdm(rows["mask_path"], desc="reading masks", unit="mask", disable=not progress, leave=False):
        mask, spacing, _ = read_pair_nifti(Path(dataset) / path)
        masks.append(mask.astype(np.uint8))
        spacings.append(spacing)
    if not masks:
        raise InputError(f"{dataset}: no masks to read")
    if len({m.shape for m in masks}) > 1 or not np.allclose(spacings, spacings[0], rtol=0.01):
        raise InputError(f"{dataset}: masks differ in size or pixel spacing; prepare every record at one size and "
                         "field of view")
    return np.stack(masks), float(spacings[0])


def train_mask_model(dataset: str | os.PathLike, settings: MaskSettings = MaskSettings(),
                     progress: bool = True) -> ShapeModel:
    """The mask generator fitted to the training split's masks of ``dataset``."""
    rows = training_rows(read_manifest(dataset)).reset_index(drop=True)
    if rows.empty:
        raise InputError(f"{dataset} has no real training records to learn masks from")
    masks, spacing = read_masks(dataset, rows, progress)
    counts = with_cells(rows, DEFAULT_SCHEMA).value_counts().rename("n").reset_index()
    info = {"training": {"dataset": str(dataset), "n_records": len(rows), "settings": {"components": settings.components}},
            "training_cells": counts.to_dict("records"),
            "training_cell_table": cell_counts(rows, DEFAULT_SCHEMA).to_dict("records"),
            # Hashes, not ids: enough to refuse a split whose held-out subjects the model learned.
            "training_subject_hashes": subject_hashes(rows["subject_id"])}
    return fit_shape_model(masks, with_cells(rows, DEFAULT_SCHEMA), spacing,
                           settings.components, info, progress=progress)
