"""Sampling: a diffusers pipeline that draws (ED, ES) slice pairs from masks and prompts.

The UNet denoises (pixels, or a VAE's latents), the text encoder reads the prompt through
cross-attention, the ControlNet reads the mask. Classifier-free guidance runs the conditional
and unconditional passes in one batch; autoguidance adds a pass of the model's guide, a
shorter-trained copy of its UNet, ControlNet and text encoder; attribute guidance a pass of the
prompt without one attribute's phrase. Each image has its own generator, so a record's sample
depends on its seed, not on which batch it was drawn in, up to float rounding (about 5e-7): the
batch's other records change how the CPU kernels sum.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from cardiofair.diffusion.conditioning import control_image, join_mask, mask_condition
from cardiofair.diffusion.presets import SamplerSettings
from cardiofair.diffusion.tokenizer import tokenize
from cardiofair.errors import SettingsError
from cardiofair.precision import autocast
from cardiofair.prompts import without_attribute
from cardiofair.threads import batch_parts, each_part, one_thread_each

SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def make_sampler(name: str, training_scheduler: SchedulerMixin) -> SchedulerMixin:
    """A sampling scheduler sharing the training scheduler's noise schedule and prediction type."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    cls, overrides = SAMPLERS[name]
    return cls.from_config(training_scheduler.config, **overrides)


def predict(unet: UNet2DConditionModel, controlnet: ControlNetModel | None, sample: torch.Tensor, t: torch.Tensor,
            embeddings: torch.Tensor, condition: torch.Tensor | None, mask_in_input: bool = False,
            conditioning_scale: float = 1.0) -> torch.Tensor:
    """The UNet's prediction for a noisy sample, with the ControlNet's residuals when a mask
    condition and a ControlNet are given (and the mask joined to the input of both when the preset
    asks). Training and sampling both call this, so the model is trained on exactly what it is
    sampled with."""
    if mask_in_input and condition is not None:
        sample = join_mask(sample, condition)
    if condition is None or controlnet is None:
        return unet(sample, t, encoder_hidden_states=embeddings).sample
    down, mid = controlnet(sample, t, encoder_hidden_states=embeddings, controlnet_cond=condition,
                           conditioning_scale=conditioning_scale, return_dict=False)
    return unet(sample, t, encoder_hidden_states=embeddings, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


class CardiacControlNetPipeline(DiffusionPipeline):
    """Text- and mask-conditioned sampling of (ED, ES) short-axis slice pairs."""

    # Pixel-space models have no VAE; latent ones do. A model trained without a guide has none.
    _optional_components = ["vae", "guide_unet", "guide_controlnet", "guide_text_encoder"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: SchedulerMixin,
        vae: AutoencoderKL | None = None,
        pixel_unshuffle: int = 1,
        condition_unshuffle: int = 1,
        mask_in_input: bool = False,
        guide_unet: UNet2DConditionModel | None = None,
        guide_controlnet: ControlNetModel | None = None,
        guide_text_encoder: CLIPTextModel | None = None,
        mixed_precision: str = "no",
    ):
        super().__init__()
        self.register_modules(unet=unet, controlnet=controlnet, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler, vae=vae, guide_unet=guide_unet, guide_controlnet=guide_controlnet,
                              guide_text_encoder=guide_text_encoder)
        # The model is drawn in the format it was trained in (cardiofair.precision), as this
        # machine resolves it: a model trained with "auto" is drawn in float32 where the CPU does
        # not multiply bfloat16 in hardware.
        self.register_to_config(pixel_unshuffle=pixel_unshuffle, condition_unshuffle=condition_unshuffle,
                                mask_in_input=mask_in_input, mixed_precision=mixed_precision)

    @property
    def has_guide(self) -> bool:
        """Whether the model carries a guide for autoguidance."""
        return self.guide_unet is not None

    def encode_prompts(self, prompts: Sequence[str], text_encoder: CLIPTextModel | None = None) -> torch.Tensor:
        """Text-encoder hidden states for cross-attention; ``""`` is the unconditional prompt."""
        text_encoder = text_encoder or self.text_encoder
        ids = tokenize(self.tokenizer, prompts).to(text_encoder.device)
        return text_encoder(ids).last_hidden_state

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of the denoised tensor for an image of this size (pixels, folded pixels or latents)."""
        if self.vae is None:
            factor = self.config.pixel_unshuffle
            return self.unet.config.out_channels, height // factor, width // factor
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.unet.config.out_channels, height // factor, width // factor

    @torch.no_grad()
    def __call__(self, masks: torch.Tensor, prompts: Sequence[str], generators: Sequence[torch.Generator],
                 settings: SamplerSettings, condition_mode: str, show_progress: bool = False,
                 scheduler: SchedulerMixin | None = None) -> torch.Tensor:
        """Sample one image per (mask, prompt, generator) with the sampler ``settings`` as given
        (their defaults live in :class:`SamplerSettings` and each preset, not here); returns
        (B, 2, H, W) in [0, 1]. Guidance (and autoguidance by the model's guide) applies from step
        ``guidance_start * steps`` on (0: every step), attribute guidance on every step.
        ``scheduler`` steps the sampling instead of the pipeline's own: a sampler keeps state from
        step to step, so calls running at once on other threads each need their own."""
        batch = masks.shape[0]
        if not (len(prompts) == len(generators) == batch):
            raise ValueError(f"got {batch} masks, {len(prompts)} prompts and {len(generators)} generators")
        if settings.autoguidance > 1.0 and not self.has_guide:
            raise SettingsError("autoguidance", "needs a model trained with a guide (`cardiofair train --guide-at`); "
                                "this one has none: use --autoguidance 1")
        # The model passes run in a part per thread (predict_passes); what lies between them (the
        # prompts' encoding, the scheduler's update) runs on one thread, which a busy process
        # beside it cannot stall at every operation. Neither changes the images' bits.
        threads = torch.get_num_threads()
        with one_thread_each() if self.unet.device.type == "cpu" else contextlib.nullcontext():
            return self.denoise(masks, prompts, generators, settings, condition_mode, show_progress, threads,
                                scheduler or self.scheduler)

    def denoise(self, masks: torch.Tensor, prompts: Sequence[str], generators: Sequence[torch.Generator],
                settings: SamplerSettings, condition_mode: str, show_progress: bool, threads: int,
                scheduler: SchedulerMixin) -> torch.Tensor:
        """:meth:`__call__`'s denoising loop, its passes in parts for ``threads`` threads, stepped by
        ``scheduler``."""
        batch = masks.shape[0]
        device = self.unet.device
        unconditional_pass, guide_pass = settings.guidance_scale > 1.0, settings.autoguidance > 1.0
        attribute_pass = settings.attribute_guidance > 1.0
        condition = control_image(masks.to(device), condition_mode, self.config.condition_unshuffle)
        embeddings = self.encode_prompts(list(prompts) + ([""] * batch if unconditional_pass else []))
        guide_embeddings = self.encode_prompts(prompts, self.guide_text_encoder) if guide_pass else None
        without_embeddings = self.encode_prompts([without_attribute(p, settings.guided_attribute) for p in prompts]) \
            if attribute_pass else None
        shape = self.latent_shape(masks.shape[-2], masks.shape[-1])
        sample = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)
        sample = sample * scheduler.init_noise_sigma
        scheduler.set_timesteps(settings.steps, device=device)
        self.set_progress_bar_config(disable=not show_progress, leave=False)
        first_guided = settings.guidance_start * len(scheduler.timesteps)
        last = len(scheduler.timesteps) - 1
        for step, t in enumerate(self.progress_bar(scheduler.timesteps)):
            # Guidance at the noisiest steps, where the image's layout is decided, pulls every
            # image of a prompt towards one layout (Kynkaanniemi et al. 2024); left out there,
            # those steps also cost one pass instead of two or three.
            steered = step >= first_guided
            both = unconditional_pass and steered
            model_input = scheduler.scale_model_input(sample, t)
            passes = [(self.unet, self.controlnet, torch.cat([model_input, model_input]) if both else model_input,
                       embeddings if both else embeddings[:batch],
                       torch.cat([condition, condition]) if both else condition)]
            if guide_pass and steered:
                # Steered away from where a shorter-trained copy of the model errs: the blur it
                # has not yet trained away (Karras et al. 2024, "Guiding a diffusion model with a
                # bad version of itself").
                passes.append((self.guide_unet, self.guide_controlnet, model_input, guide_embeddings, condition))
            if attribute_pass:
                # On every step, the noisiest too: the phantom's sex cues and a body's build lie in
                # the image's layout, which those steps decide.
                passes.append((self.unet, self.controlnet, model_input, without_embeddings, condition))
            # The last step draws the image itself: in bfloat16 (8 significant bits) it would carry
            # that format's grid, about 2,500 distinct values in an image of 8,192 pixels against
            # 7,850 in float32, a fingerprint no real image has.
            prediction, *others = self.predict_passes(passes, t, settings.controlnet_scale, threads,
                                                      "no" if step == last else self.config.mixed_precision)
            conditional = prediction[:batch]
            if both:
                prediction = prediction[batch:] + settings.guidance_scale * (conditional - prediction[batch:])
            if guide_pass and steered:
                prediction = prediction + (settings.autoguidance - 1.0) * (conditional - others.pop(0))
            if attribute_pass:
                prediction = prediction + (settings.attribute_guidance - 1.0) * (conditional - others.pop(0))
            sample = scheduler.step(prediction, t, sample).prev_sample
        if self.vae is not None:
            sample = self.vae.decode(sample / self.vae.config.scaling_factor).sample
        elif self.config.pixel_unshuffle > 1:
            sample = torch.nn.functional.pixel_shuffle(sample, self.config.pixel_unshuffle)
        return ((sample.clamp(-1.0, 1.0) + 1.0) / 2.0).float().cpu()

    def predict_passes(self, passes: list[tuple], t: torch.Tensor, conditioning_scale: float,
                       threads: int | None = None, mixed_precision: str = "no") -> list[torch.Tensor]:
        """The predictions of one denoising step's passes, each (unet, controlnet, sample,
        embeddings, condition), computed in ``mixed_precision`` (:mod:`cardiofair.precision`),
        returned in float32. On the CPU their rows run in parts, one part per thread
        (:func:`cardiofair.threads.batch_parts`): the threads meet once per step instead of at
        each of the step's operations."""
        device = self.unet.device
        jobs = [(index, rows) for index, (_, _, sample, _, _) in enumerate(passes)
                for rows in batch_parts(sample.shape[0], device, threads)]

        def run(job: tuple[int, torch.Tensor]) -> torch.Tensor:
            unet, controlnet, sample, embeddings, condition = passes[job[0]]
            rows = job[1]
            with torch.no_grad(), autocast(mixed_precision, device):  # modes each thread holds for itself
                return predict(unet, controlnet, sample[rows], t, embeddings[rows],
                               None if condition is None else condition[rows], self.config.mask_in_input,
                               conditioning_scale).float()

        outputs = each_part(run, jobs, device, threads)
        return [torch.cat([out for (index, _), out in zip(jobs, outputs) if index == number])
                for number in range(len(passes))]


def stable_diffusion_pipeline_class() -> type[DiffusionPipeline]:
    """diffusers' ``StableDiffusionControlNetPipeline``, imported only when used: importing it
    pulls in transformers' image processors, which is slow and noisy without torchvision."""
    from diffusers import StableDiffusionControlNetPipeline

    return StableDiffusionControlNetPipeline


def assemble_pipeline(family: str, unet: UNet2DConditionModel, controlnet: ControlNetModel, text_encoder,
                      tokenizer, scheduler: SchedulerMixin, vae: AutoencoderKL | None = None,
                      pixel_unshuffle: int = 1, condition_unshuffle: int = 1,
                      mask_in_input: bool = False, guide: dict[str, torch.nn.Module] | None = None,
                      mixed_precision: str = "no") -> DiffusionPipeline:
    """The sampling pipeline of a model family: cardiofair's own for the embedded presets (with
    the ``guide``'s unet, controlnet and text_encoder for autoguidance, when given, drawing in
    ``mixed_precision``), diffusers' ``StableDiffusionControlNetPipeline`` for Stable Diffusion."""
    if family == "stable-diffusion":
        return stable_diffusion_pipeline_class()(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                                 controlnet=controlnet, scheduler=scheduler, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
    return CardiacControlNetPipeline(unet=unet, controlnet=controlnet, text_encoder=text_encoder, tokenizer=tokenizer,
                                     scheduler=scheduler, vae=vae, pixel_unshuffle=pixel_unshuffle,
                                     condition_unshuffle=condition_unshuffle, mask_in_input=mask_in_input,
                                     mixed_precision=mixed_precision,
                                     **{f"guide_{name}": model for name, model in (guide or {}).items()})


def draw(pipeline: DiffusionPipeline, masks: torch.Tensor, prompts: Sequence[str],
         generators: Sequence[torch.Generator], settings: SamplerSettings, condition_mode: str,
         scheduler: SchedulerMixin | None = None) -> torch.Tensor:
    """(B, 2, H, W) (ED, ES) images in [0, 1] from either pipeline family, stepped by
    ``scheduler`` (default: the pipeline's own). Our pipeline draws with it on its own, so calls
    may run at once; diffusers' Stable Diffusion pipeline takes it as its scheduler."""
    if isinstance(pipeline, CardiacControlNetPipeline):
        return pipeline(masks, prompts, generators, settings, condition_mode, scheduler=scheduler)
    if scheduler is not None:
        pipeline.scheduler = scheduler
    if settings.guidance_start > 0:
        raise SettingsError("guidance_start", "must be 0 for a Stable Diffusion model: diffusers' "
                            "StableDiffusionControlNetPipeline guides every step")
    if settings.autoguidance > 1.0:
        raise SettingsError("autoguidance", "must be 1 for a Stable Diffusion model: diffusers' "
                            "StableDiffusionControlNetPipeline has no guide model")
    if settings.attribute_guidance > 1.0:
        raise SettingsError("attribute_guidance", "must be 1 for a Stable Diffusion model: diffusers' "
                            "StableDiffusionControlNetPipeline guides by the whole prompt only")
    condition = mask_condition(masks, condition_mode)
    images = pipeline(prompt=list(prompts), image=condition, height=masks.shape[-2], width=masks.shape[-1],
                      num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                      controlnet_conditioning_scale=settings.controlnet_scale, generator=list(generators),
                      output_type="pt").images
    # The RGB image is the (ED, ES, ED) stack: its first two channels are the pair.
    return images[:, :2].float().cpu()
