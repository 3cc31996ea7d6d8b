"""The M&Ms challenges: multi-centre, multi-vendor cardiac MRI.

M&Ms-1 (Campello et al., IEEE TMI 2021): one 4D cine per subject, ``<code>_sa.nii.gz`` with
``<code>_sa_gt.nii.gz`` (X, Y, Z, T; annotated at ED and ES only), in ``Training/Labeled``,
``Training/Unlabeled``, ``Validation`` and ``Testing``. The information CSV (header
``External code,VendorName,Vendor,Centre,ED,ES,...``) gives the 0-based ED and ES frame indices,
and in its 2021 release the pathology, sex, age, height and weight.

M&Ms-2 (Martin-Isla et al., IEEE JBHI 2023): 3D ``<id>/<id>_SA_ED.nii.gz``, ``<id>_SA_ES.nii.gz``
and their ``_gt`` masks, with ``dataset_information.csv`` (SUBJECT_CODE, DISEASE, SEX, AGE,
VENDOR, SCANNER, FIELD). Both use labels 1 LV, 2 myocardium, 3 RV, cardiofair's order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from cardiofair.data.case import UKBB_LABELS, CaseSource
from cardiofair.data.cohort import (
    MetadataTable,
    existing_root,
    frame_number,
    no_subjects,
    read_table,
    row_meta,
    split_name,
    subject_source,
    unique_subjects,
)
from cardiofair.data.records import FRAMES
from cardiofair.diagnoses import mnms2_diagnosis, mnms_diagnosis
from cardiofair.errors import InputError, MissingInputError

MNMS_COLUMNS = {
    "subject_id": "External code",
    "ED": "ED",
    "ES": "ES",
    "diagnosis": "Pathology",
    "sex": "Sex",
    "age_years": "Age",
    "height_cm": "Height",
    "weight_kg": "Weight",
    "vendor": "VendorName",
    "vendor_code": "Vendor",
    "centre": "Centre",
}
MNMS2_COLUMNS = {
    "subject_id": "SUBJECT_CODE",
    "diagnosis": "DISEASE",
    "sex": "SEX",
    "age_years": "AGE",
    "vendor": "VENDOR",
    "scanner": "SCANNER",
    "field_strength_t": "FIELD",
}
MNMS2_TABLE = "dataset_information.csv"
MNMS2_FILE = re.compile(r"(?P<id>.+)_SA_(?:ED|ES)(?:_gt)?\.nii\.gz")


def discover(
    root: str | os.PathLike,
    metadata: str | os.PathLike | None = None,
    required: tuple[str, ...] = ("diagnosis",),
) -> list[CaseSource]:
    """Every M&Ms-1 cine (``*_sa.nii.gz``, searched recursively) under ``root``, sorted by code.

    ``metadata`` is the information CSV (default: the one in ``root`` or a folder just below
    with an ``External code`` column). Unlabelled subjects are excluded with a reason.
    """
    root = existing_root(root, "M&Ms")
    cines = unique_subjects(((path.name[: -len("_sa.nii.gz")], path.parent) for path in root.rglob("*_sa.nii.gz")),
                            "M&Ms")
    if not cines:
        raise no_subjects(root, "M&Ms", "<code>_sa.nii.gz cines, e.g. in Training/Labeled/<code>/")
    table = read_table(metadata if metadata is not None else _mnms_table(root), MNMS_COLUMNS,
                       mandatory=("subject_id", "ED", "ES"))
    return [_mnms_source(code, folder, root, table, required) for code, folder in cines.items()]


def _mnms_source(code: str, folder: Path, root: Path, table: MetadataTable, required: tuple[str, ...]) -> CaseSource:
    image, mask = folder / f"{code}_sa.nii.gz", folder / f"{code}_sa_gt.nii.gz"
    row = table.row(code)
    problem = table.exclusion(code)
    if not mask.exists():
        # The challenge's unlabelled training cines: no mask, so nothing to condition on.
        problem = (str(mask), f"unlabelled subject: no ground-truth mask {mask.name}")
    indices = {}
    for name in FRAMES:
        try:
            indices[name] = frame_number(row[name], f"{name} frame index") if problem is None else None
        except ValueError as error:
            problem = (str(table.path), str(error))
    meta = row_meta(row, ("centre",))
    meta["vendor"] = row.get("vendor") or row.get("vendor_code")
    meta["source_split"] = split_name(folder, root)
    return subject_source(
        code,
        dataset="mnms",
        frames={name: (str(image), str(mask), indices.get(name)) for name in FRAMES},
        labels=UKBB_LABELS,
        meta=meta,
        source=str(table.path),
        required=required,
        diagnosis=mnms_diagnosis,
        problem=problem,
    )


def _mnms_table(root: Path) -> Path:
    candidates = [path for path in sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv"))
                  if MNMS_COLUMNS["subject_id"] in _header(path)]
    if len(candidates) > 1:
        # Older releases lack the pathology column; the 2021 one is the one to use.
        candidates = [path for path in candidates if MNMS_COLUMNS["diagnosis"] in _header(path)] or candidates
    if not candidates:
        raise MissingInputError(f"M&Ms needs its information CSV (with an 'External code' column): none in {root}; "
                                f"pass metadata=PATH")
    if len(candidates) > 1:
        raise InputError(f"several M&Ms information CSVs {[str(c) for c in candidates]}: pass metadata=PATH")
    return candidates[0]


def _header(path: Path) -> list[str]:
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return []


def discover_mnms2(
    root: str | os.PathLike,
    metadata: str | os.PathLike | None = None,
    required: tuple[str, ...] = ("diagnosis",),
) -> list[CaseSource]:
    """Every M&Ms-2 subject (``<id>_SA_ED/ES[_gt].nii.gz``, searched recursively), sorted by id.

    ``metadata`` defaults to ``dataset_information.csv`` in ``root`` or its parent (the archive
    keeps it beside the ``dataset`` folder); without one, all metadata are unknown.
    """
    root = existing_root(root, "M&Ms-2")
    found = ((match["id"], path.parent) for path in root.rglob("*_SA_E*.nii.gz")
             if (match := MNMS2_FILE.fullmatch(path.name)))
    subjects = unique_subjects(found, "M&Ms-2")
    if not subjects:
        raise no_subjects(root, "M&Ms-2", "<id>/<id>_SA_ED.nii.gz, <id>_SA_ES.nii.gz and their _gt masks")
    if metadata is None:
        metadata = next((p for p in (root / MNMS2_TABLE, root.parent / MNMS2_TABLE) if p.is_file()), None)
    table = read_table(metadata, MNMS2_COLUMNS) if metadata is not None else None
    return [
        subject_source(
            subject,
            dataset="mnms2",
            frames={name: (str(folder / f"{subject}_SA_{name}.nii.gz"), str(folder / f"{subject}_SA_{name}_gt.nii.gz"),
                           None) for name in FRAMES},
            labels=UKBB_LABELS,
            meta=row_meta(table.row(subject) if table else {}, ("vendor", "scanner", "field_strength_t")),
            source=str(table.path) if table else str(folder),
            required=required,
            diagnosis=mnms2_diagnosis,
            problem=table.exclusion(subject) if table else None,
        )
        for subject, folder in subjects.items()
    ]
