"""From a cohort to a prepared dataset: slice choice, LV-centred crop, resampling, normalisation.

Every source (the phantom or a real cohort) ends in the same records: a mid-ventricular (ED, ES)
slice pair cropped to a fixed physical field of view centred on the LV, resampled to a square
grid (masks nearest-neighbour), intensities scaled robustly to [0, 1]. A fixed physical field
of view keeps heart size meaningful across scanners: dilation is the heart-failure signal.
"""

from __future__ import annotations

import json
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from cardiofair import __version__
from cardiofair.data import PREPARATION
from cardiofair.data.case import Case, CaseSource
from cardiofair.data.phantom import SCENARIOS, PhantomConfig, fresh_subject, phantom_subject
from cardiofair.data.records import DatasetWriter, ImageSet, Record, manifest_row, write_record_files
from cardiofair.errors import SettingsError, SubjectError
from cardiofair.prompts import PromptSchema, build_prompt
from cardiofair.settings import PrepareSettings


def safe_name(text: str) -> str:
    """A file-name-safe version of an identifier."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "subject"


def normalise_intensity(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Scale both frames together so the low/high percentiles map to 0/1, then clip.

    One scale for ED and ES keeps their relative brightness; percentiles rather than min/max
    ignore the few extreme voxels (flow artefacts, fat) that vary between scanners.
    """
    low, high = np.percentile(image, percentiles)
    if not high > low:
        raise ValueError("image has constant intensity")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def select_slices(case: Case, count: int) -> list[int]:
    """The mid-ventricular slice and up to ``count - 1`` neighbours that show the LV at ED and ES.

    Mid-ventricular means the middle of the slices whose masks hold both LV blood pool and
    myocardium in both frames, the level where the LV is a ring and the RV a crescent.
    """
    valid = [
        z for z in range(case.masks["ED"].shape[2])
        if all(((case.masks[f][:, :, z] == 1).any() and (case.masks[f][:, :, z] == 2).any()) for f in ("ED", "ES"))
    ]
    if not valid:
        frame = "ED" if not (case.masks["ED"] == 1).any() else "ES"
        raise SubjectError(case.subject_id, case.files.get(f"{frame}_mask"),
                           f"LV mask is empty: no slice shows LV blood pool and myocardium at ED and ES ({frame} lacks them)")
    middle = len(valid) // 2
    start = max(0, min(middle - (count - 1) // 2, len(valid) - count))
    return valid[start:start + count]


def _sampling_grid(case: Case, z: int, settings: PrepareSettings) -> np.ndarray:
    """Voxel coordinates (2, size, size) of the output grid: centred on the LV, fixed mm extent."""
    mask = case.masks["ED"][:, :, z]
    lv = np.argwhere((mask == 1) | (mask == 2)).mean(axis=0)
    spacing_row, spacing_col = case.spacing_mm[0], case.spacing_mm[1]
    step = settings.fov_mm / settings.size
    offsets = (np.arange(settings.size) - (settings.size - 1) / 2.0) * step
    down, right = np.meshgrid(offsets, offsets, indexing="ij")
    if settings.align == "rv-left":
        rv_voxels = np.argwhere(mask == 3)
        if len(rv_voxels):
            # Rotate so the RV lies to the left of the LV: cohorts stored in different
            # orientations then share one view, and the model need not learn all of them.
            rv = (rv_voxels.mean(axis=0) - lv) * np.array([spacing_row, spacing_col])
            angle = math.atan2(rv[0], rv[1]) - math.pi
            cos_a, sin_a = math.cos(angle), math.sin(angle)
            down, right = cos_a * down + sin_a * right, -sin_a * down + cos_a * right
    rows = lv[0] + down / spacing_row
    cols = lv[1] + right / spacing_col
    return np.stack([rows, cols])


# The largest end-diastolic LV blood-pool cross-section of an adult heart, as a circle's
# diameter in mm. An LV modelled as an ellipsoid 1.8 times as long as wide holds 64 mL (a small
# hypertrophic LV: ACDC's HCM mean - 2 sd) at 41 mm and 387 mL (DCM mean + 2 sd) at 74 mm
# (shared notes, cardiac physiology). Beyond about half the one and 1.5 times the other, the
# pixel spacing is wrong, not the heart.
LV_DIAMETER_MM = (20.0, 110.0)
# What a header says when the spacing was never written: a short-axis stack's slices lie 5-10 mm
# apart, so 1 x 1 x 1 mm on a cardiac cine is a placeholder, not a measurement.
PLACEHOLDER_SPACING = (1.0, 1.0, 1.0)

# A subject's records and the warnings about it (subject, file, reason) that do not exclude it.
Prepared = tuple[list[Record], list[SubjectError]]


def with_stated_spacing(case: Case, settings: PrepareSettings) -> Case:
    """``case`` at the in-plane spacing the settings state, or its header's. A placeholder header
    with none stated is a :class:`SettingsError`: a crop of ``fov_mm`` needs the true spacing,
    and guessing it would scale every heart by the error."""
    if settings.pixel_spacing_mm is not None:
        spacing = settings.pixel_spacing_mm
        return replace(case, spacing_mm=(spacing, spacing, case.spacing_mm[2]))
    if np.allclose(case.spacing_mm, PLACEHOLDER_SPACING):
        raise SettingsError("pixel_spacing_mm", f"is needed: {case.subject_id}'s header ({case.files.get('ED')}) says "
                            f"1 x 1 x 1 mm, a placeholder on a cardiac image, so the {settings.fov_mm:g} mm field of "
                            "view cannot be cut; state the cohort's in-plane spacing (--pixel-spacing-mm, "
                            "prepare.pixel_spacing_mm)")
    return case


def heart_size_warning(case: Case) -> SubjectError | None:
    """A warning naming the files when the case's spacing makes its LV implausibly large or small
    (:data:`LV_DIAMETER_MM`); None when it looks like a heart."""
    row, col = case.spacing_mm[:2]
    largest = float((case.masks["ED"] == 1).sum(axis=(0, 1)).max()) * row * col
    diameter = 2.0 * math.sqrt(largest / math.pi)
    low, high = LV_DIAMETER_MM
    if low <= diameter <= high:
        return None
    return SubjectError(case.subject_id, f"{case.files.get('ED')}, {case.files.get('ED_mask')}",
                        f"at {row:g} x {col:g} mm per pixel the LV blood pool is {diameter:.0f} mm across at ED "
                        f"(an adult's is {low:g}-{high:g} mm): check the spacing (--pixel-spacing-mm)")


def prepare_case(case: Case, settings: PrepareSettings) -> list[Record]:
    """Cut, resample and normalise a source case into records (one per chosen slice)."""
    records = []
    slices = select_slices(case, settings.slices_per_subject)
    for z in slices:
        grid = _sampling_grid(case, z, settings)
        source = np.stack([case.images[f][:, :, z].astype(np.float64) for f in ("ED", "ES")])
        if source.max() == source.min():
            raise SubjectError(case.subject_id, case.files.get("ED"), f"slice {z}: image has constant intensity")
        # Outside the scanned field the crop is padded with the darkest value, i.e. background.
        image = np.stack([
            ndimage.map_coordinates(frame, grid, order=1, mode="constant", cval=source.min()) for frame in source
        ])
        mask = np.stack([
            ndimage.map_coordinates(case.masks[f][:, :, z], grid, order=0, mode="constant", cval=0)
            for f in ("ED", "ES")
        ]).astype(np.uint8)
        try:
            image = normalise_intensity(image, settings.percentiles)
        except ValueError as error:
            raise SubjectError(case.subject_id, case.files.get("ED"), f"slice {z}: {error}") from None
        records.append(_record(case.subject_id, case.dataset, case.meta, image, mask, z, len(slices), settings))
    return records


def _record(subject_id: str, dataset: str, meta: dict[str, Any], image: np.ndarray, mask: np.ndarray,
            slice_index: int, n_slices: int, settings: PrepareSettings) -> Record:
    name = safe_name(subject_id)
    record_meta = {
        **meta,
        "record_id": name if n_slices == 1 else f"{name}_z{slice_index:02d}",
        "subject_id": subject_id,
        "dataset": dataset,
        "pixel_spacing_mm": settings.fov_mm / settings.size,
        "slice_index": slice_index,
        "is_synthetic": False,
    }
    record_meta["prompt"] = build_prompt(record_meta, settings.schema)
    return Record(image=image, mask=mask, meta=record_meta)


def prepare_phantom_subject(index: int, seed: int, config: PhantomConfig, settings: PrepareSettings,
                            cue_sex: str | None = None, cue_bmi: float | None = None) -> list[Record]:
    """Phantom subject ``index`` as prepared records: drawn at the target size and field of view;
    ``cue_sex``/``cue_bmi`` prepare its counterfactual (see :func:`phantom_subject`)."""
    levels = slice_levels(settings.slices_per_subject)
    return prepared_phantom_records(phantom_subject(index, seed, config, levels, cue_sex, cue_bmi), settings)


def slice_levels(count: int) -> tuple[float, ...]:
    """The phantom slice levels of ``count`` slices per subject: the mid-ventricular one and its
    neighbours, as evenly on both sides as the count allows."""
    return tuple(float(level) for level in range(-((count - 1) // 2), count - (count - 1) // 2))


def prepared_phantom_records(drawn: list[Record], settings: PrepareSettings) -> list[Record]:
    """Drawn phantom records as a prepared dataset holds them: intensities scaled, prompt built."""
    records = []
    for record in drawn:
        meta = dict(record.meta)
        meta["prompt"] = build_prompt(meta, settings.schema)
        records.append(Record(image=normalise_intensity(record.image, settings.percentiles), mask=record.mask,
                              meta=meta))
    return records


# --- running over a cohort --------------------------------------------------------------------


def _write_subject(task: Callable[[], Prepared], out: Path
                   ) -> tuple[list[dict[str, Any]], list[SubjectError]] | SubjectError:
    try:
        records, warnings = task()
    except SubjectError as error:
        return error
    return [manifest_row(record, write_record_files(out, record)) for record in records], warnings


@dataclass
class _SourceTask:
    source: CaseSource
    settings: PrepareSettings

    def __call__(self) -> Prepared:
        case = with_stated_spacing(self.source.load(), self.settings)
        warning = heart_size_warning(case)
        return prepare_case(case, self.settings), [warning] if warning else []


@dataclass
class _PhantomTask:
    index: int
    seed: int
    config: PhantomConfig
    settings: PrepareSettings

    def __call__(self) -> Prepared:
        return prepare_phantom_subject(self.index, self.seed, self.config, self.settings), []


@dataclass
class PrepareResult:
    """What a preparation run produced."""

    out: Path
    n_subjects: int
    n_records: int
    excluded: list[SubjectError]
    warnings: list[SubjectError]


def run_prepare(
    tasks: Sequence[Callable[[], Prepared]],
    out: str | os.PathLike,
    run_settings: dict[str, Any],
    overwrite: bool = False,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Run per-subject tasks (in parallel when ``workers`` > 1) into a prepared dataset at ``out``.

    A subject that fails is excluded with its reason in ``excluded.csv``; with ``strict`` the
    first failure stops the run and nothing is written. Warnings (a subject kept, but something
    to check) are printed and listed in ``prepare.json``.
    """
    workers = workers or os.cpu_count() or 1
    excluded: list[SubjectError] = []
    warnings: list[SubjectError] = []
    with DatasetWriter(out, overwrite=overwrite) as writer:
        bar = tqdm(total=len(tasks), unit="subject", desc="prepare", disable=not progress)
        for outcome in _outcomes(tasks, writer.tmp, workers):
            bar.update(1)
            if isinstance(outcome, SubjectError):
                if strict:
                    bar.close()
                    raise outcome
                excluded.append(outcome)
                writer.exclude(outcome)
                bar.write(f"excluded {outcome}")
            else:
                rows, subject_warnings = outcome
                writer.add_rows(rows)
                warnings += subject_warnings
                for warning in subject_warnings:
                    bar.write(f"warning: {warning}")
        bar.close()
        warnings.sort(key=lambda w: w.subject_id)
        settings = {**run_settings, "cardiofair_version": __version__,
                    "n_subjects": len(tasks) - len(excluded), "n_excluded": len(excluded),
                    **({"warnings": [str(w) for w in warnings]} if warnings else {})}
        path = writer.finish(settings)
        n_records = len(writer.rows)
    return PrepareResult(out=path, n_subjects=len(tasks) - len(excluded), n_records=n_records, excluded=excluded,
                         warnings=warnings)


def _outcomes(tasks: Sequence[Callable[[], Prepared]], tmp: Path, workers: int) -> Iterable:
    # Process start-up costs more than a few dozen subjects: stay in-process for small cohorts.
    if workers <= 1 or len(tasks) < 32:
        for task in tasks:
            yield _write_subject(task, tmp)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_write_subject, task, tmp) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def prepare_phantom(n: int, seed: int, out: str | os.PathLike, config: PhantomConfig | None = None,
                    settings: PrepareSettings | None = None, **run_options: Any) -> PrepareResult:
    """Draw and write a phantom cohort of ``n`` subjects."""
    if config is None:
        config = PhantomConfig() if settings is None else PhantomConfig(size=settings.size, fov_mm=settings.fov_mm)
    if settings is None:
        settings = PrepareSettings(size=config.size, fov_mm=config.fov_mm)
    if (config.size, config.fov_mm) != (settings.size, settings.fov_mm):
        raise SettingsError(None, "phantom size/fov_mm must match the preparation size/fov_mm")
    tasks = [_PhantomTask(i, seed, config, settings) for i in range(n)]
    run_settings = {"source": "phantom", "n": n, "seed": seed, "phantom": config.to_dict(), "prepare": settings.to_dict()}
    return run_prepare(tasks, out, run_settings, **run_options)


def prepare_sources(sources: Sequence[CaseSource], out: str | os.PathLike, settings: PrepareSettings,
                    source_settings: dict[str, Any], **run_options: Any) -> PrepareResult:
    """Load, cut and write the subjects of a real cohort."""
    tasks = [_SourceTask(source, settings) for source in sources]
    run_settings = {**source_settings, "prepare": settings.to_dict()}
    return run_prepare(tasks, out, run_settings, **run_options)


@dataclass(frozen=True)
class PhantomModel:
    """The phantom a prepared dataset was drawn from: its configuration, seed and preparation."""

    config: PhantomConfig
    seed: int
    settings: PrepareSettings

    @property
    def mechanism(self) -> dict[str, str]:
        """The bias scenario the configuration started from, and its one-sentence description."""
        name = self.config.scenario
        return {"scenario": name, "description": SCENARIOS[name][0] if name in SCENARIOS else ""}


def phantom_model(real: str | os.PathLike) -> PhantomModel | None:
    """The phantom model of a prepared dataset (from its ``prepare.json``), or None when the
    dataset is not a phantom cohort."""
    try:
        preparation = json.loads((Path(real) / PREPARATION).read_text())
    except FileNotFoundError:
        return None
    if preparation.get("source") != "phantom":
        return None
    recorded = preparation["prepare"]
    settings = PrepareSettings(**{**recorded, "percentiles": tuple(recorded["percentiles"]),
                                  "schema": PromptSchema.from_dict(recorded["schema"])})
    return PhantomModel(PhantomConfig.from_dict(preparation["phantom"]), int(preparation["seed"]), settings)


# Below this many subjects, starting worker processes costs more than it saves.
_PARALLEL_FROM = 64


def _draw_one(task: tuple[Mapping[str, str], int, str, PhantomModel, tuple[float, ...]]) -> list[Record]:
    cell, index, stream, model, levels = task
    return prepared_phantom_records(fresh_subject(cell, index, model.seed, stream, model.config, levels),
                                    model.settings)


def draw_fresh(model: PhantomModel, cells: Sequence[Mapping[str, str]], stream: str, mid_slice_only: bool = False,
               workers: int | None = None) -> ImageSet:
    """Subject i of ``cells[i]`` from ``model`` on random stream ``stream``, prepared as the
    dataset was (every slice level it has, or with ``mid_slice_only`` one record per subject)."""
    levels = (0.0,) if mid_slice_only else slice_levels(model.settings.slices_per_subject)
    tasks = [(cell, index, stream, model, levels) for index, cell in enumerate(cells)]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(tasks) >= _PARALLEL_FROM:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            drawn = list(pool.map(_draw_one, tasks, chunksize=max(1, len(tasks) // (4 * workers))))
    else:
        drawn = [_draw_one(task) for task in tasks]
    records = [record for subject in drawn for record in subject]
    rows = pd.DataFrame([r.meta for r in records])
    shape = (0, 2, model.settings.size, model.settings.size)
    images = np.stack([r.image for r in records]) if records else np.zeros(shape, np.float32)
    masks = np.stack([r.mask for r in records]) if records else np.zeros(shape, np.uint8)
    return ImageSet(rows, images, masks)
