"""Model presets: one registry, each preset a few readable lines.

``cpu`` is the embedded default: pixel space at 64 px, 2 image channels (ED, ES), a small
text encoder trained from scratch, attention only at the two lowest resolutions (attention over
64x64 tokens dominates CPU time; see ../shared/notes/diffusion-on-this-cpu.md). ``tiny`` is
for tests: real diffusers models, seconds to train. ``sd21`` and ``sd15`` are the paper's GPU
path: their models are loaded from local Stable Diffusion weights (``stable_diffusion.py``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from cardiofair.diffusion.conditioning import condition_channels
from cardiofair.settings import check_sampling


@dataclass(frozen=True)
class TrainingDefaults:
    """How a preset is trained unless the command line says otherwise."""

    stages: tuple[tuple[str, float], ...] = (("joint", 1.0),)
    max_steps: int = 2000
    max_minutes: float | None = None
    batch_size: int = 32
    # The first ``early_steps`` steps draw ``early_batch_size`` records each instead: early in
    # training more updates beat bigger batches, and a smaller batch costs less.
    early_batch_size: int | None = None
    early_steps: int = 0
    learning_rate: float = 1e-3
    controlnet_lr_scale: float = 1.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float | None = 0.999
    prompt_dropout: float = 0.1
    # Each attribute's phrase left out of a training prompt with this probability, independently:
    # the model then also learns what "Female" or "heart failure" alone draws, from every record
    # that carries it, which a cell that is nearly absent (women with heart failure under
    # scarcity) has to be composed from. 0 trains on whole prompts only.
    attribute_dropout: float = 0.0
    balance_cap: float = 5.0
    min_snr_gamma: float | None = 5.0
    # Training timesteps are drawn from [min_timestep, num_train_timesteps): noise levels below
    # the lowest one the preset's sampler visits teach the model nothing it draws.
    min_timestep: int = 0
    gradient_accumulation: int = 1
    checkpoint_every: int = 500
    validate_every: int = 500
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    # The share of training after which the averaged weights are kept as the model's guide for
    # autoguidance (Karras et al. 2024): a shorter-trained copy of itself, whose errors the
    # finished model is steered away from. None keeps no guide.
    guide_at: float | None = None
    # The step near which the loss was seen to jump at this learning rate and schedule, or None:
    # a longer run at them is warned about before it starts.
    diverges_near: int | None = None


def guide_step(guide_at: float | None, max_steps: int) -> int | None:
    """The training step whose averaged weights are kept as the guide (None: no guide)."""
    return None if guide_at is None else max(1, round(guide_at * max_steps))


@dataclass(frozen=True)
class SamplerSettings:
    """How images are drawn: scheduler, steps, guidance scale (and the share of the noisiest
    steps drawn without it), autoguidance by the model's guide, and ControlNet strength."""

    sampler: str = "dpm++"
    steps: int = 12
    guidance_scale: float = 2.0
    controlnet_scale: float = 1.0
    guidance_start: float = 0.0
    autoguidance: float = 1.0
    # How far every step is steered towards what one attribute's phrase adds to the prompt (1 =
    # off): one more pass reads the prompt without it. A cell the model rarely saw whole (women
    # with heart failure under scarcity) is otherwise drawn with the look of its common neighbour;
    # the model must know prompts without the phrase (trained with attribute_dropout).
    attribute_guidance: float = 1.0
    guided_attribute: str = "sex"

    def __post_init__(self) -> None:
        check_sampling(self.guidance_start, self.autoguidance, self.attribute_guidance, self.guided_attribute)

    @property
    def guided(self) -> bool:
        """Whether the steps from :attr:`guidance_start` on are steered (by the unconditional
        prediction, the guide, or both)."""
        return self.guidance_scale > 1.0 or self.autoguidance > 1.0

    @property
    def unguided_steps(self) -> int:
        """How many of the first (noisiest) steps run without guidance: the pipeline guides step
        i (from 0) when i >= guidance_start * steps."""
        return math.ceil(self.guidance_start * self.steps)

    @property
    def passes(self) -> int:
        """Model passes per image: the conditional one on every step, then on each steered step
        one more for classifier-free guidance and one (the guide's) for autoguidance; attribute
        guidance adds one on every step."""
        extra = (self.guidance_scale > 1.0) + (self.autoguidance > 1.0)
        return (self.steps * (1 + (self.attribute_guidance > 1.0))) + extra * (self.steps - self.unguided_steps)

    def describe(self) -> str:
        """For readers: e.g. "dpm++, 8 steps, guidance 2 and autoguidance 1.5 from step 3,
        ControlNet scale 1"."""
        first = self.unguided_steps
        start = f" from step {first + 1}" if first and self.guided else ""
        auto = f" and autoguidance {self.autoguidance:g}" if self.autoguidance > 1.0 else ""
        attribute = (f", {self.guided_attribute} guidance {self.attribute_guidance:g} on every step"
                     if self.attribute_guidance > 1.0 else "")
        return (f"{self.sampler}, {self.steps} steps, guidance {self.guidance_scale:g}{auto}{start}{attribute}, "
                f"ControlNet scale {self.controlnet_scale:g}")

    def override(self, **values: Any) -> "SamplerSettings":
        """A copy with the given (non-None) values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class Preset:
    """Everything needed to build an untrained generator and train it."""

    name: str
    description: str
    size: int
    family: str = "embedded"
    image_channels: int = 2
    pixel_unshuffle: int = 1
    condition_mode: str = "onehot"
    # Fold the mask like the image (pixel unshuffle) before the ControlNet; then its embedding
    # needs no stride (controlnet_embedding of one stage).
    condition_unshuffle: int = 1
    # The folded mask also joins the noisy image at the UNet's (and so the ControlNet's) input.
    mask_in_input: bool = False
    unet: dict[str, Any] = field(default_factory=dict)
    controlnet_embedding: tuple[int, ...] = (16,)
    text_encoder: dict[str, Any] = field(default_factory=dict)
    noise_scheduler: dict[str, Any] = field(default_factory=dict)
    training: TrainingDefaults = field(default_factory=TrainingDefaults)
    sampling: SamplerSettings = field(default_factory=SamplerSettings)

    def with_training(self, **overrides: Any) -> "Preset":
        """A copy with some training defaults replaced."""
        return replace(self, training=replace(self.training, **overrides))


_NOISE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}

PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        name="cpu",
        description="64 px (ED, ES) pairs folded 4x4 into 32 channels at 16x16 (lossless pixel unshuffle), the mask "
        "folded alike into the ControlNet and beside the image; the prompt through cross-attention at 8x8 and 4x4 "
        "and, pooled, the timestep embedding; predicts the clean image; trained jointly from step 0 for a fixed "
        "number of steps (2 CPU cores)",
        size=64,
        # Pixel unshuffling divides every convolution's cost by 16 at no loss of information and
        # needs no VAE to train first. The mask is folded the same way, so the ControlNet reads it
        # at the UNet's resolution with no strided embedding (cheaper, and the thin myocardium
        # survives: ED myocardium Dice .81 -> .86 in 200 steps).
        pixel_unshuffle=4,
        condition_unshuffle=4,
        # Measured on the default study's data and plan, 340 steps of 16 pairs each, against the
        # ControlNet alone and text through cross-attention alone (guidance 3): the mask beside
        # the image lifts myocardium Dice from .90 to .95; the pooled prompt added to the timestep
        # embedding reaches the 16x16 blocks, which have no attention, and the BMI class (a body
        # outline and fat drawn from the prompt alone) is read .62 against .54 (real images of the
        # same cells .64), diagnosis .63 against .59 (.67). Its training steps cost what the
        # earlier design's did (100 steps, timed in turn: 62 and 79 s against 70 s; docs/measurements.md).
        mask_in_input=True,
        # The 16x16 blocks are as wide as the others: each of their positions draws a 4x4 patch of
        # both frames (32 values), and at 64 channels they drew it blurred. At 128, FD-cardiofair
        # of the default study fell from 9.3 / 9.4 (two sampling seeds) to 6.6 / 6.1 / 4.8 (three;
        # real reference 1.7), 7.5 and 8.6 for models of two other training seeds (the last reads
        # sex at 0.88x real), Dice as before or better, for 1.74x the FLOPs and 1.33x the training
        # time of the study; 96 wide gave 7.5, batch 12 at 128 wide 6.7 / 7.4 (docs/measurements.md).
        unet=dict(
            addition_embed_type="text",
            block_out_channels=(128, 128, 128),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=2,
            cross_attention_dim=128,
            norm_num_groups=32,
        ),
        controlnet_embedding=(64,),
        text_encoder=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2),
        # The clean image as target: a model trained for a few hundred steps predicts noise (or
        # velocity) too poorly for the sampler's last steps to cancel it, which left salt-and-pepper
        # grain over every image; predicting the image removes it (FD-cardiofair 84 -> 33, 200 steps).
        noise_scheduler={**_NOISE, "prediction_type": "sample"},
        # A fixed number of steps, not minutes: the same configuration gives the same model and
        # the same figures on every machine. A short warm-up, then a constant rate with EMA
        # (FD-cardiofair 36 after 200 steps, against 45 with a cosine decay from twice the rate).
        # Early in training more updates beat bigger batches: 400 steps of 16 pairs took 1.08x
        # the time of 240 of 32 and gave FD-cardiofair 32 against 39, myocardium Dice .91 against
        # .89 (480 of 16: 30 and .92 in 1.24x the time; judged as the default study judges).
        # 680 steps of 16 (twice the earlier 340): FD-cardiofair of the default study (mean of 20
        # draws; real reference 1.71) 4.1 / 5.3 / 4.9 for models of three training seeds, drawn in
        # six steps (2.4x / 3.1x / 2.9x), against 5.6 / 6.5 (3.3x / 3.8x) for two at 340 steps;
        # women in their 60s and 70s are read as women at least 0.86x as often as real ones (.48-.55
        # and .52-.64 against .56 and .51; at 340 steps .40-.48 and .40-.52), every Dice at least
        # 0.98x real. On an Intel Xeon host (other float rounding, so other models) training seeds
        # 0 and 1 gave 4.5 and 5.4 against a real reference of 2.1 (2.2x and 2.6x). Not monotonic
        # on the way: 500 and 560 steps gave 7.6 and 7.0 (at a constant rate the model swings
        # between checkpoints), 12 or 8 pairs a step 6.1 and 6.2, a cosine decay over 340 steps
        # 9.2. The six sampler steps below pay for part of the time.
        # Neither settling the end of the run nor averaging longer steadied it: the rate falling
        # linearly to zero over the last 136 steps gave 5.1 / 6.0 (training seeds 0 / 1), an EMA
        # over about the last 130 steps instead of 75 (diffusers' warm-up, power 3/4) 4.9 / 4.8.
        # A base stage first (the ControlNet joining halfway as a copy of the encoder trained so
        # far) makes half the steps 28% cheaper (0.39 against 0.54 s on the Intel Xeon host), but
        # FD-cardiofair rose from 4.5 / 5.4 to 4.8 / 6.8 for training seeds 0 / 1 (real 2.1).
        # Six DPM++ steps never go below timestep 166, eight 125, where min-SNR weighting had put a
        # fifth of the loss (t < 100). Trained from t = 100 on, FD-cardiofair over three training
        # seeds fell from 15.5 / 13.8 / 17.8 to 9.9 / 13.0 / 15.6; twenty sampler steps (down to
        # t = 50) still draw as well (10.6 and 14.8 for the first two seeds' models).
        # The first 240 steps draw 8 pairs each, which makes them cheaper (0.30 against 0.47 s on
        # an Intel Xeon host; the study's training 67 s shorter) at no measurable cost: trained so
        # there, training seeds 0 and 1 gave FD-cardiofair 4.4 and 4.7 against 4.5 and 5.4 with 16
        # pairs from the start (real 2.1), women of every rare cell read as women at least 0.91x
        # as often as real ones, every Dice at least 0.98x real. The first 400 at 8 pairs (training
        # 11% shorter) gave FD-cardiofair 5.6 / 4.7 / 5.1 for training seeds 0 / 1 / 2 against
        # 4.7 / 5.5 / 4.8 for 240 (real 1.71; AMD EPYC host, docs/measurements.md): at most a little
        # worse, and men read as men 0.87x as often as real ones at seed 2; 240 stays.
        # bf16 autocast where the CPU multiplies it in hardware (cardiofair.precision): on an AMD
        # EPYC host with AVX512-BF16 the 680 steps took 270 s against 349-365 s in fp32, and the
        # model of training seed 0 drew FD-cardiofair 4.52 against 4.68 (real 1.71), every Dice and
        # sex reading as close to real (docs/measurements.md).
        # At the constant rate of 1e-3 the loss jumped from 0.08 to 0.3-0.8 on the public M&Ms
        # copy: near step 3,400 for training seed 0, in float32 (step 3,500) and in bfloat16
        # (3,360), and near step 1,750 for training seed 2 (docs/measurements.md, "The curve
        # again"): cpu-real's 2,000 steps are past it, so it decays its rate (below).
        training=TrainingDefaults(max_steps=680, batch_size=16, early_batch_size=8, early_steps=240,
                                  learning_rate=1e-3, lr_schedule="constant_with_warmup", warmup_steps=40,
                                  checkpoint_every=100, validate_every=680, guide_at=0.3, min_timestep=100,
                                  mixed_precision="auto", diverges_near=1700),
        # Guidance over every step trades prompt for realism (FD-cardiofair over the default
        # study's 331 records 32 / 35 / 39 at guidance 2 / 2.5 / 3). Left out of the two noisiest
        # of the eight steps (Kynkaanniemi et al. 2024), where it pulls every image of a prompt
        # towards one body, it trades less: guidance 3.5 from the third step gives FD-cardiofair
        # 29.2 against 34.1 with guidance 2.5 on all steps (27.0 against 27.7 on the phenotype
        # scenario's study), sex read .73 against .72 (.68 against .69), Dice within .005, in 0.9x
        # the time. Guidance 3 from the third step gave 28.1 but read sex in .66 of the phenotype
        # study's images (0.89x real) and moved it in 5 of 32 counterfactual pairs (7 real); 3.5
        # keeps both (.68, 7 of 32). Eight DPM++ steps drew what ten do (FD 34.1 against 34.0;
        # six: 34.7) in 0.8x the time; for the 680-step model six draw what eight do (FD-cardiofair,
        # mean of 20 draws, 4.1 against 4.0, and 5.3 against 5.4 for another training seed's
        # model) in 14 passes instead of 20.
        # Autoguidance (Karras et al. 2024) on the same steps, by the model's own weights after 30%
        # of training (free: kept on the way), sharpens what the finished model draws blurred, the
        # body around the heart above all: FD-cardiofair 21.9 against 29.2 with guidance 3.5 alone
        # (23.1 against 28.3 for a model of another training seed), sex read .73 against .73 (.72
        # against .70), Dice within .005, for 1.4x the sampling passes. Guidance 2.5 beside it:
        # 3.5 gave 26.1, 3 23.1; autoguidance 2 gave 31.0, on every step 29.0. On the phenotype
        # scenario's study it costs some sex: FD 21.7 against 27.0, sex read .64 against .68 (real
        # images of the same cells .74); a guide after 60% of training did no better (.63-.65).
        # Trained from timestep 100 on (above), guidance 2 beside it keeps the ES RV Dice at 0.95x
        # real (.933 against .929 with 2.5) for FD-cardiofair 10.4 against 9.9, sex read .72
        # against .74 (real images of the same cells .68). For the 680-step models guidance 1.5
        # draws closer to real images (FD-cardiofair, mean of 20 draws, 3.8 against 4.1; on an
        # Intel Xeon host, whose float rounding trains other models, 4.1 against 4.5 and 4.7
        # against 5.4 for two training seeds) but there moves the judge's sex reading in 5 of 32
        # counterfactual pairs instead of 6 for both (real cues 5) and reads rare women's sex up
        # to .03 less often (women in their 60s .35 against .38, real .39): 2 keeps the margin on
        # the sex targets.
        sampling=SamplerSettings(sampler="dpm++", steps=6, guidance_scale=2.0, guidance_start=0.25,
                                 autoguidance=1.5),
    ),
    "tiny": Preset(
        name="tiny",
        description="for tests: a few thousand parameters, 16 px folded 2x2",
        size=16,
        pixel_unshuffle=2,
        condition_unshuffle=2,
        unet=dict(
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=2,
            cross_attention_dim=16,
            norm_num_groups=4,
        ),
        controlnet_embedding=(8,),
        text_encoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        noise_scheduler={**_NOISE, "prediction_type": "sample"},
        # Tests train and draw as the cpu preset does: with a guide kept halfway and autoguidance.
        training=TrainingDefaults(max_steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, validate_every=2,
                                  guide_at=0.5),
        sampling=SamplerSettings(steps=3, autoguidance=1.5),
    ),
}


def _stable_diffusion(name: str, description: str) -> Preset:
    # The paper's setting: 512 px, (ED, ES, ED) as RGB, only the ControlNet trained, DDIM 20 steps,
    # guidance 4; mixed precision and gradient checkpointing to fit one consumer GPU.
    return Preset(
        name=name,
        description=description,
        family="stable-diffusion",
        size=512,
        image_channels=3,
        condition_mode="grey-rgb",
        training=TrainingDefaults(stages=(("control", 1.0),), max_steps=20000, batch_size=4, learning_rate=1e-5,
                                  lr_schedule="constant_with_warmup", warmup_steps=0, ema_decay=None,
                                  min_snr_gamma=None, checkpoint_every=1000, validate_every=1000,
                                  mixed_precision="fp16", gradient_checkpointing=True),
        sampling=SamplerSettings(sampler="ddim", steps=20, guidance_scale=4.0),
    )


# Real cohorts: the cpu model trained longer. MRI holds far more than the phantom (chest wall,
# liver, lungs, fat, trabeculation). On the public M&Ms copy (docs/measurements.md, "Realism
# against training steps") the phantom's 680 steps left the synthetic images 4.3x as far from
# real held-out ones as real ones are from each other (FD-cardiofair 22.5 against 5.3, two-sample
# AUROC 0.88); 2,000 steps gave 3.2x and 0.81, every structure's Dice 0.98-1.13x the real
# reference. More steps at the constant rate did not help: 3,000 gave 4.6x (the model swings
# between checkpoints), and near step 3,500 the loss jumped tenfold (0.08 to 0.78).
# Twelve sampler steps, not the phantom's six: the six stop at timestep 166, where the model's
# clean-image estimate leaves a grain over the body that MRI does not have, and which the
# phantom's smooth textures hide. The study's 2,000-step model (bf16, training seed 0) drew
# FD-cardiofair 3.14 / 2.41 / 1.56 / 1.56 times the real reference with 6 / 8 / 12 / 20 steps,
# two-sample AUROC 0.82 / 0.79 / 0.76 / 0.74, every Dice at least 0.97x the real reference, for
# 2x the sampling time of six; training seed 1's model 4.18x with six steps, 2.13x with twelve
# (AUROC 0.83 and 0.80; docs/measurements.md, "Sampler steps on real MRI").
# The rate decays along a cosine, not the phantom's constant one: at the constant 1e-3 the loss of
# training seed 2 jumped near step 1,750 (0.08 to 0.3) and its model drew noise (FD-cardiofair
# 178 times the reference). Decaying, the same seed trained (1.47 times, AUROC 0.79), as did
# seeds 0 and 1 (docs/measurements.md, "A rate that decays").
PRESETS["cpu-real"] = replace(
    PRESETS["cpu"], name="cpu-real",
    description="the cpu model trained for real cohorts: 2,000 steps at a cosine-decaying rate (about 13-20 "
    "minutes on 2 CPU cores), drawn in 12 steps",
    training=replace(PRESETS["cpu"].training, max_steps=2000, validate_every=2000, checkpoint_every=500,
                     lr_schedule="cosine", diverges_near=None),
    sampling=replace(PRESETS["cpu"].sampling, steps=12))
PRESETS["sd21"] = _stable_diffusion("sd21", "Stable Diffusion 2.1-base + ControlNet from local weights (GPU)")
PRESETS["sd15"] = _stable_diffusion("sd15", "Stable Diffusion 1.5 + ControlNet from local weights (GPU)")


def get_preset(name: str) -> Preset:
    """The preset called ``name``, with a clear error naming the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


def build_unet(preset: Preset) -> UNet2DConditionModel:
    """An untrained UNet for the preset (reading the folded mask beside the image when asked)."""
    channels = preset.image_channels * preset.pixel_unshuffle**2
    mask_channels = condition_channels(preset.condition_mode) * preset.condition_unshuffle**2
    return UNet2DConditionModel(sample_size=preset.size // preset.pixel_unshuffle,
                                in_channels=channels + (mask_channels if preset.mask_in_input else 0),
                                out_channels=channels, **preset.unet)


def build_controlnet(preset: Preset, unet: UNet2DConditionModel) -> ControlNetModel:
    """A ControlNet initialised from the UNet's encoder, reading the mask conditioning image.

    The mask embedding has one stride-2 convolution per stage after the first: it must bring the
    mask down to the UNet's resolution (``(16,)`` in plain pixel space or for a mask folded like
    the image, one more stage per halving by a VAE or by unfolded pixel unshuffling).
    """
    channels = condition_channels(preset.condition_mode) * preset.condition_unshuffle**2
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=channels,
                                           conditioning_embedding_out_channels=preset.controlnet_embedding)
    heads = unet.config.addition_embed_type_num_heads
    if unet.config.addition_embed_type == "text" and controlnet.config.addition_embed_type_num_heads != heads:
        # diffusers' from_unet leaves the prompt's pooling at its default head count, which a
        # narrow text encoder cannot divide: the ControlNet takes the UNet's own, as it takes its weights.
        controlnet.register_to_config(addition_embed_type_num_heads=heads)
        controlnet.add_embedding = copy.deepcopy(unet.add_embedding)
    return controlnet


def build_text_encoder(preset: Preset, vocab_size: int, max_length: int) -> CLIPTextModel:
    """A small CLIP text encoder, trained from scratch on the prompt vocabulary."""
    config = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=max_length,
                            projection_dim=preset.unet["cross_attention_dim"], pad_token_id=0, bos_token_id=2,
                            eos_token_id=3, **preset.text_encoder)
    if config.hidden_size != preset.unet["cross_attention_dim"]:
        raise ValueError("the text encoder's hidden_size must equal the UNet's cross_attention_dim")
    return CLIPTextModel(config)


def build_noise_scheduler(preset: Preset) -> DDPMScheduler:
    """The training noise schedule; samplers are derived from its config."""
    return DDPMScheduler(**preset.noise_scheduler)

