"""The training loss: what the UNet denoises, the noise and timesteps a batch is given, and
how each image's error is weighed."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import compute_snr

from cardiofair.diffusion.models import Models
from cardiofair.diffusion.pipeline import predict
from cardiofair.diffusion.presets import Preset


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
