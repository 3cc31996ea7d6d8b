"""Training the generator: one loop, readable in one sitting.

Stages (the paper's recipe, plus a joint one):
- ``base``: UNet + text encoder learn text-conditioned images (no ControlNet);
- ``control``: the ControlNet learns the mask with the base frozen (the paper's stage);
- ``decoder``: the ControlNet and the UNet's decoder half (the paper's second stage);
- ``joint``: all three together, so the mask path is used from the first step.

Every step draws its batch, noise, timesteps and prompt dropout from a generator seeded by
(seed, step, process): a run resumed from a checkpoint continues exactly as if never stopped.
Prompts are sampled with weights inverse to their frequency, capped (the paper's balanced
sampler), so rare subgroups are seen often enough to be learned.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm
from transformers import AutoTokenizer, CLIPTextModel

from cardiofair import __version__
from cardiofair.data.preview import mask_overlay, png_bytes
from cardiofair.data.records import load_images, read_manifest
from cardiofair.data.split import subject_hashes, training_rows
from cardiofair.data.summary import cell_counts
from cardiofair.diffusion import quiet_model_loading
from cardiofair.diffusion.checkpoint import CheckpointError, latest_checkpoint, load_state, save_state, write_checkpoint
from cardiofair.diffusion.conditioning import condition_channels, control_image
from cardiofair.diffusion.pipeline import assemble_pipeline, draw, make_sampler, predict
from cardiofair.diffusion.presets import (
    Preset,
    SamplerSettings,
    TrainingDefaults,
    build_controlnet,
    build_noise_scheduler,
    build_text_encoder,
    build_unet,
    get_preset,
    guide_step,
)
from cardiofair.diffusion.sample import MODEL_CARD
from cardiofair.diffusion.tokenizer import build_prompt_tokenizer, tokenize
from cardiofair.errors import CardiofairError, InputError, OutputExistsError, SettingsError
from cardiofair.io import atomic_write
from cardiofair.prompts import DEFAULT_SCHEMA, is_missing
from cardiofair.settings import TrainOptions
from cardiofair.stages import TRAIN
from cardiofair.threads import batch_parts, each_part, one_thread_each

STAGE_MODULES = {
    "base": ("unet", "text_encoder"),
    "control": ("controlnet",),
    "decoder": ("controlnet", "unet"),
    "joint": ("unet", "text_encoder", "controlnet"),
}
STAGES = tuple(STAGE_MODULES)
# What diffusers' ControlNetModel.from_unet copies from the UNet.
ENCODER_PARTS = ("conv_in", "time_proj", "time_embedding", "class_embedding", "add_embedding", "down_blocks",
                 "mid_block")
# Stable Diffusion's UNet and text encoder were trained on billions of images: only the control
# path (and optionally the UNet decoder) is adapted, as in the paper.
STABLE_DIFFUSION_STAGES = ("control", "decoder")
UNET_DECODER = ("up_blocks", "conv_norm_out", "conv_out")
MODEL_CLASSES = {"unet": UNet2DConditionModel, "controlnet": ControlNetModel, "text_encoder": CLIPTextModel}
GUIDE = "guide"
VALIDATION_RECORDS = 8


@dataclass(frozen=True)
class TrainSettings(TrainingDefaults):
    """A preset's training defaults plus the run's own choices."""

    preset: str = "cpu"
    seed: int = 0
    weights: str | None = None
    sd_config: str | None = None
    size: int | None = None
    condition_mode: str | None = None

    @classmethod
    def for_preset(cls, preset: Preset, **overrides: Any) -> "TrainSettings":
        values = asdict(preset.training)
        values["stages"] = tuple(tuple(s) for s in values["stages"])
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(None, f"unknown training setting(s) {sorted(unknown)}")
        values.update(overrides)
        return cls(preset=preset.name, **values)

    def __post_init__(self) -> None:
        for stage, fraction in self.stages:
            if stage not in STAGES:
                raise SettingsError("stages", f"has unknown stage {stage!r}; choose from {STAGES}")
            if fraction <= 0:
                raise SettingsError("stages", "fractions must be positive")
        if self.max_steps < 1 or self.batch_size < 1:
            raise SettingsError(None, "max_steps and batch_size must be at least 1")
        if self.early_batch_size is not None and self.early_batch_size < 1:
            raise SettingsError("early_batch_size", f"must be at least 1, got {self.early_batch_size}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise SettingsError("prompt_dropout", "must be in [0, 1)")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise SettingsError("mixed_precision", "must be no, fp16 or bf16")
        if self.min_timestep < 0:
            raise SettingsError("min_timestep", f"must be at least 0, got {self.min_timestep}")
        if self.guide_at is not None and not 0.0 < self.guide_at < 1.0:
            raise SettingsError("guide_at", f"must be in (0, 1), a share of the training steps, got {self.guide_at}")

    @property
    def guide_step(self) -> int | None:
        """The step whose averaged weights are kept as the guide (None: no guide)."""
        return guide_step(self.guide_at, self.max_steps)

    @property
    def saved_modules(self) -> tuple[str, ...]:
        """The models this run changes, hence the ones its checkpoints hold."""
        return tuple(n for n in MODEL_CLASSES if any(n in STAGE_MODULES[stage] for stage, _ in self.stages))

    def stage_budgets(self) -> list[tuple[str, int, float | None]]:
        """(stage, steps, minutes) per stage, splitting the totals by the stage fractions."""
        total = sum(f for _, f in self.stages)
        budgets, steps_left = [], self.max_steps
        for i, (stage, fraction) in enumerate(self.stages):
            steps = steps_left if i == len(self.stages) - 1 else max(1, round(self.max_steps * fraction / total))
            steps_left -= steps
            minutes = None if self.max_minutes is None else self.max_minutes * fraction / total
            budgets.append((stage, steps, minutes))
        return budgets


# --- data --------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """A prepared dataset held in memory: images in [-1, 1], masks, prompts, sampling weights."""

    images: torch.Tensor
    masks: torch.Tensor
    prompts: list[str]
    manifest: pd.DataFrame

    @classmethod
    def from_dataset(cls, root: str | os.PathLike, preset: Preset) -> "TrainingData":
        # Only the training split: validation and test subjects must stay unseen by the generator.
        records = load_images(root, training_rows(read_manifest(root)), size=preset.size,
                              hint=f" (preset {preset.name!r}); prepare the dataset with --size {preset.size}")
        if not len(records):
            raise InputError(f"{root} holds no real training records to train on")
        prompts = ["" if is_missing(p) else str(p) for p in records.rows["prompt"]]
        return cls(images=torch.from_numpy(records.images) * 2.0 - 1.0, masks=torch.from_numpy(records.masks),
                   prompts=prompts, manifest=records.rows)

    def sampling_weights(self, cap: float) -> torch.Tensor:
        """Per-record weights inverse to the frequency of its prompt, at most ``cap`` times the
        weight of the most frequent prompt: rare cells are seen more, but not endlessly repeated."""
        counts = Counter(self.prompts)
        most = max(counts.values())
        weights = torch.tensor([min(most / counts[p], cap) for p in self.prompts], dtype=torch.float64)
        return weights / weights.sum()


def step_generator(seed: int, step: int, process: int) -> torch.Generator:
    """The generator of one training step on one process."""
    state = np.random.SeedSequence([seed, step, process]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --- the models being trained --------------------------------------------------------------------


@dataclass
class Models:
    unet: UNet2DConditionModel
    # None in the base stage's view of the models, which leaves the ControlNet out.
    controlnet: ControlNetModel | None
    text_encoder: CLIPTextModel
    vae: AutoencoderKL | None = None

    def named(self) -> dict[str, torch.nn.Module]:
        """The models a checkpoint can hold (the VAE is never trained here)."""
        return {"unet": self.unet, "controlnet": self.controlnet, "text_encoder": self.text_encoder}


def build_models(preset: Preset, vocab_size: int, max_length: int, seed: int) -> Models:
    """Untrained models; the same seed gives the same weights, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(preset)
        controlnet = build_controlnet(preset, unet)
        text_encoder = build_text_encoder(preset, vocab_size, max_length)
    return Models(unet=unet, controlnet=controlnet, text_encoder=text_encoder)


def starting_point(preset: Preset, settings: TrainSettings, prompts: Sequence[str], tokenizer_dir: Path | None):
    """(models, tokenizer, noise scheduler) before any training: built from the preset, or
    loaded from Stable Diffusion weights with a ControlNet initialised from their UNet."""
    if preset.family == "stable-diffusion":
        from cardiofair.diffusion.stable_diffusion import load_stable_diffusion

        if settings.weights is None:
            raise SettingsError(None, f"preset {preset.name} needs --weights: a local Stable Diffusion folder or "
                                "file")
        vae, unet, text_encoder, tokenizer, scheduler = load_stable_diffusion(settings.weights, settings.sd_config)
        # One stride-2 convolution of the mask embedding per halving by the VAE (three for SD's 8x).
        halvings = len(vae.config.block_out_channels) - 1
        embedding = (16, 32, 96, 256, 256)[: halvings + 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            controlnet = build_controlnet(replace(preset, controlnet_embedding=embedding), unet)
        return Models(unet=unet, controlnet=controlnet, text_encoder=text_encoder, vae=vae), tokenizer, scheduler
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else build_prompt_tokenizer(prompts)
    models = build_models(preset, len(tokenizer.get_vocab()), tokenizer.model_max_length, settings.seed)
    return models, tokenizer, build_noise_scheduler(preset)


def load_models(folder: Path, names: Sequence[str] = tuple(MODEL_CLASSES)) -> dict[str, torch.nn.Module]:
    """Models saved by :func:`save_models` (a checkpoint or a model directory)."""
    return {name: MODEL_CLASSES[name].from_pretrained(folder / name) for name in names}


def save_models(models: Models, folder: Path, names: Sequence[str] = tuple(MODEL_CLASSES)) -> None:
    for name in names:
        models.named()[name].save_pretrained(folder / name, safe_serialization=True)


def load_guide(training_dir: Path) -> dict[str, torch.nn.Module] | None:
    """The guide kept during training (``training/guide``), or None when the run kept none (yet)."""
    folder = training_dir / GUIDE
    return load_models(folder) if folder.is_dir() else None


def guided_sampling(preset: Preset, guide: dict[str, torch.nn.Module] | None) -> SamplerSettings:
    """The preset's sampling, without autoguidance when there is no guide to steer by."""
    return preset.sampling if guide is not None else replace(preset.sampling, autoguidance=1.0)


def stage_parameters(models: Models, stage: str) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters a stage trains, per model."""
    groups = {}
    for name in STAGE_MODULES[stage]:
        module = models.named()[name]
        if stage == "decoder" and name == "unet":
            groups[name] = [p for n, p in module.named_parameters() if n.startswith(UNET_DECODER)]
        else:
            groups[name] = list(module.parameters())
    return groups


def diffusion_loss(models: Models, scheduler: DDPMScheduler, images: torch.Tensor, embeddings: torch.Tensor,
                   condition: torch.Tensor | None, generator: torch.Generator, min_snr_gamma: float | None,
                   mask_in_input: bool = False, min_timestep: int = 0) -> torch.Tensor:
    """The denoising loss of one batch at timesteps from ``min_timestep`` on, min-SNR weighted
    (Hang et al. 2023) when asked: it stops the many low-noise timesteps from dominating, which
    speeds up convergence several-fold."""
    noise, t = draw_noise(scheduler, images, generator, min_timestep)
    return image_losses(models, scheduler, images, noise, t, embeddings, condition, min_snr_gamma,
                        mask_in_input).mean()


def draw_noise(scheduler: DDPMScheduler, images: torch.Tensor, generator: torch.Generator,
               min_timestep: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and the timestep of each image of a batch, drawn for the whole batch at once, so
    they do not depend on how the batch is split between threads."""
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    t = torch.randint(min_timestep, scheduler.config.num_train_timesteps, (images.shape[0],), generator=generator).to(
        images.device)
    return noise, t


def image_losses(models: Models, scheduler: DDPMScheduler, images: torch.Tensor, noise: torch.Tensor,
                 t: torch.Tensor, embeddings: torch.Tensor, condition: torch.Tensor | None,
                 min_snr_gamma: float | None, mask_in_input: bool = False) -> torch.Tensor:
    """Each image's weighted denoising loss (:func:`diffusion_loss` is their mean)."""
    noisy = scheduler.add_noise(images, noise, t)
    prediction = predict(models.unet, models.controlnet, noisy, t, embeddings, condition, mask_in_input)
    snr = compute_snr(scheduler, t)
    # Each prediction type's error is the image (x0) error times a factor of the SNR; min-SNR
    # weighs the image error by min(SNR, gamma), so that factor is divided out.
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target, factor = noise, snr
    elif kind == "sample":
        target, factor = images, torch.ones_like(snr)
    else:
        target, factor = scheduler.get_velocity(images, noise, t), snr + 1.0
    per_image = ((prediction.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
    if min_snr_gamma is None:
        return per_image
    weight = snr.clamp(max=min_snr_gamma)
    if kind == "sample":
        # Image prediction weighted by min(SNR, gamma) alone all but ignores the noisiest steps,
        # where the body outline, fat and breasts (the BMI and sex cues outside the heart) are
        # decided: BMI was read at chance (.25) from such a model, .51 with the floor.
        weight = weight.clamp(min=1.0)
    return weight / factor * per_image


def model_input(images: torch.Tensor, preset: Preset, vae: AutoencoderKL | None, generator: torch.Generator) -> torch.Tensor:
    """What the UNet denoises: the (ED, ES) pair (folded into channels by pixel unshuffling), or
    (ED, ES, ED) RGB through the VAE's latents."""
    if preset.image_channels == 3:
        images = images[:, [0, 1, 0]]
    if vae is None:
        return torch.nn.functional.pixel_unshuffle(images, preset.pixel_unshuffle)
    with torch.no_grad():
        latents = vae.encode(images.to(vae.dtype)).latent_dist.sample(generator=generator)
    return latents.float() * vae.config.scaling_factor


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    stage_index: int = 0
    stage_step: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    stage_elapsed_s: float = 0.0


def _optimiser_class(settings: TrainSettings):
    if settings.use_8bit_adam:
        try:
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit
        except ImportError:
            warnings.warn("use_8bit_adam: bitsandbytes is not installed; using torch's AdamW", stacklevel=3)
    return torch.optim.AdamW


@dataclass
class StageRun:
    """The trainable parameters of one stage, with their optimiser, schedule and EMA."""

    groups: dict[str, list[torch.nn.Parameter]]
    optimiser: Any
    lr_scheduler: Any
    emas: dict[str, EMAModel]
    models: Models  # the models as the step calls them (wrapped for several processes)


def place_models(models: Models, settings: TrainSettings, accelerator: Accelerator) -> None:
    """Move models to the device; models this run never trains go to half precision under mixed
    precision (they only run forward), and gradient checkpointing is switched on when asked."""
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for name, model in [("vae", models.vae), *models.named().items()]:
        if model is None:
            continue
        model.to(accelerator.device)
        if name not in settings.saved_modules:
            model.requires_grad_(False)
            if frozen_dtype != torch.float32:
                model.to(dtype=frozen_dtype)
        if settings.gradient_checkpointing and name in ("unet", "controlnet"):
            model.enable_gradient_checkpointing()


def start_stage(accelerator: Accelerator, models: Models, stage: str, settings: TrainSettings, steps: int,
                checkpoint: Path | None = None) -> StageRun:
    """Optimiser, LR schedule and EMA for a stage (restored from ``checkpoint`` when resuming)."""
    groups = stage_parameters(models, stage)
    for module in models.named().values():
        module.requires_grad_(False)
    for parameter in (p for params in groups.values() for p in params):
        parameter.requires_grad_(True)
    param_groups = [{"params": params, "lr": settings.learning_rate * (settings.controlnet_lr_scale if name == "controlnet" else 1.0)}
                    for name, params in groups.items()]
    optimiser = _optimiser_class(settings)(param_groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    lr_scheduler = get_scheduler(settings.lr_schedule, optimiser, num_warmup_steps=min(settings.warmup_steps, steps),
                                 num_training_steps=steps)
    emas = {} if settings.ema_decay is None else {
        name: EMAModel(params, decay=settings.ema_decay) for name, params in groups.items()}
    if checkpoint is not None:
        _restore_stage_state(checkpoint, optimiser, lr_scheduler, emas)
    trainable = {name: models.named()[name] for name in groups}
    prepared = accelerator.prepare(*trainable.values(), optimiser, lr_scheduler)
    wrapped = dict(zip(trainable, prepared[: len(trainable)]))
    return StageRun(groups=groups, optimiser=prepared[len(trainable)], lr_scheduler=prepared[len(trainable) + 1],
                    emas=emas, models=Models(**{**models.named(), **wrapped, "vae": models.vae}))


class BatchSource:
    """Draws training batches: balanced by prompt, with prompt dropout for classifier-free guidance."""

    def __init__(self, data: TrainingData, tokenizer, preset: Preset, settings: TrainSettings):
        self.data, self.preset, self.settings = data, preset, settings
        self.weights = data.sampling_weights(settings.balance_cap)
        self.prompt_ids = tokenize(tokenizer, data.prompts)
        self.empty_ids = tokenize(tokenizer, [""])[0]

    def size(self, step: int) -> int:
        """Records drawn at ``step`` (from 0)."""
        early = self.settings.early_batch_size
        return early if early is not None and step < self.settings.early_steps else self.settings.batch_size

    def draw(self, generator: torch.Generator, conditioned: bool, step: int):
        """(image indices, token ids, mask conditioning image or None) of training step ``step``."""
        size = self.size(step)
        index = torch.multinomial(self.weights, size, replacement=True, generator=generator)
        ids = self.prompt_ids[index].clone()
        ids[torch.rand(size, generator=generator) < self.settings.prompt_dropout] = self.empty_ids
        condition = control_image(self.data.masks[index], self.preset.condition_mode,
                                  self.preset.condition_unshuffle) if conditioned else None
        return index, ids, condition


def training_step(accelerator: Accelerator, run: StageRun, batches: BatchSource, noise_scheduler: DDPMScheduler,
                  settings: TrainSettings, step: int) -> float:
    """One optimisation step; returns the loss averaged over processes."""
    # Everything random in a step comes from this generator: resuming replays it exactly.
    generator = step_generator(settings.seed, step, accelerator.process_index)
    # Only the base stage of a UNet that does not read the mask learns without it; every other
    # stage trains the ControlNet. The base stage leaves the ControlNet out: its zero-initialised
    # residuals would add nothing but a forward and backward pass through a copy of the encoder.
    trains_controlnet = "controlnet" in run.groups
    models = run.models if trains_controlnet else replace(run.models, controlnet=None)
    index, ids, condition = batches.draw(generator, trains_controlnet or batches.preset.mask_in_input, step)
    device = accelerator.device
    target = model_input(batches.data.images[index].to(device), batches.preset, run.models.vae, generator)
    noise, t = draw_noise(noise_scheduler, target, generator, settings.min_timestep)
    ids, condition = ids.to(device), None if condition is None else condition.to(device)
    parameters = [p for params in run.groups.values() for p in params]

    def part_loss(rows: torch.Tensor) -> torch.Tensor:
        # The batch mean, summed over the parts: each part's share of it.
        embeddings = run.models.text_encoder(ids[rows]).last_hidden_state
        return image_losses(models, noise_scheduler, target[rows], noise[rows], t[rows], embeddings,
                            None if condition is None else condition[rows], settings.min_snr_gamma,
                            batches.preset.mask_in_input).sum() / target.shape[0]

    def part_gradients(rows: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        loss = part_loss(rows)
        return loss.detach(), torch.autograd.grad(loss / settings.gradient_accumulation, parameters,
                                                  allow_unused=True)

    # On one CPU process each thread runs a part of the batch (cardiofair.threads.batch_parts),
    # and the optimiser's elementwise work runs on one thread after them; several processes
    # synchronise gradients through their wrapped models' backward hooks, and a GPU runs the
    # batch whole.
    split = accelerator.num_processes == 1 and device.type == "cpu"
    with accelerator.accumulate(*(run.models.named()[name] for name in run.groups)):
        if split:
            parts = each_part(part_gradients, batch_parts(target.shape[0], device), device)
            loss = sum(part for part, _ in parts)
        else:
            with accelerator.autocast():
                loss = part_loss(torch.arange(target.shape[0], device=device))
            accelerator.backward(loss)
        with one_thread_each() if split else contextlib.nullcontext():
            if split:
                # Summed in the parts' order, so the step does not depend on which thread finished first.
                for parameter, gradients in zip(parameters, zip(*(grads for _, grads in parts))):
                    present = [g for g in gradients if g is not None]
                    if present:
                        total = torch.stack(present).sum(dim=0) if len(present) > 1 else present[0]
                        parameter.grad = total if parameter.grad is None else parameter.grad + total
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(parameters, 1.0)
            run.optimiser.step()
            run.lr_scheduler.step()
            run.optimiser.zero_grad(set_to_none=True)
            for name, ema in run.emas.items():
                ema.step(run.groups[name])
    return accelerator.gather(loss.detach().reshape(1)).mean().item()


def train(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    settings: TrainSettings,
    resume: bool = False,
    overwrite: bool = False,
    progress_bar: bool = True,
) -> Path:
    """Train a generator on a prepared dataset and write a model directory at ``out``.

    ``out`` gets the sampling pipeline (unet/, controlnet/, text_encoder/, tokenizer/,
    scheduler/, model_index.json), ``cardiofair.json`` (written last: its presence marks a
    finished model), and ``training/`` (checkpoints, loss curve, validation grids, settings).
    """
    out = Path(out)
    preset = get_preset(settings.preset)
    if settings.size is not None:
        preset = replace(preset, size=settings.size)
    if settings.condition_mode is not None:
        condition_channels(settings.condition_mode)
        preset = replace(preset, condition_mode=settings.condition_mode)
    if preset.family == "stable-diffusion":
        wrong = [stage for stage, _ in settings.stages if stage not in STABLE_DIFFUSION_STAGES]
        if wrong:
            raise SettingsError(None, f"preset {preset.name} trains the stages {STABLE_DIFFUSION_STAGES}, "
                                f"not {wrong}")
        if preset.condition_mode != "grey-rgb":
            raise SettingsError(None, f"preset {preset.name} reads the mask as an RGB image: condition mode "
                                "grey-rgb only")
        if settings.guide_at is not None:
            raise SettingsError("guide_at", f"preset {preset.name} samples with diffusers' Stable Diffusion "
                                "pipeline, which has no guide model: leave it out")
    mixed_precision = settings.mixed_precision if torch.cuda.is_available() else "no"
    accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation, mixed_precision=mixed_precision)
    main_process = accelerator.is_main_process
    training_dir = out / "training"
    checkpoints = training_dir / "checkpoints"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise OutputExistsError(f"{out} already exists; pass --resume to continue it or --overwrite to start again")
    if overwrite and not resume and main_process and out.exists():
        shutil.rmtree(out)
    accelerator.wait_for_everyone()

    data = TrainingData.from_dataset(dataset, preset)
    checkpoint, progress, history = None, Progress(), []
    if resume:
        checkpoint = latest_checkpoint(checkpoints)
        try:
            state = json.loads((checkpoint / "state.json").read_text())
            saved = load_models(checkpoint, settings.saved_modules)
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {checkpoint} cannot be read ({error}); earlier checkpoints in "
                                  f"{checkpoints} are untouched") from None
        if state["settings"]["preset"] != settings.preset:
            raise CheckpointError(f"{checkpoint} was trained with preset {state['settings']['preset']!r}, "
                                  f"not {settings.preset!r}")
        progress, history = Progress(**state["progress"]), state["history"]
    tokenizer_dir = out / "tokenizer" if resume and preset.family == "embedded" else None
    models, tokenizer, noise_scheduler = starting_point(preset, settings, data.prompts, tokenizer_dir)
    if settings.min_timestep >= noise_scheduler.config.num_train_timesteps:
        raise SettingsError("min_timestep", f"must be below the noise schedule's "
                            f"{noise_scheduler.config.num_train_timesteps} timesteps, got {settings.min_timestep}")
    if resume:
        models = Models(**{**models.named(), **saved, "vae": models.vae})
    elif main_process:
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out / "tokenizer")
        training_dir.mkdir(exist_ok=True)
        (training_dir / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")

    batches = BatchSource(data, tokenizer, preset, settings)
    place_models(models, settings, accelerator)
    budgets = settings.stage_budgets()
    start_time = time.monotonic() - progress.elapsed_s
    bar = tqdm(total=sum(steps for _, steps, _ in budgets), initial=progress.global_step, unit="step", desc="train",
               disable=not (progress_bar and main_process))

    for stage_index in range(progress.stage_index, len(budgets)):
        stage, stage_steps, stage_minutes = budgets[stage_index]
        if stage_index != progress.stage_index or checkpoint is None:
            _copy_trained_encoder(models, [name for name, _, _ in budgets[:stage_index]], stage)
        run = start_stage(accelerator, models, stage, settings, stage_steps,
                          checkpoint if stage_index == progress.stage_index else None)
        if checkpoint is None or stage_index != progress.stage_index:
            progress.stage_step, progress.stage_elapsed_s = 0, 0.0
        stage_start = time.monotonic() - progress.stage_elapsed_s
        bar.set_description(f"train [{stage}]")

        with _StopRequest() as stop:
            while progress.stage_step < stage_steps:
                if stage_minutes is not None and time.monotonic() - stage_start > 60.0 * stage_minutes:
                    bar.write(f"stage {stage}: time budget of {stage_minutes:.1f} min reached at step {progress.stage_step}")
                    break
                loss = training_step(accelerator, run, batches, noise_scheduler, settings, progress.global_step)
                progress.stage_step += 1
                progress.global_step += 1
                progress.elapsed_s = time.monotonic() - start_time
                progress.stage_elapsed_s = time.monotonic() - stage_start
                history.append({"step": progress.global_step, "stage": stage, "loss": loss,
                                "lr": run.lr_scheduler.get_last_lr()[0], "elapsed_s": round(progress.elapsed_s, 2)})
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean([h['loss'] for h in history[-20:]]):.4f}")
                if main_process and progress.global_step == settings.guide_step:
                    with averaged_weights(run.groups, run.emas):
                        _keep_guide(models, training_dir)
                if main_process and progress.stage_step % settings.checkpoint_every == 0 and progress.stage_step < stage_steps:
                    _checkpoint(checkpoints, models, run, progress, settings, history)
                if main_process and progress.global_step % settings.validate_every == 0:
                    with averaged_weights(run.groups, run.emas), accelerator.autocast():
                        _validate(training_dir, models, tokenizer, noise_scheduler, data, preset, progress.global_step,
                                  load_guide(training_dir))
                accelerator.wait_for_everyone()
                if stop.requested:
                    if main_process:
                        bar.write(f"stopping at step {progress.global_step}: checkpoint saved, continue with --resume")
                        _checkpoint(checkpoints, models, run, progress, settings, history)
                    raise KeyboardInterrupt

        # The next stage starts from (and the final model is) the averaged weights.
        for name, ema in run.emas.items():
            ema.copy_to(run.groups[name])
        progress.stage_index, progress.stage_step = stage_index + 1, 0
        checkpoint = None
    bar.close()

    if main_process:
        _checkpoint(checkpoints, models, None, progress, settings, history)
        # Kept only if the run reached its guide step (a minutes budget may stop it sooner).
        guide = load_guide(training_dir) if settings.guide_step is not None else None
        with accelerator.autocast():  # frozen half-precision models beside a float32 ControlNet
            _validate(training_dir, models, tokenizer, noise_scheduler, data, preset, progress.global_step, guide)
        _write_loss_curve(training_dir, history)
        pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, tokenizer,
                                     make_sampler(preset.sampling.sampler, noise_scheduler), models.vae,
                                     preset.pixel_unshuffle, preset.condition_unshuffle, preset.mask_in_input, guide)
        pipeline.save_pretrained(out, safe_serialization=True)
        _write_model_card(out, preset, settings, data, progress, dataset, accelerator.num_processes,
                          guided_sampling(preset, guide))
    accelerator.wait_for_everyone()
    return out


class _StopRequest:
    """Turns Ctrl-C / SIGTERM into a request honoured between steps, so the checkpoint written
    on the way out is consistent and ``--resume`` continues exactly."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _checkpoint(root: Path, models: Models, run: "StageRun | None", progress: Progress, settings: TrainSettings,
                history: list[dict]) -> None:
    def write(folder: Path) -> None:
        save_models(models, folder, settings.saved_modules)
        if run is not None:
            save_state(folder, "optimizer", run.optimiser.state_dict())
            (folder / "lr_scheduler.json").write_text(json.dumps(run.lr_scheduler.state_dict()))
            for name, ema in run.emas.items():
                save_state(folder, f"ema_{name}", ema.state_dict())
        (folder / "state.json").write_text(json.dumps(
            {"progress": asdict(progress), "settings": asdict(settings), "history": history}))

    write_checkpoint(root, progress.global_step, write)


def _copy_trained_encoder(models: Models, earlier: Sequence[str], stage: str) -> None:
    """A ControlNet starts as a copy of the UNet's encoder (Zhang et al. 2023): when the stage
    that first trains it follows a base stage, it copies the encoder as trained so far rather
    than as initialised; its mask embedding and zero convolutions are its own and stay as they are."""
    trained_unet = any("unet" in STAGE_MODULES[name] for name in earlier)
    trained_controlnet = any("controlnet" in STAGE_MODULES[name] for name in earlier)
    if "controlnet" not in STAGE_MODULES[stage] or not trained_unet or trained_controlnet:
        return
    for part in ENCODER_PARTS:
        source, target = getattr(models.unet, part, None), getattr(models.controlnet, part, None)
        if source is not None and target is not None:
            target.load_state_dict(source.state_dict())


def _keep_guide(models: Models, training_dir: Path) -> None:
    # Written beside, then moved into place: a crash mid-write leaves no half guide behind, and
    # the resumed run (from a checkpoint before this step) writes it again.
    partial = training_dir / f".{GUIDE}-partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_models(models, partial)
    shutil.rmtree(training_dir / GUIDE, ignore_errors=True)
    partial.rename(training_dir / GUIDE)


def _restore_stage_state(folder: Path, optimiser, lr_scheduler, emas: dict[str, EMAModel]) -> None:
    try:
        optimiser.load_state_dict(load_state(folder, "optimizer"))
        lr_scheduler.load_state_dict(json.loads((folder / "lr_scheduler.json").read_text()))
        for name, ema in emas.items():
            ema.load_state_dict(load_state(folder, f"ema_{name}"))
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {folder} does not match this run ({error}); earlier checkpoints "
                              f"are untouched") from None


@contextlib.contextmanager
def averaged_weights(groups: dict[str, list[torch.nn.Parameter]], emas: dict[str, EMAModel]) -> Iterator[None]:
    """Temporarily swap the EMA weights into the trained parameters (for validation samples)."""
    for name, ema in emas.items():
        ema.store(groups[name])
        ema.copy_to(groups[name])
    try:
        yield
    finally:
        for name, ema in emas.items():
            ema.restore(groups[name])


def validation_indices(prompts: Sequence[str], count: int = VALIDATION_RECORDS) -> list[int]:
    """Fixed records for validation grids: the first record of each prompt, rarest prompts first."""
    counts = Counter(prompts)
    first = {}
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    ordered = sorted(first, key=lambda p: (counts[p], p))
    return [first[p] for p in ordered[:count]]


def _validate(training_dir: Path, models: Models, tokenizer, noise_scheduler, data: TrainingData, preset: Preset,
              step: int, guide: dict[str, torch.nn.Module] | None) -> None:
    index = validation_indices(data.prompts)
    pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, tokenizer,
                                 make_sampler(preset.sampling.sampler, noise_scheduler), models.vae,
                                 preset.pixel_unshuffle, preset.condition_unshuffle, preset.mask_in_input, guide)
    pipeline.set_progress_bar_config(disable=True)
    samples = draw(pipeline, data.masks[index], [data.prompts[i] for i in index],
                   [torch.Generator().manual_seed(i) for i in range(len(index))], guided_sampling(preset, guide),
                   preset.condition_mode)
    real = (data.images[index] + 1.0) / 2.0
    rows = []
    for k, i in enumerate(index):
        mask = data.masks[i].numpy()
        tiles = [mask_overlay(real[k, 0].numpy(), mask[0]), mask_overlay(samples[k, 0].numpy(), np.zeros_like(mask[0])),
                 mask_overlay(samples[k, 1].numpy(), np.zeros_like(mask[1])), mask_overlay(real[k, 0].numpy(),
                                                                                         np.zeros_like(mask[0]))]
        rows.append(np.concatenate(tiles, axis=1))
    folder = training_dir / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"step-{step:06d}.png").write_bytes(png_bytes(np.concatenate(rows, axis=0)))
    (folder / "prompts.txt").write_text("".join(f"row {k}: {data.prompts[i]}\n" for k, i in enumerate(index)) +
                                        "columns: real ED with mask | sample ED | sample ES | real ED\n")


def _write_loss_curve(training_dir: Path, history: list[dict]) -> None:
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


def _write_model_card(out: Path, preset: Preset, settings: TrainSettings, data: TrainingData, progress: Progress,
                      dataset: str | os.PathLike, processes: int, sampling: SamplerSettings) -> None:
    counts = cell_counts(data.manifest, DEFAULT_SCHEMA)
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
            "n_records": len(data.prompts),
            "steps": progress.global_step,
            "minutes": round(progress.elapsed_s / 60.0, 2),
            "settings": asdict(settings),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "distributed": {"processes": processes},
        },
        "training_cells": counts.to_dict("records"),
        # Hashes, not the ids: enough to refuse generating from a split whose validation or test
        # subjects this model learned, without writing patient identifiers into a shareable model.
        "training_subject_hashes": subject_hashes(data.manifest["subject_id"]),
    }
    atomic_write(out / "cardiofair.json", json.dumps(info, indent=2, default=str) + "\n")


def describe_budget(settings: TrainSettings) -> str:
    """One line on how a run will spend its steps and minutes."""
    parts = [f"{stage}: {steps} steps" + (f" / {minutes:.1f} min" if minutes else "")
             for stage, steps, minutes in settings.stage_budgets()]
    early = (f", {settings.early_batch_size} for the first {settings.early_steps} steps"
             if settings.early_batch_size is not None and settings.early_steps else "")
    return "; ".join(parts) + f" (batch {settings.batch_size}{early}, lr {settings.learning_rate:g})"



def run(options: TrainOptions, *, dataset: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
        overwrite: bool = False, progress: bool = True) -> Path:
    """`cardiofair train`: the preset with the run's options, trained on ``dataset`` into ``out``.

    ``resume`` continues the latest checkpoint; with ``overwrite`` as well, an unfinished run in
    ``out`` continues and anything else there is replaced (how a study restarts the stage).
    """
    if options.num_processes > 1:
        return _launch_processes(options, dataset, out, resume, overwrite, progress)
    quiet_model_loading()
    settings = TrainSettings.for_preset(get_preset(options.preset), **options.overrides())
    if progress:
        tqdm.write(f"training preset {options.preset}: {describe_budget(settings)}")
    if resume and overwrite:
        resume = continuable(out)
        overwrite = not resume
    return train(dataset, out, settings, resume=resume, overwrite=overwrite, progress_bar=progress)


def continuable(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a training run that checkpointed and did not finish: a checkpoints
    folder emptied by hand, or whose latest checkpoint is gone, is started again, not resumed."""
    try:
        latest_checkpoint(Path(out) / "training" / "checkpoints")
    except CheckpointError:
        return False
    return not (Path(out) / MODEL_CARD).is_file()


def _launch_processes(options: TrainOptions, dataset: str | os.PathLike, out: str | os.PathLike, resume: bool,
                      overwrite: bool, progress: bool) -> Path:
    """The same training under ``accelerate launch`` with ``options.num_processes`` processes
    (CPU: gloo), each running the one-process command."""
    argv = TRAIN.command_line(replace(options, num_processes=1), {"dataset": dataset, "out": out})[1:]
    argv += ["--resume"] * resume + ["--overwrite"] * overwrite + ["--quiet"] * (not progress)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(options.num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():
        command.append("--cpu")
    code = subprocess.call(command + ["-m", "cardiofair", *argv])
    if code:
        raise CardiofairError(f"training with {options.num_processes} processes failed (exit {code}); its messages "
                              "are above")
    return Path(out)


def summary(out: Path, paths: Any) -> str:
    """Where the model and its validation grids are."""
    return f"model written to {out} (validation grids in {Path(out) / 'training' / 'validation'})"
