"""From a synthesis plan to a synthetic dataset: resumable, idempotent, deterministic.

Every synthetic record has its own seed, derived from the run seed and its record id, and its
mask is drawn from the real training records by the plan's mask policy with a generator of the
same seed: a record's image depends only on the run's settings and the record itself. Records
are sampled in fixed batches, and a batch's manifest rows are written only after its files, so a
run killed at any point continues when run again and ends identical to an uninterrupted one.

A dose (a multiple of the plan's counts) makes ``round(dose x count)`` records per cell, ordered
by their rank in the cell relative to its count: the records of a smaller dose are the first
ones of a larger dose, so a grown dose keeps every finished batch and makes only the rest, and
the fairness stage takes a dose's records as a prefix (``cell_rank < dose x planned_count``).
Batches never straddle a whole dose, so a whole dose's records are the same to the bit in a
larger dose's dataset.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from cardiofair.data import EXCLUDED, PREPARATION
from cardiofair.data.records import (
    MANIFEST_COLUMNS,
    DatasetWriter,
    ImageSizeError,
    Record,
    load_images,
    manifest_row,
    read_manifest,
    read_pair_nifti,
    write_record_files,
)
from cardiofair.data.split import learned_held_out, training_rows
from cardiofair.data.summary import unrecorded, with_cells
from cardiofair.diffusion import quiet_model_loading
from cardiofair.diffusion.presets import SamplerSettings
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.errors import CardiofairError, OutputExistsError
from cardiofair.io import atomic_write
from cardiofair.masks import read_masks
from cardiofair.masks.anatomy import nearest_masks
from cardiofair.masks.shape_model import ShapeModel, draw_valid
from cardiofair.plan import REQUIRED_PLAN_COLUMNS, dose_count
from cardiofair.prompts import DEFAULT_SCHEMA, UNKNOWN, PromptSchema, parse_prompt, prompt_from_attributes
from cardiofair.results import GenerateResult
from cardiofair.settings import DRAWN_MASK_POLICY, MASK_POLICIES, GenerateSettings, SampleSettings

# Draws per record before a drawn mask counts as failed: with a working model almost every first
# draw passes, and a cell that needs this many is reported by its rejection rate anyway.
MAX_MASK_DRAWS = 20


class GenerationError(CardiofairError):
    """A plan, model and dataset that cannot be generated together."""


def record_seed(run_seed: int, record_id: str) -> int:
    """A record's seed: independent of the order, batch and process in which it is made."""
    digest = hashlib.sha256(f"{run_seed}/{record_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def choose_mask_source(policy: str, cell: dict[str, str], candidates: pd.DataFrame, binned: pd.DataFrame,
                       rng: np.random.Generator) -> int:
    """Index (in ``candidates``) of the real record whose mask a synthetic record gets.

    ``copy``: a record of the same cell (the paper's "synthetic copy"); ``matched``: same
    diagnosis and as many other attributes as possible, so a female heart-failure image gets a
    heart-failure geometry of a similar body; ``random``: any record of the same diagnosis (the
    paper's "random prompt" mode). A cell without a diagnosis (a dataset that records none)
    takes any record's mask, matched on the attributes it does name.
    """
    if "diagnosis" in cell:
        same_diagnosis = binned.index[binned["diagnosis"] == cell["diagnosis"]]
        if len(same_diagnosis) == 0:
            raise GenerationError(f"no real training record has diagnosis {cell['diagnosis']!r} to take a mask from")
    else:
        # Only a dataset without diagnoses is planned so (plan_jobs refuses such a cell otherwise).
        same_diagnosis = binned.index
    attributes = [a for a in cell if a != "diagnosis" and a in binned.columns]
    if policy == "random":
        pool = same_diagnosis
    else:
        matches = sum((binned.loc[same_diagnosis, a] == cell[a]).astype(int) for a in attributes) \
            if attributes else pd.Series(0, index=same_diagnosis)
        if policy == "copy" and attributes and matches.max() < len(attributes):
            raise GenerationError(f"mask policy copy needs real records of cell {cell}, and there are none")
        pool = matches.index[matches == matches.max()]
    return int(pool[rng.integers(len(pool))])


def warp_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small label-preserving affine warp of a (2, H, W) mask pair, the same for ED and ES:
    rotation up to 8 degrees, scale up to 5%, shift up to 2 pixels, nearest neighbour, so that
    no real geometry is reused verbatim."""
    size = np.array(mask.shape[1:], dtype=float)
    angle = math.radians(rng.uniform(-8.0, 8.0))
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-2.0, 2.0, size=2)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) / scale
    centre = (size - 1) / 2.0
    offset = centre - rotation @ (centre + shift)
    return np.stack([ndimage.affine_transform(frame, rotation, offset=offset, order=0, mode="constant", cval=0)
                     for frame in mask]).astype(np.uint8)


@dataclass(frozen=True)
class Job:
    """One synthetic record to make."""

    record_id: str
    cell: str
    prompt: str
    mask_policy: str
    seed: int
    # The real training record that lends the mask; -1 when the mask generator draws it.
    source_index: int
    cell_rank: int
    planned_count: int


def plan_jobs(plan: pd.DataFrame, candidates: pd.DataFrame, settings: GenerateSettings,
              schema: PromptSchema = DEFAULT_SCHEMA) -> list[Job]:
    """The synthetic records a plan asks for at ``settings.dose``, each with its seed and mask
    source, in order of rank relative to the cell's planned count (see the module notes)."""
    missing = [c for c in REQUIRED_PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise GenerationError(f"the plan lacks the columns {missing}")
    if candidates.empty:
        raise GenerationError("the dataset has no real training records to take masks from")
    binned = with_cells(candidates, schema)
    # A dataset that records no diagnosis (the public M&Ms copy) is planned without one.
    no_diagnosis = bool(unrecorded(binned, ["diagnosis"]))
    jobs = []
    for number, row in enumerate(plan.to_dict("records")):
        if row["mask_policy"] not in MASK_POLICIES:
            raise GenerationError(f"plan cell {row['cell']}: unknown mask policy {row['mask_policy']!r}")
        cell = {a: v for a, v in parse_prompt(str(row["prompt"]), schema).items() if v is not None}
        if "diagnosis" not in cell and not no_diagnosis:
            raise GenerationError(f"plan cell {row['cell']}: its prompt {row['prompt']!r} names no diagnosis, and the "
                                  f"dataset's training records have diagnoses")
        planned = int(row["synthetic_count"])
        for k in range(dose_count(planned, settings.dose)):
            # Ids count within a cell of the plan: they never carry a real subject's identifier.
            record_id = f"synthetic-c{number:03d}-{k:05d}"
            seed = record_seed(settings.seed, record_id)
            drawn = row["mask_policy"] == DRAWN_MASK_POLICY
            # A drawn mask still needs a full prompt: the attributes the plan leaves out come from
            # the training record the matched policy would have chosen, as a subject of the cell.
            source = choose_mask_source("matched" if drawn else row["mask_policy"], cell, candidates, binned,
                                        np.random.default_rng(seed))
            # Attributes the plan leaves out are taken from the record that lends the mask, so the
            # model gets a full prompt, as in training, that agrees with the geometry it is given.
            completed = {a: v for a, v in binned.loc[source].items() if v != UNKNOWN}
            prompt = prompt_from_attributes({**completed, **cell}, schema)
            jobs.append(Job(record_id, str(row["cell"]), prompt, row["mask_policy"], seed, -1 if drawn else source, k,
                            planned))
    return sorted(jobs, key=lambda job: (job.cell_rank / job.planned_count, job.record_id))


@dataclass(frozen=True)
class DrawnMask:
    """A mask pair drawn for one synthetic record, with how many draws it took and the
    training record whose mask lies nearest (the fairness stage's leak check reads it)."""

    mask: np.ndarray
    draws: int
    extrapolated: bool
    nearest_record: str = ""
    nearest_distance: float = float("nan")


def draw_record_mask(model: ShapeModel, attributes: Mapping[str, str], seed: int) -> tuple[np.ndarray | None, int]:
    """A valid mask pair for a record of these binned attributes, drawn from the record seed's own
    stream (its image noise uses another), and the number of draws it took (``None`` when none of
    :data:`MAX_MASK_DRAWS` passed the anatomical checks)."""
    return draw_valid(model, attributes, np.random.default_rng([seed, 2]), MAX_MASK_DRAWS)


def draw_masks(jobs: Sequence[Job], plan: pd.DataFrame, model: ShapeModel, settings: GenerateSettings,
               schema: PromptSchema = DEFAULT_SCHEMA, progress: bool = False) -> dict[str, DrawnMask]:
    """A valid mask pair for every job whose policy is synthesized, by record id. Each record's
    draws come from its own seed; a draw failing the anatomical checks is drawn again. Raises
    :class:`GenerationError` before anything is written for a cell the model never saw (unless the
    plan allowed unseen cells, when its anatomy is marked extrapolated) and for a cell whose
    rejection rate exceeds ``settings.max_mask_rejection``."""
    rows = {str(row["cell"]): row for row in plan.to_dict("records")}
    drawn: dict[str, DrawnMask] = {}
    tally: dict[str, list[int]] = {}
    for job in tqdm([j for j in jobs if j.source_index < 0], desc="drawing masks", unit="mask", disable=not progress,
                    leave=False):
        attributes = {a: v for a, v in parse_prompt(job.prompt, schema).items() if v is not None}
        planned = {a: v for a, v in parse_prompt(str(rows[job.cell]["prompt"]), schema).items() if v is not None}
        seen = model.training_count(planned)
        allowed = bool(rows[job.cell].get("unseen", False)) or bool(rows[job.cell].get("low_support", False))
        if seen == 0 and not allowed:
            raise GenerationError(f"plan cell {job.cell}: the mask generator learned no record of it (0 of "
                                  f"{model.info['training']['n_records']} training records); plan with unseen cells "
                                  f"allowed to draw extrapolated anatomy for it")
        mask, draws = draw_record_mask(model, attributes, job.seed)
        counts = tally.setdefault(job.cell, [0, 0])
        counts[0] += draws
        counts[1] += mask is not None
        if mask is None:
            break
        drawn[job.record_id] = DrawnMask(mask, draws, seen == 0)
    for cell, (draws, accepted) in tally.items():
        rejected = draws - accepted
        if accepted < sum(job.cell == cell for job in jobs) or rejected > settings.max_mask_rejection * draws:
            raise GenerationError(f"plan cell {cell}: {rejected} of {draws} drawn masks ({rejected / draws:.0%}) failed "
                                  f"the anatomical checks, above the limit max_mask_rejection "
                                  f"{settings.max_mask_rejection:.0%}; no synthetic record was written. Train the "
                                  f"mask generator on more records or with fewer components, or raise the limit")
    return drawn


def _with_nearest(drawn: dict[str, DrawnMask], candidates: pd.DataFrame, dataset: Path,
                  progress: bool) -> dict[str, DrawnMask]:
    """``drawn`` with each mask's nearest real training mask: a drawn heart that is a training
    subject's heart again would carry that subject into training."""
    if not drawn:
        return drawn
    train_masks, _ = read_masks(dataset, candidates, progress)
    ids = list(drawn)
    distances, nearest = nearest_masks(np.stack([drawn[i].mask for i in ids]), train_masks)
    records = candidates["record_id"].astype(str).to_numpy()
    return {i: replace(drawn[i], nearest_record=str(records[k]), nearest_distance=float(d))
            for i, d, k in zip(ids, distances, nearest)}


def _check_mask_model(model: ShapeModel, manifest: pd.DataFrame, size: int, spacing_mm: float,
                      masks_dir: Path) -> None:
    leaked = learned_held_out(f"the mask generator {masks_dir}", model.info.get("training_subject_hashes", ()),
                              manifest)
    if leaked:
        raise GenerationError(f"{leaked}: its masks could carry held-out hearts into training; train it again on "
                              f"this split (`cardiofair masks`)")
    if model.size != size or not math.isclose(model.spacing_mm, spacing_mm, rel_tol=0.01):
        raise GenerationError(f"the mask generator {masks_dir} draws {model.size} px masks at "
                              f"{model.spacing_mm:.3g} mm but the dataset's records are {size} px at {spacing_mm:.3g} "
                              f"mm: train it on this dataset")
    if model.info.get("prompt_schema") != DEFAULT_SCHEMA.to_dict():
        raise GenerationError(f"the mask generator {masks_dir} was trained with prompt schema "
                              f"{model.info.get('prompt_schema')}, not the default {DEFAULT_SCHEMA.to_dict()}")


def _check_compatible(generator: TrainedGenerator, manifest: pd.DataFrame, candidates: pd.DataFrame,
                      dataset: Path) -> None:
    leaked = learned_held_out("the model", generator.info.get("training_subject_hashes", ()), manifest)
    if leaked:
        raise GenerationError(f"{leaked} of {dataset}: it was trained before this split or on another one, so its "
                              f"images could carry held-out patients into training; train it again on this split")
    try:
        load_images(dataset, candidates.iloc[:1], size=generator.size,
                    hint=f"; the model draws {generator.size} px pairs: prepare the dataset with --size {generator.size}")
    except ImageSizeError as error:
        raise GenerationError(str(error)) from None
    if generator.info.get("prompt_schema") not in (None, DEFAULT_SCHEMA.to_dict()):
        raise GenerationError(f"the model was trained with prompt schema {generator.info['prompt_schema']}, not the "
                              f"default {DEFAULT_SCHEMA.to_dict()}")


def generate(
    model_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    plan: pd.DataFrame,
    out: str | os.PathLike,
    settings: GenerateSettings = GenerateSettings(),
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = True,
    masks: str | os.PathLike | None = None,
) -> Path:
    """Make every synthetic record of ``plan`` into a prepared dataset at ``out``.

    Run again after a crash, it continues; run again when complete, it changes nothing. An
    ``out`` holding a run of other settings is replaced with ``overwrite``; with ``resume``
    false, ``overwrite`` replaces even a run of the same settings. Cells whose mask policy is
    synthesized draw their masks from the mask generator at ``masks``, all before any record is
    written.
    """
    dataset, out = Path(dataset), Path(out)
    manifest = read_manifest(dataset)
    candidates = training_rows(manifest)
    jobs = plan_jobs(plan, candidates, settings)
    mask_model = None
    if any(job.source_index < 0 for job in jobs):
        if masks is None:
            raise GenerationError(f"the plan's mask policy {DRAWN_MASK_POLICY} needs the mask generator: pass --masks "
                                  f"(trained with `cardiofair masks`)")
        mask_model = ShapeModel.load(masks)
        spacing = float(candidates["pixel_spacing_mm"].astype(float).iloc[0])
        size = load_images(dataset, candidates.iloc[:1]).masks.shape[-1]
        _check_mask_model(mask_model, manifest, size, spacing, Path(masks))
    drawn = draw_masks(jobs, plan, mask_model, settings, progress=progress) if mask_model else {}
    generator = TrainedGenerator(model_dir)
    _check_compatible(generator, manifest, candidates, dataset)
    sampler = generator.defaults.override(**settings.sampler_overrides())
    # The run is the same whatever the dose: a dose changes how many of the same records are made.
    run = {"model_hash": generator.hash, "dataset": str(dataset.resolve()),
           "settings": {k: v for k, v in asdict(settings).items() if k != "dose"}, "sampler": asdict(sampler),
           "jobs": _jobs_hash(plan_jobs(plan, candidates, replace(settings, dose=1.0))),
           "mask_model_hash": mask_model.hash if mask_model else None}
    _start_or_resume(out, run, overwrite, resume)

    batches = dose_batches(jobs, settings.batch_size)
    todo = [(n, batch) for n, batch in enumerate(batches) if _finished_batch(out, n, batch) is None]
    if todo:
        drawn = _with_nearest(drawn, candidates, dataset, progress)
    with tqdm(total=len(jobs), initial=len(jobs) - sum(len(b) for _, b in todo), unit="image", desc="generate",
              disable=not progress) as bar:
        for number, batch in todo:
            rows = _make_batch(batch, generator, sampler, candidates, dataset, out, settings, drawn,
                               mask_model.hash if mask_model else "")
            atomic_write(_batch_file(out, number), json.dumps({"jobs": _jobs_hash(batch), "rows": rows},
                                                              default=_plain))
            bar.update(len(batch))
    _write_manifest(out, batches, {**run, "dose": settings.dose})
    return out


def _jobs_hash(jobs: Sequence[Job]) -> str:
    return hashlib.sha256(json.dumps([asdict(j) for j in jobs]).encode()).hexdigest()


def dose_batches(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """The jobs (in :func:`plan_jobs`' order) in batches of at most ``size`` that never straddle a
    whole dose: the records of dose 1 (or 2, ...) are then made in the same batches as by a run of
    that dose, hence to the same bits. A batch's other records change the float rounding of its
    images (by about 5e-7), which a fairness arm trained on them carries into its figures."""
    batches: list[list[Job]] = []
    for _, layer in itertools.groupby(jobs, key=lambda job: job.cell_rank // job.planned_count):
        layer = list(layer)
        batches += [layer[i:i + size] for i in range(0, len(layer), size)]
    return batches


def _batch_file(out: Path, number: int) -> Path:
    return out / "rows" / f"batch-{number:06d}.json"


def _finished_batch(out: Path, number: int, batch: Sequence[Job]) -> list[dict] | None:
    """The manifest rows of batch ``number`` when it was made for exactly these jobs, else None
    (a batch of another dose, or of an older layout, is made again)."""
    try:
        made = json.loads(_batch_file(out, number).read_text())
    except FileNotFoundError:
        return None
    return made["rows"] if isinstance(made, dict) and made.get("jobs") == _jobs_hash(batch) else None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def _start_or_resume(out: Path, run: dict, overwrite: bool, resume: bool) -> None:
    run_file = out / GenerateResult.RUN
    same = run_file.is_file() and json.loads(run_file.read_text()) == json.loads(json.dumps(run))
    if out.exists() and overwrite and not (resume and same):
        shutil.rmtree(out)
    if out.exists():
        if not run_file.is_file():
            raise OutputExistsError(f"{out} exists and is not a cardiofair generation run; pass --overwrite to replace it")
        if not same:
            raise GenerationError(f"{out} was started with another model, dataset, plan or settings; pass --overwrite "
                                  f"to start again")
        return
    (out / "rows").mkdir(parents=True)
    atomic_write(run_file, json.dumps(run, indent=2))


def _make_batch(batch: Sequence[Job], generator: TrainedGenerator, sampler: SamplerSettings, candidates: pd.DataFrame,
                dataset: Path, out: Path, settings: GenerateSettings, drawn: dict[str, DrawnMask],
                mask_model_hash: str) -> list[dict]:
    lent = [job for job in batch if job.source_index >= 0]
    sources = load_images(dataset, candidates.loc[[job.source_index for job in lent]])
    source_of = {job.record_id: (row, mask) for job, row, mask in zip(lent, sources.rows.to_dict("records"),
                                                                       sources.masks)}
    drawn_spacing = float(candidates["pixel_spacing_mm"].astype(float).iloc[0])
    masks, provenance = [], []
    for job in batch:
        if job.source_index < 0:
            mask = drawn[job.record_id]
            masks.append(mask.mask)
            # No subject lends this mask; the nearest training mask stands in for the leak checks.
            provenance.append((drawn_spacing, 0, {
                "mask_source": "", "mask_source_record": "", "mask_augmented": False, "mask_model_hash": mask_model_hash,
                "mask_draws": mask.draws, "mask_extrapolated": mask.extrapolated,
                "mask_nearest_record": mask.nearest_record, "mask_nearest_distance": mask.nearest_distance}))
            continue
        source, mask = source_of[job.record_id]
        # The warp's generator is separate from the mask choice's, and both depend on the seed alone.
        masks.append(warp_mask(mask, np.random.default_rng([job.seed, 1])) if settings.augment_masks else mask)
        provenance.append((source["pixel_spacing_mm"], source["slice_index"], {
            "mask_source": source["subject_id"], "mask_source_record": source["record_id"],
            "mask_augmented": settings.augment_masks}))
    images = generator.sample(np.stack(masks), [job.prompt for job in batch], [job.seed for job in batch], sampler,
                              batch_size=len(batch))
    rows = []
    for job, mask, image, (spacing, slice_index, extra) in zip(batch, masks, images, provenance):
        record = synthetic_record(image, mask, job.record_id, job.prompt, job.seed, spacing, slice_index,
                                  generator.provenance(sampler), cell=job.cell, mask_policy=job.mask_policy,
                                  cell_rank=job.cell_rank, planned_count=job.planned_count, **extra)
        rows.append(manifest_row(record, write_record_files(out, record)))
    return rows


def synthetic_record(image: np.ndarray, mask: np.ndarray, record_id: str, prompt: str, seed: int, spacing_mm: float,
                     slice_index: Any, provenance: dict[str, Any], **extra: Any) -> Record:
    """A synthetic record with the metadata every synthetic record carries: its own id as
    subject id (never a real subject's), the prompted attributes, its seed, the provenance of
    the model and sampler, and ``extra`` columns (where its mask came from)."""
    attributes = parse_prompt(prompt)
    return Record(image, mask, {
        "record_id": record_id, "subject_id": record_id, "dataset": "synthetic", "sex": attributes.get("sex"),
        "diagnosis": attributes.get("diagnosis"), "prompt": prompt, "pixel_spacing_mm": spacing_mm,
        "slice_index": slice_index, "is_synthetic": True, "seed": seed, **extra, **provenance})


def sample(model_dir: str | os.PathLike, mask_path: str | os.PathLike, prompt: str, out: str | os.PathLike,
           settings: SampleSettings = SampleSettings(), overwrite: bool = False) -> Path:
    """`cardiofair sample`: ``settings.n`` synthetic pairs drawn for one mask pair (a prepared
    record's mask file) and one prompt, as a prepared dataset at ``out``. Image i uses seed
    ``settings.seed * 100003 + i``, so the same call gives the same files."""
    parse_prompt(prompt)  # a prompt outside the grammar is refused before the model is loaded
    quiet_model_loading()
    mask, spacing, _ = read_pair_nifti(mask_path)
    generator = TrainedGenerator(model_dir)
    sampler = generator.defaults.override(**settings.sampler_overrides())
    seeds = [settings.seed * 100003 + i for i in range(settings.n)]
    masks = np.repeat(mask[None].astype(np.uint8), settings.n, axis=0)
    images = generator.sample(masks, [prompt] * settings.n, seeds, sampler, settings.batch_size, progress=True)
    with DatasetWriter(out, overwrite=overwrite) as writer:
        for i, (image, seed) in enumerate(zip(images, seeds)):
            writer.add(synthetic_record(image, mask, f"synthetic-{settings.seed}-{i:04d}", prompt, seed, spacing, 0,
                                        generator.provenance(sampler), mask_source=str(mask_path)))
        return writer.finish({"command": "sample", "model": str(model_dir), "prompt": prompt, "n": settings.n,
                              "seed": settings.seed, "sampler": generator.provenance(sampler)})


def _write_manifest(out: Path, batches: Sequence[Sequence[Job]], run: dict) -> None:
    rows = [row for number, batch in enumerate(batches) for row in _finished_batch(out, number, batch)]
    manifest = pd.DataFrame(sorted(rows, key=lambda r: r["record_id"]), columns=None if rows else list(MANIFEST_COLUMNS))
    atomic_write(out / GenerateResult.FILE, manifest.to_csv(index=False))
    # A smaller dose than an earlier run's: its extra records leave the dataset entirely.
    for stale in sorted((out / "rows").glob("batch-*.json"))[len(batches):]:
        stale.unlink()
    kept = {Path(p).name for column in ("image_path", "mask_path", "preview_path") for p in manifest.get(column, ())}
    for folder in ("images", "masks", "previews"):
        for path in (out / folder).glob("*"):
            if path.name not in kept:
                path.unlink()
    pd.DataFrame(columns=["subject_id", "file", "reason"]).to_csv(out / EXCLUDED, index=False)
    (out / PREPARATION).write_text(json.dumps({"source": "cardiofair generate", **run}, indent=2, default=str) + "\n")


def merge_datasets(real: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike,
                   overwrite: bool = False) -> Path:
    """The augmented training set: the real training records (the ``train`` split when there is
    one: never validation or test subjects) plus synthetic ones, with every file copied, so the
    result is a self-contained prepared dataset."""
    with DatasetWriter(out, overwrite=overwrite) as writer:
        for root, manifest in ((Path(real), training_rows(read_manifest(real))),
                               (Path(synthetic), read_manifest(synthetic, made_by="generate"))):
            for row in manifest.to_dict("records"):
                for column, folder in (("image_path", "images"), ("mask_path", "masks"), ("preview_path", "previews")):
                    target = writer.tmp / folder / Path(row[column]).name
                    target.parent.mkdir(exist_ok=True)
                    shutil.copyfile(root / row[column], target)
                    row[column] = f"{folder}/{target.name}"
                writer.add_rows([row])
        return writer.finish({"source": "cardiofair merge", "real": str(real), "synthetic": str(synthetic)})
