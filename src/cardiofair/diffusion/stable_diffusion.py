"""The paper's path: ControlNet on Stable Diffusion 2.1-base or 1.5, from local weights only.

Images enter as (ED, ES, ED) RGB at 512 px (the paper's stacking), masks as the same grey-level
stack; latents come from the SD VAE; by default only the ControlNet learns (``sd_locked``),
and the ``decoder`` stage also unlocks the UNet's decoder half (the paper's second stage).
Nothing is downloaded: a missing file is an error that says what to put where.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from cardiofair.errors import CardiofairError

SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class WeightsNotFoundError(CardiofairError):
    """Stable Diffusion weights are not where the user said."""


def load_stable_diffusion(weights: str | os.PathLike, config: str | os.PathLike | None = None):
    """(vae, unet, text_encoder, tokenizer, noise scheduler) from a local diffusers folder, or a
    single ``.ckpt``/``.safetensors`` file plus ``config``, the model's diffusers config folder."""
    weights = Path(weights).expanduser()
    if weights.is_dir():
        missing = [c for c in SD_COMPONENTS if not (weights / c).is_dir()]
        if missing:
            raise WeightsNotFoundError(
                f"{weights} is not a Stable Diffusion folder in diffusers layout: it lacks {missing}. Place the "
                f"model there (e.g. a local copy of stable-diffusion-2-1-base with unet/, vae/, text_encoder/, "
                f"tokenizer/ and scheduler/), or pass a single .safetensors/.ckpt file with --sd-config")
        return (
            AutoencoderKL.from_pretrained(weights, subfolder="vae", local_files_only=True),
            UNet2DConditionModel.from_pretrained(weights, subfolder="unet", local_files_only=True),
            CLIPTextModel.from_pretrained(weights, subfolder="text_encoder", local_files_only=True),
            CLIPTokenizer.from_pretrained(weights, subfolder="tokenizer", local_files_only=True),
            DDPMScheduler.from_pretrained(weights, subfolder="scheduler", local_files_only=True),
        )
    if weights.suffix in (".ckpt", ".safetensors") and weights.is_file():
        if config is None or not Path(config).is_dir():
            raise WeightsNotFoundError(
                f"{weights.name} is a single-file checkpoint; loading it offline needs the model's diffusers config "
                f"folder (model_index.json, */config.json, tokenizer/ files, no weights) passed as --sd-config")
        pipe = StableDiffusionPipeline.from_single_file(str(weights), config=str(config), local_files_only=True,
                                                        safety_checker=None, requires_safety_checker=False)
        return pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, DDPMScheduler.from_config(pipe.scheduler.config)
    raise WeightsNotFoundError(f"Stable Diffusion weights not found at {weights}: give a diffusers folder or a "
                               f".safetensors/.ckpt file (no weights are downloaded)")
