"""A source subject before preparation, and the checks every real-cohort loader shares.

Loaders find subjects cheaply (:class:`CaseSource`) and read them lazily (:meth:`CaseSource.load`)
so that one bad subject is excluded with a reason naming it and its file, and the rest of the
cohort goes on. Image and mask travel together from the moment they are read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import nibabel as nib
import numpy as np

from cardiofair.data.records import FRAMES
from cardiofair.errors import SubjectError
from cardiofair.prompts import is_missing, normalise_sex

# Plausible adult ranges: values outside are data-entry or unit errors (BMI 400, age -3),
# not patients, and would put a subject in a nonsense subgroup cell.
PLAUSIBLE = {
    "age_years": (0.0, 120.0),
    "height_cm": (100.0, 230.0),
    "weight_kg": (25.0, 300.0),
    "bmi": (10.0, 80.0),
}

# Label orders on disk, mapped to cardiofair's (1 LV blood pool, 2 LV myocardium, 3 RV blood pool).
UKBB_LABELS = {0: 0, 1: 1, 2: 2, 3: 3}
ACDC_LABELS = {0: 0, 1: 3, 2: 2, 3: 1}


@dataclass
class Case:
    """One subject's ED and ES volumes (X, Y, Z) with masks in cardiofair's label order.

    ``files`` names the source of each frame (``ED``, ``ES``, ``ED_mask``, ``ES_mask``) so that
    any later problem can point at the file.
    """

    subject_id: str
    dataset: str
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    spacing_mm: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class CaseSource:
    """A subject found on disk, not yet read. ``loader`` must be picklable (a module function)."""

    subject_id: str
    loader: Callable[..., Case]
    arguments: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Case:
        return self.loader(**self.arguments)


def read_volume(subject_id: str, path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file, turning a missing or unreadable file into a :class:`SubjectError`."""
    path = Path(path)
    if not path.is_file():
        raise SubjectError(subject_id, path, "file is missing")
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # force a full read: a truncated .gz fails here, not later
    except Exception as error:  # nibabel raises many types for corrupt files
        raise SubjectError(subject_id, path, f"cannot read NIfTI: {type(error).__name__}: {error}") from None
    return img


def frame_of(subject_id: str, path: str | os.PathLike, img: nib.Nifti1Image, frame: int | None) -> np.ndarray:
    """A 3D (X, Y, Z) volume: the image itself, or one frame of a 4D cine (0-based index)."""
    data = img.get_fdata(dtype=np.float32)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[3] == 1 and frame is None:
        data = data[..., 0]
    if data.ndim == 4:
        if frame is None:
            raise SubjectError(subject_id, path, f"4D volume {data.shape} but no frame index given")
        if not 0 <= frame < data.shape[3]:
            raise SubjectError(subject_id, path, f"frame {frame} is missing: the cine has {data.shape[3]} frames")
        data = data[..., frame]
    if data.ndim != 3:
        raise SubjectError(subject_id, path, f"expected a 3D or 4D volume, got shape {data.shape}")
    return data


def read_frame(
    subject_id: str,
    image_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    labels: Mapping[int, int],
    frame: int | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read one frame's image and mask, check they belong together, remap the labels.

    Returns (image float32, mask uint8 in cardiofair's label order, voxel spacing in mm).
    """
    image_img = read_volume(subject_id, image_path)
    mask_img = read_volume(subject_id, mask_path)
    image = frame_of(subject_id, image_path, image_img, frame)
    mask = frame_of(subject_id, mask_path, mask_img, frame)
    if image.shape != mask.shape:
        raise SubjectError(subject_id, mask_path, f"mask shape {mask.shape} differs from image shape {image.shape}")
    if not np.allclose(image_img.affine, mask_img.affine, atol=1e-3, rtol=1e-4):
        raise SubjectError(subject_id, mask_path, "mask affine differs from image affine (not the same geometry)")
    if not np.all(np.isfinite(image)):
        raise SubjectError(subject_id, image_path, "image has NaN or infinite intensities")
    if not np.all(np.isfinite(mask)):
        raise SubjectError(subject_id, mask_path, "mask has NaN or infinite values")
    return image, remap_labels(subject_id, mask_path, mask, labels), _spacing(image_img)


def _spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    return zooms[0], zooms[1], zooms[2]


def remap_labels(subject_id: str, path: str | os.PathLike, mask: np.ndarray, labels: Mapping[int, int]) -> np.ndarray:
    """Map a mask from its on-disk label order to cardiofair's, rejecting unknown labels."""
    rounded = np.rint(mask)
    if not np.allclose(rounded, mask):
        raise SubjectError(subject_id, path, "mask has non-integer values")
    present = {int(v) for v in np.unique(rounded)}
    unknown = sorted(present - set(labels))
    if unknown:
        raise SubjectError(subject_id, path, f"mask has labels {unknown} outside {sorted(labels)}")
    lookup = np.zeros(max(labels) + 1, dtype=np.uint8)
    for source, target in labels.items():
        lookup[source] = target
    return lookup[rounded.astype(np.int64)]


def load_frames(
    subject_id: str,
    dataset: str,
    frames: Mapping[str, tuple[str | os.PathLike, str | os.PathLike, int | None]],
    labels: Mapping[int, int],
    meta: Mapping[str, Any],
) -> Case:
    """Build a :class:`Case` from ``{"ED": (image, mask, frame), "ES": (...)}``."""
    images, masks, files, spacing = {}, {}, {}, None
    for name in FRAMES:
        if name not in frames:
            raise SubjectError(subject_id, None, f"{name} frame is missing")
        image_path, mask_path, index = frames[name]
        images[name], masks[name], frame_spacing = read_frame(subject_id, image_path, mask_path, labels, index)
        files[name], files[f"{name}_mask"] = str(image_path), str(mask_path)
        if spacing is not None and not np.allclose(spacing, frame_spacing, rtol=1e-3):
            raise SubjectError(subject_id, image_path, f"ES spacing {frame_spacing} differs from ED spacing {spacing}")
        spacing = frame_spacing
    if images["ED"].shape != images["ES"].shape:
        raise SubjectError(subject_id, files["ES"], f"ES shape {images['ES'].shape} differs from ED {images['ED'].shape}")
    return Case(subject_id=subject_id, dataset=dataset, images=images, masks=masks,
                spacing_mm=spacing, meta=dict(meta), files=files)


def _number(subject_id: str, source: str, name: str, value: Any) -> float | None:
    if is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SubjectError(subject_id, source, f"{name} {value!r} is not a number") from None
    if math.isnan(number):
        return None
    low, high = PLAUSIBLE[name]
    if not low <= number <= high:
        raise SubjectError(subject_id, source, f"{name} {number:g} is implausible (expected {low:g}-{high:g})")
    return number


def clean_meta(
    subject_id: str,
    raw: Mapping[str, Any],
    source: str | os.PathLike = "",
    required: tuple[str, ...] = ("diagnosis",),
    numeric_sex: bool = False,
) -> dict[str, Any]:
    """Validate and complete metadata: sex coded Female/Male, numbers in plausible ranges,
    BMI from height and weight where absent, and the ``required`` fields present.

    Unknown values stay None (they are left out of the prompt, never invented).
    """
    source = str(source)
    try:
        sex = normalise_sex(raw.get("sex"), numeric_sex)
    except ValueError as error:
        raise SubjectError(subject_id, source, str(error)) from None
    meta: dict[str, Any] = {"sex": sex}
    for name in ("age_years", "height_cm", "weight_kg", "bmi"):
        meta[name] = _number(subject_id, source, name, raw.get(name))
    if meta["bmi"] is None and meta["height_cm"] and meta["weight_kg"]:
        meta["bmi"] = _number(subject_id, source, "bmi", meta["weight_kg"] / (meta["height_cm"] / 100.0) ** 2)
    diagnosis = raw.get("diagnosis")
    meta["diagnosis"] = None if is_missing(diagnosis) else str(diagnosis).strip()
    for name in required:
        if meta.get(name) is None:
            raise SubjectError(subject_id, source, f"required metadata {name!r} is missing")
    for key, value in raw.items():
        if key not in meta:
            meta[key] = value
    return meta
