"""What a run shows of itself while it trains: validation grids of drawn images and the loss curve,
both under ``training/``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
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

# A run whose loss jumps has diverged: its model draws noise. On the public M&Ms copy at cpu-real's
# constant rate, training seed 2's mean over 50 steps rose to 2.1 times its lowest earlier mean at
# step 1,821 and to 5.8 times by step 1,866 (its model drew FD-cardiofair 178 times the real
# reference), seed 0's (run on towards 5,000 steps) to 2.0 times at step 3,363 and 5.2 by 3,681;
# in 12 runs that trained well (8 on the phantom, 680 steps; 4 on the copy, 680-3,000 steps) it
# never rose above 1.11 times (docs/measurements.md, "A loss that jumps").
JUMP_WINDOW = 50
JUMP_FACTOR = 2.0


@dataclass(frozen=True)
class LossJump:
    """Where a run's running-mean loss first rose ``JUMP_FACTOR`` times above its lowest earlier mean."""

    step: int
    before: float
    after: float

    def describe(self) -> str:
        """For readers, e.g. "its loss jumped at step 1,821 (mean over 50 steps 0.082 -> 0.174)"."""
        return (f"its loss jumped at step {self.step:,} (mean over {JUMP_WINDOW} steps {self.before:.3g} -> "
                f"{self.after:.3g}): the model may draw noise; look at training/loss.png and train again with "
                "a lower --learning-rate, a decaying --lr-schedule or another --seed")


def loss_jump(history: Sequence[dict], window: int = JUMP_WINDOW, factor: float = JUMP_FACTOR) -> LossJump | None:
    """The first step of the run's ``history`` (rows with step, stage, loss) where the mean loss over
    the last ``window`` steps exceeds ``factor`` times the lowest mean of a window that ended at
    least ``window`` steps before, within one stage (stages train other parameters, so their
    losses differ); None if it never does."""
    frame = pd.DataFrame(list(history))
    if frame.empty:
        return None
    for _, part in frame.groupby("stage", sort=False):
        if len(part) < 2 * window:
            continue
        loss = part["loss"].to_numpy(dtype=float)
        # A loss that overflowed is the plainest jump of all.
        loss = np.where(np.isfinite(loss), loss, np.inf)
        mean = np.lib.stride_tricks.sliding_window_view(loss, window).mean(axis=1)
        lowest = np.minimum.accumulate(mean)
        for i in range(window, len(mean)):
            if mean[i] > factor * lowest[i - window]:
                return LossJump(int(part["step"].iloc[i + window - 1]), float(lowest[i - window]), float(mean[i]))
    return None


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
