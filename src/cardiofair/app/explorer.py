"""What the browser explorer shows, without the browser: a trained generator, optionally the
real dataset it learned from, a synthetic dataset and the quality stage's judges, loaded once
and asked for pictures and tables.

Kept free of gradio so that every answer the page gives can be checked in Python too. Nothing
here writes into the model, dataset or quality folders: drawn pairs go to a temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cardiofair.data.preview import mask_overlay, preview_picture
from cardiofair.data.records import (
    LABELS,
    STRUCTURES,
    ImageSizeError,
    load_images,
    load_record,
    read_manifest,
    read_pair_nifti,
    write_record_files,
)
from cardiofair.data.split import training_rows
from cardiofair.data.summary import with_cells
from cardiofair.diffusion import quiet_model_loading
from cardiofair.diffusion.presets import SamplerSettings
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.errors import CardiofairError, InputError
from cardiofair.generate import MAX_MASK_DRAWS, draw_record_mask, synthetic_record
from cardiofair.masks.shape_model import ShapeModel
from cardiofair.metrics.evaluators import Evaluators
from cardiofair.metrics.fidelity import dice_table
from cardiofair.metrics.privacy import flatten_pixels, nearest_neighbours
from cardiofair.prompts import (
    BMI_CLASSES,
    DEFAULT_SCHEMA,
    SEXES,
    UNKNOWN,
    PromptSchema,
    prompt_from_attributes,
)
from cardiofair.results import GenerateResult, QualityResult

# How the browse view orders synthetic records: the worst first for fidelity (what needs a
# look), the closest to a training image first for privacy (what might be a copy).
SORTS = {
    "mask fidelity (worst first)": ("mask_dice", True),
    "prompt fidelity (worst first)": ("prompt_read_right", True),
    "distance to nearest training image (closest first)": ("nn_pixel_distance", True),
    "record id": ("record_id", True),
}
ALL_CELLS = "all cells"
# The browse table: the cell names the prompt, so the prompt itself is left out to keep the
# figures in view.
BROWSE_COLUMNS = ("record_id", "cell", "mask_source_record", "mask_dice", "prompt_read_right", "nn_pixel_distance",
                  "copy_pixel")


class AppError(CardiofairError):
    """An input the explorer cannot start with, or a request it cannot draw."""


@dataclass
class Drawing:
    """One drawn (ED, ES) pair with the mask and prompt it was drawn from."""

    image: np.ndarray
    mask: np.ndarray
    prompt: str
    seed: int
    sampler: SamplerSettings
    seconds: float
    spacing_mm: float


def cell_label(values: tuple[str, ...] | list[str]) -> str:
    """How the page names a subgroup cell: ``Female | 60s | normal | heart failure``."""
    return " | ".join(values)


def model_vocabulary(info: dict[str, Any], schema: PromptSchema) -> dict[str, list[str]]:
    """The values each prompt attribute of the model can take, for controls that cannot be
    mistyped: those of the grammar (in its order) that the model was trained on, read from its
    training cells; an attribute its cohort never recorded (ACDC's sex and age) has none. A
    model card without cells offers the grammar's sexes and BMI classes."""
    cells = pd.DataFrame(info.get("training_cells", []))
    sensitive = [a for a in schema.attributes if a != "diagnosis"]
    seen = {a: set(cells[a].astype(str)) - {UNKNOWN} if a in cells else None for a in sensitive}
    grammar = {"sex": SEXES, "bmi": BMI_CLASSES}
    vocabulary: dict[str, list[str]] = {}
    for attribute in schema.attributes:
        if attribute == "diagnosis":
            vocabulary[attribute] = sorted(c for c in cells.columns if c not in sensitive and c != "total")
        elif attribute in grammar:
            vocabulary[attribute] = [v for v in grammar[attribute] if seen[attribute] is None or v in seen[attribute]]
        else:
            vocabulary[attribute] = sorted(seen[attribute] or ())
    return vocabulary


def check_mask_pair(mask: np.ndarray, size: int, name: str) -> np.ndarray:
    """A (2, size, size) mask pair with labels 0-3 and LV blood pool in both frames, as uint8;
    otherwise an :class:`AppError` that names ``name`` and what is wrong."""
    if mask.shape != (2, size, size):
        raise AppError(f"{name}: this model draws {size}x{size} pairs, so the mask must be a 2-frame (ED, ES) pair "
                       f"of {size}x{size} pixels; got frames of shape {tuple(mask.shape[1:])}")
    if not np.all(np.isfinite(mask)) or not np.allclose(mask, np.rint(mask)):
        raise AppError(f"{name}: mask values must be whole label numbers")
    labels = sorted({int(v) for v in np.unique(mask)})
    unknown = [v for v in labels if v not in LABELS]
    if unknown:
        meaning = ", ".join(f"{k} {v}" for k, v in LABELS.items())
        raise AppError(f"{name}: mask has labels {unknown} outside 0-3 ({meaning})")
    empty = [frame for frame, labels_in in zip(("ED", "ES"), mask) if not np.any(labels_in == 1)]
    if empty:
        raise AppError(f"{name}: the LV blood pool (label 1) is empty in {' and '.join(empty)}: there is no heart to "
                       f"draw")
    return mask.astype(np.uint8)


class Explorer:
    """A trained model, and what the page may show beside it: the real dataset's training records
    (masks to draw from, mask sources and nearest images), a mask generator (new hearts for a
    prompt), a synthetic dataset and the quality results that judged it."""

    def __init__(self, model: str | os.PathLike, dataset: str | os.PathLike | None = None,
                 synthetic: str | os.PathLike | None = None, quality: str | os.PathLike | None = None,
                 workdir: str | os.PathLike | None = None, masks: str | os.PathLike | None = None):
        quiet_model_loading()
        self.generator = TrainedGenerator(model)
        info = self.generator.info
        self.schema = PromptSchema.from_dict(info["prompt_schema"]) if info.get("prompt_schema") else DEFAULT_SCHEMA
        self.vocabulary = model_vocabulary(info, self.schema)
        self.size = self.generator.size
        self.workdir = Path(workdir) if workdir else None
        self.dataset = Path(dataset) if dataset else None
        self.train = self._training_records() if self.dataset else None
        self.synthetic = Path(synthetic) if synthetic else None
        self.synthetic_rows = self._synthetic_records() if self.synthetic else None
        self.quality = Path(quality) if quality else None
        self.evaluators, self.judge_note = self._judges()
        self.mask_model = self._mask_model(Path(masks)) if masks else None

    # --- loading -------------------------------------------------------------------------------

    def _training_records(self) -> pd.DataFrame:
        rows = training_rows(read_manifest(self.dataset)).reset_index(drop=True)
        if rows.empty:
            raise AppError(f"{self.dataset} has no training records to take masks from")
        try:
            load_images(self.dataset, rows.iloc[:1], size=self.size,
                        hint=f"; the model {self.generator.model_dir} draws {self.size} px pairs: give a dataset "
                        f"prepared with --size {self.size}, or a model trained at this dataset's size")
        except ImageSizeError as error:
            raise AppError(str(error)) from None
        cells = with_cells(rows, self.schema)
        return rows.assign(cell=[cell_label(values) for values in cells.itertuples(index=False)],
                           **{f"attribute_{c}": cells[c] for c in cells.columns})

    def _synthetic_records(self) -> pd.DataFrame:
        rows = GenerateResult.load(self.synthetic).records.reset_index(drop=True)
        if rows.empty:
            raise AppError(f"{self.synthetic} holds no synthetic records (is_synthetic is false everywhere)")
        cells = with_cells(rows, self.schema)
        return rows.assign(cell=[cell_label(values) for values in cells.itertuples(index=False)])

    def _judges(self) -> tuple[Evaluators | None, str]:
        """The quality stage's evaluators and per-image figures, where given; otherwise why not."""
        if self.quality is None:
            return None, "no quality results given (--quality): the judges' read-out is not shown"
        result = QualityResult.load(self.quality)
        if self.synthetic_rows is not None and (self.quality / QualityResult.PER_IMAGE).is_file():
            per_image = pd.read_csv(self.quality / QualityResult.PER_IMAGE, dtype={"record_id": str, "nn_pixel_record": str})
            unjudged = set(self.synthetic_rows["record_id"].astype(str)) - set(per_image["record_id"])
            if unjudged:
                raise AppError(f"{self.quality} judged another synthetic dataset than {self.synthetic}: "
                               f"{len(unjudged)} of its records (e.g. {sorted(unjudged)[0]}) are not in "
                               f"{QualityResult.PER_IMAGE}; give the quality results of this synthetic dataset")
            self.synthetic_rows = self.synthetic_rows.merge(per_image.drop(columns=["cell"], errors="ignore"),
                                                            on="record_id", how="left")
            self._score_fidelity()
        named = Path(result.evaluators["folder"])
        # A relative folder is relative to where `cardiofair quality` ran; a study keeps its judges
        # in the run folder beside quality/.
        folder = next((f for f in (named, self.quality.parent / "evaluators" / named.name)
                       if (f / Evaluators.FILE).is_file()), None)
        if folder is None:
            return None, f"the judges named by {self.quality / result.FILE} are no longer in {named}: run `cardiofair quality` again"
        return Evaluators.load(folder), f"judges from {folder}"

    def _mask_model(self, folder: Path) -> ShapeModel:
        model = ShapeModel.load(folder)
        if model.size != self.size:
            raise AppError(f"the mask generator {folder} draws {model.size} px masks but the model "
                           f"{self.generator.model_dir} draws {self.size} px pairs: give a mask generator trained on "
                           f"the model's dataset (`cardiofair masks`)")
        return model

    def _score_fidelity(self) -> None:
        """Per synthetic record: its mean Dice over structures and frames, and the share of its
        prompted attributes the judge reads right."""
        rows = self.synthetic_rows
        dice = [c for c in rows.columns if c.startswith("dice_")]
        rows["mask_dice"] = rows[dice].mean(axis=1) if dice else np.nan
        prompted = with_cells(rows, self.schema)
        read = [c for c in prompted.columns if f"predicted_{c}" in rows.columns]
        hits = pd.DataFrame({c: rows[f"predicted_{c}"].astype(str) == prompted[c] for c in read})
        known = pd.DataFrame({c: prompted[c] != UNKNOWN for c in read})
        rows["prompt_read_right"] = ((hits & known).sum(axis=1) / known.sum(axis=1).replace(0, np.nan)) if read \
            else np.nan

    # --- drawing -------------------------------------------------------------------------------

    def cells(self) -> list[str]:
        """The subgroup cells of the real training records, with their record counts."""
        if self.train is None:
            return []
        counts = self.train["cell"].value_counts()
        return [f"{cell} ({counts[cell]})" for cell in sorted(counts.index)]

    def records_in(self, cell: str) -> list[str]:
        """The training records of a cell (as :meth:`cells` names it)."""
        if self.train is None:
            return []
        plain = cell.rsplit(" (", 1)[0]
        return self.train.loc[self.train["cell"] == plain, "record_id"].astype(str).tolist()

    def record_mask(self, record_id: str) -> tuple[np.ndarray, float, dict[str, str]]:
        """A training record's mask pair, pixel spacing and binned prompt attributes."""
        if self.train is None:
            raise AppError("no dataset was given (--dataset): upload a mask pair instead")
        match = self.train[self.train["record_id"].astype(str) == str(record_id)]
        if match.empty:
            raise AppError(f"record {record_id!r} is not a training record of {self.dataset}")
        row = match.iloc[0]
        record = load_record(self.dataset, row.to_dict())
        attributes = {a: str(row[f"attribute_{a}"]) for a in self.schema.attributes}
        return record.mask, float(record.meta["pixel_spacing_mm"]), attributes

    def uploaded_mask(self, path: str | os.PathLike) -> tuple[np.ndarray, float]:
        """An uploaded mask pair, checked: a cardiofair 2-frame NIfTI (H, W, 1, 2) at the
        model's size with labels 0-3 and a non-empty LV in both frames."""
        name = Path(path).name
        try:
            mask, spacing, _ = read_pair_nifti(path)
        except InputError as error:
            raise AppError(str(error).replace(str(path), name) +
                           " (upload the masks/<record>.nii.gz file of a prepared dataset)") from None
        return check_mask_pair(np.asarray(mask), self.size, name), spacing

    def drawn_mask(self, values: dict[str, str | None], seed: int) -> tuple[np.ndarray, float]:
        """A new mask pair for the prompt's attributes from the mask generator, the same one
        `cardiofair generate` draws for a record of that cell and seed, and its pixel spacing."""
        if self.mask_model is None:
            raise AppError("no mask generator was given (--masks): take a training record's mask or upload one")
        stated = {a: v for a, v in values.items() if v not in (None, "", UNKNOWN)}
        levels = self.mask_model.levels
        needed = [a for a in levels if a not in stated and UNKNOWN not in levels[a]]
        if needed:
            learned = "; ".join(f"{a}: {', '.join(levels[a])}" for a in needed)
            raise AppError(f"the mask generator draws a heart for a stated {' and '.join(needed)}: choose "
                           f"{'them' if len(needed) > 1 else 'it'} (it learned {learned})")
        mask, _ = draw_record_mask(self.mask_model, stated, int(seed))
        if mask is None:
            raise AppError(f"none of {MAX_MASK_DRAWS} masks drawn for {self.prompt(values)!r} with seed {seed} passed "
                           f"the anatomical checks: try another seed")
        return mask, self.mask_model.spacing_mm

    def prompt(self, values: dict[str, str | None]) -> str:
        """The model's prompt for chosen attribute values (``unknown`` or None leaves one out)."""
        chosen = {a: (None if v in (None, "", UNKNOWN) else v) for a, v in values.items()
                  if a in self.schema.attributes}
        return prompt_from_attributes(chosen, self.schema)

    def sampler(self, steps: int | None = None, guidance_scale: float | None = None,
                autoguidance: float | None = None) -> SamplerSettings:
        """The model's sampler with the page's steps, guidance and autoguidance scales."""
        if steps is not None and int(steps) < 1:
            raise AppError(f"sampler steps must be at least 1, got {steps}")
        return self.generator.defaults.override(
            steps=None if steps is None else int(steps),
            guidance_scale=None if guidance_scale is None else float(guidance_scale),
            autoguidance=None if autoguidance is None else float(autoguidance))

    def draw(self, mask: np.ndarray, values: dict[str, str | None], seed: int, sampler: SamplerSettings,
             spacing_mm: float = 1.0) -> Drawing:
        """One (ED, ES) pair for a mask pair, prompt values and seed: the same inputs give the
        same pair."""
        prompt = self.prompt(values)
        start = time.perf_counter()
        image = self.generator.sample(mask[None], [prompt], [int(seed)], sampler)[0]
        return Drawing(image, mask, prompt, int(seed), sampler, time.perf_counter() - start, spacing_mm)

    def sweep(self, mask: np.ndarray, values: dict[str, str | None], attribute: str, seed: int,
              sampler: SamplerSettings, spacing_mm: float = 1.0,
              on_drawing: Callable[[int, int], None] | None = None) -> list[tuple[str, Drawing]]:
        """The same mask and seed drawn with ``attribute`` set to each value the model knows,
        the other values fixed: the counterfactual row."""
        if not self.vocabulary.get(attribute):
            raise AppError(f"the model knows no values of {attribute!r} to sweep; choose from "
                           f"{[a for a, values in self.vocabulary.items() if values]}")
        row = []
        for number, value in enumerate(self.vocabulary[attribute]):
            row.append((value, self.draw(mask, {**values, attribute: value}, seed, sampler, spacing_mm)))
            if on_drawing:
                on_drawing(number + 1, len(self.vocabulary[attribute]))
        return row

    def judge(self, image: np.ndarray, mask: np.ndarray) -> tuple[dict[str, tuple[str, float]], dict[str, float]]:
        """What the quality stage's judges see in one pair: per attribute, the most likely value
        and its probability; per structure, the Dice of the segmenter's outline to the mask
        (mean of ED and ES). Empty without judges."""
        if self.evaluators is None:
            return {}, {}
        readings = {name: (self.evaluators.classes[name][int(p[0].argmax())], float(p[0].max()))
                    for name, p in self.evaluators.probabilities(image[None]).items()}
        dice = dice_table(self.evaluators.segment(image[None]), mask[None]).iloc[0]
        return readings, {s: float(np.mean([dice[f"ED_{s}"], dice[f"ES_{s}"]])) for s in STRUCTURES.values()}

    def readout(self, image: np.ndarray, mask: np.ndarray) -> str:
        """:meth:`judge` in one line, or why there is no read-out."""
        readings, dice = self.judge(image, mask)
        if not readings:
            return self.judge_note
        read = ", ".join(f"{value} {p:.2f}" for value, p in readings.values())
        return f"judge reads: {read}; Dice to mask: {', '.join(f'{s} {d:.2f}' for s, d in dice.items())}"

    def save(self, drawing: Drawing) -> list[Path]:
        """The drawn pair as NIfTI marked SYNTHETIC (image and mask) in the work folder. The
        name says only that it was drawn and by which seed, never whose mask it used."""
        if self.workdir is None:
            raise AppError("the explorer has no folder to write downloads to")
        digest = hashlib.sha256(drawing.image.tobytes() + drawing.prompt.encode()).hexdigest()[:8]
        record_id = f"synthetic-app-seed{drawing.seed}-{digest}"
        record = synthetic_record(drawing.image, drawing.mask, record_id, drawing.prompt, drawing.seed,
                                  drawing.spacing_mm, 0, self.generator.provenance(drawing.sampler))
        folder = self.workdir / record_id
        paths = write_record_files(folder, record)
        # Both files are <record>.nii.gz in their own folders; a download needs them told apart.
        named = []
        for key, part in (("image_path", "image"), ("mask_path", "mask")):
            named.append(folder / f"{record_id}-{part}.nii.gz")
            os.replace(folder / paths[key], named[-1])
        return named

    # --- browsing a synthetic dataset ----------------------------------------------------------

    def synthetic_cells(self) -> list[str]:
        """The cells of the synthetic dataset, with their record counts, after ``all cells``."""
        if self.synthetic_rows is None:
            return []
        counts = self.synthetic_rows["cell"].value_counts()
        return [ALL_CELLS] + [f"{cell} ({counts[cell]})" for cell in sorted(counts.index)]

    def sorts(self) -> list[str]:
        """The orders the synthetic records can be listed in: the fidelity orders need the
        quality results."""
        if self.synthetic_rows is None:
            return []
        measurable = set(self.synthetic_rows.columns) | {"record_id"} | \
            ({"nn_pixel_distance"} if self.train is not None else set())
        return [name for name, (column, _) in SORTS.items() if column in measurable]

    def synthetic_table(self, cell: str, sort: str) -> pd.DataFrame:
        """The synthetic records of a cell (or all), in the chosen order, with their figures."""
        if self.synthetic_rows is None:
            raise AppError("no synthetic dataset was given (--synthetic)")
        if sort not in SORTS:
            raise AppError(f"unknown order {sort!r}; choose from {list(SORTS)}")
        rows = self.synthetic_rows
        if cell and cell != ALL_CELLS:
            rows = rows[rows["cell"] == cell.rsplit(" (", 1)[0]]
        column, ascending = SORTS[sort]
        if column == "nn_pixel_distance":
            self._find_nearest_training()
            rows = self.synthetic_rows.loc[rows.index]
        rows = rows.sort_values([column, "record_id"], ascending=[ascending, True], kind="stable")
        table = rows[[c for c in BROWSE_COLUMNS if c in rows.columns]]
        return table.round({c: 3 for c in ("mask_dice", "prompt_read_right", "nn_pixel_distance") if c in table})

    def _find_nearest_training(self) -> None:
        """Each synthetic record's nearest real training image in pixels and its distance, as the
        quality stage measures them; measured here, once, when no quality results give them."""
        if "nn_pixel_record" in self.synthetic_rows.columns:
            return
        if self.train is None:
            raise AppError("the distance to the nearest training image needs the real dataset (--dataset)")
        train = flatten_pixels(load_images(self.dataset, self.train).images)
        synthetic = flatten_pixels(load_images(self.synthetic, self.synthetic_rows).images)
        distances, index = nearest_neighbours(synthetic, train)
        self.synthetic_rows["nn_pixel_distance"] = distances
        self.synthetic_rows["nn_pixel_record"] = self.train["record_id"].astype(str).to_numpy()[index]

    def privacy_view(self, record_id: str) -> list[tuple[np.ndarray, str]]:
        """A synthetic record beside the real record that lent it its mask and the real training
        image nearest to it in pixels, each as a picture (ED | ES over the same with the mask
        tinted) with a caption."""
        if self.synthetic_rows is None:
            raise AppError("no synthetic dataset was given (--synthetic)")
        match = self.synthetic_rows[self.synthetic_rows["record_id"].astype(str) == str(record_id)]
        if match.empty:
            raise AppError(f"record {record_id!r} is not a synthetic record of {self.synthetic}")
        row = match.iloc[0]
        record = load_record(self.synthetic, row.to_dict())
        view = [(preview_picture(record.image, record.mask), f"{record_id} (synthetic)")]
        source = str(row.get("mask_source_record", ""))
        view.append(self._training_picture(source, "mask source") if source and source != "nan" else
                    (self._blank(), "mask source: not a training record of the dataset"))
        if self.train is None:
            return view + [(self._blank(), "nearest training image: give the real dataset (--dataset) to find it")]
        self._find_nearest_training()
        nearest = self.synthetic_rows.loc[match.index[0]]
        picture, caption = self._training_picture(str(nearest["nn_pixel_record"]), "nearest training image")
        return view + [(picture, f"{caption}, distance {float(nearest['nn_pixel_distance']):.3f}")]

    def _training_picture(self, record_id: str, role: str) -> tuple[np.ndarray, str]:
        if self.train is None:
            return self._blank(), f"{role} {record_id}: give the real dataset (--dataset) to see it"
        match = self.train[self.train["record_id"].astype(str) == record_id]
        if match.empty:
            return self._blank(), f"{role} {record_id}: not a training record of {self.dataset}"
        record = load_record(self.dataset, match.iloc[0].to_dict())
        return preview_picture(record.image, record.mask), f"{role} {record_id}"

    def _blank(self) -> np.ndarray:
        return np.zeros((2 * self.size, 2 * self.size, 3), np.uint8)


def overlay_picture(drawing: Drawing) -> np.ndarray:
    """ED | ES of a drawn pair with its mask tinted (LV red, myocardium green, RV blue)."""
    return np.concatenate([mask_overlay(drawing.image[f], drawing.mask[f]) for f in range(2)], axis=1)


def grey_picture(frame: np.ndarray) -> np.ndarray:
    """One [0, 1] frame as an 8-bit grey picture."""
    return (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8)

