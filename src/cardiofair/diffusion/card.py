"""The model card: ``cardiofair.json`` in a model directory, written last, so that its presence marks
a finished model. It says how to sample from the model and what it was trained on."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from cardiofair import __version__
from cardiofair.data.split import subject_hashes
from cardiofair.data.summary import cell_counts
from cardiofair.diffusion.presets import Preset, SamplerSettings, TrainingDefaults
from cardiofair.diffusion.validation import LossJump
from cardiofair.io import atomic_write
from cardiofair.prompts import DEFAULT_SCHEMA
from cardiofair.results import TrainResult


def write_model_card(out: Path, preset: Preset, settings: TrainingDefaults, manifest: pd.DataFrame, steps: int,
                     elapsed_s: float, dataset: str | os.PathLike, processes: int, sampling: SamplerSettings,
                     precision: str, jump: LossJump | None = None) -> None:
    """Write the card of the model in ``out``, trained with ``settings`` (the run's
    ``TrainSettings``) on the records of ``manifest`` for ``steps`` steps in ``elapsed_s`` seconds,
    computing in ``precision`` (``settings.mixed_precision`` as this machine resolved it), its loss
    having jumped as ``jump`` says (None: it did not)."""
    counts = cell_counts(manifest, DEFAULT_SCHEMA)
    info = {
        "cardiofair_version": __version__,
        "preset": preset.name,
        "family": preset.family,
        "image_channels": preset.image_channels,
        "channel_names": ["ED", "ES"],
        "size": preset.size,
        "condition_mode": preset.condition_mode,
        "prompt_schema": DEFAULT_SCHEMA.to_dict(),
        "sampling": asdict(sampling),
        "training": {
            "dataset": str(dataset),
            "n_records": len(manifest),
            "steps": steps,
            "minutes": round(elapsed_s / 60.0, 2),
            "settings": asdict(settings),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "precision": precision,
            "distributed": {"processes": processes},
            "loss_jump": None if jump is None else asdict(jump),
        },
        "training_cells": counts.to_dict("records"),
        # Hashes, not the ids: enough to refuse generating from a split whose validation or test
        # subjects this model learned, without writing patient identifiers into a shareable model.
        "training_subject_hashes": subject_hashes(manifest["subject_id"]),
    }
    atomic_write(out / TrainResult.FILE, json.dumps(info, indent=2, default=str) + "\n")
