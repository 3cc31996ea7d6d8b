"""The generator's model card and the synthetic dataset's datasheet, as Markdown.

They travel with the files they describe (a model folder, a synthetic dataset), so each says on
its own what was made, from what, how well it did against real references, and what it must not
be used for. A missing input is written as missing, never left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cardiofair.formatting import Table
from cardiofair.metrics.quality_metrics import METRICS
from cardiofair.report.tables import plan_table, provenance_table, synthetic_cells_table
from cardiofair.results import QualityResult, TrainResult

NOT_GIVEN = "not given"


def markdown_table(data: Table) -> str:
    """A Markdown table with its caption above and notes below (pipes in cells escaped)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    parts = [f"*{data.caption}*", ""] if data.caption else []
    if data.rows:
        parts += [line(data.header), line(["---"] * len(data.header)), *(line(r) for r in data.rows)]
    else:
        parts.append("(no rows)")
    for note in data.notes:
        parts += ["", f"> {note}"]
    return "\n".join(parts) + "\n"


def _facts(rows: Sequence[tuple[str, Any]]) -> str:
    return markdown_table(Table("", ["", ""], [[name, str(value)] for name, value in rows]))


@dataclass(frozen=True)
class GeneratorFacts:
    """What the report shows of a trained generator and how it draws the counterfactual row.
    The report stage reads them from the model folder; the report itself loads no model."""

    # The model's folder and its card (cardiofair.json): preset, size, prompt schema, training and sampling.
    model: TrainResult
    weights_hash: str
    parameters: Mapping[str, int]
    # The default sampling, described in words.
    sampling: str
    # The training step whose averaged weights are the guide for autoguidance (None: no guide).
    guide_step: int | None
    # Images (N, 2, H, W) of mask pairs under prompts, one seed each.
    draw: Callable[[np.ndarray, Sequence[str], Sequence[int]], np.ndarray]
    # Where the training loss jumped (a diverged model), in words; None if it did not.
    loss_jump: str | None = None


def quality_markdown(quality: QualityResult | None, source: str, checks: Sequence[str] = ()) -> str:
    """The tables of the quality metrics shown in the cards, or a line saying there are none;
    ``checks`` are warnings printed first (e.g. the evaluation was made from other data)."""
    if quality is None:
        return f"No quality evaluation was given ({source}): realism, fidelity and privacy are unmeasured.\n"
    return f"From `{source}`.\n\n" + "".join(f"> **Check.** {c}\n\n" for c in checks) + \
        "\n".join(markdown_table(m.table(quality.section(m.name))) for m in METRICS if m.in_cards)


def _guide(generator: GeneratorFacts, settings: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """Which weights the model keeps as its guide for autoguidance."""
    share, total, step = settings.get("guide_at"), settings.get("max_steps"), generator.guide_step
    if share is None or not total or step is None:
        return "none"
    if int(training.get("steps") or 0) < step:
        return f"none (training stopped before step {step})"
    return f"its averaged weights after step {step} of {total} ({share:.0%} of training)"


def _architecture(info: Mapping[str, Any]) -> str:
    if info.get("family") == "stable-diffusion":
        return ("Stable Diffusion (UNet, VAE, CLIP text encoder from the given weights) with a ControlNet "
                "initialised from the UNet reading the mask; (ED, ES, ED) stacked as RGB")
    return ("pixel-space text-conditioned UNet (diffusers UNet2DConditionModel, cross-attention to the prompt) and "
            "ControlNet (diffusers ControlNetModel) reading the mask pair, with a small CLIP text encoder trained "
            "from scratch on a word-level tokenizer; nothing pretrained")


def model_card(generator: GeneratorFacts | None, *, datasets: Sequence[str], quality: QualityResult | None,
               quality_source: str, checks: Sequence[str] = ()) -> str:
    """The generator's model card: what it is, what it learned from, how it did, what not to use it for."""
    if generator is None:
        return ("# Model card: cardiofair generator\n\nNo model was given to the report: there is no generator to "
                "describe. Pass the trained model folder (`--model`).\n")
    model_dir, info = generator.model.folder, generator.model.card
    training = info.get("training") or {}
    settings = training.get("settings") or {}
    schema = info.get("prompt_schema") or {}
    size = info.get("size")
    facts = [
        ("model folder", model_dir),
        ("weights hash (sha256 of the safetensors, first 16 hex)", generator.weights_hash),
        ("made by", f"cardiofair {info.get('cardiofair_version', '?')}"),
        ("family / preset", f"{info.get('family', 'embedded')} / {info.get('preset', '?')}"),
        ("architecture", _architecture(info)),
        ("parameters", ", ".join(f"{name} {count:,}" for name, count in generator.parameters.items()) or NOT_GIVEN),
        ("output", f"{info.get('image_channels', 2)} channels ({', '.join(info.get('channel_names', ['ED', 'ES']))}), "
                   f"{size} x {size} px, intensities in [0, 1]"),
        ("mask conditioning", f"{info.get('condition_mode', '?')} (labels 1 LV blood pool, 2 LV myocardium, "
                              "3 RV blood pool)"),
        ("prompt attributes", f"{', '.join(schema.get('attributes', []))} (age in {schema.get('age_bin_width', 10)}-year "
                              "bins), e.g. \"Female, age in 60s, normal BMI, heart failure\""),
        ("default sampling", generator.sampling or NOT_GIVEN),
    ]
    trained = [
        ("training dataset", training.get("dataset", NOT_GIVEN)),
        ("records", training.get("n_records", NOT_GIVEN)),
        ("steps / minutes", f"{training.get('steps', '?')} / {training.get('minutes', '?')}"),
        ("device / processes", f"{training.get('device', '?')} / {(training.get('distributed') or {}).get('processes', 1)}"),
        ("torch", training.get("torch", NOT_GIVEN)),
        ("stages", ", ".join(f"{name} {share}" for name, share in settings.get("stages", [])) or NOT_GIVEN),
        ("optimiser", f"AdamW, learning rate {settings.get('learning_rate')} ({settings.get('lr_schedule')}, "
                      f"{settings.get('warmup_steps')} warm-up steps), batch {settings.get('batch_size')}"
                      + (f" ({settings['early_batch_size']} in the first {settings.get('early_steps')} steps)"
                         if settings.get("early_batch_size") and settings.get("early_steps") else "")
                      + f", EMA {settings.get('ema_decay')}"),
        ("prompt dropout (for guidance) / rare-prompt weight cap", f"{settings.get('prompt_dropout')} / "
                                                                   f"{settings.get('balance_cap')}"
         + (f"; each attribute left out at {settings['attribute_dropout']}" if settings.get("attribute_dropout")
            else "")),
        ("training timesteps / min-SNR gamma", f"from {settings.get('min_timestep', 0)} on / "
                                               f"{settings.get('min_snr_gamma')}"),
        ("guide for autoguidance", _guide(generator, settings, training)),
        ("loss", generator.loss_jump or ("not recorded" if "loss_jump" not in training else
                                         "no jump (see training/loss.png)")),
        ("seed", settings.get("seed", NOT_GIVEN)),
    ]
    cells = pd.DataFrame(info.get("training_cells") or [])
    cell_table = markdown_table(Table("Training records per subgroup cell (the generator saw these counts)",
                                      list(map(str, cells.columns)), cells.astype(str).values.tolist())) \
        if len(cells) else "No subgroup counts recorded in cardiofair.json.\n"
    phantom = any("phantom" in str(d).lower() for d in datasets)
    limits = [
        "It draws one short-axis slice pair (ED, ES) at the training resolution, not a volume or a cine.",
        "Cells with few training records (see the table above) are learned poorly; a prompt for a cell it never saw "
        "composes attributes it learned apart, and its output is the least trustworthy.",
        "Realism, mask and prompt fidelity and privacy are judged by evaluators trained by cardiofair on the same "
        "real training split (no Inception, no RadImageNet): they share the data's blind spots, and their figures "
        "mean something only beside the real-vs-real reference of the same run.",
        "An attribute the evaluator cannot read on real images (reference near chance) cannot be verified on "
        "synthetic ones either.",
        "Privacy is measured as distance to the nearest training image; a low copy rate is not a formal guarantee "
        "(no differential privacy).",
    ]
    if phantom:
        limits.insert(0, "The cohort is cardiofair's phantom, a simulation: anatomy, intensities and how the "
                         "attributes shape the heart are programmed, not measured. Nothing learned here is evidence "
                         "about real patients.")
    return "\n".join([
        f"# Model card: cardiofair generator `{model_dir.name}`", "",
        "A diffusion model that draws synthetic cardiac MRI short-axis slice pairs from a segmentation mask pair (the "
        "geometry) and a text prompt built from patient attributes.", "",
        "## Model", "", _facts(facts),
        "## Training data", "", _facts(trained), cell_table,
        "## Intended use", "",
        "- Research on fairness-aware data augmentation: synthetic training records for subgroup cells a cohort "
        "has too few of, judged against real references and used in classifier experiments with real test sets.",
        "- Method development and teaching on the phantom cohort.", "",
        "## Not for", "",
        "- Diagnosis, triage or any decision about a patient.",
        "- Test or validation sets: fairness and accuracy must be measured on real patients only.",
        "- Estimating prevalence, anatomy or image statistics of a population.",
        "- Release of its images as if acquired: every file it writes says SYNTHETIC.", "",
        "## Evaluation", "", quality_markdown(quality, quality_source, checks),
        "## Limits", "", *(f"- {text}" for text in limits), "",
    ])


def datasheet(synthetic_dir: Path | None, rows: pd.DataFrame | None, *, image_size: int | None, real_dir: Path,
              real_records: int,
              training_records: int, datasets: Sequence[str], plan: pd.DataFrame | None, plan_source: str,
              quality: QualityResult | None, quality_source: str, licence: str | None,
              checks: Sequence[str] = ()) -> str:
    """The synthetic dataset's datasheet, marked SYNTHETIC: composition, how it was made, the
    source cohort and its licence, quality and privacy, and its proper uses."""
    if synthetic_dir is None or rows is None:
        return ("# Datasheet: SYNTHETIC dataset\n\nNo synthetic dataset was given to the report: there is nothing to "
                "describe. Pass the generated dataset (`--synthetic`).\n")
    licence_text = licence.strip() if licence and licence.strip() else (
        "Not given. The synthetic records are drawn on masks of real training subjects and were learned from their "
        "images: share them only under the source cohort's terms.")
    spacing = ", ".join(sorted(rows["pixel_spacing_mm"].astype(str).unique())) if len(rows) else "?"
    prompts = rows["prompt"].value_counts()
    prompt_lines = [f"- {count} x \"{prompt}\"" for prompt, count in prompts.head(25).items()]
    if len(prompts) > 25:
        prompt_lines.append(f"- ... and {len(prompts) - 25} more prompts (the manifest's prompt column has all)")
    plan_part = markdown_table(plan_table(plan)) if plan is not None else \
        f"No synthesis plan was given ({plan_source}); the cells above are what was generated.\n"
    return "\n".join([
        f"# Datasheet: SYNTHETIC cardiac MRI dataset `{synthetic_dir.name}`", "",
        "> **SYNTHETIC DATA.** Every image in this dataset was drawn by a diffusion model. No image is a scan of a "
        "patient and no record is a person; the attributes are the prompt each image was drawn with, not "
        "measurements. Each NIfTI header says SYNTHETIC and each record has `is_synthetic = True`.", "",
        "## Motivation", "",
        f"Made by cardiofair to fill subgroup cells that the real cohort `{real_dir}` has too few records of, for "
        "fairness-aware training of cardiac MRI classifiers.", "",
        "## Composition", "",
        _facts([("folder", synthetic_dir), ("records", len(rows)),
                ("record", f"an (ED, ES) short-axis slice pair with its (ED, ES) mask pair, {image_size} x {image_size} px "
                           f"of {spacing} mm; labels 0 "
                           "background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool"),
                ("files", "manifest.csv, images/*.nii.gz, masks/*.nii.gz, previews/*.png")]),
        markdown_table(synthetic_cells_table(rows)),
        "Prompts (the text each image was drawn with):", "", *prompt_lines, "",
        "## How it was made", "",
        "Each record's mask is a real training record's mask (`mask_source_record`) chosen by the mask policy, or "
        "a new one drawn for its cell: "
        "`copy` (a record of the same cell), `matched` (same diagnosis and as many other attributes as possible) or "
        "`random` (any record of the same diagnosis); warped masks (`mask_augmented`) were deformed slightly so no "
        "geometry is reused verbatim. Under `synthesized` no record lends the mask: the mask generator drew it for "
        "the cell (`mask_model_hash`, `mask_draws`, `mask_extrapolated` where the cell was never seen in training), "
        "and `mask_nearest_record` names the training record whose mask lies nearest. Each record has its own seed "
        "(`seed`).", "",
        markdown_table(provenance_table(rows)), plan_part,
        "## Source cohort and licence", "",
        _facts([("real dataset", real_dir), ("source", ", ".join(datasets) or NOT_GIVEN),
                ("real records / of them in the training split", f"{real_records} / {training_records}"),
                ("licence terms of the source cohort", licence_text)]),
        "## Quality and privacy", "", quality_markdown(quality, quality_source, checks),
        "## Uses", "",
        "- For: augmenting the training split of classifiers and studying fairness, always tested on real patients.",
        "- Not for: test or validation sets, clinical use, population statistics, or release as acquired data.", "",
    ])
