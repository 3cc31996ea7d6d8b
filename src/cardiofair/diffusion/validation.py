"""What a run shows of itself while it trains: validation grids of drawn images and the loss curve,
both under ``training/``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from diffusers import DDPMScheduler
from transformers import PreTrainedTokenizerBase

from cardiofair.data.preview import mask_overlay, png_bytes
from cardiofair.diffusion.models import Models, guided_sampling
from cardiofair.diffusion.pipeline import assemble_pipeline, draw, make_sampler
from cardiofair.diffusion.presets import Preset
from cardiofair.results import TrainResult

VALIDATION_RECORDS = 8


def validation_indices(prompts: Sequence[str], count: int = VALIDATION_RECORDS) -> list[int]:
    """Fixed records for validation grids: the first record of each prompt, rarest prompts first."""
    counts = Counter(prompts)
    first = {}
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    ordered = sorted(first, key=lambda p: (counts[p], p))
    return [first[p] for p in ordered[:count]]


def validate(training_dir: Path, models: Models, tokenizer: PreTrainedTokenizerBase, noise_scheduler: DDPMScheduler,
             images: torch.Tensor, masks: torch.Tensor, prompts: Sequence[str], preset: Preset, step: int,
             guide: dict[str, torch.nn.Module] | None) -> None:
    """Draw the validation records (:func:`validation_indices`) from their masks and prompts with
    the models as they are, and write the grid ``training/validation/step-NNNNNN.png``: per row,
    the real ED with its mask, the drawn ED and ES, and the real ED."""
    index = validation_indices(prompts)
    pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, tokenizer,
                                 make_sampler(preset.sampling.sampler, noise_scheduler), models.vae,
                                 preset.pixel_unshuffle, preset.condition_unshuffle, preset.mask_in_input, guide)
    pipeline.set_progress_bar_config(disable=True)
    samples = draw(pipeline, masks[index], [prompts[i] for i in index],
                   [torch.Generator().manual_seed(i) for i in range(len(index))], guided_sampling(preset, guide),
                   preset.condition_mode)
    real = (images[index] + 1.0) / 2.0
    rows = []
    for k, i in enumerate(index):
        mask = masks[i].numpy()
        tiles = [mask_overlay(real[k, 0].numpy(), mask[0]), mask_overlay(samples[k, 0].numpy(), np.zeros_like(mask[0])),
                 mask_overlay(samples[k, 1].numpy(), np.zeros_like(mask[1])), mask_overlay(real[k, 0].numpy(),
                                                                                         np.zeros_like(mask[0]))]
        rows.append(np.concatenate(tiles, axis=1))
    folder = training_dir / TrainResult.VALIDATION
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"step-{step:06d}.png").write_bytes(png_bytes(np.concatenate(rows, axis=0)))
    (folder / "prompts.txt").write_text("".join(f"row {k}: {prompts[i]}\n" for k, i in enumerate(index)) +
                                        "columns: real ED with mask | sample ED | sample ES | real ED\n")


def write_loss_curve(training_dir: Path, history: list[dict]) -> None:
    """The loss of every step as ``training/loss.csv`` and, when there is any, plotted per stage
    (with its running mean) as ``training/loss.png``."""
    frame = pd.DataFrame(history)
    frame.to_csv(training_dir / "loss.csv", index=False)
    if frame.empty:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for stage, part in frame.groupby("stage", sort=False):
        axis.plot(part["step"], part["loss"], lw=0.5, alpha=0.4)
        axis.plot(part["step"], part["loss"].rolling(25, min_periods=1).mean(), lw=1.5, label=stage)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(training_dir / "loss.png", dpi=120)
    plt.close(figure)
