"""`cardiofair masks`: the mask generator, trained on a prepared dataset's training split."""

from __future__ import annotations

import os
from typing import Any

from cardiofair.io import StagingDirectory
from cardiofair.masks import train_mask_model
from cardiofair.results import MasksResult
from cardiofair.settings import MaskSettings

Result = MasksResult


def run(settings: MaskSettings, *, dataset: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
        progress: bool = True) -> MasksResult:
    """`cardiofair masks`: train the mask generator on ``dataset``'s training split into ``out``."""
    with StagingDirectory(out, overwrite=overwrite) as staging:
        train_mask_model(dataset, settings, progress).save(staging.tmp)
        return MasksResult.load(staging.commit())


def summary(result: MasksResult, paths: Any) -> str:
    """Where the mask generator is, and how much shape its modes keep."""
    info = result.card
    return (f"mask generator written to {result.folder}: {info['components']} shape modes keep "
            f"{100 * info['explained_variance']:.1f}% of the training masks' variance "
            f"({info['training']['n_records']} training records)")

