"""Subgroup cells -> synthesis plan: how many synthetic records each cell gets, and why.

Pure pandas (no torch). A cell is the tuple of binned sensitive attributes and the diagnosis,
e.g. (Female, 60s, normal, heart failure); only real records with every planned attribute known
are counted. Three strategies decide what each cell asks for:

- ``equalize``: every cell rises to the largest cell of its diagnosis, so each sensitive group
  has as many examples of each diagnosis as the best-represented one;
- ``prevalence``: within every sensitive group (one combination of the planned attributes),
  the share of ``positive_diagnosis`` among all records of the group reaches
  ``target_prevalence`` (the paper trained at 25 % heart failure). Groups below it get positive
  records, groups above it get healthy records; other diagnoses count in the denominator but
  are never added;
- ``target``: a table of target counts, or of target proportions of the listed cells' final
  total, per cell.

Then the caps: a cell gets at most ``max_ratio_per_cell`` synthetic records per real one, and
the plan at most ``max_ratio_overall`` synthetic records per planned real record, so that the
generator never stands in for a cohort it has barely seen. A cell with fewer than
``min_real_support`` real records (an unseen one has none) is filled only with
``allow_unseen_cells``: the model then composes attributes it saw rarely or never together, so
such cells are flagged and reported apart. Their per-cell cap is the larger of the ratio cap and
the largest real cell of their diagnosis, since a ratio of an empty cell means nothing.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cardiofair.data.records import real_records
from cardiofair.data.summary import unrecorded, with_cells
from cardiofair.diagnoses import HEALTHY
from cardiofair.errors import InputError, MissingInputError, OutputExistsError
from cardiofair.io import atomic_write
from cardiofair.prompts import (
    ATTRIBUTES,
    BMI_CLASSES,
    DEFAULT_SCHEMA,
    UNKNOWN,
    PromptSchema,
    parse_prompt,
    prompt_from_attributes,
)
from cardiofair.settings import MASK_POLICIES, SENSITIVE_ATTRIBUTES, PlanSettings

REQUIRED_PLAN_COLUMNS = ("cell", "real_count", "synthetic_count", "prompt", "mask_policy")
COUNT_COLUMNS = ("real_count", "requested_count", "synthetic_count", "target_count")
FLAG_COLUMNS = ("low_support", "unseen", "capped")
TARGET_VALUE_COLUMNS = ("target_count", "target_proportion")
# Slack for float ratios such as 2.3 * 100 = 229.99999999999997, which must cap at 230.
_EPS = 1e-9


class PlanError(InputError):
    """A cohort or a table that cannot be planned as asked; the message says what to change."""


def plan_synthesis(manifest: pd.DataFrame, settings: PlanSettings, schema: PromptSchema = DEFAULT_SCHEMA) -> pd.DataFrame:
    """One row per subgroup cell: real, requested, synthetic and final counts, prompt and flags.

    ``attrs`` holds the strategy, ``skipped_attributes`` (planned attributes no real record has,
    left out with the reason: a cohort such as ACDC records no sex or age; where none is left,
    the cells are the diagnoses alone; the diagnosis too when no real record has one, as in the
    public M&Ms copy: the cells' diagnosis is then unknown and left out of their prompts, and
    where no sensitive attribute is left either the one cell is the whole cohort),
    ``excluded_unknown`` (real records left out for an unknown planned attribute),
    ``unseen_cells_left_out`` and ``capped_overall``. Raises :class:`PlanError` for a schema
    without the planned attributes, for the ``prevalence`` strategy on a dataset without a
    diagnosis, and for a ``target`` plan that names a cell outside the dataset's levels or asks
    for more than the caps and support rules allow.
    """
    # Synthetic records never count as support: planning from them would feed the generator
    # its own output.
    real = real_records(manifest)
    attributes, skipped = _recorded_attributes(real, settings, schema)
    if "diagnosis" in skipped and settings.strategy == "prevalence":
        raise PlanError(f"the prevalence strategy needs a diagnosis, and the diagnosis is {skipped['diagnosis']}: "
                        "plan with the target strategy (a target count per cell) instead")
    planning = _planning_schema(attributes, schema)
    columns = [a for a in planning.attributes if a != "diagnosis"] + ["diagnosis"]
    # Without a diagnosis, the cells are the sensitive groups with their diagnosis unknown (the
    # whole cohort where no sensitive attribute is recorded either).
    known, excluded = _known_real_cells(real, columns, [c for c in columns if c not in skipped], planning)
    if known.empty:
        raise PlanError(f"nothing to plan: no real record has a known {', '.join(columns)}")
    levels = {c: sorted(known[c].unique(), key=lambda v, c=c: _level_key(c, v)) for c in columns}
    observed = known.groupby(columns).size()
    # Cells of the diagnosis alone (no sensitive attribute) still index as tuples, as the
    # target table's do.
    observed.index = pd.MultiIndex.from_frame(observed.index.to_frame(index=False))
    if settings.strategy == "target":
        wanted = _target_table(settings, columns, levels, observed, diagnosis_known="diagnosis" not in skipped)
        index = observed.index.union(wanted.index)
    elif settings.allow_unseen_cells:
        index = pd.MultiIndex.from_product([levels[c] for c in columns], names=columns)
    else:
        index = observed.index
    plan = observed.reindex(index, fill_value=0).rename("real_count").reset_index()
    rank = {c: {v: i for i, v in enumerate(levels[c])} for c in columns}
    plan = plan.sort_values(columns, key=lambda s: s.map(rank[s.name]), ignore_index=True)
    plan["cell"] = plan[columns].agg("|".join, axis=1)

    if settings.strategy == "equalize":
        plan["requested_count"] = plan.groupby("diagnosis")["real_count"].transform("max") - plan["real_count"]
    elif settings.strategy == "prevalence":
        plan["requested_count"] = _prevalence_request(plan, columns[:-1], settings, levels["diagnosis"])
    else:
        plan["requested_count"] = _target_request(plan, columns, wanted)
    plan["low_support"] = plan["real_count"] < settings.min_real_support
    plan["unseen"] = plan["real_count"] == 0
    eligible = ~plan["low_support"] | settings.allow_unseen_cells
    cap = _cell_caps(plan, settings)
    plan["capped"] = eligible & (plan["requested_count"] > cap)
    plan["synthetic_count"] = plan["requested_count"].where(eligible, 0).clip(upper=cap)
    total_real = int(plan["real_count"].sum())
    budget = math.floor(settings.max_ratio_overall * total_real + _EPS)
    if settings.strategy == "target":
        _check_target_fits(plan, eligible, cap, budget, settings)
    capped_overall = int(plan["synthetic_count"].sum()) > budget
    if capped_overall:
        plan["synthetic_count"] = _scale_to_budget(plan["synthetic_count"], budget)

    plan["target_count"] = plan["real_count"] + plan["synthetic_count"]
    plan["prompt"] = [prompt_from_attributes(_known(values), planning) for values in plan[columns].to_dict("records")]
    plan["mask_policy"] = settings.mask_policy
    plan = plan[["cell", *columns, *COUNT_COLUMNS, "prompt", "mask_policy", *FLAG_COLUMNS]]
    unseen_left_out = 0 if settings.allow_unseen_cells or settings.strategy == "target" else \
        math.prod(len(v) for v in levels.values()) - len(plan)
    plan.attrs = {"strategy": settings.strategy, "skipped_attributes": skipped, "excluded_unknown": excluded,
                  "unseen_cells_left_out": unseen_left_out, "capped_overall": capped_overall,
                  "synthetic_budget": budget, "min_real_support": settings.min_real_support}
    return plan


def _planning_schema(attributes: tuple[str, ...], schema: PromptSchema) -> PromptSchema:
    # The schema's order, not the settings', so that cells and prompts read as everywhere else.
    missing = [a for a in (*attributes, "diagnosis") if a not in schema.attributes]
    if missing:
        raise PlanError(f"planned attribute(s) {missing} are not in the prompt schema {list(schema.attributes)}")
    kept = tuple(a for a in schema.attributes if a in attributes or a == "diagnosis")
    return PromptSchema(attributes=kept, age_bin_width=schema.age_bin_width)


def _recorded_attributes(real: pd.DataFrame, settings: PlanSettings,
                         schema: PromptSchema) -> tuple[tuple[str, ...], dict[str, str]]:
    """The planned attributes that some real record has, and those left out with the reason,
    the diagnosis among them. None may be left (a cohort that records no sensitive attribute):
    the cells are then the diagnoses, which a target table or the prevalence strategy can still
    fill; without a diagnosis either (the public M&Ms copy), the one cell is the whole cohort."""
    skipped = {a: "unknown for every real record"
               for a in unrecorded(with_cells(real, schema), (*settings.attributes, "diagnosis"))}
    return tuple(a for a in settings.attributes if a not in skipped), skipped


def _known_real_cells(real: pd.DataFrame, columns: list[str], required: list[str],
                      schema: PromptSchema) -> tuple[pd.DataFrame, int]:
    """The binned ``columns`` of the real records whose ``required`` ones are known, and how
    many records were left out for an unknown one."""
    binned = with_cells(real, schema)[columns]
    known = ~binned[required].eq(UNKNOWN).any(axis=1)
    return binned[known], int((~known).sum())


def _known(values: dict[str, str]) -> dict[str, str]:
    """A cell's values without the unknown ones, which a prompt leaves out."""
    return {a: v for a, v in values.items() if v != UNKNOWN}


def _level_key(column: str, value: str) -> tuple[Any, ...]:
    """Reading order of a level: ages by decade, BMI by WHO class, healthy before diseases."""
    if column == "age":
        return (int(re.match(r"\d+", value).group()), value)
    if column == "bmi":
        return (BMI_CLASSES.index(value), value)
    if column == "diagnosis":
        return (value != HEALTHY, value)
    return (0, value)


def _prevalence_request(plan: pd.DataFrame, groups: list[str], settings: PlanSettings, diagnoses: list[str]) -> pd.Series:
    positive, p = settings.positive_diagnosis, settings.target_prevalence
    absent = [d for d in (positive, HEALTHY) if d not in diagnoses]
    if absent:
        raise PlanError(f"the prevalence strategy needs {absent} among the real diagnoses {diagnoses}")
    is_positive = plan["diagnosis"] == positive
    # Without a sensitive attribute the whole cohort is the one group.
    keys = [plan[g] for g in groups] or [pd.Series(0, index=plan.index)]
    n = plan["real_count"].groupby(keys).transform("sum")
    positives = plan["real_count"].where(is_positive, 0).groupby(keys).transform("sum")
    # The fewest added records that bring positives / all to the target: positives where the
    # group is below it, healthy records where it is above.
    add_positive = ((p * n - positives) / (1.0 - p) - _EPS).apply(math.ceil).clip(lower=0)
    add_healthy = (positives / p - n - _EPS).apply(math.ceil).clip(lower=0)
    return add_positive.where(is_positive, add_healthy.where(plan["diagnosis"] == HEALTHY, 0)).astype(int)


def _target_table(settings: PlanSettings, columns: list[str], levels: dict[str, list[str]],
                  observed: pd.Series, diagnosis_known: bool = True) -> pd.Series:
    """The targets as final counts per cell, indexed like ``observed``. Where the dataset has no
    diagnosis the table may leave its column out: every cell's diagnosis is unknown."""
    targets = _read_targets(settings.targets)
    if not diagnosis_known and "diagnosis" not in targets.columns:
        targets = targets.assign(diagnosis=UNKNOWN)
    missing = [c for c in columns if c not in targets.columns]
    value_columns = [c for c in TARGET_VALUE_COLUMNS if c in targets.columns]
    if missing or len(value_columns) != 1:
        raise PlanError(f"the target table needs the columns {columns} and one of {list(TARGET_VALUE_COLUMNS)}; "
                         f"it has {list(targets.columns)}")
    unplanned = [c for c in targets.columns if c in ATTRIBUTES and c not in columns]
    if unplanned:
        raise PlanError(f"the target table has column(s) {unplanned}, which are not planned attributes {columns[:-1]}")
    table = targets[columns].astype(str).apply(lambda s: s.str.strip())
    for values in table.itertuples(index=False, name=None):
        for column, value in zip(columns, values):
            if value not in levels[column]:
                raise PlanError(f"target cell {'|'.join(values)} does not exist in the dataset: {column} {value!r} is "
                                 f"not among its levels {levels[column]}")
    index = pd.MultiIndex.from_frame(table)
    if index.duplicated().any():
        raise PlanError(f"the target table lists cell(s) {['|'.join(c) for c in index[index.duplicated()]]} twice")
    values = pd.to_numeric(targets[value_columns[0]], errors="coerce")
    if values.isna().any() or (values < 0).any():
        raise PlanError(f"{value_columns[0]} must be a non-negative number in every row of the target table")
    values = pd.Series(values.to_numpy(), index=index)
    real = observed.reindex(index, fill_value=0)
    if value_columns[0] == "target_count":
        if (values != values.round()).any():
            raise PlanError("target_count must be a whole number of records")
        return values.astype(int)
    return _counts_from_proportions(values, real)


def _read_targets(targets: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The target table: a CSV path as a study file or the command line give it, or the table."""
    if isinstance(targets, pd.DataFrame):
        return targets
    if not Path(targets).is_file():
        raise MissingInputError(f"{targets}: no such target table")
    return pd.read_csv(targets)


def _counts_from_proportions(proportions: pd.Series, real: pd.Series) -> pd.Series:
    # Proportions are shares of the listed cells' final total; the smallest such total that keeps
    # every real record, since the planner adds records and never removes them.
    if abs(proportions.sum() - 1.0) > 1e-6:
        raise PlanError(f"target proportions must sum to 1, got {proportions.sum():.6g}")
    impossible = real[(proportions == 0) & (real > 0)]
    if not impossible.empty:
        raise PlanError(f"cell {'|'.join(impossible.index[0])} has {impossible.iloc[0]} real records but a target "
                         "proportion of 0: the planner adds records, it never removes them")
    total = (real[proportions > 0] / proportions[proportions > 0]).max()
    return pd.concat([real, (proportions * total + 0.5).apply(math.floor)], axis=1).max(axis=1).astype(int)


def _target_request(plan: pd.DataFrame, columns: list[str], wanted: pd.Series) -> pd.Series:
    final = wanted.reindex(pd.MultiIndex.from_frame(plan[columns])).to_numpy()
    requested = pd.Series(final, index=plan.index) - plan["real_count"]
    return requested.fillna(0).clip(lower=0).astype(int)


def _cell_caps(plan: pd.DataFrame, settings: PlanSettings) -> pd.Series:
    ratio_cap = (settings.max_ratio_per_cell * plan["real_count"] + _EPS).apply(math.floor)
    largest = plan.groupby("diagnosis")["real_count"].transform("max")
    return ratio_cap.where(~plan["low_support"], ratio_cap.combine(largest, max)).astype(int)


def _check_target_fits(plan: pd.DataFrame, eligible: pd.Series, cap: pd.Series, budget: int,
                       settings: PlanSettings) -> None:
    unsupported = plan[(plan["requested_count"] > 0) & ~eligible]
    if not unsupported.empty:
        row = unsupported.iloc[0]
        raise PlanError(f"target cell {row['cell']} needs {row['requested_count']} synthetic records but has only "
                         f"{row['real_count']} real ones, fewer than min_real_support {settings.min_real_support}; "
                         "allow unseen cells to fill it")
    capped = plan[plan["capped"]]
    if not capped.empty:
        row = capped.iloc[0]
        raise PlanError(f"target cell {row['cell']} needs {row['requested_count']} synthetic records, above its cap "
                         f"of {cap[row.name]} ({settings.max_ratio_per_cell} per real record, {row['real_count']} real)")
    need = int(plan["synthetic_count"].sum())
    if need > budget:
        raise PlanError(f"the targets need {need} synthetic records, above the overall cap of {budget} "
                         f"({settings.max_ratio_overall} per real record, {int(plan['real_count'].sum())} real)")


def _scale_to_budget(counts: pd.Series, budget: int) -> pd.Series:
    """Scale counts down proportionally to sum to ``budget``: floors, then the largest remainders
    (earlier cells first on ties), so the same plan always scales the same way."""
    quota = counts * budget / counts.sum()
    scaled = quota.apply(math.floor)
    remainder = (quota - scaled).sort_values(ascending=False, kind="stable")
    scaled[remainder.index[: budget - int(scaled.sum())]] += 1
    return scaled.astype(int)


def dose_count(planned_count: int, dose: float) -> int:
    """Records of a cell at ``dose`` times its planned count (halves round up)."""
    return int(math.floor(dose * planned_count + 0.5))


def write_plan(plan: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the plan CSV through a temporary file, so no half-written plan is ever left."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, plan.to_csv(index=False))


def read_plan(path: str | os.PathLike) -> pd.DataFrame:
    """A plan CSV, checked row by row, because a hand-edited plan drives hours of generation."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such plan file (run `cardiofair plan`)")
    plan = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise PlanError(f"{path} is not a synthesis plan: it lacks the column(s) {missing}")

    def fail(row: int, problem: str) -> PlanError:
        # Line numbers as an editor shows them: the header is line 1.
        return PlanError(f"{path}, line {row + 2} (cell {plan.at[row, 'cell']!r}): {problem}")

    for column in (c for c in COUNT_COLUMNS if c in plan.columns):
        bad = ~plan[column].str.fullmatch(r"\s*\d+\s*")
        if bad.any():
            row = int(bad.idxmax())
            raise fail(row, f"{column} must be a non-negative whole number, got {plan.at[row, column]!r}")
        plan[column] = plan[column].astype(int)
    for column in (c for c in FLAG_COLUMNS if c in plan.columns):
        flags = plan[column].str.strip().map({"True": True, "False": False})
        if flags.isna().any():
            row = int(flags.isna().idxmax())
            raise fail(row, f"{column} must be True or False, got {plan.at[row, column]!r}")
        plan[column] = flags.astype(bool)
    attributes = [c for c in plan.columns if c in ATTRIBUTES]
    for row, values in enumerate(plan.to_dict("records")):
        if values["mask_policy"] not in MASK_POLICIES:
            raise fail(row, f"unknown mask policy {values['mask_policy']!r}; choose from {list(MASK_POLICIES)}")
        if "target_count" in plan.columns and values["target_count"] != values["real_count"] + values["synthetic_count"]:
            raise fail(row, "target_count must equal real_count + synthetic_count")
        try:
            parsed = {a: v for a, v in parse_prompt(values["prompt"]).items() if v is not None}
        except ValueError as error:
            raise fail(row, str(error)) from None
        if parsed != _known({a: values[a] for a in attributes}):
            raise fail(row, f"prompt {values['prompt']!r} disagrees with the cell's attributes "
                            f"{ {a: values[a] for a in attributes} }")
    duplicated = plan["cell"].duplicated()
    if duplicated.any():
        raise fail(int(duplicated.idxmax()), "the cell is listed twice")
    return plan


def format_plan(plan: pd.DataFrame) -> str:
    """The printed plan: totals, cells that get synthetic records, prevalence per sensitive
    group before and after, and the low-support and unseen cells apart."""
    attrs = plan.attrs
    attributes = [c for c in plan.columns if c in SENSITIVE_ATTRIBUTES]
    real, synthetic = int(plan["real_count"].sum()), int(plan["synthetic_count"].sum())
    strategy = f" ({attrs['strategy']})" if "strategy" in attrs else ""
    lines = [f"Synthesis plan{strategy}: {len(plan)} cells; {real} real + {synthetic} synthetic = "
             f"{real + synthetic} records ({synthetic / max(real, 1):.2f} synthetic per real)"]
    for attribute, reason in attrs.get("skipped_attributes", {}).items():
        lines.append(f"Left out of planning: {attribute} ({reason})")
    if attrs.get("excluded_unknown"):
        lines.append(f"{attrs['excluded_unknown']} real records left out of planning: a planned attribute or the "
                     "diagnosis is unknown")
    if attrs.get("capped_overall"):
        lines.append(f"The overall cap of {attrs['synthetic_budget']} synthetic records scaled every cell down "
                     "proportionally")
    shown = ["cell", "real_count", "requested_count", "synthetic_count", "target_count", "capped"]
    filled = plan.loc[plan["synthetic_count"] > 0, [c for c in shown if c in plan.columns]]
    if not filled.empty:
        met = filled.to_string(index=False)
    elif attrs.get("strategy") == "equalize" and len(plan) == 1:
        met = ("(none: equalize has nothing to equalize, as the cohort is one cell; ask for a count with the target "
               "strategy)")
    else:
        met = "(none: the dataset already meets the plan)"
    lines += ["", "Cells that get synthetic records:", met]
    if "diagnosis" not in attrs.get("skipped_attributes", {}):
        lines += ["", "Diagnosis prevalence per sensitive group, real -> planned (%):",
                  _prevalence_table(plan, attributes)]
    thin = plan[plan["low_support"]] if {"low_support", "requested_count"} <= set(plan.columns) else plan.iloc[:0]
    if not thin.empty:
        support = f" (< {attrs['min_real_support']})" if "min_real_support" in attrs else ""
        status = ["filled: the model composes attributes it saw rarely or never together" if s > 0 else
                  "not filled: allow unseen cells to fill it" if r > 0 else "nothing asked"
                  for s, r in zip(thin["synthetic_count"], thin["requested_count"])]
        table = thin[["cell", "real_count", "requested_count", "synthetic_count"]].assign(status=status)
        lines += ["", f"Low-support and unseen cells{support}:", table.to_string(index=False)]
    if attrs.get("unseen_cells_left_out"):
        lines.append(f"{attrs['unseen_cells_left_out']} combination(s) of observed levels have no real record and "
                     "are not planned; allow unseen cells to plan them")
    return "\n".join(lines)


def _prevalence_table(plan: pd.DataFrame, attributes: list[str]) -> str:
    diseases = sorted((d for d in plan["diagnosis"].unique() if d != HEALTHY), key=lambda d: _level_key("diagnosis", d))
    if not attributes:
        # No sensitive attribute planned: the cohort as one group.
        plan, attributes = plan.assign(cohort="all"), ["cohort"]
    rows = []
    for attribute in attributes:
        before = plan.pivot_table(index=attribute, columns="diagnosis", values="real_count", aggfunc="sum", fill_value=0)
        after = before + plan.pivot_table(index=attribute, columns="diagnosis", values="synthetic_count",
                                          aggfunc="sum", fill_value=0)
        for group in sorted(before.index, key=lambda v: _level_key(attribute, v)):
            n_before, n_after = before.loc[group].sum(), after.loc[group].sum()
            row = {"attribute": attribute, "group": group, "real": int(n_before), "planned": int(n_after)}
            for disease in diseases:
                row[disease] = (f"{100.0 * before.at[group, disease] / max(n_before, 1):.1f} -> "
                                f"{100.0 * after.at[group, disease] / max(n_after, 1):.1f}")
            rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)
