"""The ``cardiofair`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from cardiofair import __version__
from cardiofair.errors import CardiofairError, SubjectError

REAL_SOURCES = ("ukbb", "acdc", "mnms", "mnms2", "manifest")


class CommandError(CardiofairError):
    """An error the user can fix; printed without a traceback."""


def _key_values(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def _names(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn a cohort (the built-in phantom or real data) into a prepared dataset",
        description="Pick the mid-ventricular ED/ES slice pair of every subject, crop a fixed field of "
        "view around the LV, resample, normalise, build the prompt and write a prepared dataset "
        "(manifest.csv, NIfTI pairs, PNG previews, excluded.csv, prepare.json).",
    )
    p.add_argument("--source", required=True, choices=("phantom",) + REAL_SOURCES, help="cohort type")
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument("--n", type=int, default=500, help="phantom: number of subjects (default 500)")
    p.add_argument("--seed", type=int, default=0, help="phantom: random seed (default 0)")
    p.add_argument("--phantom-config", type=Path, help="phantom: YAML file of PhantomConfig settings "
                   "(imbalance, prevalence odds, noise)")
    p.add_argument("--root", type=Path, help="real cohorts: dataset folder (for manifest: the cohort CSV)")
    p.add_argument("--metadata", type=Path, help="real cohorts: metadata CSV (UK Biobank, M&Ms)")
    p.add_argument("--columns", type=_key_values, help="UK Biobank: map metadata columns, e.g. "
                   "'subject_id=eid,sex=31-0.0,age_years=21003-2.0,bmi=21001-2.0,icd10=41270'")
    p.add_argument("--label-order", choices=("ukbb", "acdc"), help="manifest: the label order of the masks on disk")
    p.add_argument("--require", type=_names, help="metadata that must be present, comma-separated "
                   "(default: diagnosis); subjects missing one are excluded")
    p.add_argument("--size", type=int, default=64, help="output size in pixels (default 64)")
    p.add_argument("--fov-mm", type=float, default=150.0, help="field of view in mm, centred on the LV (default 150)")
    p.add_argument("--slices-per-subject", type=int, default=1,
                   help="mid-ventricular slice plus neighbours per subject (default 1)")
    p.add_argument("--align", choices=("none", "rv-left"), default="none",
                   help="rotate every slice so the RV lies left of the LV (default none)")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad subject with a non-zero exit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from cardiofair.data.phantom import PhantomConfig
    from cardiofair.data.prepare import PrepareSettings, prepare_phantom, prepare_sources
    from cardiofair.data.summary import summary_text

    settings = PrepareSettings(size=args.size, fov_mm=args.fov_mm, slices_per_subject=args.slices_per_subject,
                               align=args.align)
    run_options = {"overwrite": args.overwrite, "strict": args.strict, "workers": args.workers,
                   "progress": not args.quiet}
    if args.source == "phantom":
        if args.n < 1:
            raise CommandError("--n must be at least 1")
        loaded = yaml.safe_load(args.phantom_config.read_text()) if args.phantom_config else {}
        config = PhantomConfig.from_dict({**(loaded or {}), "size": args.size, "fov_mm": args.fov_mm})
        result = prepare_phantom(args.n, args.seed, args.out, config, settings, **run_options)
    else:
        from cardiofair.data.sources import discover

        if args.root is None:
            raise CommandError(f"--source {args.source} needs --root")
        options = {"metadata": args.metadata, "columns": args.columns, "label_order": args.label_order,
                   "required": args.require}
        options = {k: v for k, v in options.items() if v is not None}
        sources = discover(args.source, args.root, **options)
        source_settings = {"source": args.source, "root": str(args.root),
                           **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}}
        result = prepare_sources(sources, args.out, settings, source_settings, **run_options)
    print(f"wrote {result.n_records} records from {result.n_subjects} subjects to {result.out}; "
          f"{len(result.excluded)} excluded" + (f" (reasons in {result.out / 'excluded.csv'})" if result.excluded else ""))
    if not args.quiet:
        print()
        print(summary_text(result.out))
    return 0


def _add_split(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split", help="assign subjects to train / val / test (a split column in the manifest)",
        description="Subject-level split, stratified by subgroup cell, deterministic by seed. Later stages train "
        "and take masks from the train split only; test subjects never reach training.")
    p.add_argument("dataset", type=Path, help="prepared real dataset")
    p.add_argument("--test", type=float, default=0.2, help="test fraction of subjects (default 0.2)")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction of subjects (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split")
    p.set_defaults(handler=_split)


def _split(args: argparse.Namespace) -> int:
    import pandas as pd

    from cardiofair.data.records import read_manifest
    from cardiofair.data.splits import assign_splits, write_splits

    manifest = read_manifest(args.dataset)
    splits = assign_splits(manifest, test=args.test, val=args.val, seed=args.seed)
    write_splits(args.dataset, splits, overwrite=args.overwrite)
    subjects = manifest.assign(split=splits).drop_duplicates("subject_id")
    table = pd.crosstab(subjects["diagnosis"].fillna("unknown"), subjects["split"], margins=True)
    print(f"{args.dataset}: subjects per split and diagnosis\n{table.to_string()}")
    return 0


def _add_summary(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summary", help="print the subgroup table of a prepared dataset",
                              description="Counts per subgroup cell (sex x age decade x BMI class x diagnosis) "
                              "and diagnosis prevalence per sensitive group.")
    p.add_argument("dataset", type=Path, help="prepared dataset directory")
    p.set_defaults(handler=_summary)


def _summary(args: argparse.Namespace) -> int:
    from cardiofair.data.summary import summary_text

    print(summary_text(args.dataset))
    return 0


def _stages(text: str) -> tuple[tuple[str, float], ...]:
    stages = []
    for item in _names(text):
        name, _, fraction = item.partition(":")
        try:
            stages.append((name, float(fraction) if fraction else 1.0))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected STAGE[:FRACTION], got {item!r}") from None
    return tuple(stages)


def _quiet_model_loading() -> None:
    """Hide diffusers' and transformers' per-file loading and saving bars: cardiofair's own
    progress bars say what is happening."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the mask- and text-conditioned generator on a prepared dataset",
        description="Train a UNet + text encoder + ControlNet generator. Writes MODEL_DIR with the sampling "
        "pipeline (unet/, controlnet/, text_encoder/, tokenizer/, scheduler/), cardiofair.json, and training/ "
        "(checkpoints, loss curve, validation grids). Several processes: --num-processes N, or "
        "`accelerate launch -m cardiofair train ...`.")
    p.add_argument("dataset", type=Path, help="prepared dataset directory (training split)")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument("--preset", default="cpu", help="model preset: cpu (default, 2 CPU cores), sd21 or sd15 "
                   "(Stable Diffusion + ControlNet on a GPU, needs --weights), tiny (tests)")
    p.add_argument("--stages", type=_stages, help="training stages with step fractions, e.g. 'base:0.6,control:0.4', "
                   "'joint', or for Stable Diffusion 'control:0.7,decoder:0.3' (default: the preset's)")
    p.add_argument("--max-steps", type=int, help="total optimisation steps (default: the preset's)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget in minutes, split over the stages")
    p.add_argument("--batch-size", type=int, help="images per step and process")
    p.add_argument("--learning-rate", type=float, help="peak learning rate")
    p.add_argument("--lr-schedule", choices=("cosine", "constant_with_warmup", "linear"), help="learning-rate schedule")
    p.add_argument("--size", type=int, help="image size the model works at (default: the preset's; the dataset "
                   "must be prepared at it)")
    p.add_argument("--condition", choices=("onehot", "grey", "grey-rgb"), help="how the mask pair enters the "
                   "ControlNet: one channel per label per frame (onehot, the cpu default), the paper's grey levels "
                   "per frame (grey), or as an (ED, ES, ED) RGB image (grey-rgb, Stable Diffusion)")
    p.add_argument("--weights", type=Path, help="sd21/sd15: local Stable Diffusion weights, a diffusers folder or a "
                   "single .safetensors/.ckpt file (never downloaded)")
    p.add_argument("--sd-config", type=Path, help="sd21/sd15 with a single-file checkpoint: the model's diffusers "
                   "config folder (model_index.json, */config.json, tokenizer/)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="GPU mixed precision (CPU always fp32)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="trade compute for memory (default: the preset's)")
    p.add_argument("--gradient-accumulation", type=int, help="micro-batches per optimiser step")
    p.add_argument("--use-8bit-adam", action="store_true", default=None,
                   help="8-bit AdamW from bitsandbytes when installed (GPU)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--validate-every", type=int, help="steps between validation sample grids")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="discard an existing --out and start again")
    p.add_argument("--num-processes", type=int, default=1, help="train with N processes through Accelerate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    if args.num_processes > 1:
        return _relaunch_with_accelerate(args.num_processes)
    _quiet_model_loading()
    from cardiofair.diffusion.presets import get_preset
    from cardiofair.diffusion.train import TrainSettings, describe_budget, train

    chosen = dict(
        seed=args.seed, stages=args.stages, max_steps=args.max_steps,
        max_minutes=args.max_minutes, batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule, checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
        size=args.size, condition_mode=args.condition, weights=None if args.weights is None else str(args.weights),
        sd_config=None if args.sd_config is None else str(args.sd_config), mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing, gradient_accumulation=args.gradient_accumulation,
        use_8bit_adam=args.use_8bit_adam)
    # Options left out keep the preset's value.
    settings = TrainSettings.for_preset(get_preset(args.preset), **{k: v for k, v in chosen.items() if v is not None})
    if not args.quiet:
        print(f"training preset {args.preset}: {describe_budget(settings)}")
    out = train(args.dataset, args.out, settings, resume=args.resume, overwrite=args.overwrite,
                progress_bar=not args.quiet)
    print(f"model written to {out} (validation grids in {out / 'training' / 'validation'})")
    return 0


def _relaunch_with_accelerate(processes: int) -> int:
    """Run this same command under ``accelerate launch`` with N processes (CPU: gloo)."""
    import subprocess

    import torch

    argv = list(sys.argv[1:])
    if "--num-processes" in argv:
        position = argv.index("--num-processes")
        del argv[position:position + 2]
    argv = [a for a in argv if not a.startswith("--num-processes=")]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():
        command.append("--cpu")
    return subprocess.call(command + ["-m", "cardiofair"] + argv)


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=("ddim", "dpm++", "unipc"), help="scheduler (default: the model's)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--controlnet-scale", type=float, help="ControlNet conditioning scale (0 = ignore the mask)")


def _sampler_choices(args: argparse.Namespace) -> dict:
    return {"sampler": args.sampler, "steps": args.steps, "guidance_scale": args.guidance_scale,
            "controlnet_scale": args.controlnet_scale}


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample", help="draw synthetic (ED, ES) pairs from a trained model, a mask and a prompt",
        description="Draw N images for one mask pair (a record's mask file from a prepared dataset) and one "
        "prompt; writes a prepared dataset of synthetic records (NIfTI marked SYNTHETIC, PNG previews).")
    p.add_argument("model", type=Path, help="trained model directory")
    p.add_argument("--mask", required=True, type=Path, help="mask NIfTI of a prepared record (masks/<id>.nii.gz)")
    p.add_argument("--prompt", required=True, help='e.g. "Female, age in 60s, normal BMI, heart failure"')
    p.add_argument("-n", type=int, default=8, help="images to draw (default 8)")
    p.add_argument("--seed", type=int, default=0, help="run seed; image i uses seed*100003+i (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    _add_sampler_options(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from cardiofair.data.records import DatasetWriter, Record, read_pair_nifti
    from cardiofair.diffusion.sample import TrainedGenerator
    from cardiofair.prompts import parse_prompt

    _quiet_model_loading()

    if args.n < 1:
        raise CommandError("-n must be at least 1")
    attributes = parse_prompt(args.prompt)
    mask, spacing, _ = read_pair_nifti(args.mask)
    generator = TrainedGenerator(args.model)
    settings = generator.defaults.override(**_sampler_choices(args))
    seeds = [args.seed * 100003 + i for i in range(args.n)]
    masks = np.repeat(mask[None].astype(np.uint8), args.n, axis=0)
    images = generator.sample(masks, [args.prompt] * args.n, seeds, settings, args.batch_size, progress=True)
    with DatasetWriter(args.out, overwrite=args.overwrite) as writer:
        for i, (image, seed) in enumerate(zip(images, seeds)):
            record_id = f"synthetic-{args.seed}-{i:04d}"
            writer.add(Record(image, mask, {
                "record_id": record_id, "subject_id": record_id, "dataset": "synthetic",
                "sex": attributes.get("sex"), "diagnosis": attributes.get("diagnosis"), "prompt": args.prompt,
                "pixel_spacing_mm": spacing, "slice_index": 0, "is_synthetic": True, "seed": seed,
                "mask_source": str(args.mask), **generator.provenance(settings)}))
        writer.finish({"command": "sample", "model": str(args.model), "prompt": args.prompt, "n": args.n,
                       "seed": args.seed, "sampler": generator.provenance(settings)})
    print(f"wrote {args.n} synthetic pairs to {args.out}")
    return 0


def _add_plan(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan", help="decide how many synthetic records each subgroup cell gets",
        description="Count real records per subgroup cell (sensitive attributes x diagnosis) and plan synthetic "
        "records where the cohort is thin. equalize: every cell up to the largest cell of its diagnosis; "
        "prevalence: the positive diagnosis at --target-prevalence in every sensitive group (the paper trained "
        "at 25%% heart failure); target: counts or proportions per cell from --targets CSV.")
    p.add_argument("dataset", type=Path, help="prepared real dataset (its training split)")
    p.add_argument("--out", required=True, type=Path, help="plan CSV to write")
    p.add_argument("--strategy", choices=("equalize", "prevalence", "target"), default="equalize")
    p.add_argument("--attributes", type=_names, default=("sex", "age", "bmi"),
                   help="sensitive attributes to balance, comma-separated (default sex,age,bmi)")
    p.add_argument("--target-prevalence", type=float, help="prevalence: share of --positive-diagnosis per group")
    p.add_argument("--positive-diagnosis", default="heart failure", help="prevalence: the diagnosis counted")
    p.add_argument("--targets", type=Path, help="target: CSV with the attribute columns, diagnosis and "
                   "target_count or target_proportion")
    p.add_argument("--max-ratio-per-cell", type=float, default=5.0, help="synthetic <= ratio x real per cell")
    p.add_argument("--max-ratio-overall", type=float, default=1.0, help="synthetic <= ratio x real overall")
    p.add_argument("--min-real-support", type=int, default=5,
                   help="cells with fewer real records are filled only with --allow-unseen-cells")
    p.add_argument("--allow-unseen-cells", action="store_true",
                   help="also fill cells with little or no real support (the model composes attributes it never "
                   "saw together; such cells are listed separately)")
    p.add_argument("--mask-policy", choices=("copy", "matched", "random"), default="matched",
                   help="where synthetic geometry comes from: a real mask of the same cell (copy), of the same "
                   "diagnosis and most similar attributes (matched, default), or of the same diagnosis (random)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    import pandas as pd

    from cardiofair.balance import PlanSettings, format_plan, plan_synthesis, write_plan
    from cardiofair.data.records import read_manifest
    from cardiofair.data.splits import training_rows

    targets = pd.read_csv(args.targets) if args.targets else None
    settings = PlanSettings(strategy=args.strategy, attributes=args.attributes, target_prevalence=args.target_prevalence,
                            positive_diagnosis=args.positive_diagnosis, targets=targets,
                            max_ratio_per_cell=args.max_ratio_per_cell, max_ratio_overall=args.max_ratio_overall,
                            min_real_support=args.min_real_support, allow_unseen_cells=args.allow_unseen_cells,
                            mask_policy=args.mask_policy)
    plan = plan_synthesis(training_rows(read_manifest(args.dataset)), settings)
    write_plan(plan, args.out, overwrite=args.overwrite)
    print(format_plan(plan))
    print(f"\nplan written to {args.out}")
    return 0


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="make the synthetic records a plan asks for",
        description="Sample every synthetic record of a plan (from `cardiofair plan`) with a trained model, masks "
        "drawn from the dataset's real training records by the plan's mask policy. Resumable: run the same "
        "command again after a crash and it continues; the result equals an uninterrupted run.")
    p.add_argument("--model", required=True, type=Path, help="trained model directory")
    p.add_argument("--dataset", required=True, type=Path, help="the prepared real dataset the plan was made from")
    p.add_argument("--plan", required=True, type=Path, help="plan CSV")
    p.add_argument("--out", required=True, type=Path, help="synthetic dataset directory")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--augment-masks", action="store_true",
                   help="warp each reused mask slightly (label-preserving) so no real geometry repeats verbatim")
    _add_sampler_options(p)
    p.add_argument("--overwrite", action="store_true", help="discard an existing --out and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from cardiofair.balance import read_plan
    from cardiofair.data.summary import summary_text
    from cardiofair.diffusion.presets import SamplerSettings
    from cardiofair.generate import GenerationSettings, generate

    _quiet_model_loading()
    chosen = _sampler_choices(args)
    sampler = None
    if any(v is not None for v in chosen.values()):
        from cardiofair.diffusion.sample import TrainedGenerator

        defaults = SamplerSettings(**TrainedGenerator.read_card(args.model)["sampling"])
        sampler = defaults.override(**chosen)
    settings = GenerationSettings(seed=args.seed, batch_size=args.batch_size, augment_masks=args.augment_masks,
                                  sampler=sampler)
    plan = read_plan(args.plan)
    out = generate(args.model, args.dataset, plan, args.out, settings, overwrite=args.overwrite,
                   progress=not args.quiet)
    print(summary_text(out) if not args.quiet else f"synthetic dataset written to {out}")
    return 0


def _add_merge(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge", help="real training records + synthetic records in one dataset",
                              description="The augmented training set: the real dataset's training records (never "
                              "its test split) and a synthetic dataset's records, files copied.")
    p.add_argument("real", type=Path, help="prepared real dataset")
    p.add_argument("synthetic", type=Path, help="synthetic dataset from `cardiofair generate`")
    p.add_argument("--out", required=True, type=Path, help="merged dataset directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> int:
    from cardiofair.data.summary import summary_text
    from cardiofair.generate import merge_datasets

    print(summary_text(merge_datasets(args.real, args.synthetic, args.out, overwrite=args.overwrite)))
    return 0


def _add_evaluate_synthetic(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "synthetic",
        help="realism, mask fidelity, prompt fidelity and privacy of a synthetic dataset",
        description="Train (or load cached) evaluators on the real training split, then judge the synthetic "
        "records beside real-vs-real references: FD/KD-cardiofair realism and MS-SSIM diversity, mask "
        "fidelity (Dice), prompt fidelity (balanced accuracy) and privacy (nearest-neighbour copy rate). "
        "Writes synthetic_quality.json, per-cell CSV tables and figures.",
    )
    p.add_argument("--real", required=True, type=Path, help="the real prepared dataset (split with `cardiofair split`)")
    p.add_argument("--synthetic", required=True, type=Path, help="a generated dataset (`cardiofair generate`)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--evaluators", type=Path, help="evaluator cache directory; evaluators are kept in a folder "
                   "named by a hash of the real training and validation images and the training settings "
                   "(default: $CARDIOFAIR_CACHE/evaluators, else ~/.cache/cardiofair/evaluators)")
    p.add_argument("--steps", type=int, default=400, help="segmenter training steps (default 400)")
    p.add_argument("--classifier-steps", type=int, default=700, help="attribute classifier training steps (default 700)")
    p.add_argument("--min-images", type=int, default=20,
                   help="fewest images for a distance to be reported (default 20); smaller cells say so")
    p.add_argument("--model", type=Path, help="the trained generator (`cardiofair train`): draws real test masks "
                   "under prompts that differ in one attribute (prompt_effects); without it only the phantom's "
                   "reference pairs are measured")
    p.add_argument("--counterfactual-pairs", type=int, default=32,
                   help="real test masks drawn per attribute for prompt_effects (default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.set_defaults(handler=_evaluate_synthetic)


def _evaluate_synthetic(args: argparse.Namespace) -> int:
    from cardiofair.metrics.quality import QualitySettings, evaluate_synthetic, quality_summary_text

    settings = QualitySettings(steps=args.steps, classifier_steps=args.classifier_steps, min_images=args.min_images,
                               seed=args.seed, counterfactual_pairs=args.counterfactual_pairs)
    report = evaluate_synthetic(args.real, args.synthetic, args.out, settings, evaluators_dir=args.evaluators,
                                overwrite=args.overwrite, progress=not args.quiet, model_dir=args.model)
    print(quality_summary_text(report))
    print(f"wrote {args.out / 'synthetic_quality.json'}")
    return 0


def _add_evaluate_fairness(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "fairness",
        help="does it make the classifier fairer? classifier arms x repeats with fairness metrics and intervals",
        description="Train a diagnosis classifier on the (ED, ES) pair in several arms (real, real+synthetic, "
        "synthetic, reweight, oversample, threshold), all on the real dataset's split with the same seeds, and "
        "report per-group metrics (fairlearn MetricFrame), fairness gaps, intervals over repeats and over test "
        "subjects, and each arm's paired difference against real. Writes fairness.json, per-group CSV tables "
        "and the predictions per test subject.",
    )
    p.add_argument("--real", required=True, type=Path, help="the real prepared dataset (split with `cardiofair split`)")
    p.add_argument("--synthetic", type=Path, help="a generated dataset (`cardiofair generate`) for the "
                   "real+synthetic and synthetic arms, and whose per-cell counts oversample copies")
    p.add_argument("--plan", type=Path, help="without --synthetic: the plan CSV whose counts oversample copies "
                   "(default: `cardiofair plan`'s default settings on the training split)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--arms", type=_names, help="comma-separated arms, including real (default: all six with "
                   "--synthetic, else real,reweight,oversample,threshold)")
    p.add_argument("--repeats", type=int, default=5, help="seeds per arm, SEED..SEED+R-1, the same for every arm "
                   "(default 5)")
    p.add_argument("--attributes", type=_names, default=("sex", "age", "bmi"),
                   help="sensitive attributes to report (default sex,age,bmi)")
    p.add_argument("--intersection", type=lambda text: () if text == "none" else _names(text), default=("sex", "age"),
                   help="attributes whose intersectional cells are reported too (default sex,age; 'none' for none)")
    p.add_argument("--positive-diagnosis", default="heart failure",
                   help="the diagnosis detected against healthy (default heart failure); others are left out")
    p.add_argument("--train-prevalence", type=float, help="subsample real training subjects to this share of the "
                   "positive diagnosis (the paper: 0.25); validation and test keep the natural prevalence")
    p.add_argument("--threshold-attribute", default="sex",
                   help="the group the threshold arm equalises odds over, and the printed table's (default sex)")
    p.add_argument("--preset", choices=("auto", "compact", "resnet18"), default="auto",
                   help="classifier: compact CNN (CPU) or ResNet-18 (GPU); auto picks resnet18 on a CUDA GPU")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default auto)")
    p.add_argument("--epochs", type=int, help="most epochs per training (default: the preset's)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation AUROC")
    p.add_argument("--batch-size", type=int, help="images per step (default: the preset's)")
    p.add_argument("--learning-rate", type=float, help="AdamW learning rate (default: the preset's)")
    p.add_argument("--bootstrap", type=int, default=1000, help="test-subject resamples for intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="first repeat's seed; also the bootstrap's (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_evaluate_fairness)


def _evaluate_fairness(args: argparse.Namespace) -> int:
    import torch

    from cardiofair.balance import read_plan
    from cardiofair.downstream.arms import ARMS, SYNTHETIC_ARMS
    from cardiofair.downstream.classifier import ClassifierSettings
    from cardiofair.downstream.experiment import ExperimentSettings, comparison_table, run_experiment

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda, but torch sees no CUDA GPU")
    preset = ("resnet18" if device == "cuda" else "compact") if args.preset == "auto" else args.preset
    classifier = ClassifierSettings.for_preset(preset, max_epochs=args.epochs, patience=args.patience,
                                               batch_size=args.batch_size, learning_rate=args.learning_rate,
                                               device=device)
    arms = args.arms or tuple(a for a in ARMS if args.synthetic or a not in SYNTHETIC_ARMS)
    settings = ExperimentSettings(arms=arms, repeats=args.repeats, seed=args.seed, attributes=args.attributes,
                                  intersection=args.intersection, positive_diagnosis=args.positive_diagnosis,
                                  train_prevalence=args.train_prevalence, threshold_attribute=args.threshold_attribute,
                                  n_bootstrap=args.bootstrap, classifier=classifier)
    plan = read_plan(args.plan) if args.plan else None
    report = run_experiment(args.real, args.out, settings, synthetic=args.synthetic, plan=plan,
                            overwrite=args.overwrite, progress=not args.quiet)
    print(comparison_table(report))
    print(f"\nwrote {args.out / 'fairness.json'} and per-group tables, predictions and learning curves in {args.out}")
    return 0


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="the study on one HTML page, with the model card and the datasheet",
        description="Write OUT/report.html (one self-contained page: cohort before and after augmentation, "
        "real and synthetic examples, one mask under different prompts, realism, fidelity and privacy beside "
        "their real references, the closest pairs, per-group fairness with intervals), OUT/figures/*.png, "
        "OUT/model_card.md and OUT/datasheet.md. Every input but --real may be left out; its sections then say so.")
    p.add_argument("--real", required=True, type=Path, help="the real prepared dataset (split with `cardiofair split`)")
    p.add_argument("--synthetic", type=Path, help="the generated dataset (`cardiofair generate`)")
    p.add_argument("--model", type=Path, help="the trained generator (`cardiofair train`); draws the counterfactual row")
    p.add_argument("--quality", type=Path, help="the output folder of `cardiofair evaluate synthetic`")
    p.add_argument("--fairness", type=Path, help="the output folder of `cardiofair evaluate fairness`")
    p.add_argument("--plan", type=Path, help="the synthesis plan CSV (`cardiofair plan`)")
    p.add_argument("--licence", help="the source cohort's licence terms, copied into the datasheet")
    p.add_argument("--metadata", type=Path, help="a JSON file of run metadata (versions, configuration, seeds, "
                   "hardware, time per stage), shown as given")
    p.add_argument("--counterfactuals", action=argparse.BooleanOptionalAction, default=True,
                   help="draw one real training mask as female/male, 40s/70s and normal/obese BMI with --model "
                   "(default: on)")
    p.add_argument("--seed", type=int, default=0, help="picks the example records and the counterfactual mask, "
                   "and seeds its drawing (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in OUT")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    import json

    _quiet_model_loading()
    from cardiofair.report import COUNTERFACTUALS, write_report

    try:
        metadata = json.loads(args.metadata.read_text()) if args.metadata else None
    except json.JSONDecodeError as error:
        raise CommandError(f"--metadata {args.metadata} is not valid JSON: {error}") from None
    path = write_report(args.out, real=args.real, synthetic=args.synthetic, model=args.model, quality=args.quality,
                        fairness=args.fairness, plan=args.plan, metadata=metadata, licence=args.licence,
                        counterfactual_prompts=COUNTERFACTUALS if args.counterfactuals else {}, seed=args.seed,
                        overwrite=args.overwrite)
    print(f"wrote {path}, {args.out / 'model_card.md'}, {args.out / 'datasheet.md'} and {args.out / 'figures'}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="judge synthetic data (synthetic) or downstream fairness (fairness)",
                              description="Evaluate the synthetic data or the downstream classifier arms.")
    kinds = p.add_subparsers(dest="evaluation", required=True, metavar="WHAT")
    _add_evaluate_synthetic(kinds)
    _add_evaluate_fairness(kinds)


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole study: prepare, train, plan, generate, evaluate synthetic, evaluate fairness, report",
        description="Run a whole study from one YAML configuration (without one: the embedded default, the "
        "phantom cohort with the CPU presets, about 20 minutes on 2 cores). Each stage writes runs/NAME/STAGE/ "
        "and is skipped when it already finished with the same settings, so running the same command again "
        "after a crash continues. The report is runs/NAME/report.html.",
    )
    p.add_argument("config", nargs="?", type=Path, help="study configuration (see configs/); default: built in")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="redo this stage and every later one even if finished (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print each stage's commands and whether it would run")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from cardiofair.config import load_config

    config, base = load_config(args.config, args.overrides)
    from cardiofair.study import Study, run_study

    report = run_study(Study(config, base), force=args.force, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"study finished: open {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cardiofair`` command."""
    parser = argparse.ArgumentParser(
        prog="cardiofair",
        description="Fairness-aware data augmentation for cardiac MRI with text- and mask-conditioned diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"cardiofair {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(subparsers)
    _add_summary(subparsers)
    _add_split(subparsers)
    _add_train(subparsers)
    _add_sample(subparsers)
    _add_plan(subparsers)
    _add_generate(subparsers)
    _add_merge(subparsers)
    _add_evaluate(subparsers)
    _add_report(subparsers)
    _add_run(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the subcommand, turn expected errors into one-line messages."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SubjectError as error:
        print(f"cardiofair: stopped (--strict) at {error}", file=sys.stderr)
        return 1
    except (CardiofairError, FileNotFoundError, FileExistsError, ValueError, yaml.YAMLError) as error:
        print(f"cardiofair: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cardiofair: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
