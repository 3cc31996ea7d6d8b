"""`cardiofair generate`: the synthetic dataset a plan asks for, drawn by a trained generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cardiofair.data.summary import summary_text
from cardiofair.diffusion import quiet_model_loading
from cardiofair.generate import generate
from cardiofair.plan import read_plan
from cardiofair.settings import GenerateSettings

# The synthetic dataset's folder.
Result = Path


def run(settings: GenerateSettings, *, model: str | os.PathLike, dataset: str | os.PathLike,
        plan: str | os.PathLike, out: str | os.PathLike, masks: str | os.PathLike | None = None, resume: bool = True,
        overwrite: bool = False, progress: bool = True) -> Path:
    """`cardiofair generate`: every record of the plan CSV at ``plan`` (see :func:`generate`)."""
    quiet_model_loading()
    return generate(model, dataset, read_plan(plan), out, settings, overwrite=overwrite, progress=progress,
                    resume=resume, masks=masks)


def summary(out: Path, paths: Any) -> str:
    """The synthetic dataset's subgroup table."""
    return summary_text(out)

