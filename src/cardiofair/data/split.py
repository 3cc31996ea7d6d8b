"""Subject-level train / validation / test splits, stratified by subgroup cell.

Every later stage reads the ``split`` column of a prepared dataset: the generator, the planner
and mask sourcing see only ``train`` records, and test subjects never reach training. Splits
are by subject, so the neighbouring slices of one patient never straddle two splits, and
stratified by cell, so even a rare subgroup (female heart failure) has test subjects.

The scarcity protocol moves a share of one cell's training subjects to ``held_back``: no model
and no plan sees them, and the fairness stage adds them back as its ``oracle`` arm, the records
a perfect generator of that cell would have drawn. So a real cohort, which has no phantom to
draw fresh subjects from, still measures what its generator is worth against a ceiling.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from cardiofair.data import MANIFEST
from cardiofair.data.records import is_synthetic, read_manifest, real_records
from cardiofair.data.summary import with_cells
from cardiofair.errors import InputError, OutputExistsError, SettingsError
from cardiofair.io import atomic_write
from cardiofair.prompts import UNKNOWN

SPLITS = ("train", "val", "test")
HELD_BACK = "held_back"


class SplitError(InputError):
    """A dataset whose split cannot keep validation and test subjects out of training."""


def assign_splits(manifest: pd.DataFrame, test: float = 0.2, val: float = 0.1, seed: int = 0) -> pd.Series:
    """The split of every manifest row, on the manifest's index.

    Within each subgroup cell, subjects are shuffled with ``seed`` and shared out so that each
    split's share is as close as rounding allows (largest remainders).
    """
    if not (0.0 <= test < 1.0 and 0.0 <= val < 1.0 and test + val < 1.0):
        raise SettingsError(None, "test and val fractions must be in [0, 1) and sum to less than 1")
    synthetic = [is_synthetic(row) for row in manifest.to_dict("records")]
    if any(synthetic):
        raise SplitError("the dataset holds synthetic records: split the real dataset before merging")
    cells = with_cells(manifest).astype(str).agg("|".join, axis=1)
    subjects = pd.DataFrame({"subject_id": manifest["subject_id"].astype(str), "cell": cells})
    # A subject's cell is that of its first record (all its slices share the metadata).
    per_subject = subjects.drop_duplicates("subject_id").sort_values(["cell", "subject_id"])
    rng = np.random.default_rng(seed)
    fractions = np.array([1.0 - test - val, val, test])
    assigned: dict[str, str] = {}
    for _, group in per_subject.groupby("cell", sort=True):
        ids = group["subject_id"].to_numpy()[rng.permutation(len(group))]
        counts = _largest_remainder(fractions * len(ids))
        for name, chunk in zip(SPLITS, np.split(ids, np.cumsum(counts)[:-1])):
            assigned.update(dict.fromkeys(chunk, name))
    return subjects["subject_id"].map(assigned).rename("split")


def hold_back(manifest: pd.DataFrame, splits: pd.Series, cell: dict[str, str], keep: float, seed: int = 0,
              min_kept: int | None = None) -> pd.Series:
    """``splits`` with all but ``round(keep x n)`` of the ``n`` training subjects of ``cell``
    (binned attributes, e.g. sex Female and diagnosis heart failure) moved to ``held_back``,
    chosen with ``seed``. Refuses a cell without training subjects, and one that would keep
    fewer than ``min_kept`` (the planner's minimum support: the default plan's)."""
    from cardiofair.settings import PlanSettings

    min_kept = PlanSettings().min_real_support if min_kept is None else min_kept
    binned = with_cells(manifest)
    missing = [a for a in cell if a not in binned.columns]
    if missing:
        raise SplitError(f"scarcity: the dataset records no {', '.join(missing)}")
    in_cell = np.logical_and.reduce([binned[a].astype(str).to_numpy() == v for a, v in cell.items()])
    subjects = sorted(manifest["subject_id"].astype(str)[in_cell & (splits == "train").to_numpy()].unique())
    named = ", ".join(f"{a} {v}" for a, v in cell.items())
    if not subjects:
        present = sorted(binned.loc[(splits == "train").to_numpy(), list(cell)].astype(str)
                         .agg(" | ".join, axis=1).unique())
        raise SplitError(f"scarcity: no training subject is of cell {named}; cells present: {present[:12]}")
    kept = int(round(keep * len(subjects)))
    if kept < min_kept:
        raise SplitError(f"scarcity: keeping {keep:g} of the {len(subjects)} training subjects of cell {named} leaves "
                         f"{kept}, fewer than the planner's minimum support of {min_kept}: keep a larger share")
    held = set(np.random.default_rng([seed, 1]).permutation(subjects)[kept:])
    return splits.where(~manifest["subject_id"].astype(str).isin(held), HELD_BACK)


def _largest_remainder(quotas: np.ndarray) -> np.ndarray:
    counts = np.floor(quotas).astype(int)
    remainder = int(round(quotas.sum())) - counts.sum()
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def write_splits(root: str | os.PathLike, splits: pd.Series, overwrite: bool = False) -> Path:
    """Store ``splits`` as the manifest's ``split`` column (atomically); an existing split is
    replaced only with ``overwrite``, because moving subjects between splits invalidates every
    model and result made with the old one."""
    root = Path(root)
    manifest = read_manifest(root)
    if "split" in manifest.columns and not overwrite:
        raise OutputExistsError(f"{root} is already split; pass --overwrite to split it again (models and results "
                                f"made with the old split no longer apply)")
    manifest["split"] = splits.reindex(manifest.index)
    return atomic_write(root / MANIFEST, manifest.to_csv(index=False))


def subjects_per_split(manifest: pd.DataFrame) -> pd.DataFrame:
    """Subjects per diagnosis (rows) and split (columns) of a split manifest, with totals."""
    subjects = manifest.drop_duplicates("subject_id")
    return pd.crosstab(subjects["diagnosis"].astype(object).fillna(UNKNOWN), subjects["split"], margins=True)


def training_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The real records later stages may learn from or copy: the ``train`` split when the
    dataset is split (never validation or test subjects), all real records otherwise."""
    real = real_records(manifest)
    if "split" in real.columns:
        real = real[real["split"].astype(str) == "train"]
    return real


def check_splits(manifest: pd.DataFrame, dataset: str | os.PathLike) -> None:
    """Refuse a real dataset without a split, with synthetic records, with a subject in two
    splits or with an empty split: any of them lets test subjects (or their copies) reach
    training, or leaves a later stage nothing to validate or test on."""
    if "split" not in manifest.columns:
        raise SplitError(f"{dataset} has no train/val/test split: run `cardiofair split {dataset}` first, so that "
                         f"every model and result uses the same training, validation and test subjects")
    if any(is_synthetic(row) for row in manifest.to_dict("records")):
        raise SplitError(f"{dataset} holds synthetic records: pass the real dataset as --real and the synthetic "
                         f"one as --synthetic")
    splits = manifest["split"].astype(str)
    unknown = sorted(set(splits) - {*SPLITS, HELD_BACK})
    if unknown:
        raise SplitError(f"{dataset}: unknown split value(s) {unknown}; expected {[*SPLITS, HELD_BACK]}")
    per_subject = manifest.assign(split=splits).groupby("subject_id")["split"].nunique()
    leaked = sorted(per_subject[per_subject > 1].index)
    if leaked:
        raise SplitError(f"{dataset}: subject(s) {leaked[:5]} appear in more than one split; re-split with "
                         f"`cardiofair split {dataset} --overwrite`")
    missing = [s for s in SPLITS if s not in set(splits)]
    if missing:
        raise SplitError(f"{dataset} has no {', '.join(missing)} subjects: split with non-zero --test and --val "
                         f"on a cohort large enough for all of {list(SPLITS)}")


def subject_hashes(subject_ids: Iterable[str]) -> list[str]:
    """Sorted short hashes of subject ids, to record who a model learned from without naming them."""
    return sorted({hashlib.sha256(str(s).encode()).hexdigest()[:16] for s in subject_ids})


def learned_held_out_subjects(learned_hashes: Iterable[str], manifest: pd.DataFrame) -> list[str]:
    """The validation, test and held-back subjects of a split dataset that a model learned from
    (by hash)."""
    if "split" not in manifest.columns:
        return []
    learned = set(learned_hashes)
    held_out = manifest[manifest["split"].astype(str) != "train"]["subject_id"].astype(str).unique()
    return sorted(s for s in held_out if subject_hashes([s])[0] in learned)


def learned_held_out(model: str, learned_hashes: Iterable[str], manifest: pd.DataFrame) -> str | None:
    """Why ``model`` (named in the message) must not be used with this split: it learned its
    validation, test or held-back subjects (by hash); None when it learned none."""
    leaked = learned_held_out_subjects(learned_hashes, manifest)
    return (f"{model} learned {len(leaked)} validation, test or held-back subject(s) (e.g. {leaked[0]})"
            if leaked else None)
