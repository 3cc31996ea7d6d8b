"""An in-house cohort described by a CSV: one row per subject.

Columns: ``subject_id``, ``ed_image``, ``es_image``, ``ed_mask``, ``es_mask`` (paths relative to
the CSV's folder, or absolute), optionally ``ed_frame``/``es_frame`` (0-based, for 4D cines), and
the metadata columns ``sex``, ``age_years``, ``height_cm``, ``weight_kg``, ``bmi``, ``diagnosis``.
Any other column is carried into the prepared manifest as a cohort extra (site, scanner, ...).
The file is called ``cohort.csv`` by default, not ``manifest.csv``: that name belongs to
prepared datasets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from cardiofair.data.case import ACDC_LABELS, UKBB_LABELS, CaseSource
from cardiofair.data.cohort import META_KEYS, frame_number, is_missing, read_table, row_meta, subject_source
from cardiofair.data.records import FRAMES, MANIFEST_COLUMNS
from cardiofair.diagnoses import free_text_diagnosis
from cardiofair.errors import InputError, SettingsError

DEFAULT_NAME = "cohort.csv"
LABEL_ORDERS = {"ukbb": UKBB_LABELS, "acdc": ACDC_LABELS}
PATH_COLUMNS = {name: (f"{name.lower()}_image", f"{name.lower()}_mask") for name in FRAMES}
FRAME_COLUMNS = {name: f"{name.lower()}_frame" for name in FRAMES}
# Columns a prepared dataset writes itself: a cohort column of the same name would be lost.
RESERVED = tuple(c for c in MANIFEST_COLUMNS if c not in ("subject_id", *META_KEYS))


def discover(
    root: str | os.PathLike,
    label_order: str = "ukbb",
    dataset: str = "in-house",
    required: tuple[str, ...] = ("diagnosis",),
) -> list[CaseSource]:
    """Every row of the cohort CSV ``root`` (or ``root/cohort.csv``), sorted by subject id.

    ``label_order`` says how the masks store their labels: ``"ukbb"`` (1 LV, 2 myocardium, 3 RV)
    or ``"acdc"`` (1 RV, 2 myocardium, 3 LV).
    """
    if label_order not in LABEL_ORDERS:
        raise SettingsError("label_order", f"must be one of {list(LABEL_ORDERS)}, got {label_order!r}")
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / DEFAULT_NAME
    mandatory = ("subject_id", *(column for pair in PATH_COLUMNS.values() for column in pair))
    table = read_table(path, mandatory=mandatory)
    reserved = [c for c in RESERVED if c in table.columns]
    if reserved:
        raise InputError(f"{path}: the column(s) {reserved} are written by `prepare` itself; rename them")
    if not table.rows and not table.duplicated:
        raise InputError(f"{path} lists no subjects")
    known = {*mandatory, *FRAME_COLUMNS.values(), *META_KEYS}
    extras = [c for c in table.columns if c not in known]
    rows = sorted(table.rows.values(), key=lambda row: row["subject_id"])
    return [_source(row, table.path, extras, LABEL_ORDERS[label_order], dataset, table.exclusion(row["subject_id"]),
                    required) for row in rows]


def _source(row: Mapping[str, str], path: Path, extras: list[str], labels: Mapping[int, int], dataset: str,
            problem: tuple[str, str] | None, required: tuple[str, ...]) -> CaseSource:
    frames = {}
    for name in FRAMES:
        image, mask = (row[column] for column in PATH_COLUMNS[name])
        frame = row.get(FRAME_COLUMNS[name])
        try:
            index = None if is_missing(frame) else frame_number(frame, FRAME_COLUMNS[name])
        except ValueError as error:
            problem = problem or (str(path), str(error))
            index = None
        if (is_missing(image) or is_missing(mask)) and problem is None:
            problem = (str(path), f"{name} image or mask path is empty")
        frames[name] = (str(path.parent / image), str(path.parent / mask), index)
    return subject_source(
        row["subject_id"],
        dataset=dataset,
        frames=frames,
        labels=labels,
        meta=row_meta(row, extras),
        source=str(path),
        required=required,
        diagnosis=free_text_diagnosis,
        problem=problem,
    )
