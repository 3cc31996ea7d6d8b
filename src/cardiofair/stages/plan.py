"""`cardiofair plan`: how many synthetic records each subgroup cell gets, as a plan CSV."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from cardiofair.data.records import read_manifest
from cardiofair.data.split import training_rows
from cardiofair.plan import format_plan, plan_synthesis, write_plan
from cardiofair.settings import PlanSettings

# The plan, one row per cell.
Result = pd.DataFrame


def run(settings: PlanSettings, *, dataset: str | os.PathLike, out: str | os.PathLike,
        overwrite: bool = False) -> pd.DataFrame:
    """`cardiofair plan`: plan the training split of ``dataset``; write the plan CSV to ``out``."""
    plan = plan_synthesis(training_rows(read_manifest(dataset)), settings)
    write_plan(plan, out, overwrite=overwrite)
    return plan


def summary(plan: pd.DataFrame, paths: Any) -> str:
    """The printed plan and where it was written."""
    return f"{format_plan(plan)}\n\nplan written to {paths['out']}"

