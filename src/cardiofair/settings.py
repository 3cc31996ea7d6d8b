"""Every stage's settings, declared once.

Each dataclass here is at the same time a stage's settings (what its ``run`` takes), its
section of a study file (``plan:`` is :class:`PlanSettings`) and its command's flags
(``plan.max_ratio_per_cell`` is ``cardiofair plan --max-ratio-per-cell``), with one default for
all three. The machinery is :mod:`cardiofair.options`; the stages are listed in
:mod:`cardiofair.stages`.

Pure Python (no numpy, no torch): a study file is checked in well under a second. Where the
allowed values of an option are defined by a module that imports torch (samplers, presets),
the tuple below mirrors that module's own constant, and ``tests/test_settings.py`` proves they
agree; a registry (the cohort sources) is read from its module only when a value is checked
(:class:`cardiofair.options.Registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cardiofair.diagnoses import HEALTHY, HEART_FAILURE
from cardiofair.errors import SettingsError
from cardiofair.options import Registry, check_choices, option, plain
from cardiofair.prompts import ATTRIBUTES, PromptSchema

SENSITIVE_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a != "diagnosis")

# prepare
# The simulated cohort, drawn by `prepare` itself; the real cohort types are listed, with what each
# takes, in data/sources.py (SOURCES), read when a value is checked.
PHANTOM = "phantom"
SCENARIOS = ("representation", "phenotype", "mixed", "concentric")  # mirrors data.phantom.SCENARIOS
LABEL_ORDERS = ("ukbb", "acdc")  # mirrors data.manifest.LABEL_ORDERS
ALIGNMENTS = ("none", "rv-left")
# train
PRESETS = ("cpu", "tiny", "cpu-real", "sd21", "sd15")  # mirrors diffusion.presets.PRESETS
STABLE_DIFFUSION_PRESETS = ("sd21", "sd15")
LR_SCHEDULES = ("cosine", "constant_with_warmup", "linear")
CONDITION_MODES = ("onehot", "grey", "grey-rgb")  # mirrors diffusion.conditioning.CONDITION_MODES
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")  # mirrors precision.MIXED_PRECISIONS
# plan
STRATEGIES = ("equalize", "prevalence", "target")
# How the generator chooses each synthetic record's conditioning mask pair; the plan carries the
# choice per cell and generate.py gives it meaning.
MASK_POLICIES = ("copy", "matched", "random", "synthesized")
# The policy whose masks are drawn by the mask generator (`cardiofair masks`) instead of lent by a
# real training record.
DRAWN_MASK_POLICY = "synthesized"
# generate and sample
SAMPLERS = ("ddim", "dpm++", "unipc")  # mirrors diffusion.pipeline.SAMPLERS
# fairness: the arms are declared with their training sets, in cardiofair.downstream.arms.
ARMS = Registry("cardiofair.downstream.arms", "ARMS")
# Every arm is compared with it.
REFERENCE_ARM = "real"
CLASSIFIER_PRESETS = ("auto", "compact", "resnet18")  # auto + mirrors downstream.classifier.PRESETS
DEVICES = ("auto", "cpu", "cuda")
# The positive class "every diagnosis but healthy": the task with the most subjects in a
# cohort of several diseases.
NON_HEALTHY = "non-healthy"


def _at_least(settings: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {value}")


@dataclass(frozen=True)
class PrepareSettings:
    """`cardiofair prepare`: which cohort, and how records are cut from it. Written to
    ``prepare.json`` with the dataset."""

    source: str = option(PHANTOM, "cohort type", choices=Registry("cardiofair.data.sources", "SOURCES"))
    n: int = option(500, "phantom: number of subjects")
    seed: int = option(0, "phantom: random seed")
    scenario: str = option("phenotype", "phantom: the bias scenario, i.e. why a classifier misses women's heart "
                           "failure: representation (it is rare, and looks as men's does), phenotype (it is mostly the "
                           "preserved-EF kind, hard to see), mixed (both at half strength), concentric (it is rare, "
                           "and mostly a concentric kind men never have)", choices=SCENARIOS)
    phantom_config: str | None = option(None, "phantom: YAML file of PhantomConfig settings (imbalance, prevalence "
                                        "odds, noise) applied over the scenario's", path=True)
    root: str | None = option(None, "real cohorts: dataset folder (for manifest: the cohort CSV)", path=True)
    metadata: str | None = option(None, "real cohorts: metadata CSV (UK Biobank, M&Ms)", path=True)
    columns: dict[str, str] | None = option(None, "UK Biobank: map metadata columns, e.g. 'subject_id=eid,"
                                            "sex=31-0.0,age_years=21003-2.0,bmi=21001-2.0,icd10=41270'")
    label_order: str | None = option(None, "manifest: the label order of the masks on disk", choices=LABEL_ORDERS)
    require: tuple[str, ...] | None = option(None, "metadata that must be present, comma-separated (default: "
                                             "diagnosis; none for mnms-copy, which records no diagnosis); subjects "
                                             "missing one are excluded")
    pixel_spacing_mm: float | None = option(None, "real cohorts: the in-plane pixel spacing in mm of every subject, "
                                            "over the files' headers (needed where they say 1 x 1 x 1 mm, a "
                                            "placeholder; default: each header's)")
    size: int = option(64, "output size in pixels")
    fov_mm: float = option(150.0, "field of view in mm, centred on the LV")
    slices_per_subject: int = option(1, "mid-ventricular slice plus neighbours per subject")
    align: str = option("none", "rotate every slice so the RV lies left of the LV", choices=ALIGNMENTS)
    workers: int | None = option(None, "parallel processes (default: all cores)")
    strict: bool = option(False, "stop at the first bad subject with a non-zero exit")
    percentiles: tuple[float, float] = (1.0, 99.0)
    schema: PromptSchema = field(default_factory=PromptSchema)

    def __post_init__(self) -> None:
        check_choices(self)
        if self.source != PHANTOM and not self.root:
            raise SettingsError("root", f"is required for source {self.source!r}: the folder (or, for manifest, the "
                                "CSV) of your cohort")
        _at_least(self, 1, "n", "slices_per_subject", "workers")
        _at_least(self, 8, "size")
        for name in ("fov_mm", "pixel_spacing_mm"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise SettingsError("percentiles", "must satisfy 0 <= low < high <= 100")

    def to_dict(self) -> dict[str, Any]:
        """How records were cut (not which cohort: the dataset records that apart)."""
        return {"size": self.size, "fov_mm": self.fov_mm, "slices_per_subject": self.slices_per_subject,
                "align": self.align, "percentiles": list(self.percentiles), "schema": self.schema.to_dict()}


@dataclass(frozen=True)
class SplitSettings:
    """`cardiofair split`: subject-level train / validation / test shares."""

    test: float = option(0.2, "test fraction of subjects")
    val: float = option(0.1, "validation fraction of subjects")
    seed: int = option(0, "random seed")
    # A real cohort has no ground truth to draw a perfect generator's records from; holding back
    # real subjects of the thin cell makes one (the scarcity protocol, docs/data.md).
    scarcity: dict[str, str] | None = option(None, "hold back training subjects of one cell from every model and "
                                             "the planner; the fairness stage trains its oracle arm on them, e.g. "
                                             "'sex=Female,diagnosis=heart failure,keep=0.2' keeps a fifth of them")

    def __post_init__(self) -> None:
        if not (0 < self.test < 1 and 0 < self.val < 1 and self.test + self.val < 1):
            raise SettingsError(None, f"test and val must be in (0, 1) and sum to less than 1, got {self.test}, "
                                f"{self.val}")
        if self.scarcity is not None:
            self.scarcity_cell()

    def scarcity_cell(self) -> tuple[dict[str, str], float]:
        """(the held-back cell's binned attributes, the share of its training subjects kept)."""
        cell = {k: v for k, v in (self.scarcity or {}).items() if k != "keep"}
        unknown = sorted(set(cell) - set(ATTRIBUTES))
        if unknown or not cell:
            raise SettingsError("scarcity", f"names a cell by {sorted(ATTRIBUTES)} and keep=SHARE, got "
                                f"{self.scarcity}")
        try:
            keep = float((self.scarcity or {})["keep"])
        except (KeyError, ValueError):
            raise SettingsError("scarcity", f"needs keep=SHARE, the share of the cell's training subjects kept "
                                f"(between 0 and 1), got {self.scarcity}") from None
        if not 0.0 < keep < 1.0:
            raise SettingsError("scarcity", f"keep must be between 0 and 1 (exclusive), got {keep}")
        return cell, keep


@dataclass(frozen=True)
class TrainOptions:
    """`cardiofair train`: the preset and what the run changes about it. An option left out
    (None) keeps the preset's value; :class:`cardiofair.diffusion.train.TrainSettings` holds the
    resolved values."""

    preset: str = option("cpu", "model preset: cpu (2 CPU cores), cpu-real (the cpu model trained longer, for real "
                         "cohorts), sd21 or sd15 (Stable Diffusion + ControlNet on "
                         "a GPU, needs --weights), tiny (tests)", choices=PRESETS)
    stages: str | None = option(None, "training stages with step fractions, e.g. 'base:0.6,control:0.4', 'joint', "
                                "or for Stable Diffusion 'control:0.7,decoder:0.3' (default: the preset's)")
    max_steps: int | None = option(None, "total optimisation steps (default: the preset's)")
    max_minutes: float | None = option(None, "wall-clock budget in minutes, split over the stages (default: the "
                                       "preset's)")
    batch_size: int | None = option(None, "images per step and process (default: the preset's)")
    learning_rate: float | None = option(None, "peak learning rate (default: the preset's)")
    lr_schedule: str | None = option(None, "learning-rate schedule (default: the preset's)", choices=LR_SCHEDULES)
    size: int | None = option(None, "image size the model works at (default: the preset's; the dataset must be "
                              "prepared at it)")
    condition: str | None = option(None, "how the mask pair enters the ControlNet: one channel per label per frame "
                                   "(onehot, the cpu default), the paper's grey levels per frame (grey), or as an "
                                   "(ED, ES, ED) RGB image (grey-rgb, Stable Diffusion)", choices=CONDITION_MODES)
    weights: str | None = option(None, "sd21/sd15: local Stable Diffusion weights, a diffusers folder or a single "
                                 ".safetensors/.ckpt file (never downloaded)", path=True)
    sd_config: str | None = option(None, "sd21/sd15 with a single-file checkpoint: the model's diffusers config "
                                   "folder (model_index.json, */config.json, tokenizer/)", path=True)
    mixed_precision: str | None = option(None, "mixed precision: auto (bf16 where the GPU or CPU multiplies it in "
                                         "hardware, else fp32), no (fp32), fp16 (GPU only), bf16 (default: the "
                                         "preset's; the cpu presets' is auto)",
                                         choices=MIXED_PRECISION)
    gradient_checkpointing: bool | None = option(None, "trade compute for memory (default: the preset's)")
    gradient_accumulation: int | None = option(None, "micro-batches per optimiser step (default: the preset's)")
    use_8bit_adam: bool | None = option(None, "8-bit AdamW from bitsandbytes when installed (GPU; default: the "
                                        "preset's)")
    checkpoint_every: int | None = option(None, "steps between checkpoints (default: the preset's)")
    validate_every: int | None = option(None, "steps between validation sample grids (default: the preset's)")
    attribute_dropout: float | None = option(None, "probability that each attribute's phrase is left out of a "
                                             "training prompt, so that the model also learns each attribute alone "
                                             "(for cells it rarely sees whole; default: the preset's, 0)")
    guide_at: float | None = option(None, "share of the steps after which the averaged weights are kept as the "
                                    "model's guide for autoguidance (default: the preset's; embedded presets only)")
    seed: int = option(0, "random seed")
    num_processes: int = option(1, "train with N processes through Accelerate")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.preset in STABLE_DIFFUSION_PRESETS and not self.weights:
            raise SettingsError("weights", f"is required with preset {self.preset}: a local Stable Diffusion folder "
                                "or .safetensors file (nothing is downloaded)")
        _at_least(self, 1, "max_steps", "batch_size", "gradient_accumulation", "checkpoint_every", "validate_every",
                  "num_processes")
        _at_least(self, 8, "size")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise SettingsError("max_minutes", f"must be positive, got {self.max_minutes}")

    def parsed_stages(self) -> tuple[tuple[str, float], ...] | None:
        """``stages`` as (stage, fraction) pairs: ``'base:0.6,control:0.4'`` -> (('base', 0.6), ...)."""
        if self.stages is None:
            return None
        parsed = []
        for item in filter(None, (part.strip() for part in self.stages.split(","))):
            name, _, fraction = item.partition(":")
            try:
                parsed.append((name.strip(), float(fraction) if fraction else 1.0))
            except ValueError:
                raise SettingsError("stages", f"expects STAGE[:FRACTION] items, got {item!r}") from None
        return tuple(parsed)

    def overrides(self) -> dict[str, Any]:
        """The preset values this run replaces, named as the training settings name them."""
        names = {"condition": "condition_mode"}
        chosen = {names.get(k, k): v for k, v in plain(self).items() if k not in ("preset", "num_processes")}
        chosen["stages"] = self.parsed_stages()
        return {k: v for k, v in chosen.items() if v is not None}


@dataclass(frozen=True)
class PlanSettings:
    """`cardiofair plan`: strategy, planned attributes, caps and the mask policy of the generator."""

    strategy: str = option("equalize", "equalize: every cell up to the largest cell of its diagnosis; prevalence: "
                           "the positive diagnosis at --target-prevalence in every sensitive group; target: counts "
                           "or proportions per cell from --targets", choices=STRATEGIES)
    attributes: tuple[str, ...] = option(("sex", "age", "bmi"), "sensitive attributes to balance, comma-separated; "
                                         "one the cohort never records is left out, with the reason (none left: "
                                         "the cells are the diagnoses; without a diagnosis either, the one cell "
                                         "is the whole cohort)")
    target_prevalence: float | None = option(None, "prevalence: share of --positive-diagnosis per group")
    positive_diagnosis: str = option(HEART_FAILURE, "prevalence: the diagnosis counted")
    # A CSV path; from Python the table itself (a pandas DataFrame) may be given.
    targets: str | None = option(None, "target: CSV with the attribute columns, diagnosis (left out where no "
                                 "real record has one) and target_count or target_proportion", path=True,
                                 compare=False)
    max_ratio_per_cell: float = option(5.0, "synthetic <= ratio x real per cell")
    max_ratio_overall: float = option(1.0, "synthetic <= ratio x real overall")
    min_real_support: int = option(5, "cells with fewer real records are filled only with --allow-unseen-cells")
    allow_unseen_cells: bool = option(False, "also fill cells with little or no real support (the model composes "
                                      "attributes it never saw together; such cells are listed separately)")
    mask_policy: str = option("matched", "where synthetic geometry comes from: a real mask of the same cell (copy), "
                              "of the same diagnosis and most similar attributes (matched), of the same diagnosis "
                              "(random), or a new mask pair drawn for the cell by the mask generator (synthesized)",
                              choices=MASK_POLICIES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        unknown = [a for a in self.attributes if a not in SENSITIVE_ATTRIBUTES]
        if unknown:
            raise SettingsError("attributes", f"has unknown attribute(s) {unknown}; choose from "
                                f"{list(SENSITIVE_ATTRIBUTES)} (the diagnosis is always part of a cell)")
        check_choices(self)
        if not self.attributes or len(set(self.attributes)) != len(self.attributes):
            raise SettingsError("attributes", f"must name at least one sensitive attribute, each once: "
                                f"{list(self.attributes)}")
        if self.strategy == "prevalence":
            if self.target_prevalence is None or not 0.0 < self.target_prevalence < 1.0:
                raise SettingsError("target_prevalence", f"must be in (0, 1) for the prevalence strategy, got "
                                    f"{self.target_prevalence}")
            if self.positive_diagnosis == HEALTHY:
                raise SettingsError("positive_diagnosis", "cannot be 'healthy' for the prevalence strategy")
        if self.strategy == "target" and self.targets is None:
            raise SettingsError("targets", "is needed by the target strategy: a table of target counts or "
                                "proportions per cell")
        if self.max_ratio_per_cell < 0 or self.max_ratio_overall < 0:
            raise SettingsError(None, "synthetic-to-real ratio caps must be non-negative")
        if self.min_real_support < 0:
            raise SettingsError("min_real_support", "must be a non-negative number of records")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, for the resolved configuration a run writes."""
        values = plain(self)
        if self.targets is not None and not isinstance(self.targets, str):
            values["targets"] = self.targets.to_dict("records")
        return values


@dataclass(frozen=True)
class MaskSettings:
    """`cardiofair masks`: the mask generator, a conditional shape model of the training masks."""

    components: int = option(16, "principal shape modes kept (ED and ES together)")

    def __post_init__(self) -> None:
        _at_least(self, 1, "components")


def check_sampling(guidance_start: float | None, autoguidance: float | None, attribute_guidance: float | None,
                   guided_attribute: str | None) -> None:
    """The ranges of the sampler's settings, wherever they are given (a run's options or a
    model's own sampling); None is a value left to the model."""
    if guidance_start is not None and not 0.0 <= guidance_start < 1.0:
        raise SettingsError("guidance_start", f"must be in [0, 1), got {guidance_start}")
    for name, scale in (("autoguidance", autoguidance), ("attribute_guidance", attribute_guidance)):
        if scale is not None and scale < 1.0:
            raise SettingsError(name, f"must be at least 1 (1 = off), got {scale}")
    if guided_attribute is not None and guided_attribute not in ATTRIBUTES:
        raise SettingsError("guided_attribute", f"must be a prompt attribute, one of {', '.join(ATTRIBUTES)}; got "
                            f"{guided_attribute!r}")


@dataclass(frozen=True)
class SamplerOptions:
    """How images are drawn, where a run departs from the model's own sampling defaults."""

    sampler: str | None = option(None, "scheduler (default: the model's)", choices=SAMPLERS)
    steps: int | None = option(None, "denoising steps (default: the model's)")
    guidance_scale: float | None = option(None, "classifier-free guidance scale, 1 = off (default: the model's)")
    controlnet_scale: float | None = option(None, "ControlNet conditioning scale, 0 = ignore the mask (default: the "
                                            "model's)")
    guidance_start: float | None = option(None, "share of the denoising steps, noisiest first, drawn without guidance "
                                          "(default: the model's; 0 guides every step)")
    autoguidance: float | None = option(None, "autoguidance scale: how far the guided steps are steered away from the "
                                        "model's guide, a shorter-trained copy of itself (1 = off; default: the "
                                        "model's)")
    attribute_guidance: float | None = option(None, "how far every step is steered towards what the guided "
                                              "attribute's phrase adds to each prompt, for cells the model rarely saw "
                                              "whole (1 = off; needs a model trained with --attribute-dropout; "
                                              "default: the model's)")
    guided_attribute: str | None = option(None, "the attribute attribute_guidance steers by: sex, age, bmi or "
                                          "diagnosis (default: the model's, sex)")

    def __post_init__(self) -> None:
        check_sampling(self.guidance_start, self.autoguidance, self.attribute_guidance, self.guided_attribute)

    def sampler_overrides(self) -> dict[str, Any]:
        """The sampler values this run sets (None keeps the model's)."""
        return {k: getattr(self, k) for k in ("sampler", "steps", "guidance_scale", "controlnet_scale",
                                              "guidance_start", "autoguidance", "attribute_guidance",
                                              "guided_attribute")}


@dataclass(frozen=True)
class GenerateSettings(SamplerOptions):
    """`cardiofair generate`: everything that decides the synthetic records; stored with the run
    to resume it safely."""

    seed: int = option(0, "run seed")
    batch_size: int = option(32, "images per forward pass")
    # A generator that follows its mask closely redraws the lending patient's heart: on verbatim
    # masks 7.9% of the default study's images lay closer to a training image than 95% of real
    # test patients do (5.1% of real validation patients), on warped ones 0.9%.
    augment_masks: bool = option(True, "warp each reused mask slightly (label-preserving) so no real geometry "
                                 "repeats verbatim")
    max_mask_rejection: float = option(0.2, "mask policy synthesized: the highest share of drawn masks of a cell that "
                                       "may fail the anatomical checks (and be drawn again); above it generation "
                                       "stops, naming the cell")
    # A record's image depends on its cell and its rank in the cell alone, so the records of a
    # smaller dose are the first ones of a larger dose: growing the dose only adds records.
    dose: float = option(1.0, "make this multiple of every planned count (`cardiofair run` raises it to the largest "
                         "of fairness.doses); records already made for a smaller dose are kept")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        _at_least(self, 1, "batch_size", "steps")
        if not 0.0 <= self.max_mask_rejection < 1.0:
            raise SettingsError("max_mask_rejection", f"must be in [0, 1), got {self.max_mask_rejection}")
        if not self.dose > 0:
            raise SettingsError("dose", f"must be positive, got {self.dose}")


@dataclass(frozen=True)
class SampleSettings(SamplerOptions):
    """`cardiofair sample`: how many pairs to draw for one mask and prompt."""

    n: int = option(8, "images to draw", flags=("-n", "--n"))
    seed: int = option(0, "run seed; image i uses seed*100003+i")
    batch_size: int = option(16, "images per forward pass")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        _at_least(self, 1, "n", "batch_size", "steps")


@dataclass(frozen=True)
class QualitySettings:
    """`cardiofair quality`: how the evaluators are trained and how much evidence a figure needs."""

    steps: int = option(400, "segmenter training steps")
    classifier_steps: int = option(700, "attribute classifier training steps")
    batch: int = 32
    segmenter_batch: int = 16
    # A per-image mean (Dice, balanced accuracy, copy rate) from fewer images carries a note, and
    # prompt fidelity's phantom reference draws at least this many new subjects per cell.
    min_images: int = option(100, "fewest images on each side for a per-image figure (mask and prompt fidelity, copy "
                             "rate) without a 'too few images' note, and the fewest new phantom subjects per cell in "
                             "prompt fidelity's reference")
    # Whether a distance is reported is decided by its real-vs-real interval at the cohort's n
    # (realism_target); this is only the floor below which a distance is not computed at all.
    realism_min_images: int = option(20, "hard floor: fewest images on each side for FD-/KD-cardiofair to be computed "
                                     "at all, overall, per cell, per vendor and per centre; above it a distance is "
                                     "reported when its real-vs-real 95% interval is narrower than the realism "
                                     "target's margin (docs/quality.md)")
    realism_target: float = option(3.0, "the realism target: FD-cardiofair at most this many times its real "
                                   "reference; a distance whose real-vs-real 95% interval at the cohort's n is wider "
                                   "than the target's margin (reference x (target - 1)) says 'too few images' and "
                                   "the n it needs")
    # Resamples by subject behind each realism interval (FD on 96-d features: under a millisecond each).
    realism_resamples: int = 100
    seed: int = option(0, "random seed")
    kernel_subsets: int = 50
    fd_draws: int = 20
    ms_ssim_pairs: int = 300
    closest_pairs: int = 8
    counterfactual_pairs: int = option(32, "real test masks drawn under two prompts per attribute (prompt effects)")
    c2st: bool = option(True, "the two-sample classifier test: can a small CNN tell synthetic from real held-out "
                        "images (AUROC, 0.5 = no), beside real training against real held-out images")
    # Five folds of 120 steps of 32 pairs, for the synthetic set and the reference: ten small
    # trainings side by side, seconds in the default study (docs/quality.md).
    c2st_folds: int = 5
    c2st_steps: int = 120
    c2st_batch: int = 32
    c2st_resamples: int = 1000
    frd: bool = option(False, "the Fréchet Radiomics Distance (frd-score's FRD v1, radiomic features of the heart "
                       "region per frame) of synthetic and of real held-out images from real training images; needs "
                       "frd-score and pyradiomics (`make install-frd`)")
    # The FRD reference takes this many real training records per compared record, drawn to the
    # compared records' mix of cells: radiomic features cost about 0.1 s an image (docs/quality.md).
    frd_train_multiple: int = 3

    def __post_init__(self) -> None:
        _at_least(self, 1, "steps", "classifier_steps", "fd_draws", "c2st_steps", "c2st_resamples",
                  "frd_train_multiple")
        _at_least(self, 2, "min_images", "realism_min_images", "c2st_folds", "c2st_batch")
        _at_least(self, 10, "realism_resamples")
        if self.realism_target <= 1:
            raise SettingsError("realism_target", f"must be more than 1, got {self.realism_target}")


@dataclass(frozen=True)
class FairnessSettings:
    """`cardiofair fairness`: which arms, how often, which groups, and the classifier."""

    arms: tuple[str, ...] | None = option(None, "comma-separated arms, including real (default: every arm the data "
                                          "allow but the opt-in ones, group DRO and synthetic pretraining: the "
                                          "synthetic ones with --synthetic, the oracle on a phantom cohort or a "
                                          "scarcity split)",
                                          choices=ARMS)
    repeats: int = option(5, "seeds per arm, SEED..SEED+R-1, the same for every arm")
    attributes: tuple[str, ...] = option(("sex", "age", "bmi"), "sensitive attributes to report; one no test "
                                         "subject has is left out, with the reason", choices=SENSITIVE_ATTRIBUTES)
    intersection: tuple[str, ...] = option(("sex", "age"), "attributes whose intersectional cells are reported too "
                                           "('none' for none); left out, with the reason, when a test set lacks "
                                           "one of them", choices=SENSITIVE_ATTRIBUTES)
    positive_diagnosis: tuple[str, ...] = option((HEART_FAILURE,), "the diagnosis, or comma-separated diagnoses, "
                                                 f"detected against healthy ('{NON_HEALTHY}': every diagnosis but "
                                                 "healthy); records of other diagnoses are left out")
    positive_name: str | None = option(None, "what to call the positive diagnoses in tables and the report "
                                       "(default: the diagnosis, or the diagnoses joined by 'or')")
    train_prevalence: float | None = option(None, "subsample real training subjects to this share of the positive "
                                            "class (the paper: 0.25); validation and test keep the natural "
                                            "prevalence")
    threshold_attribute: str = option("sex", "the group the threshold arm equalises odds over, and the printed "
                                      "table's", choices=SENSITIVE_ATTRIBUTES)
    preset: str = option("auto", "classifier: compact CNN (CPU) or ResNet-18 (GPU); auto picks resnet18 on a CUDA "
                         "GPU", choices=CLASSIFIER_PRESETS)
    device: str = option("auto", "where to train", choices=DEVICES)
    epochs: int | None = option(None, "most epochs per training (default: the preset's)")
    patience: int | None = option(None, "stop after this many epochs without a better validation AUROC (default: "
                                  "the preset's)")
    batch_size: int | None = option(None, "images per step (default: the preset's)")
    learning_rate: float | None = option(None, "AdamW learning rate (default: the preset's)")
    bootstrap: int = option(1000, "test-subject resamples for intervals")
    # 18 women with heart failure in a 2,000-subject phantom's test split measure the sex gap to
    # about +-0.2: only a huge effect could be seen.
    phantom_test_subjects: int | None = option(None, "phantom cohorts: test on this many fresh subjects of the same "
                                               "phantom model, balanced over sex x age decade x diagnosis, instead "
                                               "of the split's test subjects (default: the split's)")
    # A worst group with one or two positives in test decides a worst-group figure by chance.
    min_group_size: int = option(10, "fewest positives and fewest negatives a test group needs to enter worst-group "
                                 "figures and max-min gaps; smaller groups are listed with their counts")
    # New anatomy helps where duplicates do not only at a dose and in a mechanism (design notes):
    # one dose cannot tell a useless generator from one given too little to do.
    doses: tuple[float, ...] = option((1.0,), "multiples of the planned counts at which each arm that adds "
                                      "records per planned cell runs (real+synthetic, oversample, oracle), e.g. "
                                      "0.5,1,2,4; a dose other than 1 adds those arms as ARM@DOSE (the synthetic dataset must hold the largest dose: "
                                      "`cardiofair generate --dose`)")
    # Women's heart failure is called less often partly because it is rarer in training (a prior
    # shift, which reweighting fixes for free); each group's TPR at the same FPR shows what is left.
    matched_fpr: float = option(0.1, "the false-positive rate at which each group's TPR is also measured with its "
                                "own threshold, set on its validation subjects without the diagnosis")
    # The user's question is whether the generator beats the one-line alternatives, not only
    # whether it beats doing nothing.
    versus: tuple[str, ...] | None = option(None, "arm pairs ARM:OTHER compared with each other over the same seeds "
                                            "(paired difference, t-interval, Holm-corrected over the pairs), e.g. "
                                            "real+synthetic:reweight (default: real+synthetic against reweight and "
                                            "against oversample, where those arms run; 'none' for none)")
    seed: int = option(0, "first repeat's seed; also the bootstrap's")

    def __post_init__(self) -> None:
        check_choices(self)
        for pair in self.versus or ():
            arm, colon, other = pair.partition(":")
            if not colon or not arm or not other or ":" in other or arm == other:
                raise SettingsError("versus", f"must be pairs of two different arms written ARM:OTHER, got {pair!r}")
        if self.arms is not None:
            if REFERENCE_ARM not in self.arms:
                raise SettingsError("arms", f"must include {REFERENCE_ARM!r}: every arm is compared with it")
            if len(set(self.arms)) != len(self.arms):
                raise SettingsError("arms", f"lists an arm twice: {list(self.arms)}")
        _at_least(self, 1, "repeats", "bootstrap", "epochs", "patience")
        _at_least(self, 0, "min_group_size")
        if not self.doses or any(not d > 0 for d in self.doses) or len(set(self.doses)) != len(self.doses):
            raise SettingsError("doses", f"must be distinct positive multiples of the planned counts, got "
                                f"{list(self.doses)}")
        _at_least(self, 1, "phantom_test_subjects")
        if not self.attributes:
            raise SettingsError("attributes", "must name at least one sensitive attribute")
        if len(self.intersection) == 1:
            raise SettingsError("intersection", "needs at least two attributes (or none)")
        if self.threshold_attribute not in self.attributes:
            raise SettingsError("threshold_attribute", f"must be one of the attributes {list(self.attributes)}, got "
                                f"{self.threshold_attribute!r}")
        if not self.positive_diagnosis or HEALTHY in self.positive_diagnosis:
            raise SettingsError("positive_diagnosis", f"must name at least one diagnosis other than {HEALTHY!r}")
        if not 0.0 < self.matched_fpr < 1.0:
            raise SettingsError("matched_fpr", f"must be in (0, 1), got {self.matched_fpr}")
        if self.train_prevalence is not None and not 0.0 < self.train_prevalence < 1.0:
            raise SettingsError("train_prevalence", f"must be in (0, 1), got {self.train_prevalence}")

    def groupings(self) -> dict[str, tuple[str, ...]]:
        """Every grouping the report has: each attribute, and their intersection as ``a&b``."""
        groupings = {a: (a,) for a in self.attributes}
        if self.intersection:
            groupings["&".join(self.intersection)] = tuple(self.intersection)
        return groupings

    @property
    def seeds(self) -> list[int]:
        """The seed of each repeat, shared by every arm."""
        return [self.seed + r for r in range(self.repeats)]


@dataclass(frozen=True)
class ReportSettings:
    """`cardiofair report`: what the page draws and what the datasheet says."""

    licence: str | None = option(None, "the source cohort's licence terms, copied into the datasheet")
    counterfactuals: bool = option(True, "draw one real training mask as female/male, 40s/70s and normal/obese BMI "
                                   "with --model")
    seed: int = option(0, "picks the example records and the counterfactual mask, and seeds its drawing")


@dataclass(frozen=True)
class AppSettings:
    """`cardiofair app`: where the browser explorer listens."""

    # Patients' images stay on the workstation unless the user opens the app to the network.
    host: str = option("127.0.0.1", "address to listen on: 127.0.0.1 serves this machine only; 0.0.0.0 opens the app "
                       "to the network")
    port: int = option(7860, "port to listen on")

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError("port", f"must be between 1 and 65535, got {self.port}")
