"""The generator: a text- and mask-conditioned ControlNet diffusion model built on diffusers.

Models (diffusers' UNet2DConditionModel and ControlNetModel, a transformers text encoder),
schedulers and the pipeline are kept separate, as in diffusers: ``presets`` builds models,
``train`` fits them, ``pipeline`` samples from them.
"""
