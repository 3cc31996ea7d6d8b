"""`cardiofair plan`: how many synthetic records each subgroup cell gets, as a plan CSV."""

from __future__ import annotations

import os
from typing import Any

from cardiofair.data.records import read_manifest
from cardiofair.data.split import training_rows
from cardiofair.plan import format_plan, plan_synthesis, write_plan
from cardiofair.results import PlanResult
from cardiofair.settings import PlanSettings

Result = PlanResult


def run(settings: PlanSettings, *, dataset: str | os.PathLike, out: str | os.PathLike,
        overwrite: bool = False) -> PlanResult:
    """`cardiofair plan`: plan the training split of ``dataset``; write the plan CSV to ``out``."""
    plan = plan_synthesis(training_rows(read_manifest(dataset)), settings)
    return PlanResult(write_plan(plan, out, overwrite=overwrite), plan)


def summary(result: PlanResult, paths: Any) -> str:
    """The printed plan and where it was written."""
    return f"{format_plan(result.plan)}\n\nplan written to {result.path}"
