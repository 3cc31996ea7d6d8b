"""The models a run trains: which stage trains which, how they are built, saved and loaded.

A run holds a UNet, a ControlNet and a text encoder (plus a frozen VAE for Stable Diffusion);
a stage trains some of them (:data:`STAGE_MODULES`). The guide is a copy of the models kept
part-way through training, which autoguidance steers the final model by.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextModel, PreTrainedTokenizerBase

from cardiofair.diffusion.presets import (
    Preset,
    SamplerSettings,
    build_controlnet,
    build_noise_scheduler,
    build_text_encoder,
    build_unet,
)
from cardiofair.diffusion.tokenizer import build_prompt_tokenizer
from cardiofair.errors import SettingsError

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


@dataclass
class Models:
    """The models of a run, as trained together."""

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


def starting_point(preset: Preset, prompts: Sequence[str], tokenizer_dir: Path | None, seed: int,
                   weights: str | None = None,
                   sd_config: str | None = None) -> tuple[Models, PreTrainedTokenizerBase, DDPMScheduler]:
    """(models, tokenizer, noise scheduler) before any training: built from the preset, or
    loaded from Stable Diffusion ``weights`` with a ControlNet initialised from their UNet."""
    if preset.family == "stable-diffusion":
        from cardiofair.diffusion.stable_diffusion import load_stable_diffusion

        if weights is None:
            raise SettingsError(None, f"preset {preset.name} needs --weights: a local Stable Diffusion folder or "
                                "file")
        vae, unet, text_encoder, tokenizer, scheduler = load_stable_diffusion(weights, sd_config)
        # One stride-2 convolution of the mask embedding per halving by the VAE (three for SD's 8x).
        halvings = len(vae.config.block_out_channels) - 1
        embedding = (16, 32, 96, 256, 256)[: halvings + 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            controlnet = build_controlnet(replace(preset, controlnet_embedding=embedding), unet)
        return Models(unet=unet, controlnet=controlnet, text_encoder=text_encoder, vae=vae), tokenizer, scheduler
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else build_prompt_tokenizer(prompts)
    models = build_models(preset, len(tokenizer.get_vocab()), tokenizer.model_max_length, seed)
    return models, tokenizer, build_noise_scheduler(preset)


def load_models(folder: Path, names: Sequence[str] = tuple(MODEL_CLASSES)) -> dict[str, torch.nn.Module]:
    """Models saved by :func:`save_models` (a checkpoint or a model directory)."""
    return {name: MODEL_CLASSES[name].from_pretrained(folder / name) for name in names}


def save_models(models: Models, folder: Path, names: Sequence[str] = tuple(MODEL_CLASSES)) -> None:
    """Write the models ``names`` into ``folder``, one ``save_pretrained`` folder each."""
    for name in names:
        models.named()[name].save_pretrained(folder / name, safe_serialization=True)


def keep_guide(models: Models, training_dir: Path) -> None:
    """Save the models as the guide (``training/guide``), replacing any kept before."""
    # Written beside, then moved into place: a crash mid-write leaves no half guide behind, and
    # the resumed run (from a checkpoint before this step) writes it again.
    partial = training_dir / f".{GUIDE}-partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_models(models, partial)
    shutil.rmtree(training_dir / GUIDE, ignore_errors=True)
    partial.rename(training_dir / GUIDE)


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


def copy_trained_encoder(models: Models, earlier: Sequence[str], stage: str) -> None:
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
