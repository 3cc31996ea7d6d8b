"""The generator: a text- and mask-conditioned ControlNet diffusion model built on diffusers.

Models (diffusers' UNet2DConditionModel and ControlNetModel, a transformers text encoder),
schedulers and the pipeline are kept separate, as in diffusers: ``presets`` builds models,
``train`` fits them, ``pipeline`` samples from them.
"""


def quiet_model_loading() -> None:
    """Hide diffusers' and transformers' per-file loading and saving bars: cardiofair's own
    progress bars say what is happening."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
