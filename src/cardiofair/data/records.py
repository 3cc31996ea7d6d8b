"""The record schema and the prepared-dataset directory: one place that reads and writes both.

A record is one subject's slice pair: ``image`` float32 (2, H, W) with channels (ED, ES) in
[0, 1], ``mask`` uint8 (2, H, W) with labels 0 background, 1 LV blood pool, 2 LV myocardium,
3 RV blood pool, and its metadata. A prepared dataset directory holds ``manifest.csv`` (one row
per record, paths relative to the directory), the image and mask of every record as NIfTI,
PNG previews, ``excluded.csv`` and the resolved settings that made it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import nibabel as nib
import numpy as np
import pandas as pd

from cardiofair.data import EXCLUDED, MANIFEST, PREPARATION
from cardiofair.data.preview import preview_png
from cardiofair.errors import InputError, MissingInputError, SubjectError
from cardiofair.io import StagingDirectory, atomic_write

LABELS = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}
# The short names tables and Dice columns use for the labelled structures.
STRUCTURES = {1: "LV", 2: "MYO", 3: "RV"}
FRAMES = ("ED", "ES")

# The columns every manifest has, in this order; loaders may add more (vendor, centre, ...).
MANIFEST_COLUMNS = (
    "record_id",
    "subject_id",
    "dataset",
    "sex",
    "age_years",
    "height_cm",
    "weight_kg",
    "bmi",
    "diagnosis",
    "prompt",
    "image_path",
    "mask_path",
    "preview_path",
    "pixel_spacing_mm",
    "slice_index",
    "is_synthetic",
)
EXCLUDED_COLUMNS = ("subject_id", "file", "reason")
META_FIELDS = ("subject_id", "dataset", "sex", "age_years", "height_cm", "weight_kg", "bmi", "diagnosis")

NIFTI_DESCRIPTION = b"cardiofair prepared ED,ES"
SYNTHETIC_DESCRIPTION = b"SYNTHETIC image made by cardiofair ED,ES"


@dataclass
class Record:
    """One subject's (ED, ES) slice pair with its mask pair and metadata."""

    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[0] != 2:
            raise ValueError(f"image must have shape (2, H, W), got {self.image.shape}")
        if self.mask.shape != self.image.shape:
            raise ValueError(f"mask shape {self.mask.shape} differs from image shape {self.image.shape}")
        self.image = np.asarray(self.image, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=np.uint8)

    @property
    def record_id(self) -> str:
        return str(self.meta["record_id"])


# --- NIfTI encoding ----------------------------------------------------------------------------


def _nifti_bytes(data: np.ndarray, spacing_mm: float, description: bytes) -> bytes:
    # (2, H, W) is stored as (H, W, 1, 2): a 2D cine of two frames, so viewers show ED and ES
    # as time points and the pixel spacing stays in the header.
    volume = np.moveaxis(data, 0, -1)[:, :, None, :]
    affine = np.diag([spacing_mm, spacing_mm, 1.0, 1.0])
    img = nib.Nifti1Image(volume, affine)
    img.header["descrip"] = description[:79]
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    buffer = io.BytesIO()
    # mtime=0 keeps the same inputs byte-identical across runs.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return buffer.getvalue()


def read_pair_nifti(path: str | os.PathLike) -> tuple[np.ndarray, float, str]:
    """Read a (2, H, W) array written by this module; returns (array, spacing_mm, description)."""
    if not Path(path).is_file():
        raise MissingInputError(f"{path} is missing")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as error:  # nibabel, gzip and zlib each raise their own type for a damaged file
        raise InputError(f"{path}: cannot read as NIfTI ({error})") from None
    if data.ndim != 4 or data.shape[2] != 1 or data.shape[3] != 2:
        raise InputError(f"{path}: expected a (H, W, 1, 2) cardiofair pair, got shape {data.shape}")
    description = bytes(img.header["descrip"]).rstrip(b"\x00").decode("ascii", "replace")
    return np.moveaxis(data[:, :, 0, :], -1, 0), float(img.header.get_zooms()[0]), description


def write_record_files(root: Path, record: Record) -> dict[str, str]:
    """Write a record's NIfTI pair and preview under ``root``; return the relative paths.

    Synthetic records say SYNTHETIC in their NIfTI header, so a file that leaves its dataset
    is still recognisable as made, not acquired.
    """
    spacing = float(record.meta["pixel_spacing_mm"])
    description = SYNTHETIC_DESCRIPTION if is_synthetic(record.meta) else NIFTI_DESCRIPTION
    rid = record.record_id
    paths = {
        "image_path": f"images/{rid}.nii.gz",
        "mask_path": f"masks/{rid}.nii.gz",
        "preview_path": f"previews/{rid}.png",
    }
    for sub in ("images", "masks", "previews"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write(root / paths["image_path"], _nifti_bytes(record.image, spacing, description))
    atomic_write(root / paths["mask_path"], _nifti_bytes(record.mask, spacing, description))
    atomic_write(root / paths["preview_path"], preview_png(record.image, record.mask))
    return paths


def is_synthetic(meta: Mapping[str, Any]) -> bool:
    """Whether a record's metadata marks it synthetic (a bool, or its text from a CSV)."""
    return str(meta.get("is_synthetic", False)).strip().lower() in {"true", "1"}


def real_records(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``manifest`` that are not marked synthetic."""
    return manifest[[not is_synthetic(row) for row in manifest.to_dict("records")]]


def synthetic_records(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``manifest`` that are marked synthetic."""
    return manifest[[is_synthetic(row) for row in manifest.to_dict("records")]]


def manifest_row(record: Record, paths: Mapping[str, str]) -> dict[str, Any]:
    """The manifest row of a written record: schema columns first, loader extras after."""
    row = {column: record.meta.get(column) for column in MANIFEST_COLUMNS}
    row.update(paths)
    row["is_synthetic"] = is_synthetic(record.meta)
    for key, value in record.meta.items():
        if key not in row:
            row[key] = value
    return row


# --- the dataset directory --------------------------------------------------------------------


class DatasetWriter(StagingDirectory):
    """Builds a prepared dataset in a staging directory: manifest, files, exclusions, settings."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        super().__init__(out, overwrite)
        self.rows: list[dict[str, Any]] = []
        self.excluded: list[dict[str, str]] = []

    def add(self, record: Record) -> None:
        """Write one record's files and remember its manifest row."""
        self.rows.append(manifest_row(record, write_record_files(self.tmp, record)))

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Remember rows whose files a worker already wrote under :attr:`tmp`."""
        self.rows.extend(dict(r) for r in rows)

    def exclude(self, error: SubjectError) -> None:
        self.excluded.append(error.as_row())

    def finish(self, settings: Mapping[str, Any]) -> Path:
        """Write manifest, exclusions and settings, then move the dataset into place."""
        duplicated = sorted(i for i, n in Counter(r["record_id"] for r in self.rows).items() if n > 1)
        if duplicated:
            raise InputError(f"duplicate record ids: {duplicated[:5]}")
        manifest = pd.DataFrame(sorted(self.rows, key=lambda r: r["record_id"]))
        if manifest.empty:
            manifest = pd.DataFrame(columns=list(MANIFEST_COLUMNS))
        manifest.to_csv(self.tmp / MANIFEST, index=False)
        excluded = pd.DataFrame(sorted(self.excluded, key=lambda r: (r["subject_id"], r["file"])),
                                columns=list(EXCLUDED_COLUMNS))
        excluded.to_csv(self.tmp / EXCLUDED, index=False)
        (self.tmp / PREPARATION).write_text(json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
        return self.commit()


# --- reading ----------------------------------------------------------------------------------


def read_manifest(root: str | os.PathLike, made_by: str = "prepare") -> pd.DataFrame:
    """The manifest of a prepared dataset, with a clear error when it is not one; ``made_by`` is
    the command that writes the dataset expected at ``root`` (``generate`` for synthetic ones)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        kind = "a synthetic dataset" if made_by == "generate" else "a prepared dataset"
        raise MissingInputError(f"{root} is not {kind}: {path} is missing (run `cardiofair {made_by}`)")
    manifest = pd.read_csv(path, dtype={"subject_id": str, "record_id": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(f"{path} lacks the columns {missing}")
    return manifest


def load_record(root: str | os.PathLike, row: Mapping[str, Any]) -> Record:
    """Load one manifest row's image and mask."""
    root = Path(root)
    image, spacing, _ = read_pair_nifti(root / row["image_path"])
    mask, _, _ = read_pair_nifti(root / row["mask_path"])
    meta = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in dict(row).items()}
    meta["pixel_spacing_mm"] = spacing
    return Record(image=image.astype(np.float32), mask=mask.astype(np.uint8), meta=meta)


class ImageSizeError(InputError):
    """Records of different sizes where one stack is needed."""


@dataclass
class ImageSet:
    """Records loaded as arrays: ``images[i]`` (ED, ES) in [0, 1] and ``masks[i]`` belong to
    ``rows.iloc[i]``, their manifest row. Every record of a set has the same size."""

    rows: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray

    def take(self, selector: np.ndarray) -> "ImageSet":
        """The records where ``selector`` (boolean or integer index) picks them."""
        return ImageSet(self.rows.iloc[selector].reset_index(drop=True), self.images[selector], self.masks[selector])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """(2, H, W) of every record, None for an empty set."""
        return tuple(self.images.shape[1:]) if len(self) else None


def load_images(root: str | os.PathLike, rows: pd.DataFrame, size: int | None = None, hint: str = "",
                on_record: Callable[[], None] | None = None) -> ImageSet:
    """The images and masks of manifest ``rows`` of the dataset at ``root``, stacked.

    Every record must be a pair of one size (``size`` x ``size`` when given): a dataset
    prepared at two sizes cannot be stacked, and the error names a record of each size and
    ends with ``hint``, what to change. ``on_record`` is called after each record (progress).
    """
    rows = rows.reset_index(drop=True)
    records = []
    for row in rows.to_dict("records"):
        records.append(load_record(root, row))
        if on_record:
            on_record()
    if not records:
        empty = (0, 2, size or 1, size or 1)
        return ImageSet(rows, np.zeros(empty, np.float32), np.zeros(empty, np.uint8))
    wanted = (records[0].record_id, records[0].image.shape) if size is None else (None, (2, size, size))
    for record in records:
        if record.image.shape != wanted[1]:
            than = f"record {wanted[0]} is {wanted[1]}" if wanted[0] else f"this needs {wanted[1]}"
            raise ImageSizeError(f"{root}: record {record.record_id} is a {record.image.shape} pair but {than}: every "
                                 f"record must be prepared at one size{hint}")
    return ImageSet(rows, np.stack([r.image for r in records]), np.stack([r.mask for r in records]))


def same_size(sets: Mapping[str, ImageSet], hint: str = "") -> None:
    """Raise :class:`ImageSizeError` unless every non-empty set (by name) holds pairs of one size."""
    shapes = [(name, s.shape) for name, s in sets.items() if s.shape is not None]
    for name, shape in shapes[1:]:
        if shape != shapes[0][1]:
            raise ImageSizeError(f"{name} holds a {shape} pair but {shapes[0][0]} holds {shapes[0][1]} pairs: every "
                                 f"record must be prepared at one size{hint}")


def load_dataset(root: str | os.PathLike) -> list[Record]:
    """Every record of a prepared dataset, in manifest order."""
    manifest = read_manifest(root)
    return [load_record(root, row) for row in manifest.to_dict("records")]
