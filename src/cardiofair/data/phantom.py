"""A procedural UK Biobank-like cohort: the embedded default and the ground truth for tests.

Each subject gets metadata (sex, age, height, weight, BMI, diagnosis) and a mid-ventricular
short-axis slice pair (ED, ES) with its mask pair, drawn so that anatomy follows metadata the way
real hearts do (calibrated on ../shared/notes/cardiac-physiology.md):

- LV end-diastolic volume scales with body surface area and is smaller in women and with age
  (Petersen et al. 2017); ejection fraction about 61 % in women, 58 % in men.
- Heart failure comes in two phenotypes. With reduced ejection fraction (HFrEF) it dilates
  the LV (ACDC DCM/MINF: 1.4-2.2 x normal volume), thins the wall and lowers the ejection
  fraction, so the ES cavity stays close to the ED one. With preserved ejection fraction
  (HFpEF) the cavity stays near normal and contracts normally while the wall thickens
  (concentric remodelling): far harder to see on a short-axis slice. HFpEF is about half of
  heart failure and the larger share in women (roughly two thirds of women with heart failure
  against a third of men), so a detector of dilated, poorly contracting hearts misses women.
- Age thickens the wall modestly; BMI adds bright epicardial and subcutaneous fat and moves the
  body outline outwards.
- bSSFP contrast: blood bright, myocardium dark, fat bright, lungs dark, liver intermediate;
  Rician noise, a smooth coil bias field, random in-plane rotation and shift.

Because women's hearts are smaller, a dilated female LV overlaps a normal male LV, and women's
heart failure is more often the subtle preserved-EF kind: a classifier that learns heart failure
mostly from men under-detects it in women, which is the bias cardiofair sets out to measure and
reduce.

Heart failure prevalence is a logistic model of sex, age and BMI (configurable): by default
female, young and normal-BMI heart failure are rare, as in UK Biobank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Mapping

import numpy as np

from cardiofair.data.diagnoses import HEALTHY, HEART_FAILURE
from cardiofair.data.records import Record
from cardiofair.prompts import bmi_class

# Effective long-axis length (mm) turning a volume into a mid-ventricular cavity radius:
# a 150 mL LV gives a 49 mm cavity diameter, as measured on mid slices of healthy men.
_LV_LENGTH_MM = 80.0


@dataclass
class PhantomConfig:
    """Cohort composition, imaging settings and heart-failure prevalence model.

    Heart-failure odds are ``hf_reference_prevalence`` for a man in his 60s with overweight BMI,
    multiplied by ``hf_odds_female`` for women, ``hf_odds_per_decade`` per decade of age away
    from the 60s (raised to a negative power below), and ``hf_odds_bmi`` per WHO class.
    ``hfpef_share`` is the share of heart failure with preserved ejection fraction, by sex.
    """

    size: int = 64
    fov_mm: float = 150.0
    female_fraction: float = 0.52
    age_mean: float = 61.0
    age_sd: float = 9.0
    age_min: float = 40.0
    age_max: float = 79.9
    bmi_median: float = 26.8
    bmi_log_sd: float = 0.16
    hf_reference_prevalence: float = 0.35
    hf_odds_female: float = 0.25
    hf_odds_per_decade: float = 1.8
    hf_odds_bmi: dict[str, float] = field(
        default_factory=lambda: {"underweight": 0.5, "normal": 0.35, "overweight": 1.0, "obese": 1.8}
    )
    hfpef_share: dict[str, float] = field(default_factory=lambda: {"Female": 0.65, "Male": 0.35})
    noise_sd: tuple[float, float] = (0.02, 0.05)
    max_rotation_deg: float = 15.0
    max_shift_mm: float = 6.0

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError("phantom size must be at least 16 pixels")
        if not 0.0 <= self.female_fraction <= 1.0:
            raise ValueError("female_fraction must be in [0, 1]")
        if not 0.0 < self.hf_reference_prevalence < 1.0:
            raise ValueError("hf_reference_prevalence must be in (0, 1)")
        if not self.age_min < self.age_max:
            raise ValueError("age_min must be below age_max")
        if set(self.hfpef_share) != {"Female", "Male"} or not all(0 <= v <= 1 for v in self.hfpef_share.values()):
            raise ValueError("hfpef_share must give Female and Male a share in [0, 1]")
        missing = {"underweight", "normal", "overweight", "obese"} - set(self.hf_odds_bmi)
        if missing:
            raise ValueError(f"hf_odds_bmi lacks the BMI classes {sorted(missing)}")
        self.noise_sd = tuple(self.noise_sd)

    @property
    def pixel_spacing_mm(self) -> float:
        return self.fov_mm / self.size

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PhantomConfig":
        """Build from a mapping (a YAML file), naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown phantom setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def heart_failure_probability(sex: str, age_years: float, bmi: float, config: PhantomConfig) -> float:
    """Probability of heart failure for these attributes under the cohort's prevalence model."""
    odds = config.hf_reference_prevalence / (1.0 - config.hf_reference_prevalence)
    if sex == "Female":
        odds *= config.hf_odds_female
    odds *= config.hf_odds_per_decade ** ((age_years - 65.0) / 10.0)
    odds *= config.hf_odds_bmi[bmi_class(bmi)]
    return odds / (1.0 + odds)


def sample_metadata(rng: np.random.Generator, config: PhantomConfig) -> dict[str, Any]:
    """Draw one subject's sex, age, height, weight, BMI and diagnosis."""
    sex = "Female" if rng.random() < config.female_fraction else "Male"
    age = float(np.clip(rng.normal(config.age_mean, config.age_sd), config.age_min, config.age_max))
    height = float(rng.normal(163.0, 6.5) if sex == "Female" else rng.normal(176.0, 7.0))
    bmi = float(np.clip(config.bmi_median * math.exp(rng.normal(0.0, config.bmi_log_sd)), 16.0, 50.0))
    weight = bmi * (height / 100.0) ** 2
    hf = rng.random() < heart_failure_probability(sex, age, bmi, config)
    return {
        "sex": sex,
        "age_years": round(age, 1),
        "height_cm": round(height, 1),
        "weight_kg": round(weight, 1),
        "bmi": round(bmi, 1),
        "diagnosis": HEART_FAILURE if hf else HEALTHY,
    }


@dataclass
class Anatomy:
    """The geometry and contrast of one subject's heart and chest, in mm."""

    lvedv_ml: float
    lvef: float
    rvef: float
    lv_wall_mm: float
    rv_scale: float
    lv_ellipticity: float
    lv_axis_angle: float
    epicardial_fat_mm: float
    subcutaneous_fat_mm: float
    papillary_angle: float
    intensity_scale: float


def sample_anatomy(meta: Mapping[str, Any], rng: np.random.Generator, config: PhantomConfig | None = None) -> Anatomy:
    """Cardiac geometry that follows the subject's metadata (see the module docstring)."""
    config = config or PhantomConfig()
    female = meta["sex"] == "Female"
    age, bmi = meta["age_years"], meta["bmi"]
    bsa = math.sqrt(meta["height_cm"] * meta["weight_kg"] / 3600.0)
    index = (72.0 if female else 82.0) * (1.0 - 0.004 * (age - 60.0)) * rng.lognormal(0.0, 0.1)
    lvedv = index * bsa
    lvef = float(np.clip(rng.normal(61.0 if female else 58.0, 5.0), 45.0, 75.0)) / 100.0
    rvef = float(np.clip(rng.normal(56.0, 6.0), 40.0, 70.0)) / 100.0
    wall = rng.normal(7.4 if female else 8.8, 0.7) + 0.4 * (age - 60.0) / 10.0
    rv_scale = rng.normal(1.08 if female else 1.12, 0.05)
    if meta["diagnosis"] == HEART_FAILURE and rng.random() < config.hfpef_share[meta["sex"]]:
        lvedv *= rng.uniform(0.95, 1.2)
        lvef = float(np.clip(rng.normal(56.0, 5.0), 50.0, 68.0)) / 100.0
        rvef = float(np.clip(rng.normal(50.0, 7.0), 35.0, 65.0)) / 100.0
        wall *= rng.uniform(1.1, 1.4)
    elif meta["diagnosis"] == HEART_FAILURE:
        lvedv *= rng.uniform(1.35, 2.1)
        lvef = float(np.clip(rng.normal(28.0, 7.0), 12.0, 42.0)) / 100.0
        rvef = float(np.clip(rng.normal(42.0, 8.0), 25.0, 60.0)) / 100.0
        wall *= rng.uniform(0.68, 0.85)
    return Anatomy(
        lvedv_ml=float(lvedv),
        lvef=lvef,
        rvef=rvef,
        lv_wall_mm=float(np.clip(wall, 4.0, 14.0)),
        rv_scale=float(rv_scale),
        lv_ellipticity=float(rng.uniform(0.9, 1.0)),
        lv_axis_angle=float(rng.uniform(0.0, math.pi)),
        epicardial_fat_mm=float(np.clip(0.35 * (bmi - 19.0) + rng.normal(0.0, 0.5), 0.5, 9.0)),
        subcutaneous_fat_mm=float(np.clip(1.6 * (bmi - 17.0) + rng.normal(0.0, 2.0), 2.0, 50.0)),
        papillary_angle=float(rng.uniform(-0.4, 0.4)),
        intensity_scale=float(rng.normal(1.0, 0.04)),
    )


def _soft(signed_distance_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Partial-volume membership of a shape from its signed distance (negative inside)."""
    return np.clip(0.5 - signed_distance_mm / spacing_mm, 0.0, 1.0)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    # Approximate signed distance: exact for circles, good enough for the mild ellipses here.
    rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return (rho - 1.0) * math.sqrt(ax * ay)


def _paint(canvas: np.ndarray, membership: np.ndarray, value: float) -> None:
    canvas *= 1.0 - membership
    canvas += membership * value


def render_frame(
    anatomy: Anatomy, x: np.ndarray, y: np.ndarray, spacing_mm: float, end_systole: bool, level: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free image and mask of one frame on world coordinates ``x, y`` (mm, LV at origin).

    ``level`` moves the slice towards the apex (positive) or base (negative), in slices.
    """
    radius_ed = math.sqrt(anatomy.lvedv_ml * 1000.0 / (math.pi * _LV_LENGTH_MM)) * (1.0 - 0.12 * level)
    myo_area = math.pi * ((radius_ed + anatomy.lv_wall_mm) ** 2 - radius_ed**2)
    radius = radius_ed * math.sqrt(1.0 - anatomy.lvef) if end_systole else radius_ed
    # The myocardium is incompressible: its area is conserved, so the wall thickens at ES.
    epi = math.sqrt(radius**2 + myo_area / math.pi)

    cos_a, sin_a = math.cos(anatomy.lv_axis_angle), math.sin(anatomy.lv_axis_angle)
    u, v = x * cos_a + y * sin_a, -x * sin_a + y * cos_a
    e = anatomy.lv_ellipticity
    cavity_d = _ellipse_distance(u, v, 0.0, 0.0, radius, radius * e)
    epi_d = _ellipse_distance(u, v, 0.0, 0.0, epi, epi * e)

    # RV: an ellipse wrapped around the septal side (image left, slightly anterior); it empties
    # with the RV ejection fraction, and shrinks faster than the LV towards the apex.
    rv_size = epi * anatomy.rv_scale * (1.0 - 0.2 * level)
    if end_systole:
        rv_size *= math.sqrt(1.0 - 0.6 * anatomy.rvef)
    rv_cx, rv_cy = -0.35 * epi - 0.55 * rv_size, -0.1 * epi
    rv_ax, rv_ay = 0.75 * rv_size, 1.1 * rv_size
    rv_d = _ellipse_distance(x, y, rv_cx, rv_cy, rv_ax, rv_ay)
    rv_wall_d = _ellipse_distance(x, y, rv_cx, rv_cy, rv_ax + 3.0, rv_ay + 3.0)
    heart_d = np.minimum(epi_d, rv_wall_d)
    theta = np.arctan2(y, x)
    # Epicardial fat gathers in the grooves and over the RV free wall (anterior-left here).
    fat_thickness = anatomy.epicardial_fat_mm * (0.35 + 0.65 * np.clip(np.cos(theta + 2.2), 0.0, 1.0))

    subcut = anatomy.subcutaneous_fat_mm
    body_cy, body_ay = 85.0, 145.0 + subcut
    body_ax = 1.3 * body_ay
    body_d = _ellipse_distance(x, y, 0.0, body_cy, body_ax, body_ay)

    k = anatomy.intensity_scale
    img = np.zeros_like(x)
    _paint(img, _soft(body_d, spacing_mm), 0.34 * k)
    _paint(img, _soft(body_d, spacing_mm) * (1 - _soft(body_d + subcut, spacing_mm)), 0.92 * k)
    _paint(img, _soft(body_d + subcut, spacing_mm) * (1 - _soft(body_d + subcut + 12.0, spacing_mm)), 0.3 * k)
    _paint(img, _soft(_ellipse_distance(x, y, 72.0, 20.0, 34.0, 62.0), spacing_mm), 0.05 * k)
    _paint(img, _soft(_ellipse_distance(x, y, -88.0, 10.0, 30.0, 60.0), spacing_mm), 0.05 * k)
    _paint(img, _soft(_ellipse_distance(x, y, -40.0, 78.0, 62.0, 34.0), spacing_mm), 0.44 * k)
    _paint(img, _soft(heart_d - 4.0 - fat_thickness, spacing_mm), 0.36 * k)
    _paint(img, _soft(heart_d - fat_thickness, spacing_mm), 0.88 * k)
    _paint(img, _soft(rv_wall_d, spacing_mm), 0.27 * k)
    rv_blood = _soft(rv_d, spacing_mm) * (1.0 - _soft(epi_d, spacing_mm))
    _paint(img, rv_blood, 0.86 * k)
    _paint(img, _soft(epi_d, spacing_mm), 0.24 * k)
    _paint(img, _soft(cavity_d, spacing_mm), 0.9 * k)
    # Two papillary muscles: dark spots inside the cavity, labelled as blood pool (UK Biobank).
    for angle in (0.9 + anatomy.papillary_angle, 2.3 + anatomy.papillary_angle):
        px, py = 0.62 * radius * math.cos(angle), 0.62 * radius * math.sin(angle)
        _paint(img, _soft(np.hypot(x - px, y - py) - 0.15 * radius, spacing_mm), 0.3 * k)

    mask = np.zeros(x.shape, dtype=np.uint8)
    mask[(rv_d < 0) & (epi_d >= 0)] = 3
    mask[epi_d < 0] = 2
    mask[cavity_d < 0] = 1
    return img, mask


def _bias_field(xn: np.ndarray, yn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive-coil field, brightest towards one side of the chest."""
    c = rng.normal(0.0, 1.0, size=5) * np.array([0.12, 0.12, 0.05, 0.05, 0.05])
    return np.exp(c[0] * xn + c[1] * yn + c[2] * xn * yn + c[3] * xn**2 + c[4] * yn**2)


def render_subject(
    anatomy: Anatomy, rng: np.random.Generator, config: PhantomConfig, level: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The (2, H, W) image and mask of one subject, with pose, bias field and Rician noise."""
    size, spacing = config.size, config.pixel_spacing_mm
    coords = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * spacing
    py, px = np.meshgrid(coords, coords, indexing="ij")
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    shift = rng.uniform(-config.max_shift_mm, config.max_shift_mm, size=2)
    # World coordinates of each pixel: undo the subject's pose (rotation about the LV, then shift).
    qx, qy = px - shift[0], py - shift[1]
    x = math.cos(angle) * qx + math.sin(angle) * qy
    y = -math.sin(angle) * qx + math.cos(angle) * qy
    bias = _bias_field(px / coords[-1], py / coords[-1], rng)
    sigma = rng.uniform(*config.noise_sd)
    images, masks = [], []
    for end_systole in (False, True):
        clean, mask = render_frame(anatomy, x, y, spacing, end_systole, level)
        signal = clean * bias
        noisy = np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))
        images.append(noisy)
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks)


def phantom_subject(index: int, seed: int, config: PhantomConfig, levels: tuple[float, ...] = (0.0,)) -> list[Record]:
    """The records of phantom subject ``index``: one per slice level, same subject and pose noise.

    The subject depends only on (seed, index), so cohorts can be made in any order or in
    parallel and stay identical.
    """
    rng = np.random.default_rng([seed, index])
    meta = sample_metadata(rng, config)
    anatomy = sample_anatomy(meta, rng, config)
    subject_id = f"phantom-{index:06d}"
    records = []
    for level in levels:
        image, mask = render_subject(anatomy, rng, config, level)
        slice_index = int(round(level))
        records.append(Record(image=image, mask=mask, meta={
            "record_id": subject_id if len(levels) == 1 else f"{subject_id}_s{slice_index:+d}",
            "subject_id": subject_id,
            "dataset": "phantom",
            **meta,
            "pixel_spacing_mm": config.pixel_spacing_mm,
            "slice_index": slice_index,
            "is_synthetic": False,
            "lvedv_ml": round(anatomy.lvedv_ml, 1),
            "lvef_percent": round(100.0 * anatomy.lvef, 1),
            "lv_wall_mm": round(anatomy.lv_wall_mm, 2),
        }))
    return records


def phantom_cohort(n: int, seed: int = 0, config: PhantomConfig | None = None) -> Iterator[Record]:
    """``n`` phantom subjects (one mid-ventricular record each), deterministic by seed."""
    config = config or PhantomConfig()
    for index in range(n):
        yield from phantom_subject(index, seed, config)


def phantom_volume(
    index: int,
    seed: int,
    config: PhantomConfig | None = None,
    shape: tuple[int, int] = (96, 112),
    spacing_mm: tuple[float, float, float] = (1.8, 1.8, 10.0),
    n_slices: int = 8,
    centre_mm: tuple[float, float] = (12.0, -18.0),
    rotate_deg: float = 0.0,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Phantom subject ``index`` as a scanner-like short-axis stack, for real-format fixtures.

    Returns (metadata, images, masks) with ``images["ED"]`` etc. of shape (rows, cols, n_slices)
    on an anisotropic grid, the heart off-centre by ``centre_mm`` and the top and bottom slices
    beyond the heart (above the base, below the apex) as on a real scan.
    """
    config = config or PhantomConfig()
    rng = np.random.default_rng([seed, index])
    meta = sample_metadata(rng, config)
    anatomy = sample_anatomy(meta, rng, config)
    rows = (np.arange(shape[0]) - (shape[0] - 1) / 2.0) * spacing_mm[0] - centre_mm[0]
    cols = (np.arange(shape[1]) - (shape[1] - 1) / 2.0) * spacing_mm[1] - centre_mm[1]
    py, px = np.meshgrid(rows, cols, indexing="ij")
    angle = math.radians(rotate_deg)
    x = math.cos(angle) * px + math.sin(angle) * py
    y = -math.sin(angle) * px + math.cos(angle) * py
    images = {f: np.zeros(shape + (n_slices,), np.float32) for f in ("ED", "ES")}
    masks = {f: np.zeros(shape + (n_slices,), np.uint8) for f in ("ED", "ES")}
    mid = (n_slices - 1) / 2.0
    sigma = float(np.mean(config.noise_sd))
    for z in range(n_slices):
        level = (z - mid) * 0.8
        inside_heart = 0 < z < n_slices - 1
        for frame in ("ED", "ES"):
            clean, mask = render_frame(anatomy, x, y, min(spacing_mm[:2]), frame == "ES", level)
            noisy = np.hypot(clean + rng.normal(0.0, sigma, clean.shape), rng.normal(0.0, sigma, clean.shape))
            # Scanner units, as stored by a real acquisition, not [0, 1].
            images[frame][:, :, z] = (600.0 * noisy).astype(np.float32)
            masks[frame][:, :, z] = mask if inside_heart else 0
    return meta, images, masks
