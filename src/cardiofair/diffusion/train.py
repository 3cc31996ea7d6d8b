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

What the loop calls lives beside it: the models in ``models``, the loss in ``loss``, the
validation grids and loss curve in ``validation``, the model card in ``card``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from cardiofair.data.records import load_images, read_manifest
from cardiofair.data.split import training_rows
from cardiofair.diffusion.card import write_model_card
from cardiofair.diffusion.checkpoint import CheckpointError, latest_checkpoint, load_state, save_state, write_checkpoint
from cardiofair.diffusion.conditioning import condition_channels, control_image
from cardiofair.diffusion.loss import draw_noise, image_losses, model_input
from cardiofair.diffusion.models import (
    MODEL_CLASSES,
    STABLE_DIFFUSION_STAGES,
    STAGE_MODULES,
    STAGES,
    Models,
    copy_trained_encoder,
    guided_sampling,
    keep_guide,
    load_guide,
    load_models,
    save_models,
    stage_parameters,
    starting_point,
)
from cardiofair.diffusion.pipeline import assemble_pipeline, make_sampler
from cardiofair.diffusion.presets import Preset, TrainingDefaults, get_preset, guide_step
from cardiofair.diffusion.tokenizer import tokenize
from cardiofair.diffusion.validation import loss_jump, validate, write_loss_curve
from cardiofair.errors import InputError, OutputExistsError, SettingsError
from cardiofair.precision import MIXED_PRECISIONS, autocast, resolve_precision
from cardiofair.prompts import is_missing, prompt_phrases
from cardiofair.results import TrainResult
from cardiofair.threads import batch_parts, each_part, one_thread_each


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
        for name in ("prompt_dropout", "attribute_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SettingsError(name, "must be in [0, 1)")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise SettingsError("mixed_precision", f"must be one of {MIXED_PRECISIONS}")
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


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    stage_index: int = 0
    stage_step: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    stage_elapsed_s: float = 0.0


def _optimiser(settings: TrainSettings, param_groups: list[dict[str, Any]]):
    if settings.use_8bit_adam:
        try:
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit(param_groups, lr=settings.learning_rate,
                                                weight_decay=settings.weight_decay)
        except ImportError:
            warnings.warn("use_8bit_adam: bitsandbytes is not installed; using torch's AdamW", stacklevel=3)
    # One fused kernel per step instead of a dozen elementwise passes over each of the 540
    # tensors: on 2 CPU cores the step of the cpu preset's 13 M parameters took 8.8 ms against
    # 36 ms (docs/measurements.md), time the other core spends idle.
    devices = {p.device.type for group in param_groups for p in group["params"]}
    fused = devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(param_groups, lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=fused)


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
    optimiser = _optimiser(settings, param_groups)
    lr_scheduler = get_scheduler(settings.lr_schedule, optimiser, num_warmup_steps=min(settings.warmup_steps, steps),
                                 num_training_steps=steps)
    emas = {} if settings.ema_decay is None else {
        name: EMAModel(params, decay=settings.ema_decay, foreach=True) for name, params in groups.items()}
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
        self.data, self.preset, self.settings, self.tokenizer = data, preset, settings, tokenizer
        self.weights = data.sampling_weights(settings.balance_cap)
        self.prompt_ids = tokenize(tokenizer, data.prompts)
        self.empty_ids = tokenize(tokenizer, [""])[0]
        self.phrases = [prompt_phrases(p) for p in data.prompts]

    def size(self, step: int) -> int:
        """Records drawn at ``step`` (from 0)."""
        early = self.settings.early_batch_size
        return early if early is not None and step < self.settings.early_steps else self.settings.batch_size

    def draw(self, generator: torch.Generator, conditioned: bool, step: int):
        """(image indices, token ids, mask conditioning image or None) of training step ``step``."""
        size = self.size(step)
        index = torch.multinomial(self.weights, size, replacement=True, generator=generator)
        ids = self.prompt_ids[index].clone()
        if self.settings.attribute_dropout:
            ids = self._drop_attributes(index, generator)
        ids[torch.rand(size, generator=generator) < self.settings.prompt_dropout] = self.empty_ids
        condition = control_image(self.data.masks[index], self.preset.condition_mode,
                                  self.preset.condition_unshuffle) if conditioned else None
        return index, ids, condition

    def _drop_attributes(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Token ids of the drawn records' prompts, each attribute's phrase left out with
        probability ``attribute_dropout``."""
        longest = max(len(self.phrases[i]) for i in index.tolist())
        kept = torch.rand(len(index), longest, generator=generator) >= self.settings.attribute_dropout
        prompts = [", ".join(p for p, keep in zip(self.phrases[i], row) if keep)
                   for i, row in zip(index.tolist(), kept.tolist())]
        return tokenize(self.tokenizer, prompts)


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
        with autocast(settings.mixed_precision, device):
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
            with accelerator.autocast(), autocast(settings.mixed_precision, device):
                loss = part_loss(torch.arange(target.shape[0], device=device))
            accelerator.backward(loss)
        with one_thread_each() if split else contextlib.nullcontext():
            if split:
                # Summed in the parts' order, so the step does not depend on which thread finished first.
                for parameter, gradients in zip(parameters, zip(*(grads for _, grads in parts))):
                    present = [g for g in gradients if g is not None]
                    if present:
                        total = sum(present[1:], present[0])
                        parameter.grad = total if parameter.grad is None else parameter.grad + total
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(parameters, 1.0)
            run.optimiser.step()
            run.lr_scheduler.step()
            run.optimiser.zero_grad(set_to_none=True)
            for name, ema in run.emas.items():
                ema.step(run.groups[name])
    return accelerator.gather(loss.detach().reshape(1)).mean().item()


def divergence_warning(preset: Preset, settings: TrainSettings) -> str | None:
    """What to say before a run that goes past the step where the preset's rate and schedule
    were seen to diverge for some training seed (None if it does not)."""
    near = preset.training.diverges_near
    if near is None or settings.max_steps <= near or settings.lr_schedule != preset.training.lr_schedule \
            or settings.learning_rate < preset.training.learning_rate:
        return None
    return (f"{settings.max_steps} steps at preset {preset.name}'s {settings.lr_schedule} rate of "
            f"{settings.learning_rate:g}: on a real cohort its loss jumped from 0.08 to 0.3-0.8 past step "
            f"{near:,} for some training seeds; --lr-schedule cosine (as preset cpu-real) trained all three "
            f"seeds measured over 2,000 steps")


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
    unstable = divergence_warning(preset, settings)
    if unstable:
        warnings.warn(unstable, stacklevel=2)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    mixed_precision = resolve_precision(settings.mixed_precision, device_type)
    # Accelerate fixes its mixed precision once per process, so a second training in it could not
    # choose another; on the CPU every step enters its own autocast instead (training_step).
    accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation,
                              mixed_precision=mixed_precision if device_type == "cuda" else "no")
    main_process = accelerator.is_main_process
    training_dir = out / TrainResult.TRAINING
    checkpoints = training_dir / TrainResult.CHECKPOINTS
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
    models, tokenizer, noise_scheduler = starting_point(preset, data.prompts, tokenizer_dir, settings.seed,
                                                        settings.weights, settings.sd_config)
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
            copy_trained_encoder(models, [name for name, _, _ in budgets[:stage_index]], stage)
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
                        keep_guide(models, training_dir)
                if main_process and progress.stage_step % settings.checkpoint_every == 0 and progress.stage_step < stage_steps:
                    _checkpoint(checkpoints, models, run, progress, settings, history)
                if main_process and progress.global_step % settings.validate_every == 0:
                    with averaged_weights(run.groups, run.emas), accelerator.autocast():
                        validate(training_dir, models, tokenizer, noise_scheduler, data.images, data.masks,
                                 data.prompts, preset, progress.global_step, load_guide(training_dir))
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
            validate(training_dir, models, tokenizer, noise_scheduler, data.images, data.masks, data.prompts, preset,
                     progress.global_step, guide)
        write_loss_curve(training_dir, history)
        jump = loss_jump(history)
        if jump is not None:
            warnings.warn(f"the model in {out} may have diverged: {jump.describe()}", stacklevel=2)
        pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, tokenizer,
                                     make_sampler(preset.sampling.sampler, noise_scheduler), models.vae,
                                     preset.pixel_unshuffle, preset.condition_unshuffle, preset.mask_in_input, guide,
                                     settings.mixed_precision)
        pipeline.save_pretrained(out, safe_serialization=True)
        write_model_card(out, preset, settings, data.manifest, progress.global_step, progress.elapsed_s, dataset,
                         accelerator.num_processes, guided_sampling(preset, guide), mixed_precision, jump)
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


def describe_budget(settings: TrainSettings) -> str:
    """One line on how a run will spend its steps and minutes."""
    parts = [f"{stage}: {steps} steps" + (f" / {minutes:.1f} min" if minutes else "")
             for stage, steps, minutes in settings.stage_budgets()]
    early = (f", {settings.early_batch_size} for the first {settings.early_steps} steps"
             if settings.early_batch_size is not None and settings.early_steps else "")
    return "; ".join(parts) + (f" (batch {settings.batch_size}{early}, lr {settings.learning_rate:g} "
                               f"{settings.lr_schedule})")
