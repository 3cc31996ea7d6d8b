"""UK Biobank short-axis cine in the ukbb_cardiac layout (Bai et al., JCMR 2018).

``ROOT/<eid>/sa_ED.nii.gz``, ``sa_ES.nii.gz``, ``seg_sa_ED.nii.gz`` and ``seg_sa_ES.nii.gz`` are
3D (X, Y, Z) volumes whose masks already use cardiofair's label order. Metadata come from a CSV
exported from the UK Biobank showcase; its column names depend on the export, so the user maps
them (``columns``). UK Biobank's 0 female / 1 male sex coding is understood as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from cardiofair.data.case import UKBB_LABELS, CaseSource
from cardiofair.data.cohort import existing_root, is_missing, no_subjects, read_table, row_meta, subject_source
from cardiofair.diagnoses import canonical_diagnosis, icd10_diagnosis
from cardiofair.errors import MissingInputError, SettingsError

DATASET = "ukbb"
# cardiofair name -> CSV column. Only subject_id must be in the CSV; the diagnosis comes from
# the diagnosis column where given, else from the ICD-10 codes (I50 = heart failure).
DEFAULT_COLUMNS = {
    "subject_id": "eid",
    "sex": "sex",
    "age_years": "age",
    "bmi": "bmi",
    "height_cm": "height",
    "weight_kg": "weight",
    "diagnosis": "diagnosis",
    "icd10": "icd10",
}
FILES = {"ED": ("sa_ED.nii.gz", "seg_sa_ED.nii.gz"), "ES": ("sa_ES.nii.gz", "seg_sa_ES.nii.gz")}
LAYOUT = "ROOT/<eid>/sa_ED.nii.gz, sa_ES.nii.gz, seg_sa_ED.nii.gz, seg_sa_ES.nii.gz"


def discover(
    root: str | os.PathLike,
    metadata: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    required: tuple[str, ...] = ("diagnosis",),
) -> list[CaseSource]:
    """Every subject folder under ``root``, sorted by eid.

    ``metadata`` is the CSV (default: the only ``*.csv`` in ``root``); ``columns`` overrides
    entries of :data:`DEFAULT_COLUMNS`, and each column named there must exist in the CSV.
    A folder without a metadata row is excluded with the reason "no metadata row".
    """
    root = existing_root(root, "UK Biobank")
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(DEFAULT_COLUMNS))
    if unknown:
        raise SettingsError("columns", f"has unknown UK Biobank column key(s) {unknown}; choose from "
                            f"{list(DEFAULT_COLUMNS)}")
    table = read_table(_metadata_path(root, metadata), {**DEFAULT_COLUMNS, **columns},
                       mandatory=("subject_id", *columns))
    folders = [d for d in sorted(root.iterdir(), key=lambda d: d.name)
               if d.is_dir() and any((d / name).exists() for pair in FILES.values() for name in pair)]
    if not folders:
        raise no_subjects(root, "UK Biobank", LAYOUT)
    sources = []
    for folder in folders:
        row = table.row(folder.name)
        code, reader = _diagnosis_source(row)
        sources.append(subject_source(
            folder.name,
            dataset=DATASET,
            frames={name: (str(folder / image), str(folder / mask), None) for name, (image, mask) in FILES.items()},
            labels=UKBB_LABELS,
            meta={**row_meta(row), "diagnosis": code},
            source=str(table.path),
            required=required,
            diagnosis=reader,
            problem=table.exclusion(folder.name),
            numeric_sex=True,
        ))
    return sources


def _metadata_path(root: Path, metadata: str | os.PathLike | None) -> Path:
    if metadata is not None:
        return Path(metadata)
    tables = sorted(root.glob("*.csv"))
    if len(tables) != 1:
        found = f"found {[t.name for t in tables]}" if tables else "found none"
        raise MissingInputError(f"UK Biobank needs a metadata CSV: pass metadata=PATH ({found} in {root})")
    return tables[0]


def _diagnosis_source(row: Mapping[str, str]) -> tuple[Any, Callable[[Any], str | None] | None]:
    # An explicit diagnosis wins over codes: it may come from an adjudicated definition.
    if not is_missing(row.get("diagnosis")):
        return row["diagnosis"], canonical_diagnosis
    if not is_missing(row.get("icd10")):
        return row["icd10"], icd10_diagnosis
    return None, None
