"""`cardiofair report`: the whole study on one page, with the model card and the datasheet.

Reads what the earlier stages wrote (the real and synthetic datasets, the model folder,
``synthetic_quality.json``, ``fairness.json``, the plan) and writes ``report.html`` (one
self-contained file), ``figures/*.png``, ``model_card.md`` and ``datasheet.md``. Any input but
the real dataset may be left out; its sections then say plainly that it is missing, so a partial
study still gives a complete page and nobody mistakes an absent result for a good one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cardiofair import __version__
from cardiofair.data.records import ImageSet, load_images, load_record, read_manifest, real_records
from cardiofair.data.split import training_rows
from cardiofair.data.summary import attribute_table, cell_attributes, no_diagnosis_reason, with_cells
from cardiofair.diagnoses import HEART_FAILURE
from cardiofair.errors import CardiofairError, MissingInputError, OutputExistsError
from cardiofair.formatting import Table
from cardiofair.io import StagingDirectory, atomic_write
from cardiofair.metrics.group_metrics import oracle_share_lines, power_sentence, too_small_notes
from cardiofair.metrics.quality_metrics import mask_geometry_table, shown_together
from cardiofair.prompts import DEFAULT_SCHEMA, UNKNOWN, PromptSchema, prompt_from_attributes
from cardiofair.report import cards, figures, tables
from cardiofair.report import html as page
from cardiofair.report.cards import GeneratorFacts
from cardiofair.results import FairnessResult, GenerateResult, PlanResult, QualityResult, ReportResult, ResultError

# The counterfactual row: the same geometry drawn as each of these attribute values in turn
# (the paper's examples: sex, a young and an old decade, a normal and an obese BMI).
COUNTERFACTUALS: dict[str, tuple[str, ...]] = {"sex": ("Female", "Male"), "age": ("40s", "70s"),
                                               "bmi": ("normal", "obese")}
EXAMPLES_PER_SIDE = 3
MAX_EXAMPLE_CELLS = 8
MAX_HISTOGRAM_CELLS = 4
BAR_METRICS = ("balanced_accuracy", "true_positive_rate")


class ReportError(CardiofairError):
    """An input given to the report cannot be read as what it should be."""


@dataclass
class Inputs:
    """What the earlier stages wrote, loaded; ``None`` where an input was not given."""

    real: Path
    manifest: pd.DataFrame
    train: pd.DataFrame
    synthetic: Path | None = None
    synthetic_rows: pd.DataFrame | None = None
    generator: GeneratorFacts | None = None
    quality_dir: Path | None = None
    quality: QualityResult | None = None
    fairness_dir: Path | None = None
    fairness: FairnessResult | None = None
    plan_path: Path | None = None
    plan: pd.DataFrame | None = None
    datasets: list[str] = field(default_factory=list)

    def source(self, name: str) -> str:
        """Where an input came from, or the option that would have given it."""
        paths = {"quality": self.quality_dir and self.quality_dir / QualityResult.FILE, "plan": self.plan_path,
                 "fairness": self.fairness_dir and self.fairness_dir / FairnessResult.FILE}
        return str(paths[name]) if paths[name] else f"not given: --{name}"


def load_inputs(real: Path, synthetic: Path | None = None, generator: GeneratorFacts | None = None,
                quality: Path | None = None, fairness: Path | None = None, plan: Path | None = None) -> Inputs:
    """Load every given input, with a clear error for one that was given but cannot be read
    (a mistyped folder must not turn into a 'missing' section)."""
    manifest = read_manifest(real)
    real_rows = real_records(manifest)
    inputs = Inputs(Path(real), real_rows, training_rows(manifest),
                    datasets=sorted(real_rows["dataset"].dropna().astype(str).unique()))
    inputs.generator = generator
    try:
        if synthetic is not None:
            rows = GenerateResult.load(synthetic).records
            if rows.empty:
                raise ReportError(f"{synthetic} holds no synthetic records (is_synthetic is false everywhere)")
            inputs.synthetic, inputs.synthetic_rows = Path(synthetic), rows
        if quality is not None:
            inputs.quality_dir, inputs.quality = Path(quality), QualityResult.load(quality)
        if fairness is not None:
            inputs.fairness_dir, inputs.fairness = Path(fairness), FairnessResult.load(fairness)
        if plan is not None:
            loaded = PlanResult.load(plan)
            inputs.plan_path, inputs.plan = loaded.path, loaded.plan
    except (ResultError, MissingInputError) as error:
        raise ReportError(str(error)) from None
    return inputs


def write_report(out: str | os.PathLike, *, real: str | os.PathLike, synthetic: str | os.PathLike | None,
                 generator: GeneratorFacts | None, quality: str | os.PathLike | None,
                 fairness: str | os.PathLike | None, plan: str | os.PathLike | None = None,
                 metadata: Mapping[str, Any] | None = None, licence: str | None = None,
                 counterfactual_prompts: Mapping[str, Sequence[str]] = COUNTERFACTUALS, seed: int = 0,
                 overwrite: bool = False) -> Path:
    """Write ``out/report.html``, ``out/figures/*.png``, ``out/model_card.md`` and
    ``out/datasheet.md``; return the page's path.

    ``metadata`` (versions, configuration, seeds, hardware, time per stage) is shown as given;
    ``licence`` is the source cohort's licence terms, copied into the datasheet;
    ``counterfactual_prompts`` maps an attribute to the values one real training mask is drawn
    as; ``seed`` picks that mask and the example records and seeds the drawing. An existing
    report is replaced only with ``overwrite``.
    """
    out = Path(out)
    if (out / ReportResult.FILE).exists() and not overwrite:
        raise OutputExistsError(f"{out / ReportResult.FILE} already exists; pass --overwrite to replace it")
    inputs = load_inputs(Path(real), None if synthetic is None else Path(synthetic), generator,
                         *(None if p is None else Path(p) for p in (quality, fairness, plan)))
    builder = _Builder(inputs, seed)
    sections = [
        builder.inputs_section(),
        builder.cohort_section(),
        builder.plan_section(),
        builder.examples_section(),
        builder.counterfactual_section(counterfactual_prompts),
        *builder.quality_sections(),
        builder.closest_pairs_section(),
        builder.mask_geometry_section(),
        builder.fairness_section(),
        builder.metadata_section(metadata),
    ]
    model_card, datasheet = builder.cards(licence)
    sections.append(builder.cards_section(model_card, datasheet))
    intro = [page.paragraph(f"cardiofair {__version__}: the real cohort, the synthetic records made for its thin "
                            "subgroups, how good they are beside real references, and whether a classifier "
                            "became fairer.")]
    if inputs.synthetic is not None:
        intro.append(page.paragraph("Images marked synthetic on this page were drawn by a diffusion model; they are "
                                    "not patients.", "synthetic"))
    verdict = tables.quality_verdict(inputs.quality) if inputs.quality is not None else []
    if verdict:
        far = not verdict[0].startswith("Realism was not measured") or len(verdict) > 1
        title = "The synthetic images are far from real ones." if far else \
            "How close the synthetic images are to real ones is not known."
        intro.append(page.verdict(title, " ".join(verdict)))
    if generator is not None and generator.loss_jump:
        intro.append(page.verdict("The generator may have diverged.", generator.loss_jump[0].upper() +
                                  generator.loss_jump[1:] + "."))
    document = page.page("cardiofair study report", intro, sections)

    out.mkdir(parents=True, exist_ok=True)
    # Figures are swapped in as one folder, so a figure of an earlier report (say, a fairness
    # chart when this run has none) never lingers beside the new page.
    with StagingDirectory(out / ReportResult.FIGURES, overwrite=True) as staging:
        for name, data in builder.figures.items():
            atomic_write(staging.tmp / name, data)
        staging.commit()
    atomic_write(out / ReportResult.MODEL_CARD, model_card)
    atomic_write(out / ReportResult.DATASHEET, datasheet)
    # The page last: its presence marks a finished report.
    return atomic_write(out / ReportResult.FILE, document)


class _Builder:
    """Builds each section from the loaded inputs and keeps the figures it drew."""

    def __init__(self, inputs: Inputs, seed: int):
        self.inputs = inputs
        self.seed = seed
        self.figures: dict[str, bytes] = {}
        fairness = inputs.fairness
        self.positive = fairness.positive if fairness else HEART_FAILURE
        self.positive_set = (fairness and fairness.data.get("positive_diagnoses")) or [self.positive]

    def _figure(self, name: str, data: bytes, alt: str, caption: str, pixelated: bool = False) -> str:
        self.figures[name] = data
        return page.image(data, alt, f"{caption} ({ReportResult.FIGURES}/{name})", pixelated)

    # --- sections ---------------------------------------------------------------------------

    def inputs_section(self) -> page.Section:
        i = self.inputs
        given = [("real dataset", i.real, f"{len(i.manifest)} real records, {len(i.train)} in the training split"),
                 ("synthetic dataset", i.synthetic,
                  None if i.synthetic_rows is None else f"{len(i.synthetic_rows)} synthetic records"),
                 ("generator model", i.generator and i.generator.model.folder,
                  i.generator and f"preset {i.generator.model.card.get('preset')}"),
                 ("synthetic quality", i.quality_dir, None if i.quality is None else QualityResult.FILE),
                 ("fairness experiment", i.fairness_dir,
                  None if i.fairness is None else f"arms: {', '.join(i.fairness.arms)}"),
                 ("synthesis plan", i.plan_path, None if i.plan is None else f"{len(i.plan)} cells")]
        rows = [[name, str(path) if path else "not given", what if path else "its sections say it is missing"]
                for name, path, what in given]
        body = page.table(Table("What this report was made from", ["input", "path", "content"], rows))
        warnings = "".join(page.warning(text) for texts in self._mismatches().values() for text in texts)
        return page.Section("inputs", "Inputs", body + warnings)

    def _mismatches(self) -> dict[str, list[str]]:
        """Per input, the data it records being made from where that is not what the report was
        given: figures of another run must not pass for these data's."""
        i = self.inputs
        claims = []
        if i.quality is not None:
            claims += [("quality", "real dataset", i.quality.real.get("path"), i.real),
                       ("quality", "synthetic dataset", i.quality.synthetic.get("path"), i.synthetic)]
        if i.fairness is not None:
            claims += [("fairness", "real dataset", i.fairness.data.get("real"), i.real),
                       ("fairness", "synthetic dataset", i.fairness.data.get("synthetic"), i.synthetic)]
        if i.generator is not None:
            claims.append(("model", "real dataset", (i.generator.model.card.get("training") or {}).get("dataset"), i.real))
        names = {"quality": "The quality evaluation", "fairness": "The fairness experiment", "model": "The generator"}
        found: dict[str, list[str]] = {}
        for key, what, recorded, given in claims:
            if recorded and given and Path(recorded).resolve() != Path(given).resolve():
                found.setdefault(key, []).append(f"{names[key]} was made from the {what} {recorded}, not from {given} "
                                                 "given here: its figures may describe other data.")
        return found

    def cohort_section(self) -> page.Section:
        i = self.inputs
        train = with_cells(i.train)
        name = "Real training split" if "split" in i.manifest.columns else "Real records (the dataset is not split)"
        panels = [(f"{name} ({len(train)} records)", tables.prevalence_grid(train, self.positive_set))]
        body = []
        if i.synthetic_rows is None:
            body.append(page.missing("No synthetic dataset was given (--synthetic): only the real training split is "
                                     "shown, there is no 'after augmentation'."))
        else:
            augmented = pd.concat([train.assign(synthetic=False), with_cells(i.synthetic_rows).assign(synthetic=True)],
                                  ignore_index=True)
            panels.append((f"Real training + synthetic ({len(train)} + {len(i.synthetic_rows)} records)",
                           tables.prevalence_grid(augmented, self.positive_set)))
        body.insert(0, self._figure(
            "cohort_prevalence.png", figures.prevalence_heatmaps(panels, self.positive),
            f"{self.positive} prevalence per sex and age cell",
            f"{self.positive.capitalize()} prevalence and counts per sex x age cell, before and after adding the "
            "synthetic records; synthetic records count by the prompt they were drawn with. Validation and test "
            "subjects are not shown: they are never augmented."))
        return page.Section("cohort", "Cohort subgroups before and after augmentation", "".join(body))

    def plan_section(self) -> page.Section:
        if self.inputs.plan is None:
            return page.Section("plan", "Synthesis plan", page.missing(
                "No synthesis plan was given (--plan): the cells that received synthetic records are in the "
                "datasheet and the examples below."))
        return page.Section("plan", "Synthesis plan", page.table(tables.plan_table(self.inputs.plan)))

    def examples_section(self) -> page.Section:
        title = "Real and synthetic examples per cell"
        i = self.inputs
        if i.synthetic_rows is None:
            return page.Section("examples", title, page.missing(
                "No synthetic dataset was given (--synthetic): there are no synthetic examples to show."))
        rows = i.synthetic_rows.reset_index(drop=True)
        # The cells the generator was asked for (its `cell` column) name a subset of attributes;
        # quality's helper finds which, so real examples are picked by the same attributes.
        binned = attribute_table(rows)
        attributes = cell_attributes(rows, binned)
        synthetic_keys = binned[attributes].agg("|".join, axis=1)
        real_keys = with_cells(i.train)[attributes].agg("|".join, axis=1)
        cells = synthetic_keys.value_counts().sort_index(kind="stable")
        shown = cells.sort_values(ascending=False, kind="stable").index[:MAX_EXAMPLE_CELLS]
        rng = np.random.default_rng(self.seed)
        grid = []
        for cell in sorted(shown):
            real = i.train[(real_keys == cell).to_numpy()]
            synthetic = rows[(synthetic_keys == cell).to_numpy()]
            grid.append((cell, self._pick(i.real, real, rng), self._pick(i.synthetic, synthetic, rng)))
        body = self._figure("examples.png", figures.example_grid(grid, EXAMPLES_PER_SIDE),
                            "real and synthetic examples per cell",
                            f"Up to {EXAMPLES_PER_SIDE} real training and {EXAMPLES_PER_SIDE} synthetic records per "
                            f"cell ({', '.join(attributes)}), drawn at random with seed {self.seed}. Mask colours: "
                            "red LV blood pool, green LV myocardium, blue RV blood pool.")
        if len(cells) > len(shown):
            body += page.paragraph(f"{len(cells) - len(shown)} smaller synthetic cells are not shown: "
                                   + ", ".join(c for c in cells.index if c not in set(shown)), "note")
        return page.Section("examples", title, body)

    @staticmethod
    def _pick(root: Path, rows: pd.DataFrame, rng: np.random.Generator) -> ImageSet:
        chosen = rng.choice(len(rows), min(EXAMPLES_PER_SIDE, len(rows)), replace=False) if len(rows) else []
        return load_images(root, rows.iloc[sorted(int(k) for k in chosen)])

    def counterfactual_section(self, variations: Mapping[str, Sequence[str]]) -> page.Section:
        title = "One mask, different prompts"
        i = self.inputs
        if i.generator is None:
            return page.Section("counterfactuals", title, page.missing(
                "No generator model was given (--model): the counterfactual row needs it to draw images."))
        if not variations:
            return page.Section("counterfactuals", title, page.missing(
                "The counterfactual row was turned off (no attribute values to draw the mask as)."))
        card = i.generator.model.card
        schema = PromptSchema.from_dict(card["prompt_schema"]) if card.get("prompt_schema") else DEFAULT_SCHEMA
        binned = with_cells(i.train, schema)
        # Attributes the cohort never records (sex and age in ACDC) are neither in the prompts
        # nor varied; the others must all be known in the record whose mask is drawn.
        recorded = [c for c in binned.columns if binned[c].ne(UNKNOWN).any()]
        unrecorded = [a for a in variations if a in binned.columns and a not in recorded]
        binned = binned[recorded]
        complete = binned[~binned.eq(UNKNOWN).any(axis=1)]
        if complete.empty:
            return page.Section("counterfactuals", title, page.missing(
                "No training record has every prompt attribute known: there is no full prompt to vary."))
        # One fixed record: the same seed gives the same mask, prompts and images every time.
        index = complete.index[np.random.default_rng(self.seed).integers(len(complete))]
        source = load_record(i.real, i.train.loc[index].to_dict())
        size = int(card["size"])
        if source.mask.shape[-1] != size:
            return page.Section("counterfactuals", title, page.missing(
                f"The model draws {size} px pairs but {i.real} holds {source.mask.shape[-1]} px records."))
        base = complete.loc[index].to_dict()
        columns = [("as recorded", prompt_from_attributes(base, schema))]
        skipped = [a for a in variations if a not in schema.attributes]
        for attribute, values in variations.items():
            if attribute in recorded:
                columns += [(f"{attribute}: {v}", prompt_from_attributes({**base, attribute: v}, schema))
                            for v in values]
        prompts = [p for _, p in columns]
        images = i.generator.draw(np.repeat(source.mask[None], len(prompts), axis=0), prompts,
                                  [self.seed] * len(prompts))
        body = self._figure("counterfactuals.png", figures.counterfactual_grid(source, images, [t for t, _ in columns]),
                            "one mask drawn under different prompts",
                            f"The mask pair of real training record {source.record_id} drawn with each prompt below, "
                            f"seed {self.seed} for every image, {i.generator.sampling}: only the "
                            "prompt differs between columns.")
        body += page.table(Table("Prompts, left to right", ["column", "prompt"], [list(c) for c in columns]))
        if skipped:
            body += page.paragraph(f"Not varied, because the model's prompts have no such attribute: "
                                   f"{', '.join(skipped)}", "note")
        if unrecorded:
            body += page.paragraph(f"Not varied, because no training record has it: {', '.join(unrecorded)}", "note")
        return page.Section("counterfactuals", title, body)

    def quality_sections(self) -> list[page.Section]:
        """A section per page the quality metrics name (the judges' own scores close the first,
        as they bound every figure), then the figures per synthetic cell."""
        quality = self.inputs.quality
        parts = [(metrics[0].page.anchor, metrics[0].page.title, metrics) for metrics in shown_together()
                 if metrics[0].page is not None]
        parts.append(("quality-cells", "Quality per synthetic cell", []))
        if quality is None:
            return [page.Section(key, title, page.missing(
                "No quality evaluation was given (--quality, the output of `cardiofair quality`): "
                f"{title.lower()} is unmeasured.")) for key, title, _ in parts]
        source = page.paragraph(f"From {self.inputs.source('quality')}.", "note")
        built = [[metric.table(quality.section(metric.name)) for metric in metrics] for _, _, metrics in parts]
        built[0].append(tables.evaluator_table(quality))
        built[-1].append(tables.cells_table(quality))
        return [page.Section(key, title, source + "".join(page.table(table) for table in content))
                for (key, title, _), content in zip(parts, built)]

    def closest_pairs_section(self) -> page.Section:
        title = "Closest synthetic-to-training pairs"
        quality = self.inputs.quality
        if quality is None or self.inputs.quality_dir is None:
            return page.Section("closest-pairs", title, page.missing(
                "No quality evaluation was given (--quality): the nearest training images were not searched."))
        picture = self.inputs.quality_dir / QualityResult.CLOSEST_PAIRS
        if picture.is_file():
            body = self._figure(QualityResult.CLOSEST_PAIRS, picture.read_bytes(), "closest synthetic and training pairs",
                                "Each row: a synthetic pair (ED, ES), then its nearest real training pair (ED, ES) "
                                "in pixel space, nearest first. Shown enlarged, pixel for pixel.", pixelated=True)
        else:
            body = page.missing(f"{picture} is missing (the evaluation writes it only when there are synthetic "
                                "images).")
        return page.Section("closest-pairs", title, body + page.table(tables.closest_pairs_table(quality)))

    def mask_geometry_section(self) -> page.Section:
        title = "Synthetic masks"
        quality = self.inputs.quality
        if quality is None or self.inputs.quality_dir is None:
            return page.Section("masks", title, page.missing(
                "No quality evaluation was given (--quality): the synthetic masks were not judged."))
        masks = quality.section("mask_geometry")
        body = page.table(mask_geometry_table(masks))
        table = self.inputs.quality_dir / QualityResult.MASK_GEOMETRY
        if table.is_file() and masks:
            per_mask = pd.read_csv(table)
            biggest = per_mask[per_mask["source"] == "synthetic"]["cell"].value_counts().index[:MAX_HISTOGRAM_CELLS]
            body += self._figure("mask-geometry.png", figures.mask_geometry_histograms(
                per_mask, list(biggest), masks["measures"]), "mask geometry histograms",
                "Per cell (the ones with most synthetic records): the synthetic masks' geometry beside real held-out "
                "masks of the cell and, on a phantom cohort, fresh subjects of the cell (the truth).")
        return page.Section("masks", title, body)

    def fairness_section(self) -> page.Section:
        title = "Downstream fairness"
        fairness = self.inputs.fairness
        reason = no_diagnosis_reason(self.inputs.manifest)
        if fairness is None and reason is not None:
            return page.Section("fairness", title, page.missing(
                f"The fairness experiment was not run: {reason}. The quality "
                "sections above still measure the synthetic records."))
        if fairness is None:
            return page.Section("fairness", title, page.missing(
                "No fairness experiment was given (--fairness, the output of `cardiofair fairness`): "
                "whether a classifier becomes fairer is not measured here."))
        data, settings, seeds = fairness.data, fairness.settings, fairness.seeds
        test = (data.get("splits") or {}).get("test") or {}
        body = page.paragraph(
            f"From {self.inputs.source('fairness')}. Classifiers detect {self.positive} against healthy on real "
            f"test subjects ({test.get('subjects', '?')} subjects, {test.get('positives', '?')} positive); "
            f"{len(seeds)} repeat(s) per arm with seeds {', '.join(map(str, seeds))}, the same for every arm.")
        answer = tables.headline(fairness)
        if answer:
            body += page.paragraph(answer[0].upper() + answer[1:], "answer")
        test_set = data.get("test_set") or {}
        if test_set.get("source"):
            body += page.paragraph(f"Test subjects: {test_set['source']}.")
        if test_set.get("power"):
            body += page.paragraph(power_sentence(test_set["power"], settings.get("threshold_attribute", "sex")))
        mechanism = data.get("mechanism")
        if mechanism:
            body += page.paragraph(f"Bias scenario of the phantom cohort: {mechanism['scenario']}. "
                                   f"{mechanism['description']}")
        if len(self.positive_set) > 1:
            body += page.paragraph(f"{self.positive.capitalize()}: {', '.join(self.positive_set)}.", "note")
        for grouping, reason in (data.get("skipped_groupings") or {}).items():
            body += page.paragraph(f"Left out: {grouping} ({reason}); its groups have no test subjects to compare.",
                                   "note")
        reference = fairness.reference()
        interval = "95% bootstrap interval over test subjects of the mean over repeats"
        for metric in BAR_METRICS if reference["attributes"] else ():
            # Arms at other doses have their own figure below; the bars compare the arms at the plan's counts.
            series = [(a, table[table["dose"] == 1.0])
                      for a, table in ((a, tables.group_series(fairness, a, metric)) for a in reference["attributes"])]
            name = figures.METRIC_NAMES[metric]
            body += self._figure(f"fairness_{metric}.png", figures.group_bars(series, metric, interval),
                                 f"{name} per group and arm",
                                 f"{name.capitalize()} per test group for every arm (n: test subjects, pos.: with "
                                 f"{self.positive}); error bars: {interval}. A group without positives has no "
                                 "defined rate and is marked undefined.")
        body += page.table(tables.overall_fairness_table(fairness))
        for note in too_small_notes(reference["attributes"]):
            body += page.paragraph(note + ".", "note")
        body += page.table(tables.gap_table(fairness))
        if fairness.comparisons:
            body += page.table(tables.comparison_table(fairness))
        else:
            body += page.missing("Only the reference arm was run: there is nothing to compare it with.")
        if fairness.versus:
            body += page.table(tables.comparison_table(fairness, versus=True))
        if fairness.oracle_shares:
            first, *arms = oracle_share_lines(fairness.oracle_shares)
            body += page.paragraph(first + " " + "; ".join(line.strip() for line in arms) + ".")
        doses = tables.dose_series(fairness)
        if len(doses):
            measure = fairness.oracle_shares.get("measure", "the TPR gap")
            body += self._figure("dose_response.png", figures.dose_response(doses, measure), "Dose-response",
                                 f"Paired change of {measure} against real, for each arm at each dose (multiples "
                                 "of the planned records per cell); error bars: 95% t-interval over seeds. New "
                                 "anatomy (oracle, synthetic) can keep helping as the dose grows where duplicates "
                                 "(oversample) stop.")
            lifted = None if self.inputs.plan is None else tables.cap_lift_table(
                self.inputs.plan, [fairness.arm_dose(name)[1] for name in fairness.arms])
            if lifted is not None:
                body += page.table(lifted)
        training = [[arm, str(len(tree.get("training", []))),
                     ", ".join(sorted({str(run.get("n_synthetic", 0)) for run in tree.get("training", [])}))]
                    for arm, tree in fairness.arms.items()]
        body += page.table(Table(f"Arms (classifier preset {(settings.get('classifier') or {}).get('preset')})",
                                 ["arm", "repeats", "synthetic training records"], training))
        return page.Section("fairness", title, body)

    def metadata_section(self, metadata: Mapping[str, Any] | None) -> page.Section:
        title = "Run metadata"
        if not metadata:
            return page.Section("metadata", title, page.missing(
                "No run metadata was given (versions, configuration, seeds, hardware, time per stage are recorded "
                f"by `cardiofair run`). This page was made by cardiofair {__version__}."))
        return page.Section("metadata", title, _nested_table(metadata))

    # --- cards ------------------------------------------------------------------------------

    def cards(self, licence: str | None) -> tuple[str, str]:
        """The model card and the datasheet, in Markdown."""
        i = self.inputs
        checks = self._mismatches().get("quality", [])
        model_card = cards.model_card(i.generator, datasets=i.datasets, quality=i.quality,
                                      quality_source=i.source("quality"), checks=checks)
        image_size = None
        if i.synthetic is not None and i.synthetic_rows is not None:
            image_size = load_images(i.synthetic, i.synthetic_rows.iloc[:1]).shape[-1]
        datasheet = cards.datasheet(i.synthetic, i.synthetic_rows, image_size=image_size, real_dir=i.real,
                                    real_records=len(i.manifest), training_records=len(i.train), datasets=i.datasets,
                                    plan=i.plan, plan_source=i.source("plan"), quality=i.quality,
                                    quality_source=i.source("quality"), licence=licence, checks=checks)
        return model_card, datasheet

    def cards_section(self, model_card: str, datasheet: str) -> page.Section:
        body = page.paragraph("Written beside this page; both are reproduced here.")
        links = [page.link(ReportResult.MODEL_CARD, f"{ReportResult.MODEL_CARD}: the generator"),
                 page.link(ReportResult.DATASHEET, f"{ReportResult.DATASHEET}: the synthetic dataset (SYNTHETIC)")]
        body += "<ul><li>" + "</li><li>".join(links) + "</li></ul>"
        body += page.details("Model card", page.preformatted(model_card))
        body += page.details("Datasheet", page.preformatted(datasheet))
        return page.Section("cards", "Model card and datasheet", body)


def _nested_table(data: Mapping[str, Any]) -> str:
    """Any metadata dict as a table: nested dicts as nested tables, lists of plain values on one
    line, anything deeper as JSON."""
    def value(item: Any) -> str:
        if isinstance(item, Mapping):
            return _nested_table(item)
        if isinstance(item, (list, tuple)):
            if all(isinstance(v, (str, int, float, bool)) or v is None for v in item):
                return page.escape(", ".join(map(str, item)))
            return page.preformatted(json.dumps(item, indent=2, default=str))
        return page.escape(item)

    rows = "".join(f"<tr><th>{page.escape(key)}</th><td>{value(item)}</td></tr>" for key, item in data.items())
    return f"<table><tbody>{rows}</tbody></table>"
