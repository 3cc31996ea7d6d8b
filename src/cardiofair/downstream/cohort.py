"""The records an experiment uses, loaded from one fixed real split (no torch).

Every arm validates on the same real validation subjects and is tested on the same real test
subjects; only what it trains on differs (:mod:`cardiofair.downstream.arms`). Loading refuses
what would make a comparison meaningless: an unsplit real dataset, a subject in two splits, a
synthetic record whose mask came from a validation or test subject, a synthetic dataset of
another image size or prompt grammar.

Synthetic and oracle records carry their rank in their cell, and a dose takes the first
``round(dose x planned count)`` of each cell (:func:`dose_rows`), so every dose's records are the
first ones of a larger dose's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from cardiofair.data.records import ImageSet, ImageSizeError, is_synthetic, load_images, read_manifest, same_size
from cardiofair.data.split import check_splits
from cardiofair.data.summary import with_cells
from cardiofair.diagnoses import HEALTHY, HEART_FAILURE
from cardiofair.errors import CardiofairError
from cardiofair.plan import PlanSettings, dose_count, plan_synthesis
from cardiofair.prompts import DEFAULT_SCHEMA, UNKNOWN, is_missing, parse_prompt
from cardiofair.settings import NON_HEALTHY

SENSITIVE = tuple(a for a in DEFAULT_SCHEMA.attributes if a != "diagnosis")


class ExperimentError(CardiofairError):
    """Inputs that cannot make a fair comparison: leaks, unsplit or mismatched datasets."""


@dataclass
class Cohort:
    """Every record an experiment uses, with its image, label and binned attributes.

    ``table`` has one row per record (``record_id, subject_id, role, label`` and the binned
    ``sex, age, bmi, diagnosis``); ``role`` is the split for real records and ``synthetic`` for
    synthetic ones; ``records`` holds the same records' images and manifest rows (raw metadata)
    in the same order. ``positive`` are the diagnoses labelled 1, called ``positive_name``.
    """

    table: pd.DataFrame
    records: ImageSet
    positive: tuple[str, ...]
    positive_name: str
    excluded: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def rows(self, role: str) -> np.ndarray:
        """Positions of the records with this role."""
        return np.flatnonzero(self.table["role"].to_numpy() == role)

    def subjects(self, role: str) -> pd.DataFrame:
        """One row per subject of a role (its first record's label and attributes)."""
        return self.table.iloc[self.rows(role)].drop_duplicates("subject_id").set_index("subject_id")


def positive_class(diagnoses: Sequence[str], present: Sequence[str], name: str | None = None) -> tuple[tuple[str, ...], str]:
    """(the diagnoses labelled positive, what to call them): ``diagnoses`` as given, or with
    ``non-healthy`` every known diagnosis in ``present`` but healthy; the name defaults to the
    diagnosis, or the diagnoses joined by "or" ("any disease" for ``non-healthy``)."""
    if isinstance(diagnoses, str):
        diagnoses = (diagnoses,)
    if HEALTHY in diagnoses:
        raise ExperimentError(f"the positive diagnosis cannot be {HEALTHY!r}")
    if NON_HEALTHY in diagnoses:
        chosen = tuple(sorted({d for d in present if d not in (HEALTHY, UNKNOWN)}))
        return chosen, name or "any disease"
    return tuple(diagnoses), name or " or ".join(diagnoses)


def check_synthetic(real: pd.DataFrame, synthetic: pd.DataFrame, dataset: str | os.PathLike) -> None:
    """Refuse synthetic records that are not synthetic, share ids with real subjects, or whose
    mask was lent by a subject outside the real training split (that geometry would carry a
    validation or test subject into training)."""
    real_rows = [row["record_id"] for row in synthetic.to_dict("records") if not is_synthetic(row)]
    if real_rows:
        raise ExperimentError(f"{dataset} holds records not marked synthetic (e.g. {real_rows[:3]}); pass "
                              f"a dataset made by `cardiofair generate`")
    shared = sorted(set(synthetic["subject_id"].astype(str)) & set(real["subject_id"].astype(str)))
    if shared:
        raise ExperimentError(f"{dataset}: synthetic subject id(s) {shared[:5]} are real subject ids")
    if "mask_source" not in synthetic.columns:
        raise ExperimentError(f"{dataset} has no mask_source column: without it no one can tell whether a "
                              f"validation or test subject's geometry reached training")
    split_of = dict(zip(real["subject_id"].astype(str), real["split"].astype(str)))
    split_of.update(zip(real["record_id"].astype(str), real["split"].astype(str)))
    problems = []
    for row in synthetic.to_dict("records"):
        source = _mask_source_id(row)
        split = split_of.get(source)
        if split != "train":
            where = "an unknown subject" if split is None else f"a {split} subject"
            problems.append(f"{row['record_id']} (mask from {source}, {where})")
    if problems:
        raise ExperimentError(f"{dataset}: {len(problems)} synthetic record(s) take their mask from outside the "
                              f"real training split, e.g. {problems[:3]}; generate them again from this split")


def _mask_source_id(row: dict) -> str:
    # `generate` names the lending record, or for a drawn mask the training record whose mask lies
    # nearest; `sample` stores the path of the mask file it read.
    source = row.get("mask_nearest_record") if row.get("mask_policy") == "synthesized" else row.get("mask_source_record")
    source = row.get("mask_source") if is_missing(source) else source
    name = Path(str(source)).name
    return name[:-len(".nii.gz")] if name.endswith(".nii.gz") else str(source)


def load_cohort(real: str | os.PathLike, synthetic: str | os.PathLike | None = None,
                positive: Sequence[str] = (HEART_FAILURE,), train_prevalence: float | None = None, seed: int = 0,
                on_record: Callable[[], None] | None = None, positive_name: str | None = None) -> Cohort:
    """Load a split real dataset (and a synthetic one), after the checks above.

    Records of the ``positive`` diagnoses are labelled 1 (see :func:`positive_class`), healthy
    ones 0; records of other diagnoses (or unknown) are left out and listed in ``excluded``.
    With ``train_prevalence``, real training subjects of the larger class are dropped (chosen
    with ``seed``, once for all arms and repeats) until the positive class has that share of
    training subjects, as the paper trained at 25 % heart failure; validation and test keep the
    natural prevalence.
    """
    manifest = read_manifest(real)
    check_splits(manifest, real)
    roots = [str(real)]
    frames = [manifest.assign(role=manifest["split"].astype(str), _root=str(real))]
    if synthetic is not None:
        synthetic_manifest = read_manifest(synthetic, made_by="generate")
        check_synthetic(manifest, synthetic_manifest, synthetic)
        roots.append(str(synthetic))
        frames.append(synthetic_manifest.assign(role="synthetic", _root=str(synthetic)))
    rows = pd.concat(frames, ignore_index=True)
    try:
        cells = with_cells(rows)
    except ValueError as error:
        raise ExperimentError(f"a record's attributes or prompt do not follow the prompt grammar: {error}") from None
    positive, name = positive_class(positive, cells["diagnosis"].unique(), positive_name)
    labels = cells["diagnosis"].map({**dict.fromkeys(positive, 1), HEALTHY: 0})
    excluded = [{"record_id": r, "subject_id": s, "reason": f"diagnosis {d!r} is neither {HEALTHY!r} nor {name}"}
                for r, s, d in zip(rows["record_id"], rows["subject_id"], cells["diagnosis"])
                if d not in (*positive, HEALTHY)]
    keep = labels.notna().to_numpy()
    table = pd.concat([rows[["record_id", "role"]], cells], axis=1)[keep]
    table = table.assign(label=labels[keep].astype(int), subject_id=rows["subject_id"].astype(str)[keep])
    info: dict[str, Any] = {}
    if train_prevalence is not None:
        table, info["train_prevalence"] = _subsample_training(table, train_prevalence, seed)
    for role in ("val", "test"):
        if table.loc[table["role"] == role, "label"].nunique() < 2:
            raise ExperimentError(f"the {role} split needs subjects with and without {name}")
    chosen = rows.loc[table.index].drop(columns="role")
    loaded = {root: load_images(root, chosen[chosen["_root"] == root].drop(columns="_root"), on_record=on_record)
              for root in roots}
    try:
        same_size(loaded)
    except ImageSizeError as error:
        raise ExperimentError(str(error)) from None
    records = ImageSet(pd.concat([s.rows for s in loaded.values()], ignore_index=True),
                       np.concatenate([s.images for s in loaded.values()]),
                       np.concatenate([s.masks for s in loaded.values()]))
    return Cohort(table.reset_index(drop=True), records, positive, name, excluded, info)


def _subsample_training(table: pd.DataFrame, prevalence: float, seed: int) -> tuple[pd.DataFrame, dict]:
    if not 0.0 < prevalence < 1.0:
        raise ExperimentError(f"the training prevalence must be in (0, 1), got {prevalence}")
    train = table[table["role"] == "train"].drop_duplicates("subject_id")
    positives, negatives = train[train["label"] == 1], train[train["label"] == 0]
    want_negatives = round(len(positives) * (1 - prevalence) / prevalence)
    want_positives = round(len(negatives) * prevalence / (1 - prevalence))
    rng = np.random.default_rng(seed)
    if want_negatives <= len(negatives):
        dropped = rng.choice(negatives["subject_id"].to_numpy(), len(negatives) - want_negatives, replace=False)
    else:
        dropped = rng.choice(positives["subject_id"].to_numpy(), len(positives) - want_positives, replace=False)
    kept = table[~(table["role"].eq("train") & table["subject_id"].isin(set(dropped)))]
    left = kept[kept["role"] == "train"].drop_duplicates("subject_id")
    return kept, {"target": prevalence, "achieved": round(float(left["label"].mean()), 4),
                  "training_subjects_dropped": int(len(dropped))}


def with_records(cohort: Cohort, added: ImageSet, role: str, replace_role: bool = False) -> Cohort:
    """The cohort with ``added`` records (drawn, not read from a dataset) in ``role``; with
    ``replace_role`` the cohort's own records of that role are dropped first (a drawn test
    cohort replaces the split's test subjects)."""
    cells = with_cells(added.rows)
    labels = cells["diagnosis"].map({**dict.fromkeys(cohort.positive, 1), HEALTHY: 0})
    if labels.isna().any():
        raise ExperimentError(f"drawn {role} subjects have diagnoses {sorted(set(cells['diagnosis'][labels.isna()]))}, "
                              f"neither {HEALTHY!r} nor {cohort.positive_name}")
    drawn = pd.concat([added.rows[["record_id"]].assign(role=role), cells], axis=1)
    drawn = drawn.assign(label=labels.astype(int), subject_id=added.rows["subject_id"].astype(str))
    keep = cohort.table["role"].to_numpy() != role if replace_role else np.ones(len(cohort.table), bool)
    records = ImageSet(pd.concat([cohort.records.rows[keep], added.rows], ignore_index=True),
                       np.concatenate([cohort.records.images[keep], added.images]),
                       np.concatenate([cohort.records.masks[keep], added.masks]))
    return replace(cohort, table=pd.concat([cohort.table[keep], drawn], ignore_index=True), records=records)


# --- what each arm trains on --------------------------------------------------------------------


def planned_cells(cohort: Cohort, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """The cells to oversample and how many duplicates each gets (columns: the planned
    attributes, ``diagnosis``, ``synthetic_count``): the synthetic records per planned cell when
    the cohort has synthetic records, else the plan's ``synthetic_count``, else what
    :func:`plan_synthesis` with default settings asks for on the real training records."""
    rows = dose_rows(cohort, "synthetic", 1.0)
    if len(rows):
        synthetic = cohort.table.iloc[rows]
        if "cell" in cohort.records.rows.columns:
            synthetic = synthetic.assign(cell=cohort.records.rows["cell"].iloc[rows].to_numpy())
        attributes = _synthetic_cell_attributes(synthetic)
        counts = synthetic.groupby([*attributes, "diagnosis"]).size().rename("synthetic_count").reset_index()
        return counts.assign(source="synthetic dataset")
    if plan is None:
        plan = plan_synthesis(cohort.records.rows.iloc[cohort.rows("train")], PlanSettings())
        source = "plan_synthesis(PlanSettings())"
    else:
        source = "plan file"
    attributes = [a for a in SENSITIVE if any(parse_prompt(p)[a] for p in plan["prompt"])]
    parsed = pd.DataFrame([parse_prompt(p) for p in plan["prompt"]])
    counts = parsed[[*attributes, "diagnosis"]].assign(synthetic_count=plan["synthetic_count"].astype(int).to_numpy())
    return counts.assign(source=source)


def _synthetic_cell_attributes(synthetic: pd.DataFrame) -> list[str]:
    """The attributes a synthetic dataset was planned over, read from its ``cell`` column.

    Generation completes the attributes a plan leaves out, so the prompt alone names all of
    them; the ``cell`` (planned values joined by ``|``) says which were planned. Values of
    different attributes never coincide (Female, 60s, normal, heart failure), so each is found
    by matching against the prompt's attributes."""
    if "cell" not in synthetic.columns:
        return list(SENSITIVE)
    found = set()
    for row in synthetic.to_dict("records"):
        values = str(row["cell"]).split("|")
        names = tuple(a for a in SENSITIVE if row[a] in values)
        if len(names) + 1 != len(values) or row["diagnosis"] not in values:
            raise ExperimentError(f"synthetic record {row['record_id']}: cell {row['cell']!r} does not match its prompt")
        found.add(names)
    if len(found) != 1:
        raise ExperimentError(f"the synthetic records were planned over different attributes {sorted(found)}")
    return list(found.pop())


RANK_COLUMNS = ("cell_rank", "planned_count")


def dose_rows(cohort: Cohort, role: str, dose: float) -> np.ndarray:
    """Positions of the ``role`` records (synthetic or oracle) of ``dose``: in every cell, those
    ranked below ``round(dose x planned count)``. Synthetic records without ranks (made by
    `cardiofair sample` or an older `generate`) all count as dose 1."""
    rows = cohort.rows(role)
    meta = cohort.records.rows.iloc[rows]
    if not set(RANK_COLUMNS) <= set(meta.columns) or meta[list(RANK_COLUMNS)].isna().all(axis=None):
        if dose != 1.0:
            raise ExperimentError(f"dose {dose:g} needs {role} records ranked in their cell (cell_rank, "
                                  f"planned_count): make the synthetic dataset with `cardiofair generate`")
        return rows
    rank, planned = meta["cell_rank"].astype(int).to_numpy(), meta["planned_count"].astype(int).to_numpy()
    wanted = np.array([dose_count(n, dose) for n in planned])
    per_cell = pd.DataFrame({"cell": meta["cell"].to_numpy(), "wanted": wanted, "found": rank < wanted})
    counts = per_cell.groupby("cell").agg(wanted=("wanted", "first"), found=("found", "sum"))
    missing = int((counts["wanted"] - counts["found"]).sum())
    if missing:
        raise ExperimentError(f"dose {dose:g} needs {int(counts['wanted'].sum())} {role} records and the dataset "
                              f"holds {int(counts['found'].sum())} of them ({missing} missing): run `cardiofair "
                              f"generate` again with the same plan and seed and --dose {dose:g}, which keeps the "
                              f"records already made")
    return rows[rank < wanted]
