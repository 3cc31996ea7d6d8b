"""The M&Ms challenges: multi-centre, multi-vendor cardiac MRI.

M&Ms-1 (Campello et al., IEEE TMI 2021): one 4D cine per subject, ``<code>_sa.nii.gz`` with
``<code>_sa_gt.nii.gz`` (X, Y, Z, T; annotated at ED and ES only), in ``Training/Labeled``,
``Training/Unlabeled``, ``Validation`` and ``Testing``. The information CSV (header
``External code,VendorName,Vendor,Centre,ED,ES,...``) gives the 0-based ED and ES frame indices,
and in its 2021 release the pathology, sex, age, height and weight.

M&Ms-2 (Martin-Isla et al., IEEE JBHI 2023): 3D ``<id>/<id>_SA_ED.nii.gz``, ``<id>_SA_ES.nii.gz``
and their ``_gt`` masks, with ``dataset_information.csv`` (SUBJECT_CODE, DISEASE, SEX, AGE,
VENDOR, SCANNER, FIELD). Both use labels 1 LV, 2 myocardium, 3 RV, cardiofair's order.

The public copy of part of M&Ms-1 (``github:laisong127/Cardiac-segmentation``, ``Different_Vendor``)
keeps the ED and ES frames as 3D ``<vendor>/ED_<code>_sa.nii.gz`` and ``ES_<code>_sa.nii.gz``
with masks in ``LABEL_<vendor>/``, one folder per vendor code; it records no sex, age or
diagnosis, and its headers say 1 x 1 x 1 mm (the true spacing was lost).
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
# M&Ms-1's vendor codes (the information CSV's ``Vendor`` column; the copy's folder names).
VENDORS = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
COPY_FILE = re.compile(r"(?P<frame>ED|ES)_(?P<code>.+)_sa\.nii\.gz")
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


def _mnms_table(root: Path, optional: bool = False) -> Path | None:
    """The information CSV in ``root`` or a folder just below; with ``optional``, None when there is none."""
    candidates = [path for path in sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv"))
                  if MNMS_COLUMNS["subject_id"] in _header(path)]
    if len(candidates) > 1:
        # Older releases lack the pathology column; the 2021 one is the one to use.
        candidates = [path for path in candidates if MNMS_COLUMNS["diagnosis"] in _header(path)] or candidates
    if not candidates and optional:
        return None
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


def discover_copy(
    root: str | os.PathLike,
    metadata: str | os.PathLike | None = None,
    required: tuple[str, ...] = (),
) -> list[CaseSource]:
    """Every subject of the public M&Ms copy: ``ED_<code>_sa.nii.gz`` and ``ES_<code>_sa.nii.gz``
    in a vendor folder (``A``, ``B``, ...) under ``root``, masks ``*_sa_gt.nii.gz`` in
    ``LABEL_<vendor>`` beside it; sorted by code.

    The vendor comes from the folder; the centre from ``metadata`` (default: a CSV with an
    ``External code`` column in ``root`` or a folder just below, if any), a table with one row
    or several (one per slice) per subject. The copy records no diagnosis, so nothing is
    required by default. Its ``TRAIN_A`` and ``TEST_A`` folders repeat ``A`` file for file and
    are not read.
    """
    root = existing_root(root, "M&Ms copy")
    found = ((match["code"], path.parent) for path in root.rglob("E*_sa.nii.gz")
             if (match := COPY_FILE.fullmatch(path.name)) and path.parent.name in VENDORS)
    subjects = unique_subjects(found, "M&Ms copy")
    if not subjects:
        raise no_subjects(root, "M&Ms copy", "A/ED_<code>_sa.nii.gz, A/ES_<code>_sa.nii.gz and their masks in "
                                             "LABEL_A/ (one folder per vendor code)")
    if metadata is None:
        metadata = _mnms_table(root, optional=True)
    centres = _centres(Path(metadata)) if metadata is not None else {}
    sources = []
    for code, folder in subjects.items():
        labels = folder.parent / f"LABEL_{folder.name}"
        meta = row_meta({}, ("vendor", "vendor_code", "centre"))
        meta.update(vendor=VENDORS[folder.name], vendor_code=folder.name)
        centre = centres.get(code)
        problem = None
        if isinstance(centre, list):
            problem = (str(metadata), f"the metadata table gives several centres {centre}")
        else:
            meta["centre"] = centre
        sources.append(subject_source(
            code,
            dataset="mnms-copy",
            frames={name: (str(folder / f"{name}_{code}_sa.nii.gz"), str(labels / f"{name}_{code}_sa_gt.nii.gz"),
                           None) for name in FRAMES},
            labels=UKBB_LABELS,
            meta=meta,
            source=str(metadata) if metadata is not None else str(folder),
            required=required,
            problem=problem,
        ))
    return sources


def _centres(path: Path) -> dict[str, str | list[str]]:
    """Subject code -> its centre, or the list of centres where the table disagrees with itself."""
    if not path.is_file():
        raise MissingInputError(f"metadata table {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    code, centre = MNMS_COLUMNS["subject_id"], MNMS_COLUMNS["centre"]
    if code not in table.columns or centre not in table.columns:
        raise InputError(f"{path} needs the columns {code!r} and {centre!r}; its columns are {list(table.columns)}")
    found = table.groupby(table[code].str.strip())[centre].agg(lambda c: sorted(set(c.str.strip()) - {""}))
    return {subject: values[0] if len(values) == 1 else values for subject, values in found.items() if values}
