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


# Architectures of the published models (configs only, no weights), plus a tiny one for tests.
# A folder of random weights in this layout exercises the whole path (memory, speed, code)
# without the real weights, which cannot be shipped.
ARCHITECTURES = {
    "sd21": dict(
        unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=(5, 10, 20, 20),
                  cross_attention_dim=1024, use_linear_projection=True),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        text_encoder=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                          hidden_act="gelu", projection_dim=512),
    ),
    "sd15": dict(
        unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8,
                  cross_attention_dim=768),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        text_encoder=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          hidden_act="quick_gelu", projection_dim=768),
    ),
    "tiny": dict(
        unet=dict(sample_size=4, block_out_channels=(16, 32), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2, cross_attention_dim=16,
                  norm_num_groups=8),
        vae=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, sample_size=32, norm_num_groups=4),
        text_encoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    ),
}


def write_random_stable_diffusion(folder: str | os.PathLike, architecture: str = "sd21", seed: int = 0,
                                  device: str = "cpu") -> Path:
    """Write a Stable Diffusion folder (diffusers layout) with random weights of a published
    architecture, and a character-level CLIP BPE tokenizer in CLIP's file format."""
    import json

    import torch
    from transformers import CLIPTextConfig

    config = ARCHITECTURES[architecture]
    folder = Path(folder)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789,-")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                  model_max_length=77).save_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        vae_blocks = len(config["vae"]["block_out_channels"])
        AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * vae_blocks,
                      up_block_types=("UpDecoderBlock2D",) * vae_blocks, **config["vae"]).save_pretrained(folder / "vae")
        UNet2DConditionModel(in_channels=4, out_channels=4, **config["unet"]).save_pretrained(folder / "unet")
        CLIPTextModel(CLIPTextConfig(vocab_size=max(len(tokens), 1000), max_position_embeddings=77, bos_token_id=0,
                                     eos_token_id=1, pad_token_id=1, **config["text_encoder"])).save_pretrained(
            folder / "text_encoder")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                  clip_sample=False).save_pretrained(folder / "scheduler")
    return folder
