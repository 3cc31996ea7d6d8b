"""`cardiofair quality`: is the synthetic data realistic, faithful to its mask and
prompt, and free of copies? Every figure is reported beside its real-vs-real reference,
overall and per subgroup cell, because a number without its reference cannot be read.

References, all from the real dataset's own split (the generator and the evaluators learn from
``train`` only):

- realism: distances from the real training set to the synthetic set and to the same number
  of real held-out images (``val`` + ``test``), Fréchet distances averaged over draws of the
  compared images; diversity within each of those two sets;
- mask fidelity: the segmenter on real ``test`` images with their own masks (and, as a floor,
  with masks shuffled between subjects);
- prompt fidelity: the attribute classifier on real images of the synthetic set's cells,
  reweighted to its mix (the judge reads rare cells worse, as any classifier trained on the
  cohort does): on a phantom cohort new subjects of each cell, otherwise the real held-out
  images of the cell; beside it, the whole real ``test`` split;
- privacy: the copy threshold is the 5th percentile of test-to-train nearest-neighbour
  distances; real ``val`` images measured against it give the reference copy rate;
- the masks themselves (validity, geometry per cell, novelty; :mod:`cardiofair.metrics.masks`):
  real held-out masks of the cell, and on a phantom cohort fresh subjects of the cell.

The evaluation loads both datasets and the judges once (:class:`QualityContext`), then computes
each metric of :data:`cardiofair.metrics.quality_metrics.METRICS` in turn (the ``measure_*``
functions below). The result is :class:`cardiofair.results.QualityResult` (``synthetic_quality.json``,
one section per metric), with per-cell and per-image CSV tables beside it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from cardiofair.data.prepare import PhantomModel, draw_fresh, phantom_model
from cardiofair.data.preview import mask_overlay, png_bytes
from cardiofair.data.records import (
    FRAMES,
    ImageSet,
    ImageSizeError,
    load_images,
    read_manifest,
    same_size,
    synthetic_records,
)
from cardiofair.data.split import SPLITS, check_splits, learned_held_out
from cardiofair.data.summary import attribute_table, cell_attributes
from cardiofair.errors import CardiofairError
from cardiofair.io import StagingDirectory, atomic_write, json_ready
from cardiofair.metrics import radiomics
from cardiofair.metrics.counterfactual import DrawnPairs, PairDrawing, choose_pairs, prompt_effects
from cardiofair.metrics.evaluators import (
    ATTRIBUTE_COLUMNS,
    Augmentation,
    Evaluators,
    judged_classes,
    train_evaluators,
)
from cardiofair.metrics.fidelity import dice_table, prompt_fidelity
from cardiofair.metrics.masks import mask_quality
from cardiofair.metrics.privacy import CopyDetector, flatten_pixels, nearest_neighbours
from cardiofair.metrics.quality_metrics import METRICS, Measurement
from cardiofair.metrics.realism import (
    FrechetReference,
    classifier_two_sample_tests,
    frechet_distance,
    interval_at,
    kernel_distance,
    mask_geometry,
    mean_pairwise_ms_ssim,
)
from cardiofair.prompts import UNKNOWN
from cardiofair.results import GenerateResult, QualityResult
from cardiofair.settings import QualitySettings
from cardiofair.threads import side_by_side

SCHEMA_VERSION = 1
# The realism features' space, by the network they come from (Evaluators.feature_network).
FEATURE_SPACES = {
    "attribute classifier": (
        "FD-/KD-cardiofair: 96-d features of cardiofair's attribute classifier trained on the real training split "
        "(pooled last block, plus first-block channel means and standard deviations for texture), standardised with "
        "the training set's statistics; not Inception, so not FID"),
    "segmenter": (
        "FD-/KD-cardiofair: 96-d features of cardiofair's segmenter trained on the real training split (the cohort "
        "records no prompt attribute with two known values, so no attribute classifier was trained): per frame its "
        "pooled bottom block, plus first-block channel means and standard deviations for texture, standardised with "
        "the training set's statistics; not Inception, so not FID"),
}
EVALUATOR_VERSION = "evaluators-3"
# The prompt-effect pairs are drawn in this many parts, fixed so that the images (their batches)
# never depend on the machine's cores.
PAIR_DRAWING_PARTS = 4


class QualityError(CardiofairError):
    """The real and synthetic datasets cannot be compared as given."""


def _load_set(root: Path, rows: pd.DataFrame, label: str, progress: bool) -> ImageSet:
    with tqdm(total=len(rows), desc=f"loading {label}", unit="record", disable=not progress, leave=False) as bar:
        return load_images(root, rows, on_record=bar.update)


def load_real_splits(root: Path, progress: bool = True) -> dict[str, ImageSet]:
    """The real dataset's train / val / test records; the dataset must have been split."""
    manifest = read_manifest(root)
    check_splits(manifest, root)
    splits = {name: manifest[manifest["split"].astype(str) == name] for name in SPLITS}
    return {name: _load_set(root, rows, f"real {name}", progress) for name, rows in splits.items()}


def load_synthetic(root: Path, progress: bool = True) -> ImageSet:
    """The synthetic records of a generated (or merged) dataset."""
    manifest = read_manifest(root, made_by="generate")
    synthetic = synthetic_records(manifest)
    if synthetic.empty:
        raise QualityError(f"{root} holds no synthetic records (is_synthetic is false everywhere)")
    return _load_set(root, synthetic, "synthetic", progress)


def check_compatible(real: ImageSet, synthetic: ImageSet) -> None:
    """Refuse datasets that cannot be compared: other image sizes, channels or label sets."""
    try:
        same_size({"the real dataset": real, "the synthetic dataset": synthetic},
                  "; prepare and generate at the same size")
    except ImageSizeError as error:
        raise QualityError(f"image shapes differ: {error}") from None
    extra = sorted(set(np.unique(synthetic.masks).tolist()) - set(np.unique(real.masks).tolist()))
    if extra:
        raise QualityError(f"synthetic masks carry labels {extra} that no real training mask has; "
                           f"the label sets differ (check the label order of both datasets)")


def training_hash(real: dict[str, ImageSet], settings: QualitySettings) -> str:
    """A key that changes whenever the evaluators would: the training and validation images and
    masks (by content, not by name) and the training settings."""
    digest = hashlib.sha256(EVALUATOR_VERSION.encode())
    digest.update(json.dumps({**{k: v for k, v in asdict(settings).items()
                                 if k in ("steps", "classifier_steps", "batch", "segmenter_batch", "seed")},
                              "augmentation": asdict(Augmentation())}, sort_keys=True).encode())
    for name in ("train", "val"):
        order = np.argsort(real[name].rows["record_id"].astype(str).to_numpy(), kind="stable")
        digest.update(name.encode())
        for column in ("sex", "age", "bmi", "diagnosis"):
            digest.update("|".join(attribute_table(real[name].rows)[column].iloc[order]).encode())
        digest.update(np.ascontiguousarray(real[name].images[order]).tobytes())
        digest.update(np.ascontiguousarray(real[name].masks[order]).tobytes())
    return digest.hexdigest()[:16]


def default_cache() -> Path:
    """Where evaluators are cached unless a folder is given: ``$CARDIOFAIR_CACHE`` or the user cache."""
    base = os.environ.get("CARDIOFAIR_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cardiofair"
    return Path(base) / "evaluators"


def cached_evaluators(real: dict[str, ImageSet], settings: QualitySettings, cache: Path | None = None,
                      log: Callable[[str], None] = print, progress: bool = False,
                      beside: Sequence[Callable[[], None]] = ()) -> tuple[Evaluators, Path]:
    """Load the evaluators trained on this exact training split, or train and cache them.
    ``beside``, work that does not need them, in parts, runs each part on one torch thread
    either way: beside their training, or side by side when they were cached, so that its
    results do not depend on the cache."""
    folder = (cache or default_cache()) / training_hash(real, settings)
    if (folder / Evaluators.FILE).is_file():
        log(f"evaluators: cached in {folder}")
        side_by_side(lambda part: part(), beside)
        return Evaluators.load(folder), folder
    judged = judged_classes(attribute_table(real["train"].rows))
    log(f"evaluators: training on {len(real['train'])} real training records ({settings.steps} segmenter"
        + (f" + {settings.classifier_steps} classifier" if judged else "") + " steps)")
    train, val = real["train"], real["val"]
    evaluators = train_evaluators(train.images, train.masks, attribute_table(train.rows), val.images, val.masks,
                                  attribute_table(val.rows), steps=settings.steps, classifier_steps=settings.classifier_steps,
                                  batch=settings.batch, segmenter_batch=settings.segmenter_batch, seed=settings.seed,
                                  augmentation=Augmentation(), progress=progress, beside=beside)
    # Saved under a temporary name first, so a crash never leaves a half-written cache entry
    # that a later call would trust.
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    evaluators.save(staging)
    try:
        os.replace(staging, folder)
    except OSError:
        if not (folder / Evaluators.FILE).is_file():
            raise
    return evaluators, folder


def _cell_keys(image_set: ImageSet, attributes: list[str]) -> pd.Series:
    return attribute_table(image_set.rows)[attributes].agg("|".join, axis=1)


def _subsample(n_items: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_items, size, replace=False))


def _standardiser(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mean, std = reference.mean(0), np.maximum(reference.std(0), 1e-6)
    return lambda features: (features - mean) / std


@dataclass
class Features:
    """Per-record features of one image set: classifier features (standardised), the same
    joined to mask geometry, and flattened pixels."""

    encoder: np.ndarray
    joint: np.ndarray
    pixels: np.ndarray

    def take(self, selector: np.ndarray) -> "Features":
        return Features(self.encoder[selector], self.joint[selector], self.pixels[selector])


def _features(evaluators: Evaluators, sets: dict[str, ImageSet]) -> dict[str, Features]:
    # Held-out is val + test: their features are joined, not computed twice.
    raw = {name: evaluators.features(s.images) for name, s in sets.items() if name != "held_out"}
    raw["held_out"] = np.concatenate([raw["val"], raw["test"]])
    geometry = {name: mask_geometry(s.masks) for name, s in sets.items()}
    encode, shape = _standardiser(raw["train"]), _standardiser(geometry["train"])
    return {name: Features(encode(raw[name]), np.concatenate([encode(raw[name]), shape(geometry[name])], 1),
                           flatten_pixels(sets[name].images)) for name in sets}


def _too_few(counts: dict[str, int], minimum: int) -> str:
    short = {k: v for k, v in counts.items() if v < minimum}
    if not short:
        return "ok"
    return "too few images for a stable figure: " + ", ".join(f"{v} {k}" for k, v in short.items()) + \
        f" (need {minimum})"


# The sizes at which a cohort too small for a stable distance is asked how many images it needs.
NEEDED_SIZES = (25, 50, 100, 200, 400)
# KD subsets per resample of its interval (the figure itself averages ``kernel_subsets``), and
# draws of the real held-out images that give the reference's level at each of NEEDED_SIZES.
INTERVAL_KERNEL_SUBSETS = 5
LEVEL_DRAWS = 10
# How each realism interval is drawn; written into the section.
REALISM_INTERVAL = ("95% interval at the compared n: halves of each side's images drawn by subject without "
                    "replacement (within each subgroup cell where the figure is matched by cell), their distances' "
                    "spread about the median scaled to n (x half/n, over sqrt(1 - half/pool)) and centred on the figure")


@dataclass
class Stratum:
    """Records a side of a realism comparison is resampled from: each subject's positions, and
    how many records the stratum (a subgroup cell, or the whole scope) gives a compared set."""

    groups: list[np.ndarray]
    size: int

    @classmethod
    def of(cls, subjects: np.ndarray, size: int, within: np.ndarray | None = None) -> "Stratum":
        positions = np.arange(len(subjects)) if within is None else np.flatnonzero(within)
        if not len(positions):
            return cls([], size)
        _, inverse, counts = np.unique(subjects[positions], return_inverse=True, return_counts=True)
        return cls(np.split(positions[np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1]), size)

    @property
    def pool(self) -> int:
        return sum(len(group) for group in self.groups)


def by_subject(strata: Sequence[Stratum], rng: np.random.Generator, half: bool = True) -> np.ndarray:
    """Positions of one resample: from each stratum, whole subjects in random order until it has
    its size (half of it with ``half``), the last subject's records cut to fit."""
    parts = [np.concatenate([s.groups[i] for i in rng.permutation(len(s.groups))])[:s.size // 2 if half else s.size]
             for s in strata]
    return np.concatenate(parts)


def _resampled(train: Features, side: Features, strata: Sequence[Stratum], n: int, settings: QualitySettings,
               seed: int, train_weights: np.ndarray | None, figures: dict[str, float]) -> dict[str, list[float] | None]:
    """Each distance's 95% interval at ``n`` for one side (None where its images come from fewer
    than two subjects, or too few images to halve)."""
    keys = ("fd", "fd_image_mask", "kd")
    if sum(len(s.groups) for s in strata) < 2 or sum(s.size // 2 for s in strata) < 2:
        return dict.fromkeys(keys)
    rng = np.random.default_rng([seed, 33])
    halves = [by_subject(strata, rng) for _ in range(settings.realism_resamples)]
    half, pool = len(halves[0]), sum(s.pool for s in strata)
    references = {"fd": (FrechetReference(train.encoder, train_weights), "encoder"),
                  "fd_image_mask": (FrechetReference(train.joint, train_weights), "joint")}
    values = {key: [reference.distance(getattr(side, name)[h]) for h in halves]
              for key, (reference, name) in references.items()}
    train_size = len(train.encoder) if train_weights is None else int((train_weights > 0).sum())
    values["kd"] = [kernel_distance(train.encoder, side.encoder[h], INTERVAL_KERNEL_SUBSETS, min(100, half, train_size),
                                    seed + k, train_weights)[0] for k, h in enumerate(halves)]
    return {key: interval_at(figures[key], values[key], half, n, pool, floor=None if key == "kd" else 0.0)
            for key in keys}


def realism_scope(train: Features, synthetic: Features, held_out: Features, synthetic_images: np.ndarray,
                  held_out_images: np.ndarray, settings: QualitySettings, seed: int,
                  train_weights: np.ndarray | None = None,
                  draws: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                  subjects: tuple[np.ndarray, np.ndarray] | None = None,
                  cells: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Distances from the training set to the synthetic set and to real held-out images, at
    the same sample size, each with its 95% interval at that size, and diversity within each.
    ``train_weights`` give the training set the compared sets' subgroup mix. The Fréchet
    distances are means over ``settings.fd_draws`` draws of the compared rows, ``draws`` when
    given (synthetic rows, held-out rows, each pair of one size), else random subsets of the
    smaller set's size. The intervals resample each side by subject (``subjects``: the synthetic
    and held-out records' subject ids, default one subject per record), within each subgroup
    cell (``cells``: their cell keys) at the count per cell of the first draw when given."""
    effective_train = len(train.encoder) if train_weights is None else int((train_weights > 0).sum())
    counts = {"synthetic": len(synthetic.encoder) if draws is None else len(draws[0][0]),
              "real held-out": len(held_out.encoder) if draws is None else len(draws[0][1]),
              "real train": effective_train}
    status = _too_few(counts, settings.realism_min_images)
    scope: dict[str, Any] = {"n_synthetic": counts["synthetic"], "n_real_held_out": counts["real held-out"],
                             "n_real_train": counts["real train"], "status": status}
    if status != "ok":
        return scope
    n = min(counts["synthetic"], counts["real held-out"])
    if draws is None:
        rng = np.random.default_rng(seed)
        draws = [(_subsample(counts["synthetic"], n, rng), _subsample(counts["real held-out"], n, rng))
                 for _ in range(settings.fd_draws)]
    # Which images a draw happens to hold moves FD-cardiofair by about 0.6 at 133 images a side
    # (s.d. over draws of one synthetic set), as much as a change to the generator does; the
    # mean over draws uses every image while both sides keep the same size, hence the same bias.
    for key, field_name in (("fd", "encoder"), ("fd_image_mask", "joint")):
        values = {"synthetic": [frechet_distance(getattr(train, field_name), getattr(synthetic, field_name)[s],
                                                 train_weights) for s, _ in draws],
                  "real_reference": [frechet_distance(getattr(train, field_name), getattr(held_out, field_name)[h],
                                                      train_weights) for _, h in draws]}
        scope[key] = {name: float(np.mean(v)) for name, v in values.items()}
        scope[f"{key}_std"] = {name: float(np.std(v)) for name, v in values.items()}
    pick_synthetic, pick_real = draws[0]
    compared = {"synthetic": synthetic.take(pick_synthetic), "real_reference": held_out.take(pick_real)}
    subset = min(100, n, counts["real train"])
    scope["n_compared"] = n
    scope["fd_draws"] = len(draws)
    kd = {name: kernel_distance(train.encoder, f.encoder, settings.kernel_subsets, subset, seed, train_weights)
          for name, f in compared.items()}
    scope["kd"] = {name: value[0] for name, value in kd.items()}
    scope["kd_std"] = {name: value[1] for name, value in kd.items()}
    scope["ms_ssim"] = {
        "synthetic": mean_pairwise_ms_ssim(synthetic_images[pick_synthetic], settings.ms_ssim_pairs, seed),
        "real_reference": mean_pairwise_ms_ssim(held_out_images[pick_real], settings.ms_ssim_pairs, seed)}
    if subjects is None:
        subjects = (np.arange(len(synthetic.encoder)), np.arange(len(held_out.encoder)))
    if cells is None:
        strata = [[Stratum.of(subjects[0], n)], [Stratum.of(subjects[1], n)]]
    else:
        composition = pd.Series(cells[0][pick_synthetic]).value_counts().sort_index()
        strata = [[Stratum.of(ids, int(count), keys == cell) for cell, count in composition.items()]
                  for ids, keys in zip(subjects, cells)]
    # One BLAS thread: thousands of small matrices, where threads only wait for each other.
    with threadpool_limits(1):
        intervals = {name: _resampled(train, side, side_strata, n, settings, seed, train_weights,
                                      {key: scope[key][name] for key in ("fd", "fd_image_mask", "kd")})
                     for name, side, side_strata in (("synthetic", synthetic, strata[0]),
                                                     ("real_reference", held_out, strata[1]))}
    for key in ("fd", "fd_image_mask", "kd"):
        scope[f"{key}_interval"] = {name: values[key] for name, values in intervals.items()}
    return scope


def held_to_target(scope: dict[str, Any], train: Features, held_out: Features, held_out_subjects: np.ndarray,
                   settings: QualitySettings, seed: int, train_weights: np.ndarray | None = None) -> dict[str, Any]:
    """The realism scope as measured where its real-vs-real interval can tell a synthetic set at
    the target (FD-cardiofair ``settings.realism_target`` times its reference) from one beyond
    it, i.e. where the interval is narrower than the margin reference x (target - 1); otherwise
    "too few images", with the n it needs: the smallest of :data:`NEEDED_SIZES` at which real
    held-out images subsampled at that n give an interval narrow enough, or "more than N" where
    the cohort cannot show one."""
    if scope["status"] != "ok":
        return scope
    reference, interval = scope["fd"]["real_reference"], scope["fd_interval"]["real_reference"]
    margin = reference * (settings.realism_target - 1)
    # No interval (fewer than 4 images or one subject a side, only below the default floor): the
    # floor alone decides.
    if interval is None or interval[1] - interval[0] <= margin:
        return scope
    n = scope["n_compared"]
    with threadpool_limits(1):
        needed = _needed_images(train, held_out, held_out_subjects, settings, seed, train_weights, n)
    need = str(needed) if needed is not None else f"more than {min(len(held_out.encoder), NEEDED_SIZES[-1])}"
    why = (f"at {n} images real-vs-real FD-cardiofair spans {interval[0]:.2f}-{interval[1]:.2f}, wider than the "
           f"{settings.realism_target:g}x target's margin {margin:.2f}")
    return {**{key: scope[key] for key in ("n_synthetic", "n_real_held_out", "n_real_train")},
            "status": f"too few images for a stable figure: {why} (need {need})", "n_needed": needed,
            "real_reference_at_n": {"n": n, "fd": reference, "fd_interval": interval, "margin": margin}}


def _needed_images(train: Features, held_out: Features, subjects: np.ndarray, settings: QualitySettings, seed: int,
                   train_weights: np.ndarray | None, n: int) -> int | None:
    """The smallest size of :data:`NEEDED_SIZES` above ``n`` at which real held-out images,
    subsampled by subject at that size, give a real-vs-real FD-cardiofair whose interval is
    narrower than the target's margin; None where none within the held-out images does."""
    reference = FrechetReference(train.encoder, train_weights)
    rng = np.random.default_rng([seed, 34])
    groups = Stratum.of(subjects, 0).groups
    for size in (s for s in NEEDED_SIZES if n < s <= len(held_out.encoder)):
        stratum = [Stratum(groups, size)]
        level = float(np.mean([reference.distance(held_out.encoder[by_subject(stratum, rng, half=False)])
                               for _ in range(LEVEL_DRAWS)]))
        halves = [by_subject(stratum, rng) for _ in range(settings.realism_resamples)]
        if len(groups) < 2 or len(halves[0]) < 2:
            continue
        low, high = interval_at(level, [reference.distance(held_out.encoder[h]) for h in halves], len(halves[0]), size,
                                len(held_out.encoder), floor=0.0)
        if high - low <= level * (settings.realism_target - 1):
            return size
    return None


def matched_by_cell(synthetic_keys: pd.Series, held_out_keys: pd.Series, train_keys: pd.Series,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Synthetic and held-out records drawn to the same count in every cell (the smaller of the
    two), training-set weights that give it that same mix, and the cells left out.

    Synthetic sets are planned to be rich in rare cells; compared with the whole cohort they
    would look 'unrealistic' merely for their subgroup mix, so the overall distances compare
    like with like.
    """
    rng = np.random.default_rng(seed)
    synthetic_pick, held_out_pick, left_out = [], [], []
    composition = {}
    train_counts = train_keys.value_counts()
    for cell in sorted(synthetic_keys.unique()):
        in_synthetic = np.flatnonzero((synthetic_keys == cell).to_numpy())
        in_held_out = np.flatnonzero((held_out_keys == cell).to_numpy())
        count = min(len(in_synthetic), len(in_held_out))
        if count == 0 or train_counts.get(cell, 0) == 0:
            left_out.append(cell)
            continue
        synthetic_pick.append(rng.choice(in_synthetic, count, replace=False))
        held_out_pick.append(rng.choice(in_held_out, count, replace=False))
        composition[cell] = count
    weights = train_keys.map(lambda cell: composition.get(cell, 0) / train_counts[cell]).to_numpy(dtype=np.float64)
    as_index = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    return as_index(synthetic_pick), as_index(held_out_pick), weights, left_out


def _fidelity_scope(synthetic: dict[str, float], reference: dict[str, float], n_synthetic: int,
                    n_real: int, minimum: int, real_label: str = "real test") -> dict[str, Any]:
    """Per-image fidelity means beside their real reference, with the counts they rest on."""
    counts = {"synthetic": n_synthetic, real_label: n_real}
    missing = [name for name, count in counts.items() if not count]
    scope = {"synthetic": synthetic, "real_reference": reference, "n_synthetic": n_synthetic,
             f"n_{real_label.replace(' ', '_')}": n_real,
             "status": "no " + " and no ".join(missing) + " images" if missing else "ok"}
    if min(counts.values()) < minimum:
        scope["note"] = _too_few(counts, minimum)
    return scope


def _mask_scope(synthetic_dice: pd.DataFrame, real_dice: pd.DataFrame, minimum: int) -> dict[str, Any]:
    return _fidelity_scope(synthetic_dice.mean().to_dict() if len(synthetic_dice) else {},
                           real_dice.mean().to_dict() if len(real_dice) else {}, len(synthetic_dice), len(real_dice),
                           minimum)


def same_cell_reference(synthetic_keys: pd.Series, attributes: list[str], held_out: ImageSet,
                        held_out_keys: pd.Series, phantom: PhantomModel | None,
                        minimum: int) -> tuple[ImageSet, pd.Series, str]:
    """Real images of the synthetic set's cells, their cell keys, and where they come from: the
    reference of prompt fidelity. On a phantom cohort, new subjects of each cell (as many as the
    synthetic cell has, at least ``minimum``); otherwise the real held-out images of the cell."""
    counts = synthetic_keys.value_counts().sort_index()
    if phantom is None:
        chosen = held_out_keys.isin(counts.index).to_numpy()
        return (held_out.take(chosen), held_out_keys[chosen].reset_index(drop=True),
                "real held-out (val + test) images of the same cells")
    cells = [cell for cell, n in counts.items() for _ in range(max(minimum, int(n)))]
    drawn = draw_fresh(phantom, [dict(zip(attributes, cell.split("|"))) for cell in cells], "masks",
                       mid_slice_only=True)
    return drawn, pd.Series(cells), "new phantom subjects of the same cells"


def _prompt_scope(synthetic_predicted: pd.DataFrame, synthetic: ImageSet, real_predicted: pd.DataFrame,
                  real: ImageSet, weights: np.ndarray, minimum: int) -> dict[str, Any]:
    synthetic_figures = prompt_fidelity(synthetic_predicted, attribute_table(synthetic.rows)) if len(synthetic) else {}
    real_figures = prompt_fidelity(real_predicted, attribute_table(real.rows), weights) if len(real) else {}
    return _fidelity_scope(synthetic_figures, real_figures, len(synthetic), len(real), minimum, "real same cells")


def _privacy_scope(synthetic_distances: dict[str, np.ndarray], reference_distances: dict[str, np.ndarray],
                   detectors: dict[str, CopyDetector], minimum: int) -> dict[str, Any]:
    counts = {"synthetic": len(synthetic_distances["pixel"]), "real val": len(reference_distances["pixel"])}
    return {"copy_rate": {space: {"synthetic": detectors[space].rate(synthetic_distances[space]),
                                  "real_reference": detectors[space].rate(reference_distances[space])}
                          for space in detectors},
            "median_nn_distance": {space: {"synthetic": _median(synthetic_distances[space]),
                                           "real_reference": _median(reference_distances[space])}
                                   for space in detectors},
            "n_synthetic": counts["synthetic"], "n_real_val": counts["real val"],
            "status": "ok" if counts["synthetic"] else "no synthetic images",
            **({"note": _too_few(counts, minimum)} if min(counts.values()) < minimum else {})}


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def _closest_pairs_png(synthetic: ImageSet, train: ImageSet, order: np.ndarray, neighbours: np.ndarray) -> bytes:
    rows = []
    for i in order:
        j = neighbours[i]
        frames = [mask_overlay(synthetic.images[i, f], np.zeros_like(synthetic.masks[i, f])) for f in range(2)]
        frames += [mask_overlay(train.images[j, f], np.zeros_like(train.masks[j, f])) for f in range(2)]
        gap = np.full((frames[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([frames[0], frames[1], gap, frames[2], frames[3]], 1))
    spacer = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    return png_bytes(np.concatenate(list(itertools.chain.from_iterable((r, spacer) for r in rows))[:-1], 0))


def _flat_rows(cells: dict[str, dict[str, Any]], attributes: list[str]) -> pd.DataFrame:
    """One row per scope (cell, vendor, ...), nested figures as ``key_inner_...`` columns and an
    interval ``[low, high]`` as ``..._low`` and ``..._high``."""
    def flatten(name: str, value: Any, row: dict[str, Any]) -> None:
        if isinstance(value, dict):
            for inner, figure in value.items():
                flatten(f"{name}_{inner}", figure, row)
        elif "interval" in name and isinstance(value, (list, tuple)) and len(value) == 2:
            row[f"{name}_low"], row[f"{name}_high"] = value
        else:
            row[name] = value

    rows = []
    for cell, scope in cells.items():
        row: dict[str, Any] = dict(zip(attributes, cell.split("|")))
        for key, value in scope.items():
            flatten(key, value, row)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class QualityContext:
    """What every metric's compute function reads: the settings, the image sets (real ``train``,
    ``val``, ``test``, ``held_out`` = val + test, and ``synthetic``), the judges, each set's
    features and subgroup cell keys, and the prompt-effect pairs drawn beside the judges' training."""

    settings: QualitySettings
    real_root: Path
    sets: dict[str, ImageSet]
    evaluators: Evaluators
    evaluator_folder: Path
    features: dict[str, Features]
    # The attributes that make a synthetic cell, each set's cell per record, and the synthetic cells.
    attributes: list[str]
    keys: dict[str, pd.Series]
    cells: list[str]
    phantom: PhantomModel | None
    # The real test records whose masks the prompt effects are measured on, and the generator's
    # drawings of them (None without --model).
    picked: np.ndarray
    drawn: DrawnPairs | None
    log: Callable[[str], None]
    progress: bool

    def within(self, name: str, cell: str | None) -> np.ndarray:
        """Which records of set ``name`` are in ``cell`` (all of them for None)."""
        return np.ones(len(self.sets[name]), bool) if cell is None else (self.keys[name] == cell).to_numpy()


def evaluate_synthetic(real_root: str | os.PathLike, synthetic_root: str | os.PathLike, out: str | os.PathLike,
                       settings: QualitySettings = QualitySettings(), evaluators_dir: str | os.PathLike | None = None,
                       overwrite: bool = False, progress: bool = True,
                       model_dir: str | os.PathLike | None = None) -> QualityResult:
    """Judge a synthetic dataset against the real one by each metric of
    :data:`~cardiofair.metrics.quality_metrics.METRICS`; write ``synthetic_quality.json``, per-cell
    CSV tables, per-image figures and the metrics' files (the closest-pairs picture, ...) to
    ``out``; return the result. With ``model_dir`` (the generator), ``prompt_effects`` also holds
    its counterfactual pairs."""
    real_root, synthetic_root, out = Path(real_root), Path(synthetic_root), Path(out)
    log = (lambda text: tqdm.write(text)) if progress else (lambda text: None)
    if settings.frd:
        # Before any data is loaded or any judge trained.
        log(f"FRD: {radiomics.require()}")
    with StagingDirectory(out, overwrite=overwrite) as staging:
        context = _context(real_root, synthetic_root, settings, evaluators_dir, model_dir, log, progress)
        measured = {metric.name: metric.measure(context) for metric in METRICS}
        sets = context.sets
        result = QualityResult.from_dict(json_ready({
            "schema": SCHEMA_VERSION,
            "real": {"path": str(real_root), **{f"n_{name}": len(sets[name]) for name in SPLITS}},
            "synthetic": {"path": str(synthetic_root), "n": len(sets["synthetic"])},
            "evaluators": {"folder": str(context.evaluator_folder), "validation": context.evaluators.validation,
                           "classes": context.evaluators.classes},
            "cell_attributes": context.attributes,
            **{name: measurement.section for name, measurement in measured.items()},
        }))
        result.save(staging.tmp)
        for metric in METRICS:
            if metric.by_cell:
                _flat_rows(result.section(metric.name)["cells"], context.attributes).to_csv(
                    staging.tmp / result.by_cell_file(metric.name), index=False)
            for name, content in measured[metric.name].files.items():
                atomic_write(staging.tmp / name, content)
        per_image = pd.DataFrame({"record_id": sets["synthetic"].rows["record_id"], "cell": context.keys["synthetic"],
                                  **{column: values for measurement in measured.values()
                                     for column, values in measurement.per_image.items()}})
        per_image.to_csv(staging.tmp / result.PER_IMAGE, index=False)
        staging.commit()
    return result


def _context(real_root: Path, synthetic_root: Path, settings: QualitySettings,
             evaluators_dir: str | os.PathLike | None, model_dir: str | os.PathLike | None,
             log: Callable[[str], None], progress: bool) -> QualityContext:
    """Load both datasets, the judges (trained or cached) and the features every metric shares."""
    # The synthetic set first: a wrong --synthetic fails before the larger real set is read.
    synthetic = load_synthetic(synthetic_root, progress)
    real = load_real_splits(real_root, progress)
    check_compatible(real["train"], synthetic)
    # Loaded first, so a wrong --model fails before the evaluators train.
    generator = _load_generator(model_dir, real)
    # Prompt effects are drawn as the synthetic records were: with the sampler their run chose
    # (attribute guidance, say), over the model's own defaults.
    sampler = None if generator is None else GenerateResult.load(synthetic_root).drawn_with(generator.defaults)
    test_attributes = attribute_table(real["test"].rows)
    picked = choose_pairs(test_attributes, settings.counterfactual_pairs, settings.seed)
    drawing = None
    if generator is not None:
        # A cohort without prompt attributes (the public M&Ms copy) has no test mask to draw on.
        if len(picked):
            log(f"drawing prompt-effect pairs on {len(picked)} real test masks per attribute")
        drawing = PairDrawing(generator, judged_classes(attribute_table(real["train"].rows)), real["test"].masks[picked],
                              test_attributes.iloc[picked].reset_index(drop=True), settings.seed, sampler, progress)
    # In parts, so that the core the shorter training frees starts on them and the other joins
    # when its training ends; with cached evaluators both cores draw (the default study's 204
    # images in about 29 s against 54-59 s on one core; docs/measurements.md).
    evaluators, evaluator_folder = cached_evaluators(
        real, settings, Path(evaluators_dir) if evaluators_dir else None, log, progress,
        beside=drawing.parts(PAIR_DRAWING_PARTS) if drawing is not None else ())
    if not evaluators.classes:
        log("attribute judge left out: no prompt attribute has two known values among the real training records, "
            "so prompt fidelity and prompt effects are not measured, and the realism features come from the segmenter")
    held_out = ImageSet(pd.concat([real["val"].rows, real["test"].rows], ignore_index=True),
                        np.concatenate([real["val"].images, real["test"].images]),
                        np.concatenate([real["val"].masks, real["test"].masks]))
    sets = {**real, "held_out": held_out, "synthetic": synthetic}
    log("measuring realism, fidelity and privacy")
    attributes = cell_attributes(synthetic.rows, attribute_table(synthetic.rows))
    keys = {name: _cell_keys(s, attributes) for name, s in sets.items()}
    return QualityContext(settings, real_root, sets, evaluators, evaluator_folder, _features(evaluators, sets),
                          attributes, keys, sorted(keys["synthetic"].unique()), phantom_model(real_root), picked,
                          None if drawing is None else drawing.result(), log, progress)


# --- the metrics' compute functions (named by cardiofair.metrics.quality_metrics.METRICS) -------


def measure_realism(context: QualityContext) -> Measurement:
    """Distances to the real training set, overall (matched by cell), per cell, and per vendor
    and centre where the real cohort records them, each with its interval and held to the
    realism target (:func:`held_to_target`)."""
    settings, features, sets = context.settings, context.features, context.sets
    synthetic, held_out = sets["synthetic"], sets["held_out"]
    subjects = {name: sets[name].rows["subject_id"].astype(str).to_numpy() for name in ("synthetic", "held_out")}

    def scope(train: np.ndarray, syn: np.ndarray, held: np.ndarray) -> dict[str, Any]:
        train_features, held_features = features["train"].take(train), features["held_out"].take(held)
        measured = realism_scope(train_features, features["synthetic"].take(syn), held_features, synthetic.images[syn],
                                 held_out.images[held], settings, settings.seed,
                                 subjects=(subjects["synthetic"][syn], subjects["held_out"][held]))
        return held_to_target(measured, train_features, held_features, subjects["held_out"][held], settings,
                              settings.seed)

    keys = context.keys
    matched = [matched_by_cell(keys["synthetic"], keys["held_out"], keys["train"], settings.seed + k)
               for k in range(settings.fd_draws)]
    # Every draw has the same count per cell, hence the same training-set weights.
    train_weights, unmatched = matched[0][2], matched[0][3]
    overall = realism_scope(features["train"], features["synthetic"], features["held_out"], synthetic.images,
                            held_out.images, settings, settings.seed, train_weights,
                            draws=[(syn, held) for syn, held, _, _ in matched],
                            subjects=(subjects["synthetic"], subjects["held_out"]),
                            cells=(keys["synthetic"].to_numpy(), keys["held_out"].to_numpy()))
    overall = {**held_to_target(overall, features["train"], features["held_out"], subjects["held_out"], settings,
                                settings.seed, train_weights),
               "matched_by_cell": True, "cells_without_real_held_out": unmatched}
    everything = np.ones(len(synthetic), bool)
    section = {"feature_space": FEATURE_SPACES[context.evaluators.feature_network],
               "realism_target": settings.realism_target, "interval": REALISM_INTERVAL, "overall": overall,
               "cells": {cell: scope(*(context.within(name, cell) for name in ("train", "synthetic", "held_out")))
                         for cell in context.cells}}
    files = {}
    for column, values in recorded_groups(sets["held_out"].rows).items():
        train_values, held_values = (sets[name].rows[column].astype(str).to_numpy() for name in ("train", "held_out"))
        # Every synthetic image against the real images of one vendor (or centre): its held-out
        # images against its own training images are the reference.
        section[f"by_{column}"] = {value: scope(train_values == value, everything, held_values == value)
                                   for value in values}
        files[QualityResult.by_group_file("realism", column)] = _flat_rows(section[f"by_{column}"], [column]).to_csv(
            index=False)
    return Measurement(section, files=files)


# Columns of a real manifest whose values are compared one by one (the M&Ms copy records both).
GROUP_COLUMNS = ("vendor", "centre")


def recorded_groups(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Each column of :data:`GROUP_COLUMNS` that records at least two known values among
    ``rows``, with those values in order."""
    groups = {}
    for column in (c for c in GROUP_COLUMNS if c in rows.columns):
        known = rows[column].dropna().astype(str).str.strip()
        values = sorted(set(known[~known.isin(["", "nan", "None", UNKNOWN])]))
        if len(values) >= 2:
            groups[column] = values
    return groups


def drawn_to_mix(keys: pd.Series, mix: pd.Series, seed: int) -> np.ndarray:
    """Sorted positions of records of ``keys`` drawn to the count per cell of ``mix`` (all of a
    cell's records where it has fewer)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero((keys == cell).to_numpy()), min(count, int((keys == cell).sum())),
                        replace=False) for cell, count in mix.value_counts().sort_index().items()]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def measure_c2st(context: QualityContext) -> Measurement:
    """Can a small CNN tell synthetic images from real held-out ones? The two-sample classifier
    test's AUROC (:func:`cardiofair.metrics.realism.classifier_two_sample_tests`) with its interval
    over subjects, beside real training images against the same held-out images."""
    settings, sets, keys = context.settings, context.sets, context.keys
    method = {"folds": settings.c2st_folds, "steps": settings.c2st_steps, "batch": settings.c2st_batch,
              "interval": f"95% percentile bootstrap over subjects, {settings.c2st_resamples} resamples"}
    if not settings.c2st:
        return Measurement({**method, "overall": {"status": "not run (quality.c2st is off)"}})
    context.log(f"two-sample classifier test: {2 * settings.c2st_folds} trainings of {settings.c2st_steps} steps")
    # Realism's first draw: both sets at the same count per cell, so that the classifier cannot
    # tell them apart by their subgroup mix alone; the training images of the reference follow it.
    synthetic_pick, held_pick, _, unmatched = matched_by_cell(keys["synthetic"], keys["held_out"], keys["train"],
                                                              settings.seed)
    compared = {"synthetic": sets["synthetic"].take(synthetic_pick), "real_held_out": sets["held_out"].take(held_pick),
                "real_train": sets["train"].take(drawn_to_mix(keys["train"], keys["held_out"].iloc[held_pick],
                                                              settings.seed))}
    subjects = {name: s.rows["subject_id"].astype(str).to_numpy() for name, s in compared.items()}
    counts = {name: len(s) for name, s in compared.items()}
    few = {name: len(set(ids)) for name, ids in subjects.items() if len(set(ids)) < settings.c2st_folds}
    overall: dict[str, Any] = {**{f"n_{name}": n for name, n in counts.items()},
                               "n_subjects": {name: len(set(ids)) for name, ids in subjects.items()},
                               "cells_without_real_held_out": unmatched}
    per_image = np.full(len(sets["synthetic"]), np.nan)
    if few:
        overall["status"] = ("too few subjects: " + ", ".join(f"{n} {name.replace('_', ' ')}"
                                                              for name, n in few.items())
                             + f" (need one per fold, {settings.c2st_folds})")
        return Measurement({**method, "overall": overall}, per_image={"c2st_score": per_image})
    held = compared["real_held_out"]

    def against_held_out(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.concatenate([held.images, compared[name].images]), np.repeat([0, 1], [len(held), counts[name]]),
                np.concatenate([subjects["real_held_out"], subjects[name]]))

    synthetic, reference = classifier_two_sample_tests(
        [against_held_out("synthetic"), against_held_out("real_train")], settings.c2st_folds, settings.c2st_steps,
        settings.c2st_batch, settings.c2st_resamples, settings.seed)
    overall.update(status="ok", auroc={"synthetic": synthetic.auroc, "real_reference": reference.auroc},
                   auroc_interval={"synthetic": list(synthetic.interval), "real_reference": list(reference.interval)})
    per_image[synthetic_pick] = synthetic.scores[len(held):]
    return Measurement({**method, "overall": overall}, per_image={"c2st_score": per_image})


def measure_frd(context: QualityContext) -> Measurement:
    """The Fréchet Radiomics Distance of frd-score (:mod:`cardiofair.metrics.radiomics`) per frame,
    within the heart: synthetic images from real training images, beside real held-out images
    from the same training images, both sides at the same count per cell."""
    settings = context.settings
    method = {"version": radiomics.VERSION, "region": "the heart (LV blood pool, LV myocardium, RV blood pool)",
              "train_multiple": settings.frd_train_multiple}
    if not settings.frd:
        return Measurement({**method, "overall": {"status": "not run (quality.frd is off)"}})
    method["package"] = radiomics.require()
    sets, keys = context.sets, context.keys
    # Realism's first draw, as the two-sample test's; the training records follow its mix.
    synthetic_pick, held_pick, _, unmatched = matched_by_cell(keys["synthetic"], keys["held_out"], keys["train"],
                                                              settings.seed)
    mix = keys["held_out"].iloc[held_pick]
    compared = {"synthetic": sets["synthetic"].take(synthetic_pick), "real_held_out": sets["held_out"].take(held_pick),
                "real_train": sets["train"].take(drawn_to_mix(keys["train"], pd.concat([mix] * settings.frd_train_multiple),
                                                              settings.seed))}
    counts = {name: len(s) for name, s in compared.items()}
    overall: dict[str, Any] = {**{f"n_{name}": n for name, n in counts.items()}, "cells_without_real_held_out": unmatched,
                               "status": _too_few({name.replace("_", " "): n for name, n in counts.items()}, 2)}
    if overall["status"] != "ok":
        return Measurement({**method, "overall": overall})
    spacing = float(sets["train"].rows["pixel_spacing_mm"].astype(float).iloc[0])
    workers = radiomics.workers()
    context.log(f"FRD: radiomic features of {sum(counts.values())} records x {len(FRAMES)} frames "
                f"({workers} processes)")
    frames = {}
    for f, frame in enumerate(FRAMES):
        features = {}
        for name, chosen in compared.items():
            regions = chosen.masks[:, f] > 0
            usable = radiomics.usable(regions)
            features[name] = radiomics.radiomic_features(chosen.images[usable, f], regions[usable], spacing, workers)
        distances = {side: radiomics.frechet_radiomics_distance(features["real_train"], features[name])
                     for side, name in (("synthetic", "synthetic"), ("real_reference", "real_held_out"))}
        frames[frame] = {"frd": {side: d["frd"] for side, d in distances.items()},
                         "n_images": {"synthetic": distances["synthetic"]["n_other"],
                                      "real_held_out": distances["real_reference"]["n_other"],
                                      "real_train": distances["synthetic"]["n_reference"]},
                         "n_features": {side: d["n_features"] for side, d in distances.items()}}
    overall["frames"] = frames
    return Measurement({**method, "overall": overall})


def measure_mask_fidelity(context: QualityContext) -> Measurement:
    """Dice of the segmenter against each synthetic image's mask, beside real test images with
    their own masks (and, as a floor, another subject's)."""
    synthetic, test, seed = context.sets["synthetic"], context.sets["test"], context.settings.seed
    synthetic_dice = dice_table(context.evaluators.segment(synthetic.images), synthetic.masks)
    test_segmented = context.evaluators.segment(test.images)
    test_dice = dice_table(test_segmented, test.masks)
    shuffled = np.random.default_rng(seed).permutation(len(test))
    shuffled_dice = dice_table(test_segmented, test.masks[shuffled])

    def scope(cell: str | None) -> dict[str, Any]:
        return _mask_scope(synthetic_dice[context.within("synthetic", cell)], test_dice[context.within("test", cell)],
                           context.settings.min_images)

    return Measurement({"overall": {**scope(None), "shuffled_mask_floor": shuffled_dice.mean().to_dict()},
                        "cells": {cell: scope(cell) for cell in context.cells}},
                       per_image={f"dice_{c}": synthetic_dice[c] for c in synthetic_dice.columns})


def measure_prompt_fidelity(context: QualityContext) -> Measurement:
    """The attribute classifier on the synthetic images against their prompts, beside real
    images of the same cells against their records."""
    settings, keys, evaluators = context.settings, context.keys, context.evaluators
    synthetic, test = context.sets["synthetic"], context.sets["test"]
    synthetic_predicted = evaluators.classify(synthetic.images)
    test_predicted = evaluators.classify(test.images)
    reference, reference_keys, reference_source = same_cell_reference(
        keys["synthetic"], context.attributes, context.sets["held_out"], keys["held_out"], context.phantom,
        settings.min_images)
    reference_predicted = evaluators.classify(reference.images)
    # Each reference image counts as its cell's share of the synthetic set, so the overall
    # figure has the synthetic set's mix of cells.
    reference_weights = reference_keys.map(keys["synthetic"].value_counts() / reference_keys.value_counts())

    def scope(cell: str | None) -> dict[str, Any]:
        syn = context.within("synthetic", cell)
        own = np.ones(len(reference), bool) if cell is None else (reference_keys == cell).to_numpy()
        return _prompt_scope(synthetic_predicted[syn].reset_index(drop=True), synthetic.take(syn),
                             reference_predicted[own].reset_index(drop=True), reference.take(own),
                             reference_weights[own].to_numpy(), settings.min_images)

    overall = {**scope(None), "reference": reference_source,
               "real_test": prompt_fidelity(test_predicted, attribute_table(test.rows)), "n_real_test": len(test),
               "chance": {name: 1.0 / len(values) for name, values in evaluators.classes.items()},
               "not_measured": _unmeasured_attributes(attribute_table(context.sets["train"].rows), evaluators.classes),
               "cells_without_reference": sorted(set(context.cells) - set(reference_keys))}
    return Measurement({"overall": overall, "cells": {cell: scope(cell) for cell in context.cells}},
                       per_image={f"predicted_{c}": synthetic_predicted[c] for c in synthetic_predicted.columns})


def measure_privacy(context: QualityContext) -> Measurement:
    """Each synthetic image's nearest training image and the copy rate, beside real validation
    images against the same threshold; the closest pairs as a picture."""
    features, minimum = context.features, context.settings.min_images
    synthetic, train = context.sets["synthetic"], context.sets["train"]
    spaces = {"pixel": "pixels", "encoder": "encoder"}
    distances, neighbours = {}, {}
    for space, field_name in spaces.items():
        for name in ("synthetic", "test", "val"):
            distances[name, space], neighbours[name, space] = nearest_neighbours(
                getattr(features[name], field_name), getattr(features["train"], field_name))
    detectors = {space: CopyDetector.fit(distances["test", space]) for space in spaces}

    def scope(cell: str | None) -> dict[str, Any]:
        syn, val = context.within("synthetic", cell), context.within("val", cell)
        return _privacy_scope({s: distances["synthetic", s][syn] for s in spaces},
                              {s: distances["val", s][val] for s in spaces}, detectors, minimum)

    mask_source = _mask_source_distances(synthetic, train, features)
    pixel_order = np.argsort(distances["synthetic", "pixel"], kind="stable")[:context.settings.closest_pairs]
    train_ids = train.rows["record_id"].astype(str).to_numpy()
    closest = [{"synthetic": str(synthetic.rows["record_id"][i]),
                "nearest_training_record": str(train_ids[neighbours["synthetic", "pixel"][i]]),
                "pixel_distance": float(distances["synthetic", "pixel"][i]),
                "flagged_as_copy": bool(detectors["pixel"].flags(distances["synthetic", "pixel"][i:i + 1])[0])}
               for i in pixel_order]
    overall = scope(None)
    overall["median_distance_to_mask_source"] = _median(mask_source[np.isfinite(mask_source)])
    overall["mask_source_not_in_train"] = int(np.isnan(mask_source).sum())
    section = {"threshold": {space: {"value": d.threshold, "percentile": d.percentile,
                                     "of": "real test to real train nearest-neighbour distances"}
                             for space, d in detectors.items()},
               "overall": overall, "cells": {cell: scope(cell) for cell in context.cells}, "closest_pairs": closest}
    per_image = {"nn_pixel_distance": distances["synthetic", "pixel"],
                 "nn_pixel_record": train_ids[neighbours["synthetic", "pixel"]],
                 "nn_encoder_distance": distances["synthetic", "encoder"],
                 "mask_source_pixel_distance": mask_source,
                 "copy_pixel": detectors["pixel"].flags(distances["synthetic", "pixel"]),
                 "copy_encoder": detectors["encoder"].flags(distances["synthetic", "encoder"])}
    if not len(pixel_order):
        return Measurement(section, per_image)
    picture = _closest_pairs_png(synthetic, train, pixel_order, neighbours["synthetic", "pixel"])
    return Measurement(section, per_image, {QualityResult.CLOSEST_PAIRS: picture})


def measure_mask_geometry(context: QualityContext) -> Measurement:
    """The synthetic masks themselves: validity, geometry per cell and novelty
    (:func:`cardiofair.metrics.masks.mask_quality`), with the per-mask table."""
    context.log("measuring the synthetic masks' validity, geometry per cell and novelty")
    sets, keys = context.sets, context.keys
    synthetic = sets["synthetic"]
    draws = pd.to_numeric(synthetic.rows.get("mask_draws", pd.Series(dtype=float)), errors="coerce").dropna()
    section, per_mask = mask_quality(
        synthetic.masks, keys["synthetic"], sets["train"].masks, keys["train"], sets["held_out"].masks,
        keys["held_out"], len(sets["val"]), context.attributes,
        float(sets["train"].rows["pixel_spacing_mm"].astype(float).iloc[0]), draws.to_numpy() if len(draws) else None,
        context.phantom, context.progress)
    return Measurement(section, files={QualityResult.MASK_GEOMETRY: per_mask.to_csv(index=False)})


def measure_prompt_effects(context: QualityContext) -> Measurement:
    """How far one changed word of the prompt moves the judge, beside the phantom's real cues
    (:func:`cardiofair.metrics.counterfactual.prompt_effects`)."""
    if len(context.picked):
        context.log(f"measuring prompt effects on {len(context.picked)} real test masks per attribute"
                    + ("" if context.drawn is not None else " (no --model: the phantom reference only)"))
    return Measurement(prompt_effects(context.evaluators, context.real_root,
                                      context.sets["test"].rows.iloc[context.picked], context.drawn,
                                      context.settings.seed))


def _load_generator(model_dir: str | os.PathLike | None, real: dict[str, ImageSet]) -> Any:
    """The generator whose prompt effects are measured on real test masks: one that learned a
    test subject would redraw that patient, not the prompt, so it is refused."""
    if model_dir is None:
        return None
    # diffusers takes seconds to import: only a given model needs it.
    from cardiofair.diffusion.sample import TrainedGenerator

    generator = TrainedGenerator(model_dir)
    rows = pd.concat([s.rows.assign(split=name) for name, s in real.items()], ignore_index=True)
    leaked = learned_held_out(f"the model {model_dir}", generator.info.get("training_subject_hashes", ()), rows)
    if leaked:
        raise QualityError(f"{leaked}: its drawings of test masks would show those patients; give a model trained "
                           "on this split")
    size = real["test"].masks.shape[-1]
    if generator.size != size:
        raise QualityError(f"the model {model_dir} draws {generator.size} px pairs but the real records are {size} px")
    return generator


def _unmeasured_attributes(train: pd.DataFrame, classes: dict[str, list[str]]) -> dict[str, str]:
    """The prompt attributes no classifier head reads, with the reason: a cohort that records
    no sex or age (ACDC) gives the classifier nothing to learn them from."""
    reasons = {}
    for name in (a for a in ATTRIBUTE_COLUMNS if a not in classes):
        known = train[name][train[name] != UNKNOWN].nunique() if name in train else 0
        reasons[name] = "unknown for every real training record" if known == 0 else \
            "fewer than two values among the real training records"
    return reasons


def _mask_source_distances(synthetic: ImageSet, train: ImageSet, features: dict[str, Features]) -> np.ndarray:
    """Pixel distance of each synthetic image to the training image whose mask it was drawn on
    (NaN when the mask did not come from a training record)."""
    if "mask_source_record" not in synthetic.rows.columns:
        return np.full(len(synthetic), np.nan)
    position = {record: i for i, record in enumerate(train.rows["record_id"].astype(str))}
    distances = np.full(len(synthetic), np.nan)
    for i, record in enumerate(synthetic.rows["mask_source_record"].astype(str)):
        if record in position:
            distances[i] = float(np.linalg.norm(features["synthetic"].pixels[i] - features["train"].pixels[position[record]]))
    return distances
