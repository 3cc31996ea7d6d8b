"""`cardiofair masks`: the mask generator, trained on a prepared dataset's training split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cardiofair.io import StagingDirectory
from cardiofair.masks import train_mask_model
from cardiofair.masks.shape_model import ShapeModel
from cardiofair.settings import MaskSettings

# The mask generator's folder.
Result = Path


def run(settings: MaskSettings, *, dataset: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
        progress: bool = True) -> Path:
    """`cardiofair masks`: train the mask generator on ``dataset``'s training split into ``out``."""
    with StagingDirectory(out, overwrite=overwrite) as staging:
        train_mask_model(dataset, settings, progress).save(staging.tmp)
        return staging.commit()


def summary(out: Path, paths: Any) -> str:
    """Where the mask generator is, and how much shape its modes keep."""
    model = ShapeModel.load(out)
    return (f"mask generator written to {out}: {model.info['components']} shape modes keep "
            f"{100 * model.info['explained_variance']:.1f}% of the training masks' variance "
            f"({model.info['training']['n_records']} training records)")

