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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

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
from cardiofair.data.split import learned_held_out_subjects, training_rows
from cardiofair.data.summary import summary_text, with_cells
from cardiofair.diffusion import quiet_model_loading
from cardiofair.diffusion.presets import SamplerSettings
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.errors import CardiofairError, OutputExistsError
from cardiofair.io import atomic_write
from cardiofair.plan import REQUIRED_PLAN_COLUMNS, dose_count, read_plan
from cardiofair.prompts import DEFAULT_SCHEMA, UNKNOWN, PromptSchema, parse_prompt, prompt_from_attributes
from cardiofair.settings import MASK_POLICIES, GenerateSettings, SampleSettings

RUN_FILE = "generate-run.json"


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
    paper's "random prompt" mode).
    """
    same_diagnosis = binned.index[binned["diagnosis"] == cell["diagnosis"]]
    if len(same_diagnosis) == 0:
        raise GenerationError(f"no real training record has diagnosis {cell['diagnosis']!r} to take a mask from")
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
    jobs = []
    for number, row in enumerate(plan.to_dict("records")):
        if row["mask_policy"] not in MASK_POLICIES:
            raise GenerationError(f"plan cell {row['cell']}: unknown mask policy {row['mask_policy']!r}")
        cell = {a: v for a, v in parse_prompt(str(row["prompt"]), schema).items() if v is not None}
        if "diagnosis" not in cell:
            raise GenerationError(f"plan cell {row['cell']}: its prompt {row['prompt']!r} names no diagnosis")
        planned = int(row["synthetic_count"])
        for k in range(dose_count(planned, settings.dose)):
            # Ids count within a cell of the plan: they never carry a real subject's identifier.
            record_id = f"synthetic-c{number:03d}-{k:05d}"
            seed = record_seed(settings.seed, record_id)
            source = choose_mask_source(row["mask_policy"], cell, candidates, binned, np.random.default_rng(seed))
            # Attributes the plan leaves out are taken from the record that lends the mask, so the
            # model gets a full prompt, as in training, that agrees with the geometry it is given.
            completed = {a: v for a, v in binned.loc[source].items() if v != UNKNOWN}
            prompt = prompt_from_attributes({**completed, **cell}, schema)
            jobs.append(Job(record_id, str(row["cell"]), prompt, row["mask_policy"], seed, source, k, planned))
    return sorted(jobs, key=lambda job: (job.cell_rank / job.planned_count, job.record_id))


def _check_compatible(generator: TrainedGenerator, manifest: pd.DataFrame, candidates: pd.DataFrame,
                      dataset: Path) -> None:
    leaked = learned_held_out_subjects(generator.info.get("training_subject_hashes", ()), manifest)
    if leaked:
        raise GenerationError(f"the model learned {len(leaked)} validation or test subject(s) of {dataset} (e.g. "
                              f"{leaked[0]}): it was trained before this split or on another one, so its images "
                              f"could carry held-out patients into training; train it again on this split")
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
) -> Path:
    """Make every synthetic record of ``plan`` into a prepared dataset at ``out``.

    Run again after a crash, it continues; run again when complete, it changes nothing. An
    ``out`` holding a run of other settings is replaced with ``overwrite``; with ``resume``
    false, ``overwrite`` replaces even a run of the same settings.
    """
    dataset, out = Path(dataset), Path(out)
    manifest = read_manifest(dataset)
    candidates = training_rows(manifest)
    generator = TrainedGenerator(model_dir)
    _check_compatible(generator, manifest, candidates, dataset)
    sampler = generator.defaults.override(**settings.sampler_overrides())
    jobs = plan_jobs(plan, candidates, settings)
    # The run is the same whatever the dose: a dose changes how many of the same records are made.
    run = {"model_hash": generator.hash, "dataset": str(dataset.resolve()),
           "settings": {k: v for k, v in asdict(settings).items() if k != "dose"}, "sampler": asdict(sampler),
           "jobs": _jobs_hash(plan_jobs(plan, candidates, replace(settings, dose=1.0)))}
    _start_or_resume(out, run, overwrite, resume)

    batches = [jobs[i:i + settings.batch_size] for i in range(0, len(jobs), settings.batch_size)]
    todo = [(n, batch) for n, batch in enumerate(batches) if _finished_batch(out, n, batch) is None]
    with tqdm(total=len(jobs), initial=len(jobs) - sum(len(b) for _, b in todo), unit="image", desc="generate",
              disable=not progress) as bar:
        for number, batch in todo:
            rows = _make_batch(batch, generator, sampler, candidates, dataset, out, settings)
            atomic_write(_batch_file(out, number), json.dumps({"jobs": _jobs_hash(batch), "rows": rows},
                                                              default=_plain))
            bar.update(len(batch))
    _write_manifest(out, batches, {**run, "dose": settings.dose})
    return out


def _jobs_hash(jobs: Sequence[Job]) -> str:
    return hashlib.sha256(json.dumps([asdict(j) for j in jobs]).encode()).hexdigest()


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
    run_file = out / RUN_FILE
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
                dataset: Path, out: Path, settings: GenerateSettings) -> list[dict]:
    sources = load_images(dataset, candidates.loc[[job.source_index for job in batch]])
    masks = []
    for job, mask in zip(batch, sources.masks):
        # The warp's generator is separate from the mask choice's, and both depend on the seed alone.
        masks.append(warp_mask(mask, np.random.default_rng([job.seed, 1])) if settings.augment_masks else mask)
    images = generator.sample(np.stack(masks), [job.prompt for job in batch], [job.seed for job in batch], sampler,
                              batch_size=len(batch))
    rows = []
    for job, source, mask, image in zip(batch, sources.rows.to_dict("records"), masks, images):
        record = synthetic_record(image, mask, job.record_id, job.prompt, job.seed, source["pixel_spacing_mm"],
                                  source["slice_index"], generator.provenance(sampler), cell=job.cell,
                                  mask_policy=job.mask_policy, mask_source=source["subject_id"],
                                  mask_source_record=source["record_id"], mask_augmented=settings.augment_masks,
                                  cell_rank=job.cell_rank, planned_count=job.planned_count)
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
    atomic_write(out / "manifest.csv", manifest.to_csv(index=False))
    # A smaller dose than an earlier run's: its extra records leave the dataset entirely.
    for stale in sorted((out / "rows").glob("batch-*.json"))[len(batches):]:
        stale.unlink()
    kept = {Path(p).name for column in ("image_path", "mask_path", "preview_path") for p in manifest.get(column, ())}
    for folder in ("images", "masks", "previews"):
        for path in (out / folder).glob("*"):
            if path.name not in kept:
                path.unlink()
    pd.DataFrame(columns=["subject_id", "file", "reason"]).to_csv(out / "excluded.csv", index=False)
    (out / "prepare.json").write_text(json.dumps({"source": "cardiofair generate", **run}, indent=2, default=str) + "\n")


def merge_datasets(real: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike,
                   overwrite: bool = False) -> Path:
    """The augmented training set: the real training records (the ``train`` split when there is
    one: never validation or test subjects) plus synthetic ones, with every file copied, so the
    result is a self-contained prepared dataset."""
    with DatasetWriter(out, overwrite=overwrite) as writer:
        for root, manifest in ((Path(real), training_rows(read_manifest(real))),
                               (Path(synthetic), read_manifest(synthetic))):
            for row in manifest.to_dict("records"):
                for column, folder in (("image_path", "images"), ("mask_path", "masks"), ("preview_path", "previews")):
                    target = writer.tmp / folder / Path(row[column]).name
                    target.parent.mkdir(exist_ok=True)
                    shutil.copyfile(root / row[column], target)
                    row[column] = f"{folder}/{target.name}"
                writer.add_rows([row])
        return writer.finish({"source": "cardiofair merge", "real": str(real), "synthetic": str(synthetic)})


def run(settings: GenerateSettings, *, model: str | os.PathLike, dataset: str | os.PathLike,
        plan: str | os.PathLike, out: str | os.PathLike, resume: bool = True, overwrite: bool = False,
        progress: bool = True) -> Path:
    """`cardiofair generate`: every record of the plan CSV at ``plan`` (see :func:`generate`)."""
    quiet_model_loading()
    return generate(model, dataset, read_plan(plan), out, settings, overwrite=overwrite, progress=progress,
                    resume=resume)


def summary(out: Path, paths: Any) -> str:
    """The synthetic dataset's subgroup table."""
    return summary_text(out)
