"""`cardiofair split`: a stored train/validation/test split of a prepared dataset, by subject."""

from __future__ import annotations

import os
from typing import Any

from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, hold_back, write_splits
from cardiofair.results import SplitResult
from cardiofair.settings import SplitSettings

Result = SplitResult


def run(settings: SplitSettings, *, dataset: str | os.PathLike, overwrite: bool = False) -> SplitResult:
    """`cardiofair split`: store a split of ``dataset``; return its subjects per split and diagnosis."""
    manifest = read_manifest(dataset)
    splits = assign_splits(manifest, test=settings.test, val=settings.val, seed=settings.seed)
    if settings.scarcity is not None:
        splits = hold_back(manifest, splits, *settings.scarcity_cell(), seed=settings.seed)
    write_splits(dataset, splits, overwrite=overwrite)
    return SplitResult.load(dataset)


def summary(result: SplitResult, paths: Any) -> str:
    """The subjects per split and diagnosis."""
    return f"{result.dataset}: subjects per split and diagnosis\n{result.subjects.to_string()}"
