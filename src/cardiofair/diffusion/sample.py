"""Sampling from a trained model directory: the Python API the generation stage reuses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from cardiofair.diffusion.pipeline import CardiacControlNetPipeline, draw, make_sampler, stable_diffusion_pipeline_class
from cardiofair.diffusion.presets import SamplerSettings
from cardiofair.errors import InputError, MissingInputError
from cardiofair.results import TrainResult


class ModelNotFoundError(MissingInputError):
    """A model directory that is missing, unfinished or not cardiofair's."""


def model_hash(model_dir: str | os.PathLike) -> str:
    """A short content hash of a model's weights, for provenance of synthetic records."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*/*.safetensors")):
        digest.update(path.parent.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def seed_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per image, so an image depends only on its own seed."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


class TrainedGenerator:
    """A trained model directory, ready to draw (ED, ES) pairs from masks and prompts."""

    def __init__(self, model_dir: str | os.PathLike, device: str | None = None):
        self.model_dir = Path(model_dir)
        self.info: dict[str, Any] = self.read_card(self.model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # Safetensors only: a pickled weight file (.bin, .pt, .ckpt) runs code when loaded.
        try:
            if self.info.get("family", "embedded") == "stable-diffusion":
                dtype = torch.float16 if self.device.type == "cuda" else torch.float32
                self.pipeline = stable_diffusion_pipeline_class().from_pretrained(
                    self.model_dir, torch_dtype=dtype, safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False, local_files_only=True, use_safetensors=True).to(self.device)
            else:
                self.pipeline = CardiacControlNetPipeline.from_pretrained(self.model_dir,
                                                                          use_safetensors=True).to(self.device)
        except OSError as error:
            raise ModelNotFoundError(f"{model_dir} cannot be loaded as a cardiofair model ({error}); cardiofair "
                                     f"reads safetensors weights only and never loads pickled ones (.bin, .pt, "
                                     f".ckpt): train the model again with `cardiofair train`") from None
        self.pipeline.set_progress_bar_config(disable=True)
        self.defaults = SamplerSettings(**self.info["sampling"])
        self.hash = model_hash(self.model_dir)
        self._training_scheduler = self.pipeline.scheduler
        embedded = isinstance(self.pipeline, CardiacControlNetPipeline)
        self._one_at_a_time = contextlib.nullcontext() if embedded else threading.Lock()

    @staticmethod
    def read_card(model_dir: str | os.PathLike) -> dict[str, Any]:
        """A model directory's ``cardiofair.json``, with a clear error when the model is unfinished."""
        card = Path(model_dir) / TrainResult.FILE
        if not card.is_file():
            raise ModelNotFoundError(f"{model_dir} is not a finished cardiofair model: {card} is missing "
                                     f"(train one with `cardiofair train`, or resume an interrupted run with --resume)")
        return TrainResult.load(model_dir).card

    @property
    def size(self) -> int:
        return int(self.info["size"])

    def sample(
        self,
        masks: np.ndarray | torch.Tensor,
        prompts: Sequence[str],
        seeds: Sequence[int],
        settings: SamplerSettings | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ) -> np.ndarray:
        """Draw one (2, H, W) image in [0, 1] per (mask, prompt, seed); returns (N, 2, H, W) float32."""
        settings = settings or self.defaults
        masks = torch.as_tensor(np.asarray(masks)).to(torch.uint8)
        if masks.ndim != 4 or masks.shape[1] != 2 or masks.shape[2:] != (self.size, self.size):
            raise InputError(f"this model draws {self.size}x{self.size} pairs: masks must be (N, 2, {self.size}, "
                             f"{self.size}), got {tuple(masks.shape)}")
        if not len(prompts) == len(seeds) == masks.shape[0]:
            raise ValueError(f"got {masks.shape[0]} masks, {len(prompts)} prompts and {len(seeds)} seeds")
        # A sampler of this call's own: calls may run at once on other threads (the quality
        # stage's prompt-effect pairs), and diffusers' Stable Diffusion pipeline, which steps with
        # its own scheduler, then draws for one of them at a time.
        scheduler = make_sampler(settings.sampler, self._training_scheduler)
        out = []
        with tqdm(total=len(prompts), unit="image", desc="sample", disable=not progress) as bar:
            for start in range(0, len(prompts), batch_size):
                stop = min(start + batch_size, len(prompts))
                with self._one_at_a_time:
                    images = draw(self.pipeline, masks[start:stop], list(prompts[start:stop]),
                                  seed_generators(seeds[start:stop]), settings, self.info["condition_mode"], scheduler)
                out.append(images.numpy().astype(np.float32))
                bar.update(stop - start)
        return np.concatenate(out) if out else np.zeros((0, 2, self.size, self.size), np.float32)

    def provenance(self, settings: SamplerSettings) -> dict[str, Any]:
        """Provenance columns describing this model and sampler, for synthetic records."""
        return {"model_id": self.model_dir.name, "model_hash": self.hash, "sampler": settings.sampler,
                "sampler_steps": settings.steps, "guidance_scale": settings.guidance_scale,
                "controlnet_scale": settings.controlnet_scale, "guidance_start": settings.guidance_start,
                "autoguidance": settings.autoguidance,
                "attribute_guidance": f"{settings.guided_attribute} {settings.attribute_guidance:g}"
                if settings.attribute_guidance > 1.0 else "off"}

