"""What makes a (ED, ES) label-map pair a heart: validity checks, geometry and mask distances.

Pure numpy and scipy. Labels as everywhere: 0 background, 1 LV blood pool, 2 LV myocardium,
3 RV blood pool; a mask pair is (2, H, W) with frames (ED, ES).

The checks are those a reader of a short-axis slice applies without thinking: the LV cavity is
ringed by myocardium (a cavity touching the background or the RV is a broken ventricle), the
RV lies against the LV and outside it, each structure is one piece, the LV empties between ED
and ES (a cavity larger at ES than at ED would be an ejection fraction below zero), and every
structure's area is within what a mid-ventricular slice of an adult shows.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from cardiofair.data.records import STRUCTURES

# Plausible areas (mm^2) on a mid-ventricular slice, wide enough for every adult heart in
# ../shared/notes/cardiac-physiology.md: the LV cavity from a small hypertrophic ES cavity
# (about 10 mm across) to a dilated ED cavity of 440 mL (ACDC DCM mean + 3 sd: about 84 mm across
# with an 80 mm long axis); the myocardium from a thin small ring to a thick dilated one; the RV
# from an emptied ES crescent to a dilated ED one.
AREA_LIMITS_MM2 = {1: (60.0, 8000.0), 2: (250.0, 9000.0), 3: (40.0, 12000.0)}
# Neighbourhoods: structures are one piece under 8-connectivity (a thin ring drawn on a coarse grid
# touches itself at corners), and enclosure is checked over all 8 neighbours (a diagonal gap is
# still a gap in the wall).
_EIGHT = np.ones((3, 3), dtype=bool)
CHECKS = ("structures present", "one piece each", "LV cavity enclosed by myocardium", "RV against the LV",
          "RV outside the LV", "ES LV cavity not larger than ED", "plausible areas")
GEOMETRY = ("lv_cavity_mm2", "myocardial_thickness_mm", "rv_mm2", "contraction_index")


def failed_checks(mask: np.ndarray, spacing_mm: float) -> list[str]:
    """The checks (names from :data:`CHECKS`) that a (2, H, W) mask pair fails; empty when valid."""
    failed = []
    pixel_mm2 = spacing_mm * spacing_mm
    for frame in mask:
        present = [frame == label for label in STRUCTURES]
        if not all(p.any() for p in present):
            return ["structures present"]
        cavity, myocardium, rv = present
        if any(ndimage.label(p, structure=_EIGHT)[1] != 1 for p in present):
            failed.append("one piece each")
        if not np.isin(frame[ndimage.binary_dilation(cavity, _EIGHT)], (1, 2)).all():
            failed.append("LV cavity enclosed by myocardium")
        if not ndimage.binary_dilation(rv, _EIGHT)[myocardium].any():
            failed.append("RV against the LV")
        if ndimage.binary_fill_holes(cavity | myocardium)[rv].any():
            failed.append("RV outside the LV")
        for label, p in zip(STRUCTURES, present):
            low, high = AREA_LIMITS_MM2[label]
            if not low <= p.sum() * pixel_mm2 <= high:
                failed.append("plausible areas")
                break
    if (mask[1] == 1).sum() > (mask[0] == 1).sum():
        failed.append("ES LV cavity not larger than ED")
    return list(dict.fromkeys(failed))


def is_valid(mask: np.ndarray, spacing_mm: float) -> bool:
    """Whether a (2, H, W) mask pair passes every check of :func:`failed_checks`."""
    return not failed_checks(mask, spacing_mm)


def geometry(masks: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(N, 4) clinical geometry of (N, 2, H, W) mask pairs, columns :data:`GEOMETRY`: ED LV cavity
    area (mm^2), ED myocardial thickness (mm, the difference of the epicardial and endocardial
    radii of circles of the same areas), ED RV area (mm^2) and the contraction index (1 - ES / ED
    LV cavity area, the area analogue of the ejection fraction)."""
    pixel_mm2 = spacing_mm * spacing_mm
    areas = {(f, label): (masks[:, f] == label).reshape(len(masks), -1).sum(1) * pixel_mm2
             for f in (0, 1) for label in STRUCTURES}
    cavity = areas[0, 1]
    thickness = np.sqrt((cavity + areas[0, 2]) / math.pi) - np.sqrt(cavity / math.pi)
    contraction = 1.0 - areas[1, 1] / np.maximum(cavity, pixel_mm2)
    return np.stack([cavity, thickness, areas[0, 3], contraction], 1).astype(np.float64)


def _one_hot(masks: np.ndarray) -> np.ndarray:
    """(N, 6, H*W) float32 indicators of each (frame, structure)."""
    flat = masks.reshape(len(masks), 2, -1)
    return np.concatenate([(flat == label) for label in STRUCTURES], 1).astype(np.float32)


def nearest_masks(query: np.ndarray, reference: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each (2, H, W) query mask pair, the distance to its nearest reference pair and that
    pair's index. Distance: 1 - the mean Dice over the six (frame, structure) overlaps, so 0 is the
    same mask and 1 shares no pixel of any structure."""
    if len(reference) == 0:
        raise ValueError("no reference masks to measure distances against")
    ref = _one_hot(reference)
    ref_sizes = ref.sum(2)
    distances, indices = [], []
    for start in range(0, len(query), chunk):
        block = _one_hot(query[start:start + chunk])
        overlap = np.einsum("qsp,rsp->qrs", block, ref, optimize=True)
        total = block.sum(2)[:, None, :] + ref_sizes[None]
        dice = np.where(total > 0, 2.0 * overlap / np.maximum(total, 1.0), 1.0).mean(2)
        indices.append(dice.argmax(1))
        distances.append(1.0 - dice.max(1))
    if not distances:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(distances).astype(np.float64), np.concatenate(indices)


def geometry_distance(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    """How far two samples' geometry distributions lie apart: the mean over the :data:`GEOMETRY`
    columns of the 1-D Wasserstein distance, each in units of ``scale`` (a spread per column,
    the same for every comparison so that distances compare). NaN when a side is empty."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(np.mean([wasserstein_distance(a[:, j], b[:, j]) / scale[j] for j in range(a.shape[1])]))
