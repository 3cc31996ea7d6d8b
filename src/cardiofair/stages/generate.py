"""`cardiofair generate`: the synthetic dataset a plan asks for, drawn by a trained generator."""

from __future__ import annotations

import os
from typing import Any

from cardiofair.data.summary import records_text
from cardiofair.diffusion import quiet_model_loading
from cardiofair.generate import generate
from cardiofair.results import GenerateResult, PlanResult
from cardiofair.settings import GenerateSettings

Result = GenerateResult


def run(settings: GenerateSettings, *, model: str | os.PathLike, dataset: str | os.PathLike,
        plan: str | os.PathLike, out: str | os.PathLike, masks: str | os.PathLike | None = None, resume: bool = True,
        overwrite: bool = False, progress: bool = True) -> GenerateResult:
    """`cardiofair generate`: every record of the plan at ``plan`` (the CSV or the plan stage's folder) (see :func:`generate`)."""
    quiet_model_loading()
    return GenerateResult.load(generate(model, dataset, PlanResult.load(plan).plan, out, settings, overwrite=overwrite,
                                        progress=progress, resume=resume, masks=masks))


def summary(result: GenerateResult, paths: Any) -> str:
    """The synthetic dataset's subgroup table."""
    # Generation writes no exclusions (its excluded.csv is empty): a record it cannot draw stops the run.
    return records_text(result.folder, result.records, 0)
