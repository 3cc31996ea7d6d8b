"""Subgroup tables of a prepared dataset: where the cohort is thin, at a glance.

Pandas only (no torch): planning reuses these counts.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from cardiofair.data import EXCLUDED
from cardiofair.data.records import is_synthetic, read_manifest, real_records
from cardiofair.diagnoses import HEALTHY
from cardiofair.prompts import (
    ATTRIBUTES,
    DEFAULT_SCHEMA,
    UNKNOWN,
    PromptSchema,
    cell_columns,
    is_missing,
    parse_prompt,
    subgroup_cell,
)


def with_cells(manifest: pd.DataFrame, schema: PromptSchema = DEFAULT_SCHEMA) -> pd.DataFrame:
    """The binned cell attributes of each manifest row (``sex``, ``age``, ``bmi``, ``diagnosis``),
    on the manifest's index; unknown values read :data:`~cardiofair.prompts.UNKNOWN`."""
    cells = [record_cell(row, schema) for row in manifest.to_dict("records")]
    return pd.DataFrame(cells, columns=list(cell_columns(schema)), index=manifest.index)


def unrecorded(binned: pd.DataFrame, attributes: Iterable[str]) -> list[str]:
    """The attributes among ``attributes`` that no row of ``binned`` (cells as :func:`with_cells`
    gives them) knows: a cohort such as the public M&Ms copy records no sex, age, BMI or
    diagnosis, and what it never records is left out, never guessed."""
    return [a for a in attributes if a in binned.columns and binned[a].eq(UNKNOWN).all()]


def no_diagnosis_reason(manifest: pd.DataFrame) -> str | None:
    """Why a diagnosis classifier cannot be trained on ``manifest``'s real records, or None when
    some real record has a diagnosis: without one there is no positive class to detect."""
    real = real_records(manifest)
    if unrecorded(with_cells(real), ["diagnosis"]):
        return "no real record has a diagnosis, so a classifier has no positive class to detect"
    return None


def attribute_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """The binned prompt attributes of each record (from metadata, or the prompt when synthetic)."""
    return with_cells(manifest).reset_index(drop=True)


def cell_attributes(rows: pd.DataFrame, attributes: pd.DataFrame) -> list[str]:
    """The attributes that name synthetic records' planned cells (read from the ``cell`` column
    the generator writes, given the records' binned ``attributes``); all cell attributes when
    there is none."""
    if "cell" in rows.columns:
        cells = rows["cell"].astype(str).reset_index(drop=True)
        binned = attributes.reset_index(drop=True)
        for size in range(len(ATTRIBUTES), 0, -1):
            for names in itertools.combinations(ATTRIBUTES, size):
                if (binned[list(names)].agg("|".join, axis=1) == cells).all():
                    return list(names)
    return list(ATTRIBUTES)


def record_cell(row: dict, schema: PromptSchema = DEFAULT_SCHEMA) -> tuple[str, ...]:
    """A record's subgroup cell: from its metadata for real records, from the prompt it was
    drawn with for synthetic ones (which have no measured age or BMI)."""
    if is_synthetic(row) and not is_missing(row.get("prompt")):
        values = parse_prompt(str(row["prompt"]), schema)
        return tuple(values[a] or UNKNOWN for a in cell_columns(schema))
    return subgroup_cell(row, schema)


def cell_counts(manifest: pd.DataFrame, schema: PromptSchema = DEFAULT_SCHEMA) -> pd.DataFrame:
    """Records per subgroup cell: one row per sensitive cell, one count column per diagnosis."""
    binned = with_cells(manifest, schema)
    sensitive = [c for c in binned.columns if c != "diagnosis"]
    if "diagnosis" not in binned.columns:
        return binned.value_counts(sensitive).rename("n").sort_index().reset_index()
    table = pd.crosstab([binned[c] for c in sensitive], binned["diagnosis"]) if sensitive else \
        binned["diagnosis"].value_counts().to_frame().T
    table.columns.name = None
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def prevalence_by_group(manifest: pd.DataFrame, schema: PromptSchema = DEFAULT_SCHEMA) -> pd.DataFrame:
    """Per sensitive attribute and group: n, count per diagnosis, and the percentage of each
    non-healthy diagnosis, so that e.g. rare female heart failure shows as a low percentage."""
    binned = with_cells(manifest, schema)
    if "diagnosis" not in binned.columns:
        raise ValueError("the prompt schema has no diagnosis: prevalence needs one")
    diagnoses = sorted(binned["diagnosis"].unique(), key=lambda d: (d != HEALTHY, d))
    rows = []
    for attribute in (c for c in binned.columns if c != "diagnosis"):
        for group, part in binned.groupby(attribute, sort=True):
            counts = part["diagnosis"].value_counts()
            row = {"attribute": attribute, "group": group, "n": len(part)}
            row.update({d: int(counts.get(d, 0)) for d in diagnoses})
            row.update({f"% {d}": round(100.0 * counts.get(d, 0) / len(part), 1) for d in diagnoses if d != HEALTHY})
            rows.append(row)
    return pd.DataFrame(rows)


def summary_text(root: str | os.PathLike, schema: PromptSchema = DEFAULT_SCHEMA) -> str:
    """The printed summary of a prepared dataset: totals, prevalence by group, cell counts."""
    excluded_path = Path(root) / EXCLUDED
    n_excluded = len(pd.read_csv(excluded_path)) if excluded_path.is_file() else 0
    return records_text(root, read_manifest(root), n_excluded, schema)


def records_text(root: str | os.PathLike, manifest: pd.DataFrame, n_excluded: int,
                 schema: PromptSchema = DEFAULT_SCHEMA) -> str:
    """The printed summary of the records ``manifest`` of the dataset at ``root``, of which
    ``n_excluded`` subjects were excluded: totals, prevalence by group, cell counts."""
    datasets = ", ".join(sorted(manifest["dataset"].astype(str).unique())) or "empty"
    synthetic = sum(is_synthetic(row) for row in manifest.to_dict("records"))
    lines = [
        f"{root}: {len(manifest)} records from {manifest['subject_id'].nunique()} subjects ({datasets}); "
        f"{synthetic} synthetic; {n_excluded} subjects excluded",
    ]
    if manifest.empty:
        return "\n".join(lines)
    diagnosis = manifest["diagnosis"].astype(object).fillna(UNKNOWN).value_counts()
    lines.append("diagnosis: " + ", ".join(f"{d} {n} ({100.0 * n / len(manifest):.1f}%)" for d, n in diagnosis.items()))
    if "diagnosis" in schema.attributes:
        lines += ["", "Diagnosis prevalence per sensitive group:", prevalence_by_group(manifest, schema).to_string(index=False)]
    lines += ["", "Records per subgroup cell:", cell_counts(manifest, schema).to_string(index=False)]
    return "\n".join(lines)
