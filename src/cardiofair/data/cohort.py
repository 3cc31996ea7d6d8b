"""What the real-cohort loaders share: the root check, metadata tables, and the lazy subject loader.

Discovery only lists files and reads small CSV tables; everything that can be wrong with one
subject (its metadata, its frame numbers, its NIfTI files) is raised from
:func:`load_subject`, so that the subject is excluded with a reason and the cohort goes on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from cardiofair.data.case import Case, CaseSource, clean_meta, load_frames
from cardiofair.errors import InputError, MissingInputError, SubjectError
from cardiofair.prompts import is_missing

# The metadata every loader fills (unknown values stay None); anything else in a loader's raw
# metadata is a dataset extra (vendor, centre, ...) carried into the manifest.
META_KEYS = ("sex", "age_years", "height_cm", "weight_kg", "bmi", "diagnosis")
SPLITS = ("training", "validation", "testing")

Frames = Mapping[str, tuple[str, str, int | None]]


def existing_root(root: str | os.PathLike, dataset: str) -> Path:
    """``root`` as a Path, or a clear error when it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MissingInputError(f"{dataset} root {path} does not exist or is not a folder")
    return path


def no_subjects(root: Path, dataset: str, layout: str) -> InputError:
    """The error for a root in which discovery found nobody, with the layout it looked for."""
    return InputError(f"no {dataset} subjects found under {root}; expected {layout}")


def unique_subjects(found: Iterable[tuple[str, Path]], dataset: str) -> dict[str, Path]:
    """Subject id -> folder, sorted by id; an id found twice makes the root ambiguous."""
    subjects: dict[str, Path] = {}
    for subject_id, folder in found:
        if subject_id in subjects and subjects[subject_id] != folder:
            raise InputError(f"{dataset} subject {subject_id} is found twice, in {subjects[subject_id]} and "
                             f"{folder}; point the root at one copy of the dataset")
        subjects[subject_id] = folder
    return dict(sorted(subjects.items()))


def split_name(path: Path, root: Path) -> str | None:
    """The official split (training/validation/testing) a subject's folder sits in, if any."""
    for part in path.relative_to(root).parts:
        if part.lower() in SPLITS:
            return part.lower()
    return root.name.lower() if root.name.lower() in SPLITS else None


def subject_key(value: Any) -> str:
    """The key that matches a subject between folder names and a table.

    Numeric ids lose their leading zeros (M&Ms-2 folder ``001`` is ``SUBJECT_CODE`` 1) and a
    trailing ``.0`` (an id column that went through a float).
    """
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.0+)?", text):
        return text.split(".")[0].lstrip("0") or "0"
    return text


def frame_number(value: Any, name: str, first: int = 0) -> int:
    """A frame number read from a table or config file, at least ``first``."""
    text = str(value).strip()
    if not re.fullmatch(r"\d+(\.0+)?", text):
        raise InputError(f"{name} {text!r} is not a frame number")
    number = int(text.split(".")[0])
    if number < first:
        raise InputError(f"{name} {number} is below the first frame number {first}")
    return number


@dataclass
class MetadataTable:
    """A metadata CSV, its columns renamed to cardiofair's names, rows keyed by subject."""

    path: Path
    columns: list[str]
    rows: dict[str, dict[str, str]]
    duplicated: set[str]

    def exclusion(self, subject_id: str) -> tuple[str, str] | None:
        """(table, reason) when ``subject_id`` has no usable row; None when it has exactly one."""
        key = subject_key(subject_id)
        if key in self.duplicated:
            return str(self.path), "more than one metadata row"
        if key not in self.rows:
            return str(self.path), "no metadata row"
        return None

    def row(self, subject_id: str) -> dict[str, str]:
        """The subject's row (empty when it has none)."""
        return dict(self.rows.get(subject_key(subject_id), {}))


def read_table(
    path: str | os.PathLike,
    columns: Mapping[str, str] | None = None,
    mandatory: Iterable[str] = ("subject_id",),
) -> MetadataTable:
    """Read a metadata CSV; ``columns`` maps cardiofair names to the CSV's column names
    (None: every column under its own name).

    Every value is kept as text (ids keep their leading zeros; numbers are checked later, per
    subject). A column in ``mandatory`` that the CSV lacks is an error for the whole table; other
    mapped columns the CSV lacks are simply unknown.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"metadata table {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    columns = dict(columns) if columns is not None else {c: c for c in table.columns}
    lacking = [repr(columns.get(name, name)) for name in mandatory if columns.get(name, name) not in table.columns]
    if lacking:
        raise InputError(f"{path} lacks the column(s) {', '.join(lacking)}; its columns are {list(table.columns)}")
    present = {name: column for name, column in columns.items() if column in table.columns}
    rows: dict[str, dict[str, str]] = {}
    duplicated: set[str] = set()
    for record in table.to_dict("records"):
        row = {name: str(record[column]).strip() for name, column in present.items()}
        if is_missing(row["subject_id"]):
            continue
        key = subject_key(row["subject_id"])
        if key in rows:
            duplicated.add(key)
        rows[key] = row
    return MetadataTable(path=path, columns=list(table.columns), rows=rows, duplicated=duplicated)


def row_meta(row: Mapping[str, Any], extras: Iterable[str] = ()) -> dict[str, Any]:
    """A table row's raw values for :data:`META_KEYS` and the named extras (None where absent)."""
    return {key: row.get(key) for key in (*META_KEYS, *extras)}


def load_subject(
    subject_id: str,
    dataset: str,
    frames: Frames,
    labels: Mapping[int, int],
    meta: Mapping[str, Any],
    source: str,
    required: tuple[str, ...] = ("diagnosis",),
    diagnosis: Callable[[Any], str | None] | None = None,
    problem: tuple[str, str] | None = None,
    numeric_sex: bool = False,
) -> Case:
    """Load one subject found by a loader's discovery.

    ``meta`` holds raw metadata (from ``source``, the table or file it was read from);
    ``diagnosis`` turns the raw diagnosis code into a canonical name; ``problem`` is a
    ``(file, reason)`` that discovery already knows excludes the subject; ``numeric_sex``
    accepts UK Biobank's 0/1 sex coding.
    """
    if problem is not None:
        raise SubjectError(subject_id, problem[0], problem[1])
    raw = {key: None if is_missing(value) else value for key, value in meta.items()}
    code = raw.get("diagnosis")
    if diagnosis is not None and code is not None:
        try:
            raw["diagnosis"] = diagnosis(code)
        except ValueError as error:
            raise SubjectError(subject_id, source, str(error)) from None
        if raw["diagnosis"] is None and "diagnosis" in required:
            raise SubjectError(subject_id, source, f"diagnosis code {code!r} names no specific diagnosis")
    cleaned = clean_meta(subject_id, raw, source, required, numeric_sex)
    return load_frames(subject_id, dataset, frames, labels, cleaned)


def subject_source(subject_id: str, **arguments: Any) -> CaseSource:
    """A :class:`CaseSource` that runs :func:`load_subject` with ``arguments``."""
    return CaseSource(subject_id=subject_id, loader=load_subject, arguments={"subject_id": subject_id, **arguments})
