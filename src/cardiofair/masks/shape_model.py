"""A conditional statistical shape model of (ED, ES) label-map pairs: new hearts for a cell.

Each training mask pair becomes six signed-distance maps (LV cavity, epicardium and RV, at ED
and at ES, clipped a few pixels from the boundary so that only the shape near it counts),
stacked into one vector so that ED and ES stay one heart. A principal component analysis keeps
the main modes of shape; the latent mean is a linear model of the prompt attributes with
additive effects (sex, age decade, BMI class, diagnosis, each coded against the first level), so
a thin or unseen cell borrows strength from every other cell: a woman's heart with heart failure
is a woman's heart moved the way heart failure moves hearts across the cohort. The residual
around that mean has one covariance per sex and diagnosis (shrunk towards the diagnosis' own when
the group is small), because disease widens the spread of shape (heart failure mixes dilated,
thin-walled ventricles with preserved, thick-walled ones) and a larger heart varies more in
millimetres than a smaller one: a man's spread given to a woman's heart would draw implausibly
large and small female hearts. A drawn
latent is decoded to signed distances and thresholded back to labels.

The model is saved as safetensors (its arrays) plus ``cardiofair.json`` (its card: size,
spacing, prompt schema, attribute levels, training cells and hashed training subjects, as the
image generator's card), written last so that its presence marks a finished model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file
from scipy import ndimage
from tqdm.auto import tqdm

from cardiofair import __version__
from cardiofair.errors import CardiofairError, MissingInputError
from cardiofair.masks.anatomy import failed_checks
from cardiofair.prompts import DEFAULT_SCHEMA, UNKNOWN, PromptSchema
from cardiofair.results import MasksResult

KIND = "mask-generator"
# Signed distances are clipped at this many pixels: far from a boundary the distance says nothing
# about the shape, and unclipped it would dominate the principal components.
CLIP_PX = 6.0
# Ridge penalty on the attribute effects (latent units squared): it keeps a level with a handful
# of records (underweight BMI) from taking an extreme effect.
RIDGE = 1.0
ATTRIBUTES = ("sex", "age", "bmi", "diagnosis")


class MaskModelError(CardiofairError):
    """A mask generator that cannot be trained or used as asked; the message says what to change."""


def signed_distances(masks: np.ndarray, progress: bool = False) -> np.ndarray:
    """(N, 6 * H * W) clipped signed distances (pixels, negative inside) of three nested regions
    at ED and ES: the LV cavity, the epicardium (cavity and myocardium) and the whole heart (LV and
    RV). Nested regions rather than the labels themselves: the RV crescent and the myocardial ring
    are thin, and a blend of their distance maps falls apart, while a blend of blobs stays a blob,
    and an RV read as the heart outside the epicardium always lies against the LV."""
    out = np.empty((len(masks), 6 * masks.shape[-2] * masks.shape[-1]), dtype=np.float32)
    for index, mask in enumerate(tqdm(masks, desc="shape: signed distances", unit="mask", disable=not progress,
                                      leave=False)):
        maps = []
        for frame in mask:
            for inside in (frame == 1, np.isin(frame, (1, 2)), frame > 0):
                distance = ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)
                maps.append(np.clip(distance, -CLIP_PX, CLIP_PX))
        out[index] = np.concatenate(maps, axis=None)
    return out


def labels_from_distances(vectors: np.ndarray, size: int) -> np.ndarray:
    """(N, 2, H, W) label maps from signed-distance vectors (see :func:`signed_distances`): the RV
    is the heart outside the epicardium, the myocardium the epicardium outside the cavity."""
    maps = vectors.reshape(len(vectors), 2, 3, size, size) < 0
    masks = np.zeros((len(vectors), 2, size, size), dtype=np.uint8)
    for mask, frames in zip(masks, maps):
        for frame, (cavity, epicardium, heart) in zip(mask, frames):
            # Where the heart's outline runs along the LV free wall, the two boundaries nearly
            # coincide and leave slivers outside the epicardium: the RV is the largest piece.
            pieces, count = ndimage.label(heart & ~epicardium, structure=np.ones((3, 3), dtype=bool))
            if count:
                frame[pieces == np.argmax(np.bincount(pieces.ravel())[1:]) + 1] = 3
            frame[epicardium] = 2
            # The wall is at least one pixel everywhere (2.3 mm at the default 150 mm / 64 px, below
            # the thinnest dilated wall): where a blend brings the two boundaries together, the
            # cavity stops short of the epicardium rather than break through it.
            frame[cavity & ndimage.binary_erosion(epicardium, structure=np.ones((3, 3), dtype=bool))] = 1
    return masks


@dataclass
class ShapeModel:
    """The fitted model: its arrays and its card (see the module docstring)."""

    mean: np.ndarray            # (D,) mean signed-distance vector
    components: np.ndarray      # (K, D) principal directions
    effects: np.ndarray         # (P, K) latent mean = design @ effects
    residual_factors: np.ndarray  # (groups, K, K): latent residual = factor @ standard normal
    info: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.info["size"])

    @property
    def spacing_mm(self) -> float:
        return float(self.info["pixel_spacing_mm"])

    @property
    def levels(self) -> dict[str, list[str]]:
        return self.info["levels"]

    @property
    def hash(self) -> str:
        """A short hash of the arrays and the card: what synthetic records cite as their source."""
        digest = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode())
        for array in (self.mean, self.components, self.effects, self.residual_factors):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def design(self, attributes: Sequence[Mapping[str, str]]) -> np.ndarray:
        """(N, P) design rows: an intercept and one indicator per attribute level beyond the first."""
        rows = []
        for values in attributes:
            row = [1.0]
            for name in ATTRIBUTES:
                row += [float(values.get(name, UNKNOWN) == level) for level in self.levels[name][1:]]
            rows.append(row)
        return np.asarray(rows, dtype=np.float64)

    def training_count(self, cell: Mapping[str, str]) -> int:
        """How many training records the model saw of ``cell`` (any subset of the attributes)."""
        return sum(all(counts.get(k) == v for k, v in cell.items()) * counts["n"]
                   for counts in self.info["training_cells"])

    def draw(self, attributes: Mapping[str, str], rng: np.random.Generator) -> np.ndarray:
        """One (2, H, W) mask pair for a subject with these binned attributes (sex, age, bmi,
        diagnosis); not checked (see :func:`draw_valid`)."""
        unknown = {k: v for k, v in attributes.items() if k in ATTRIBUTES and v not in self.levels[k]}
        if unknown:
            raise MaskModelError(f"the mask generator never saw {unknown} in training (its levels: "
                                 f"{ {k: self.levels[k] for k in unknown} }); it cannot draw that attribute")
        groups = self.info["residual_groups"]
        sex = attributes.get("sex", "")
        group = [sex, attributes["diagnosis"]] if [sex, attributes["diagnosis"]] in groups else ["", attributes["diagnosis"]]
        latent = self.design([attributes])[0] @ self.effects
        latent = latent + self.residual_factors[groups.index(group)] @ rng.standard_normal(len(latent))
        return labels_from_distances((self.mean + latent @ self.components)[None], self.size)[0]

    def save(self, folder: Path) -> None:
        """Write the arrays, then the card (its presence marks a finished model)."""
        save_file({"mean": self.mean, "components": self.components, "effects": self.effects,
                   "residual_factors": self.residual_factors}, str(folder / MasksResult.WEIGHTS))
        (folder / MasksResult.FILE).write_text(json.dumps(self.info, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ShapeModel":
        """A mask generator written by :meth:`save`; a folder without one is a clear error."""
        folder = Path(folder)
        if not (folder / MasksResult.FILE).is_file() or not (folder / MasksResult.WEIGHTS).is_file():
            raise MissingInputError(f"{folder} holds no mask generator ({MasksResult.FILE} and {MasksResult.WEIGHTS}); "
                                    f"train one with `cardiofair masks DATASET --out {folder}`")
        info = MasksResult.load(folder).card
        if info.get("kind") != KIND:
            raise MaskModelError(f"{folder} holds a {info.get('kind', 'image generator')}, not a mask generator")
        arrays = load_file(str(folder / MasksResult.WEIGHTS))
        return cls(arrays["mean"], arrays["components"], arrays["effects"], arrays["residual_factors"], info)


def draw_valid(model: ShapeModel, attributes: Mapping[str, str], rng: np.random.Generator,
               max_draws: int) -> tuple[np.ndarray | None, int]:
    """The first drawn mask pair that passes every anatomical check, and the number of draws it
    took; ``(None, max_draws)`` when none of ``max_draws`` passed."""
    for draw in range(1, max_draws + 1):
        mask = model.draw(attributes, rng)
        if not failed_checks(mask, model.spacing_mm):
            return mask, draw
    return None, max_draws


def fit_shape_model(masks: np.ndarray, attributes: pd.DataFrame, spacing_mm: float, components: int,
                    info: Mapping[str, Any], schema: PromptSchema = DEFAULT_SCHEMA, progress: bool = False) -> ShapeModel:
    """Fit the model to (N, 2, H, W) training masks and their binned ``attributes`` (columns
    sex, age, bmi, diagnosis; unknown values as their own level). ``info`` joins the card."""
    n, _, size, _ = masks.shape
    if n < 2 * components:
        raise MaskModelError(f"{n} training masks are too few for {components} shape components: give at least "
                             f"{2 * components} (or fewer components)")
    vectors = signed_distances(masks, progress)
    mean = vectors.mean(0, dtype=np.float64).astype(np.float32)
    centred = vectors - mean
    # The principal directions from the N x N Gram matrix: N is far below the 6 H W dimensions
    # (single precision for the products, the largest cost; signed distances are whole pixels to
    # a few digits).
    eigenvalues, eigenvectors = np.linalg.eigh((centred @ centred.T).astype(np.float64))
    order = np.argsort(eigenvalues)[::-1][:components]
    # A small or repetitive cohort spans fewer shape modes than asked: keep those with variance
    # above single-precision noise (the Gram matrix is a float32 product).
    order = order[eigenvalues[order] > 1e-5 * max(float(eigenvalues.max()), 0.0)]
    if not len(order):
        raise MaskModelError(f"the {n} training masks are all the same shape: there is no variation to learn")
    directions = (eigenvectors[:, order].T.astype(np.float32) @ centred).astype(np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    latents = centred.astype(np.float64) @ directions.T
    levels = {name: sorted(attributes[name].astype(str).unique()) for name in ATTRIBUTES}
    card = {"kind": KIND, "method": "conditional statistical shape model", "cardiofair_version": __version__,
            "size": int(size), "pixel_spacing_mm": float(spacing_mm), "prompt_schema": schema.to_dict(),
            "components": int(len(order)), "clip_px": CLIP_PX, "ridge": RIDGE, "levels": levels,
            "explained_variance": float(eigenvalues[order].sum() / max(eigenvalues.sum(), 1e-12)), **info}
    model = ShapeModel(mean, directions.astype(np.float32), np.zeros(0),
                       np.zeros(0), card)
    design = model.design(attributes[list(ATTRIBUTES)].astype(str).to_dict("records"))
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    model.effects = np.linalg.solve(design.T @ design + penalty, design.T @ latents)
    residuals = latents - design @ model.effects
    pooled = np.atleast_2d(np.cov(residuals, rowvar=False))
    groups, factors = [], []
    for diagnosis in levels["diagnosis"]:
        is_diagnosis = (attributes["diagnosis"].astype(str) == diagnosis).to_numpy()
        of_diagnosis = _shrunk_covariance(residuals[is_diagnosis], pooled)
        for sex in ("", *levels["sex"]):
            own = is_diagnosis & (attributes["sex"].astype(str) == sex).to_numpy() if sex else is_diagnosis
            if own.any():
                covariance = of_diagnosis if not sex else _shrunk_covariance(residuals[own], of_diagnosis)
                values, vectors = np.linalg.eigh(covariance)
                groups.append([sex, diagnosis])
                factors.append(vectors * np.sqrt(np.clip(values, 0.0, None)))
    model.info["residual_groups"] = groups
    model.residual_factors = np.stack(factors)
    return model


def _shrunk_covariance(residuals: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """The covariance of ``residuals``, shrunk towards ``towards`` by the weight n / (n + K): a
    group of few records has a noisy, often singular covariance of its own."""
    n, k = residuals.shape
    own = np.atleast_2d(np.cov(residuals, rowvar=False)) if n > 1 else towards
    weight = n / (n + k)
    return weight * own + (1.0 - weight) * towards
