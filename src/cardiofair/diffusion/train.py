"""Training the generator: one loop, readable in one sitting.

Stages (the paper's recipe, plus a joint one):
- ``base``: UNet + text encoder learn text-conditioned images (no ControlNet);
- ``control``: the ControlNet learns the mask with the base frozen (the paper's stage);
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
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm
from transformers import CLIPTextModel

from cardiofair import __version__
from cardiofair.data.records import load_dataset, mask_overlay, png_bytes
from cardiofair.data.summary import cell_counts
from cardiofair.diffusion.checkpoint import CheckpointError, latest_checkpoint, load_state, save_state, write_checkpoint
from cardiofair.diffusion.conditioning import mask_condition
from cardiofair.diffusion.pipeline import CardiacControlNetPipeline, make_sampler
from cardiofair.diffusion.presets import (
    Preset,
    TrainingDefaults,
    build_controlnet,
    build_noise_scheduler,
    build_text_encoder,
    build_unet,
    get_preset,
)
from cardiofair.diffusion.tokenizer import build_prompt_tokenizer, tokenize
from cardiofair.prompts import DEFAULT_SCHEMA

STAGES = ("base", "control", "joint")
TRAINABLE = {"base": ("unet", "text_encoder"), "control": ("controlnet",), "joint": ("unet", "text_encoder", "controlnet")}
MODEL_CLASSES = {"unet": UNet2DConditionModel, "controlnet": ControlNetModel, "text_encoder": CLIPTextModel}
VALIDATION_RECORDS = 8


@dataclass(frozen=True)
class TrainSettings(TrainingDefaults):
    """A preset's training defaults plus the run's own choices."""

    preset: str = "cpu"
    seed: int = 0

    @classmethod
    def for_preset(cls, preset: Preset, **overrides: Any) -> "TrainSettings":
        values = asdict(preset.training)
        values["stages"] = tuple(tuple(s) for s in values["stages"])
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset.name, **values)

    def __post_init__(self) -> None:
        for stage, fraction in self.stages:
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")
            if fraction <= 0:
                raise ValueError("stage fractions must be positive")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("max_steps and batch_size must be at least 1")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError("prompt_dropout must be in [0, 1)")

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
        records = load_dataset(root)
        if not records:
            raise ValueError(f"{root} holds no records to train on")
        expected = (preset.image_channels, preset.size, preset.size)
        wrong = [r.record_id for r in records if r.image.shape != expected]
        if wrong:
            raise ValueError(f"preset {preset.name!r} needs images of shape {expected}; {len(wrong)} records differ "
                             f"(e.g. {wrong[0]}: {records[[r.record_id for r in records].index(wrong[0])].image.shape}); "
                             f"prepare the dataset with --size {preset.size}")
        images = torch.from_numpy(np.stack([r.image for r in records])) * 2.0 - 1.0
        masks = torch.from_numpy(np.stack([r.mask for r in records]))
        manifest = pd.DataFrame([r.meta for r in records])
        return cls(images=images, masks=masks, prompts=[str(r.meta.get("prompt") or "") for r in records],
                   manifest=manifest)

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
    controlnet: ControlNetModel
    text_encoder: CLIPTextModel

    def named(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "controlnet": self.controlnet, "text_encoder": self.text_encoder}


def build_models(preset: Preset, vocab_size: int, max_length: int, seed: int) -> Models:
    """Untrained models; the same seed gives the same weights, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(preset)
        controlnet = build_controlnet(preset, unet)
        text_encoder = build_text_encoder(preset, vocab_size, max_length)
    return Models(unet=unet, controlnet=controlnet, text_encoder=text_encoder)


def load_models(folder: Path) -> Models:
    """Models saved by :func:`save_models` (a checkpoint or a model directory)."""
    return Models(**{name: cls.from_pretrained(folder / name) for name, cls in MODEL_CLASSES.items()})


def save_models(models: Models, folder: Path) -> None:
    for name, model in models.named().items():
        model.save_pretrained(folder / name, safe_serialization=True)


def denoise(models: Models, noisy: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
            condition: torch.Tensor | None) -> torch.Tensor:
    """UNet prediction, with the ControlNet's residuals when a mask condition is given."""
    if condition is None:
        return models.unet(noisy, t, encoder_hidden_states=embeddings).sample
    down, mid = models.controlnet(noisy, t, encoder_hidden_states=embeddings, controlnet_cond=condition,
                                  return_dict=False)
    return models.unet(noisy, t, encoder_hidden_states=embeddings, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample


def diffusion_loss(models: Models, scheduler: DDPMScheduler, images: torch.Tensor, embeddings: torch.Tensor,
                   condition: torch.Tensor | None, generator: torch.Generator, min_snr_gamma: float | None) -> torch.Tensor:
    """The denoising loss of one batch, min-SNR weighted (Hang et al. 2023) when asked: it stops
    the many low-noise timesteps from dominating, which speeds up convergence several-fold."""
    batch = images.shape[0]
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator).to(images.device)
    noisy = scheduler.add_noise(images, noise, t)
    prediction = denoise(models, noisy, t, embeddings, condition)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(images, noise, t)
    per_image = ((prediction.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
    if min_snr_gamma is None:
        return per_image.mean()
    snr = compute_snr(scheduler, t)
    weight = snr.clamp(max=min_snr_gamma)
    weight = weight / snr if scheduler.config.prediction_type == "epsilon" else weight / (snr + 1.0)
    return (weight * per_image).mean()


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    stage_index: int = 0
    stage_step: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    stage_elapsed_s: float = 0.0


def _stage_optimiser(models: Models, stage: str, settings: TrainSettings, steps: int):
    trainable = TRAINABLE[stage]
    for name, model in models.named().items():
        model.requires_grad_(name in trainable)
    groups = []
    for name in trainable:
        scale = settings.controlnet_lr_scale if name == "controlnet" else 1.0
        groups.append({"params": [p for p in models.named()[name].parameters()], "lr": settings.learning_rate * scale})
    optimiser = torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    lr_scheduler = get_scheduler(settings.lr_schedule, optimiser, num_warmup_steps=min(settings.warmup_steps, steps),
                                 num_training_steps=steps)
    emas = {name: EMAModel(models.named()[name].parameters(), decay=settings.ema_decay, use_ema_warmup=True)
            for name in trainable}
    return optimiser, lr_scheduler, emas


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
    accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation)
    main_process = accelerator.is_main_process
    training_dir = out / "training"
    checkpoints = training_dir / "checkpoints"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"{out} already exists; pass --resume to continue it or --overwrite to start again")
    if overwrite and not resume and main_process and out.exists():
        shutil.rmtree(out)
    accelerator.wait_for_everyone()

    data = TrainingData.from_dataset(dataset, preset)
    weights = data.sampling_weights(settings.balance_cap)
    if resume:
        checkpoint = latest_checkpoint(checkpoints)
        try:
            state = json.loads((checkpoint / "state.json").read_text())
            tokenizer = _load_tokenizer(out / "tokenizer")
            models = load_models(checkpoint)
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {checkpoint} cannot be read ({error}); earlier checkpoints in "
                                  f"{checkpoints} are untouched") from None
        if state["settings"]["preset"] != settings.preset:
            raise CheckpointError(f"{checkpoint} was trained with preset {state['settings']['preset']!r}, "
                                  f"not {settings.preset!r}")
        progress = Progress(**state["progress"])
        history = state["history"]
    else:
        tokenizer = build_prompt_tokenizer(data.prompts)
        models = build_models(preset, len(tokenizer.get_vocab()), tokenizer.model_max_length, settings.seed)
        progress, history, checkpoint = Progress(), [], None
        if main_process:
            out.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(out / "tokenizer")
            training_dir.mkdir(exist_ok=True)
            (training_dir / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")

    noise_scheduler = build_noise_scheduler(preset)
    prompt_ids = tokenize(tokenizer, data.prompts)
    empty_ids = tokenize(tokenizer, [""])[0]
    device = accelerator.device
    for model in models.named().values():
        model.to(device)
    budgets = settings.stage_budgets()
    start_time = time.monotonic() - progress.elapsed_s
    total_steps = sum(steps for _, steps, _ in budgets)
    bar = tqdm(total=total_steps, initial=progress.global_step, unit="step", desc="train",
               disable=not (progress_bar and main_process))

    for stage_index in range(progress.stage_index, len(budgets)):
        stage, stage_steps, stage_minutes = budgets[stage_index]
        optimiser, lr_scheduler, emas = _stage_optimiser(models, stage, settings, stage_steps)
        if checkpoint is not None and stage_index == progress.stage_index:
            _restore_stage_state(checkpoint, optimiser, lr_scheduler, emas)
        else:
            progress.stage_step, progress.stage_elapsed_s = 0, 0.0
        trainable = {name: models.named()[name] for name in TRAINABLE[stage]}
        prepared = accelerator.prepare(*trainable.values(), optimiser, lr_scheduler)
        wrapped = dict(zip(trainable, prepared[: len(trainable)]))
        optimiser, lr_scheduler = prepared[len(trainable)], prepared[len(trainable) + 1]
        run_models = Models(**{**models.named(), **wrapped})
        stage_start = time.monotonic() - progress.stage_elapsed_s
        bar.set_description(f"train [{stage}]")

        with _StopRequest() as stop:
            while progress.stage_step < stage_steps:
                if stage_minutes is not None and time.monotonic() - stage_start > 60.0 * stage_minutes:
                    bar.write(f"stage {stage}: time budget of {stage_minutes:.1f} min reached at step {progress.stage_step}")
                    break
                generator = step_generator(settings.seed, progress.global_step, accelerator.process_index)
                index = torch.multinomial(weights, settings.batch_size, replacement=True, generator=generator)
                ids = prompt_ids[index].clone()
                dropped = torch.rand(settings.batch_size, generator=generator) < settings.prompt_dropout
                ids[dropped] = empty_ids
                images = data.images[index].to(device)
                condition = None if stage == "base" else mask_condition(data.masks[index], preset.condition_mode).to(device)
                with accelerator.accumulate(*wrapped.values()):
                    embeddings = run_models.text_encoder(ids.to(device)).last_hidden_state
                    loss = diffusion_loss(run_models, noise_scheduler, images, embeddings, condition, generator,
                                          settings.min_snr_gamma)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_([p for m in wrapped.values() for p in m.parameters()], 1.0)
                    optimiser.step()
                    lr_scheduler.step()
                    optimiser.zero_grad(set_to_none=True)
                for name, ema in emas.items():
                    ema.step(trainable[name].parameters())
                progress.stage_step += 1
                progress.global_step += 1
                progress.elapsed_s = time.monotonic() - start_time
                progress.stage_elapsed_s = time.monotonic() - stage_start
                loss_value = accelerator.gather(loss.detach().reshape(1)).mean().item()
                history.append({"step": progress.global_step, "stage": stage, "loss": loss_value,
                                "lr": lr_scheduler.get_last_lr()[0], "elapsed_s": round(progress.elapsed_s, 2)})
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean([h['loss'] for h in history[-20:]]):.4f}")
                if main_process and progress.stage_step % settings.checkpoint_every == 0 and progress.stage_step < stage_steps:
                    _checkpoint(checkpoints, models, optimiser, lr_scheduler, emas, progress, settings, history)
                if main_process and progress.global_step % settings.validate_every == 0:
                    _validate(training_dir, models, emas, tokenizer, noise_scheduler, data, preset, progress.global_step)
                accelerator.wait_for_everyone()
                if stop.requested:
                    if main_process:
                        bar.write(f"stopping at step {progress.global_step}: checkpoint saved, continue with --resume")
                        _checkpoint(checkpoints, models, optimiser, lr_scheduler, emas, progress, settings, history)
                    raise KeyboardInterrupt

        # The next stage starts from (and the final model is) the averaged weights.
        for name, ema in emas.items():
            ema.copy_to(trainable[name].parameters())
        progress.stage_index, progress.stage_step = stage_index + 1, 0
        checkpoint = None
    bar.close()

    if main_process:
        _checkpoint(checkpoints, models, None, None, {}, progress, settings, history)
        _validate(training_dir, models, {}, tokenizer, noise_scheduler, data, preset, progress.global_step)
        _write_loss_curve(training_dir, history)
        pipeline = CardiacControlNetPipeline(unet=models.unet, controlnet=models.controlnet,
                                             text_encoder=models.text_encoder, tokenizer=tokenizer,
                                             scheduler=make_sampler(preset.sampling.sampler, noise_scheduler))
        pipeline.save_pretrained(out, safe_serialization=True)
        _write_model_card(out, preset, settings, data, progress, dataset, accelerator.num_processes)
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


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _checkpoint(root: Path, models: Models, optimiser, lr_scheduler, emas: dict[str, EMAModel], progress: Progress,
                settings: TrainSettings, history: list[dict]) -> None:
    def write(folder: Path) -> None:
        save_models(models, folder)
        if optimiser is not None:
            save_state(folder, "optimizer", optimiser.state_dict())
            (folder / "lr_scheduler.json").write_text(json.dumps(lr_scheduler.state_dict()))
        for name, ema in emas.items():
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
def averaged_weights(models: Models, emas: dict[str, EMAModel]) -> Iterator[Models]:
    """Temporarily swap the EMA weights into the models (for validation samples)."""
    for name, ema in emas.items():
        ema.store(models.named()[name].parameters())
        ema.copy_to(models.named()[name].parameters())
    try:
        yield models
    finally:
        for name, ema in emas.items():
            ema.restore(models.named()[name].parameters())


def validation_indices(prompts: Sequence[str], count: int = VALIDATION_RECORDS) -> list[int]:
    """Fixed records for validation grids: the first record of each prompt, rarest prompts first."""
    counts = Counter(prompts)
    first = {}
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    ordered = sorted(first, key=lambda p: (counts[p], p))
    return [first[p] for p in ordered[:count]]


def _validate(training_dir: Path, models: Models, emas: dict[str, EMAModel], tokenizer, noise_scheduler,
              data: TrainingData, preset: Preset, step: int) -> None:
    index = validation_indices(data.prompts)
    with averaged_weights(models, emas):
        pipeline = CardiacControlNetPipeline(unet=models.unet, controlnet=models.controlnet,
                                             text_encoder=models.text_encoder, tokenizer=tokenizer,
                                             scheduler=make_sampler(preset.sampling.sampler, noise_scheduler))
        samples = pipeline(data.masks[index], [data.prompts[i] for i in index],
                           [torch.Generator().manual_seed(i) for i in range(len(index))],
                           num_inference_steps=preset.sampling.steps, guidance_scale=preset.sampling.guidance_scale,
                           condition_mode=preset.condition_mode)
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
                      dataset: str | os.PathLike, processes: int) -> None:
    counts = cell_counts(data.manifest, DEFAULT_SCHEMA)
    info = {
        "cardiofair_version": __version__,
        "preset": preset.name,
        "image_channels": preset.image_channels,
        "channel_names": ["ED", "ES"],
        "size": preset.size,
        "condition_mode": preset.condition_mode,
        "prompt_schema": DEFAULT_SCHEMA.to_dict(),
        "sampling": asdict(preset.sampling),
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
    }
    tmp = out / ".cardiofair.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, out / "cardiofair.json")


def describe_budget(settings: TrainSettings) -> str:
    """One line on how a run will spend its steps and minutes."""
    parts = [f"{stage}: {steps} steps" + (f" / {minutes:.1f} min" if minutes else "")
             for stage, steps, minutes in settings.stage_budgets()]
    return "; ".join(parts) + f" (batch {settings.batch_size}, lr {settings.learning_rate:g})"

