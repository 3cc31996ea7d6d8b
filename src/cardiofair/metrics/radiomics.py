"""The Fréchet Radiomics Distance (FRD) of the frd-score package, an optional extra.

FRD fits a Gaussian to hand-crafted radiomic features (PyRadiomics: first-order statistics and
texture matrices of the image and of its Laplacian-of-Gaussian and wavelet filterings) instead of
a network's features, so it needs no weights and means the same on every cohort. Its authors
include the senior authors of cardiofair's seed paper:

    Konz, Osuala, et al. "Fréchet Radiomic Distance (FRD): A Versatile Metric for Comparing Medical
    Imaging Datasets." Medical Image Analysis, 103943 (2026). arXiv:2412.01496
    (FRDv1; FRDv0: Osuala et al., 2024).

cardiofair uses frd-score's own pieces: its version-1 PyRadiomics extractor (the 2-D YAML
configuration shipped in the package), its per-image extraction (``compute_features``, which
reads image and mask files: each image is written to a temporary NIfTI file with its pixel
spacing, its mask beside it) and, for the distance, its z-score normalisation and Fréchet
distance, in the order of its ``calculate_feature_statistics`` for v1: images with a NaN feature
dropped, float32, both sets normalised by the first (the real training images), features that
become NaN or infinite dropped, then log of the squared Fréchet distance. Extracting each set
once, rather than calling ``compute_frd`` per comparison, lets the synthetic set and the real
reference share the training images' features; ``tests/metrics/test_frd.py`` checks the figure
against ``compute_frd`` itself.

frd-score needs pyradiomics, which it does not declare and whose release 3.1.0 does not build:
``make install-frd`` installs pyradiomics 3.0.1 (built without build isolation) and the ``frd``
extra. Nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from cardiofair.errors import CardiofairError

INSTALL = "make install-frd"
# frd-score's default version (passed explicitly); its 2-D configuration resamples each image to
# a 2 mm grid, which 64 px images at 1.5-2.5 mm take without trouble.
VERSION = "v1"
# frd-score skips a mask of one pixel or none; such images are left out before extraction.
MIN_MASK_PIXELS = 2


class MissingFrdError(CardiofairError):
    """quality.frd is on but frd-score or pyradiomics cannot be imported."""


def _frd():
    """frd-score's module, with pyradiomics loaded (it imports pyradiomics only when first used)."""
    from frd_score import frd
    from radiomics import featureextractor  # noqa: F401

    return frd


def require() -> str:
    """The versions of frd-score and pyradiomics, or one line saying how to install them."""
    try:
        _frd()
        import frd_score
        import radiomics
    except Exception as error:  # a broken pyradiomics build can fail with other errors than ImportError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MissingFrdError(f"quality.frd needs frd-score and pyradiomics, which could not be imported ({reason}): "
                              f"install them with `{INSTALL}` (docs/quality.md#frd-radiomics), or "
                              "turn quality.frd off") from None
    return f"frd-score {frd_score.__version__}, pyradiomics {radiomics.__version__.lstrip('v')}"


def _write(array: np.ndarray, path: Path, spacing_mm: float) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([spacing_mm, spacing_mm, 1.0, 1.0])), path)
    return str(path)


def usable(regions: np.ndarray) -> np.ndarray:
    """Which (N, H, W) region masks frd-score can extract features from."""
    return regions.reshape(len(regions), -1).sum(1) >= MIN_MASK_PIXELS


def write_pairs(folder: str | os.PathLike, images: np.ndarray, regions: np.ndarray,
                spacing_mm: float) -> tuple[list[str], list[str]]:
    """(N, H, W) images and their boolean regions as the NIfTI files frd-score reads: the image
    files and the mask files, in order."""
    folder = Path(folder)
    return ([_write(image.astype(np.float32), folder / f"{i:06d}.nii", spacing_mm) for i, image in enumerate(images)],
            [_write(region.astype(np.uint8), folder / f"{i:06d}_mask.nii", spacing_mm)
             for i, region in enumerate(regions)])


def quiet() -> None:
    """PyRadiomics logs a warning per image (2-D input has no 3-D shape, ...): errors only, as
    frd-score's own command sets it."""
    from radiomics import setVerbosity

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    setVerbosity(60)


def radiomic_features(images: np.ndarray, regions: np.ndarray, spacing_mm: float, workers: int = 1) -> np.ndarray:
    """frd-score's v1 features (N, F) of (N, H, W) images in [0, 1] within their boolean regions
    (every region must be ``usable``), extracted by ``workers`` processes."""
    if not usable(regions).all():
        raise ValueError(f"a region of fewer than {MIN_MASK_PIXELS} pixels: leave it out first")
    frd = _frd()
    quiet()
    extractor = frd.get_feature_extractor(frd_version=VERSION, image_dim=2)
    with tempfile.TemporaryDirectory(prefix="cardiofair-frd-") as folder:
        files, masks = write_pairs(folder, images, regions, spacing_mm)
        features, _, _ = frd.compute_features(files, extractor, masks=masks, num_workers=workers,
                                              frd_version=VERSION)
    return np.asarray(features, dtype=np.float64)


def frechet_radiomics_distance(reference: np.ndarray, other: np.ndarray) -> dict[str, float | int]:
    """FRD v1 of ``other`` from ``reference`` (features of :func:`radiomic_features`), both
    normalised by the reference as frd-score does: ``frd`` (log of the squared Fréchet distance),
    the images each side kept and the features used."""
    frd = _frd()
    # frd-score's calculate_feature_statistics for v1, after its extraction.
    kept = [features[~np.isnan(features).any(1)].astype(np.float32) for features in (reference, other)]
    normalised = [frd.z_score_normalize(features, 0, 1, base_distribution=kept[0], replace_nan=False,
                                        handle_std_zero=False) for features in kept]
    finite = np.all([np.isfinite(features).all(0) for features in normalised], axis=0)
    normalised = [features[:, finite] for features in normalised]
    squared = frd.calculate_frechet_distance(normalised[0].mean(0), np.cov(normalised[0], rowvar=False),
                                             normalised[1].mean(0), np.cov(normalised[1], rowvar=False))
    return {"frd": float(np.log(squared)) if squared > 0 else -math.inf, "n_reference": len(kept[0]),
            "n_other": len(kept[1]), "n_features": int(finite.sum())}


def workers() -> int:
    """One extraction process per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
