"""The phantom cohort written in UK Biobank's on-disk layout.

For trying and benchmarking the real-data path without real data: short-axis stacks on an
oblique scanner grid, stored as int16 like scanner exports, masks in the ukbb_cardiac files,
and a metadata CSV with UK Biobank's 0/1 sex coding and ICD-10 codes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from cardiofair.data.phantom import PhantomConfig, phantom_volume
from cardiofair.diagnoses import HEART_FAILURE

UKBB_SHAPE = (160, 176)
UKBB_SPACING = (1.8, 1.8, 10.0)


def write_phantom_ukbb(root: str | os.PathLike, n: int, seed: int = 0, config: PhantomConfig | None = None,
                       shape: tuple[int, int] = UKBB_SHAPE, spacing_mm: tuple[float, float, float] = UKBB_SPACING,
                       n_slices: int = 10) -> Path:
    """Write ``n`` phantom subjects as ``root/<eid>/sa_ED.nii.gz`` etc.; return the metadata CSV path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    angle = np.deg2rad(25.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) \
        @ np.diag(spacing_mm)
    rows = []
    for index in range(n):
        eid = str(1000001 + index)
        meta, images, masks = phantom_volume(index, seed, config, shape=shape, spacing_mm=spacing_mm, n_slices=n_slices)
        folder = root / eid
        folder.mkdir(exist_ok=True)
        for frame in ("ED", "ES"):
            nib.save(nib.Nifti1Image(np.rint(images[frame]).astype(np.int16), affine), str(folder / f"sa_{frame}.nii.gz"))
            nib.save(nib.Nifti1Image(masks[frame], affine), str(folder / f"seg_sa_{frame}.nii.gz"))
        rows.append([eid, 0 if meta["sex"] == "Female" else 1, meta["age_years"], meta["height_cm"],
                     meta["weight_kg"], "I500;I10" if meta["diagnosis"] == HEART_FAILURE else "I10"])
    path = root / "metadata.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["eid", "sex", "age", "height", "weight", "icd10"])
        writer.writerows(rows)
    return path
