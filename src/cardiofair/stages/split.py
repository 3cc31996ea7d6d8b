"""`cardiofair split`: a stored train/validation/test split of a prepared dataset, by subject."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, hold_back, write_splits
from cardiofair.prompts import UNKNOWN
from cardiofair.settings import SplitSettings

# The subjects per split and diagnosis.
Result = pd.DataFrame


def run(settings: SplitSettings, *, dataset: str | os.PathLike, overwrite: bool = False) -> pd.DataFrame:
    """`cardiofair split`: store a split of ``dataset``; return its subjects per split and diagnosis."""
    manifest = read_manifest(dataset)
    splits = assign_splits(manifest, test=settings.test, val=settings.val, seed=settings.seed)
    if settings.scarcity is not None:
        splits = hold_back(manifest, splits, *settings.scarcity_cell(), seed=settings.seed)
    write_splits(dataset, splits, overwrite=overwrite)
    subjects = manifest.assign(split=splits).drop_duplicates("subject_id")
    return pd.crosstab(subjects["diagnosis"].astype(object).fillna(UNKNOWN), subjects["split"], margins=True)


def summary(table: pd.DataFrame, paths: Any) -> str:
    """The subjects per split and diagnosis."""
    return f"{paths['dataset']}: subjects per split and diagnosis\n{table.to_string()}"

