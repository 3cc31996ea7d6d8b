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

Sex also shows outside the heart, as on real short-axis images, so that with the mask fixed an
image can still be a woman's or a man's (:class:`Body`; in the prepared 150 mm crop it lies in
the top rows, above the chest wall, and in the lungs' reach):

- Breasts, in ``breast_share`` of women (default 85 %): bright fat with darker, lobulated
  fibroglandular tissue, resting on the chest wall anterior to the heart, the left breast over
  the LV's lateral wall (top right of the image). No study of how often breast tissue crosses
  the mid-ventricular short-axis plane was found, so the share is set, not measured: the plane
  crosses the lower breast in most women and misses it where the breast lies wholly above it
  (small or high-set breasts) or after a mastectomy (about 2 % of women of these ages: some 4 %
  live after breast cancer, about 40 % of them treated by mastectomy). Volume per breast is
  log-normal, 450 mL at BMI 25 times (BMI / 25) ** 2.5, spread 0.37 in log units: median about
  520 mL in the cohort (Hussain et al., Br J Radiol 1999: 561 mL by MRI stereology), a
  coefficient of variation near 60 % as reported for breast volume, half of the variance from
  BMI (Am J Hum Biol 2012, doi:10.1002/ajhb.22212) and none from age (Coltman, Steele &
  McGhee, Ergonomics 2017: "Breast volume is affected by body mass index but not age"). Supine,
  a breast is a half-ellipsoid whose projection falls from 0.6 to 0.46 of its half-width
  between 45 and 80 years, because older breasts are more ptotic and splayed (Coltman et al.,
  Ergonomics 2018); the slice cuts it between its middle and 60 % of the way to its lower edge.
  The fibroglandular share is about 20 % at 55 years and BMI 25 (log-odds falling 0.04 a year
  and 0.1 per BMI unit, spread 0.6), as dense breasts fall from 74 % of women in their 40s to
  36 % in their 70s (Checka et al., AJR 2012) and with BMI (Gillman et al., Clin Imaging 2016).
  On bSSFP it is intermediate (0.38), between muscle and blood.
- Chest size: women's rib cage is smaller than men's of the same height (lung volumes 10-12 %
  smaller; Bellemare, Jeanneret & Couture, Am J Respir Crit Care Med 2003), so the chest and
  lungs scale with height / 170 cm, times 0.95 in women (spread 4 %); its front stays against
  the heart, so a smaller chest curves more and brings the lungs closer.
- Pectoral muscle, dark on bSSFP like the myocardium: 12 mm in men and 8.5 mm in women (upper
  body muscle differs most between the sexes: 40 % against 33 % in the lower body, Janssen et
  al., J Appl Physiol 2000), thinning 0.5 % a year after 50 (absolute muscle mass falls from the
  end of the fifth decade, ibid.), spread 20 %.

The body comes from its own random stream, separate from sex and BMI (:class:`BodyDraw`), so
:func:`phantom_subject` can draw a subject's counterfactual: the same heart, mask, pose, bias
field and noise with the chest and fat of the other sex or of another BMI. Diagnosis cannot be
flipped that way (its cues lie in the heart, i.e. in the mask), nor age, whose cues outside the
heart (breast shape and composition, a thinner pectoral muscle) are slight beside the wall
thickening in the mask.

Because women's hearts are smaller, a dilated female LV overlaps a normal male LV, and women's
heart failure is more often the subtle preserved-EF kind: a classifier that learns heart failure
mostly from men under-detects it in women, which is the bias cardiofair sets out to measure and
reduce.

Heart failure prevalence is a logistic model of sex, age and BMI (configurable): by default
female, young and normal-BMI heart failure are rare, as in UK Biobank.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterator, Mapping

import numpy as np

from cardiofair.data.records import Record
from cardiofair.diagnoses import HEALTHY, HEART_FAILURE
from cardiofair.prompts import age_bin, bmi_class

# Effective long-axis length (mm) turning a volume into a mid-ventricular cavity radius:
# a 150 mL LV gives a 49 mm cavity diameter, as measured on mid slices of healthy men.
_LV_LENGTH_MM = 80.0


@dataclass
class PhantomConfig:
    """Cohort composition, imaging settings and heart-failure prevalence model.

    Heart-failure odds are ``hf_reference_prevalence`` for a man in his 60s with overweight BMI,
    multiplied by ``hf_odds_female`` for women, ``hf_odds_per_decade`` per decade of age away
    from the 60s (raised to a negative power below), and ``hf_odds_bmi`` per WHO class.
    ``hfpef_share`` is the share of heart failure with preserved ejection fraction, by sex, and
    ``hfpef_wall_factor`` and ``hfpef_volume_factor`` the ranges its wall thickness and LV
    end-diastolic volume are multiplied by (drawn uniformly);
    ``breast_share`` the share of women whose breast tissue crosses the slice. ``scenario`` names
    the bias scenario (:data:`SCENARIOS`) the settings started from.
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
    hfpef_wall_factor: tuple[float, float] = (1.1, 1.4)
    hfpef_volume_factor: tuple[float, float] = (0.95, 1.2)
    breast_share: float = 0.85
    noise_sd: tuple[float, float] = (0.02, 0.05)
    max_rotation_deg: float = 15.0
    max_shift_mm: float = 6.0
    scenario: str = "phenotype"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError("phantom size must be at least 16 pixels")
        if not 0.0 <= self.female_fraction <= 1.0:
            raise ValueError("female_fraction must be in [0, 1]")
        if not 0.0 <= self.breast_share <= 1.0:
            raise ValueError("breast_share must be in [0, 1]")
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
        self.hfpef_wall_factor = _factor_range("hfpef_wall_factor", self.hfpef_wall_factor)
        self.hfpef_volume_factor = _factor_range("hfpef_volume_factor", self.hfpef_volume_factor)

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


def _factor_range(name: str, value: Any) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0.0 < low <= high:
        raise ValueError(f"{name} must be a range [low, high] with 0 < low <= high, got {list(value)}")
    return low, high


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


# Where the chest sits around the heart (mm; LV centre at the origin, x towards the patient's left,
# y posterior): the front of the rib cage lies just anterior to the RV, which abuts the sternum, and
# the sternum lies to the patient's right of the LV centre (image left).
_RIB_CAGE_FRONT_MM = -50.0
_STERNUM_X_MM = -30.0
_CHEST_HALF_DEPTH_MM = 145.0
# Waves summed into the fibroglandular pattern of the breast: enough for an irregular,
# lobulated texture, few enough to cost little beside the rest of a frame.
_GLAND_WAVES = 6


@dataclass(frozen=True)
class BodyDraw:
    """The random part of one subject's tissue outside the heart, independent of sex and BMI.

    :func:`body_for` combines it with sex, age, height and BMI; combining the same draw with the
    other sex or another BMI gives the same subject's counterfactual body (see
    :func:`phantom_subject`), with heart, pose and noise untouched.
    """

    epicardial_fat_mm: float
    subcutaneous_fat_mm: float
    thorax: float
    pectoral: float
    breast: float
    breast_volume: float
    breast_cut: float
    breast_gap_mm: float
    fibroglandular: float
    gland_waves: tuple[tuple[float, float, float], ...]


def draw_body(rng: np.random.Generator, epicardial_fat_mm: float, subcutaneous_fat_mm: float) -> BodyDraw:
    """A subject's body draw: the two fat residuals (drawn with the heart) and the rest from ``rng``."""
    return BodyDraw(
        epicardial_fat_mm=epicardial_fat_mm,
        subcutaneous_fat_mm=subcutaneous_fat_mm,
        thorax=float(rng.normal()),
        pectoral=float(rng.normal()),
        breast=float(rng.random()),
        breast_volume=float(rng.normal()),
        breast_cut=float(rng.random()),
        breast_gap_mm=float(np.clip(rng.normal(15.0, 6.0), 2.0, 35.0)),
        fibroglandular=float(rng.normal()),
        gland_waves=tuple(zip(rng.uniform(0.0, math.pi, _GLAND_WAVES).tolist(),
                              rng.uniform(10.0, 25.0, _GLAND_WAVES).tolist(),
                              rng.uniform(0.0, 2.0 * math.pi, _GLAND_WAVES).tolist())),
    )


@dataclass(frozen=True)
class Body:
    """Tissue outside the heart, in mm: fat, chest wall and, in most women, breasts.

    ``breast_width_mm`` and ``breast_depth_mm`` are the half-width along the chest wall and the
    projection from it of each breast's section in the slice; both are 0 without breast tissue.
    """

    epicardial_fat_mm: float
    subcutaneous_fat_mm: float
    thorax_scale: float
    pectoral_mm: float
    breast_width_mm: float
    breast_depth_mm: float
    fibroglandular_share: float
    draw: BodyDraw


def body_for(meta: Mapping[str, Any], draw: BodyDraw, config: PhantomConfig) -> Body:
    """The tissue outside the heart of a subject with ``meta``'s sex, age, height and BMI (see the
    module docstring for the figures behind each term)."""
    female = meta["sex"] == "Female"
    age, bmi = meta["age_years"], meta["bmi"]
    thorax = meta["height_cm"] / 170.0 * (0.95 if female else 1.0) * math.exp(0.04 * draw.thorax)
    pectoral = (8.5 if female else 12.0) * (1.0 - 0.005 * max(age - 50.0, 0.0)) * math.exp(0.2 * draw.pectoral)
    width = depth = 0.0
    if female and draw.breast < config.breast_share:
        volume_mm3 = 450e3 * (bmi / 25.0) ** 2.5 * math.exp(0.37 * draw.breast_volume)
        # Supine, a breast rests on the chest wall as a half-ellipsoid (cranio-caudal axis 0.85 of
        # the medio-lateral one) that flattens and spreads with age.
        flatness = 0.6 - 0.004 * (age - 45.0)
        semi_axis = (volume_mm3 / (2.0 / 3.0 * math.pi * 0.85 * flatness)) ** (1.0 / 3.0)
        # The slice crosses the breast somewhere between its middle and its lower edge.
        section = math.sqrt(1.0 - (0.6 * draw.breast_cut) ** 2)
        width, depth = semi_axis * section, flatness * semi_axis * section
    dense_logit = -1.386 - 0.04 * (age - 55.0) - 0.1 * (bmi - 25.0) + 0.6 * draw.fibroglandular
    return Body(
        epicardial_fat_mm=float(np.clip(0.35 * (bmi - 19.0) + draw.epicardial_fat_mm, 0.5, 9.0)),
        subcutaneous_fat_mm=float(np.clip(1.6 * (bmi - 17.0) + draw.subcutaneous_fat_mm, 2.0, 50.0)),
        thorax_scale=float(thorax),
        pectoral_mm=float(pectoral),
        breast_width_mm=float(width),
        breast_depth_mm=float(depth),
        fibroglandular_share=float(1.0 / (1.0 + math.exp(-dense_logit))),
        draw=draw,
    )


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
    papillary_angle: float
    intensity_scale: float
    body: Body


def sample_anatomy(meta: Mapping[str, Any], rng: np.random.Generator, config: PhantomConfig | None = None) -> Anatomy:
    """Cardiac geometry that follows the subject's metadata (see the module docstring)."""
    config = config or PhantomConfig()
    female = meta["sex"] == "Female"
    age = meta["age_years"]
    bsa = math.sqrt(meta["height_cm"] * meta["weight_kg"] / 3600.0)
    index = (72.0 if female else 82.0) * (1.0 - 0.004 * (age - 60.0)) * rng.lognormal(0.0, 0.1)
    lvedv = index * bsa
    lvef = float(np.clip(rng.normal(61.0 if female else 58.0, 5.0), 45.0, 75.0)) / 100.0
    rvef = float(np.clip(rng.normal(56.0, 6.0), 40.0, 70.0)) / 100.0
    wall = rng.normal(7.4 if female else 8.8, 0.7) + 0.4 * (age - 60.0) / 10.0
    rv_scale = rng.normal(1.08 if female else 1.12, 0.05)
    if meta["diagnosis"] == HEART_FAILURE and rng.random() < config.hfpef_share[meta["sex"]]:
        lvedv *= rng.uniform(*config.hfpef_volume_factor)
        lvef = float(np.clip(rng.normal(56.0, 5.0), 50.0, 68.0)) / 100.0
        rvef = float(np.clip(rng.normal(50.0, 7.0), 35.0, 65.0)) / 100.0
        wall *= rng.uniform(*config.hfpef_wall_factor)
    elif meta["diagnosis"] == HEART_FAILURE:
        lvedv *= rng.uniform(1.35, 2.1)
        lvef = float(np.clip(rng.normal(28.0, 7.0), 12.0, 42.0)) / 100.0
        rvef = float(np.clip(rng.normal(42.0, 8.0), 25.0, 60.0)) / 100.0
        wall *= rng.uniform(0.68, 0.85)
    ellipticity, axis_angle = rng.uniform(0.9, 1.0), rng.uniform(0.0, math.pi)
    epicardial_fat, subcutaneous_fat = rng.normal(0.0, 0.5), rng.normal(0.0, 2.0)
    papillary_angle, intensity_scale = rng.uniform(-0.4, 0.4), rng.normal(1.0, 0.04)
    # The rest of the body comes from a child stream: it consumes nothing from ``rng``, so every
    # later draw of the subject (pose, bias field, noise) is what it was before the body existed.
    draw = draw_body(rng.spawn(1)[0], float(epicardial_fat), float(subcutaneous_fat))
    return Anatomy(
        lvedv_ml=float(lvedv),
        lvef=lvef,
        rvef=rvef,
        lv_wall_mm=float(np.clip(wall, 4.0, 14.0)),
        rv_scale=float(rv_scale),
        lv_ellipticity=float(ellipticity),
        lv_axis_angle=float(axis_angle),
        papillary_angle=float(papillary_angle),
        intensity_scale=float(intensity_scale),
        body=body_for(meta, draw, config),
    )


def _soft(signed_distance_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Partial-volume membership of a shape from its signed distance (negative inside)."""
    # In place on a fresh array: a subject paints dozens of shapes, and allocation dominates.
    membership = signed_distance_mm / -spacing_mm
    membership += 0.5
    return np.clip(membership, 0.0, 1.0, out=membership)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    # Approximate signed distance: exact for circles, good enough for the mild ellipses here.
    rho = (x - cx) / ax
    rho *= rho
    across = (y - cy) / ay
    across *= across
    rho += across
    np.sqrt(rho, out=rho)
    rho -= 1.0
    rho *= math.sqrt(ax * ay)
    return rho


def _paint(canvas: np.ndarray, membership: np.ndarray, value: float) -> None:
    canvas *= 1.0 - membership
    canvas += membership * value


def render_chest(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Noise-free chest wall, breasts, lungs and liver on world coordinates ``x, y`` (mm, LV at
    origin): everything of a frame outside the heart and its fat. It does not move between ED
    and ES, so :func:`render_frame` can take it drawn once for both."""
    body, k = anatomy.body, anatomy.intensity_scale
    img = np.zeros_like(x)
    scale, pectoral, subcutaneous = body.thorax_scale, body.pectoral_mm, body.subcutaneous_fat_mm
    # The rib cage is an ellipse whose front stays at the sternum, just anterior to the heart,
    # whatever the chest's size; depth below its surface, in mm, is exact at the front.
    half_depth = _CHEST_HALF_DEPTH_MM * scale
    half_width, centre_y = 1.3 * half_depth, _RIB_CAGE_FRONT_MM + half_depth
    depth = (np.sqrt((x / half_width) ** 2 + ((y - centre_y) / half_depth) ** 2) - 1.0) * half_depth
    outside_muscle = _soft(pectoral - depth, spacing_mm)
    breast = np.zeros_like(x)
    glands = []
    if body.breast_depth_mm > 0.0:
        width, height = body.breast_width_mm, body.breast_depth_mm
        # Each breast rests on the pectoral muscle beside the sternum; the left one (image
        # right) lies over the heart's lateral wall, the right one mostly beyond the field.
        for side in (1.0, -1.0):
            cx = _STERNUM_X_MM + side * (body.draw.breast_gap_mm + width)
            wall_y = centre_y - (half_depth + pectoral) * math.sqrt(
                max(1.0 - (cx / (half_width * (1.0 + pectoral / half_depth))) ** 2, 0.0))
            breast = np.maximum(breast, _soft(_ellipse_distance(x, y, cx, wall_y, width, height), spacing_mm))
            # Fibroglandular tissue fills the breast's core, set off from the muscle by
            # retromammary fat and from the skin by subcutaneous fat.
            glands.append(_soft(_ellipse_distance(x, y, cx, wall_y, 0.7 * width, 0.75 * height), spacing_mm))
        breast *= outside_muscle
    _paint(img, np.maximum(_soft(depth - pectoral - subcutaneous, spacing_mm), breast), 0.92 * k)
    _paint(img, _soft(depth - pectoral, spacing_mm), 0.24 * k)
    _paint(img, _soft(depth, spacing_mm), 0.34 * k)
    if glands:
        pattern = sum(np.cos((x * math.cos(angle) + y * math.sin(angle)) * (2.0 * math.pi / wavelength) + phase)
                      for angle, wavelength, phase in body.draw.gland_waves) / math.sqrt(_GLAND_WAVES / 2.0)
        # The core is about 45 % of the breast's section: threshold the pattern so the dense
        # share of the breast is the subject's fibroglandular share.
        dense = min(body.fibroglandular_share / 0.45, 0.95)
        threshold = statistics.NormalDist().inv_cdf(1.0 - dense)
        gland = np.maximum(*glands) * _soft(pectoral + 5.0 - depth, spacing_mm)
        _paint(img, gland * np.clip(0.5 + (pattern - threshold) / 0.6, 0.0, 1.0), 0.38 * k)
    # Lungs and liver; the lungs follow the chest's size.
    _paint(img, _soft(_ellipse_distance(x, y, 72.0 * scale, 20.0, 34.0 * scale, 62.0 * scale), spacing_mm), 0.05 * k)
    _paint(img, _soft(_ellipse_distance(x, y, -88.0 * scale, 10.0, 30.0 * scale, 60.0 * scale), spacing_mm), 0.05 * k)
    _paint(img, _soft(_ellipse_distance(x, y, -40.0, 78.0, 62.0, 34.0), spacing_mm), 0.44 * k)
    return img


def render_frame(
    anatomy: Anatomy, x: np.ndarray, y: np.ndarray, spacing_mm: float, end_systole: bool, level: float = 0.0,
    chest: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free image and mask of one frame on world coordinates ``x, y`` (mm, LV at origin).

    ``level`` moves the slice towards the apex (positive) or base (negative), in slices;
    ``chest`` is :func:`render_chest` on the same coordinates, when already drawn.
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
    fat_thickness = anatomy.body.epicardial_fat_mm * (0.35 + 0.65 * np.clip(np.cos(theta + 2.2), 0.0, 1.0))

    k = anatomy.intensity_scale
    img = render_chest(anatomy, x, y, spacing_mm) if chest is None else chest.copy()
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
    chest = render_chest(anatomy, x, y, spacing)
    for end_systole in (False, True):
        clean, mask = render_frame(anatomy, x, y, spacing, end_systole, level, chest)
        signal = clean * bias
        noisy = np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))
        images.append(noisy)
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks)


def _draw_subject(index: int, seed: int, config: PhantomConfig) -> tuple[np.random.Generator, dict[str, Any], Anatomy]:
    rng = np.random.default_rng([seed, index])
    meta = sample_metadata(rng, config)
    return rng, meta, sample_anatomy(meta, rng, config)


def phantom_anatomy(index: int, seed: int, config: PhantomConfig) -> tuple[dict[str, Any], Anatomy]:
    """Metadata and anatomy (heart and body) of phantom subject ``index``, without drawing it."""
    return _draw_subject(index, seed, config)[1:]


def phantom_subject(index: int, seed: int, config: PhantomConfig, levels: tuple[float, ...] = (0.0,),
                    cue_sex: str | None = None, cue_bmi: float | None = None) -> list[Record]:
    """The records of phantom subject ``index``: one per slice level, same subject and pose noise.

    The subject depends only on (seed, index), so cohorts can be made in any order or in
    parallel and stay identical. ``cue_sex`` and ``cue_bmi`` draw the subject's counterfactual:
    the tissue outside the heart (chest wall, breasts, subcutaneous and epicardial fat) as that of
    this sex and this BMI, from the same random draw, while heart, mask, pose, bias field and
    noise stay the subject's own. Its metadata stay the subject's, plus ``cue_sex`` and
    ``cue_bmi``.
    """
    if cue_sex not in (None, "Female", "Male"):
        raise ValueError(f"cue_sex must be 'Female' or 'Male', not {cue_sex!r}")
    if cue_bmi is not None and not 16.0 <= cue_bmi <= 50.0:
        raise ValueError(f"cue_bmi must be within the phantom's BMI range 16-50, not {cue_bmi}")
    rng, meta, anatomy = _draw_subject(index, seed, config)
    cues = {}
    if cue_sex is not None or cue_bmi is not None:
        cues = {"cue_sex": cue_sex or meta["sex"], "cue_bmi": meta["bmi"] if cue_bmi is None else float(cue_bmi)}
        cue_meta = {**meta, "sex": cues["cue_sex"], "bmi": cues["cue_bmi"]}
        anatomy = replace(anatomy, body=body_for(cue_meta, anatomy.body.draw, config))
    return _subject_records(f"phantom-{index:06d}", meta, anatomy, rng, config, levels, cues)


def _subject_records(subject_id: str, meta: dict[str, Any], anatomy: Anatomy, rng: np.random.Generator,
                     config: PhantomConfig, levels: tuple[float, ...], cues: dict[str, Any]) -> list[Record]:
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
            **cues,
        }))
    return records


# Fresh subjects drawn beside a prepared cohort come from their own random streams: a prepared
# subject is drawn from (seed, index), a fresh one from (seed, stream, index), so no fresh subject
# repeats a prepared one, and the test cohort, the oracle and the masks' ground truth (the quality
# stage) never share one.
FRESH_STREAMS = {"test": 1, "oracle": 2, "masks": 3}


def subject_cell(meta: Mapping[str, Any]) -> dict[str, str]:
    """A phantom subject's binned attributes, named as subgroup cells name them."""
    return {"sex": meta["sex"], "age": age_bin(meta["age_years"]), "bmi": bmi_class(meta["bmi"]),
            "diagnosis": meta["diagnosis"]}


def fresh_subject(cell: Mapping[str, str], index: int, seed: int, stream: str, config: PhantomConfig,
                  levels: tuple[float, ...] = (0.0,), max_draws: int = 1_000_000) -> list[Record]:
    """The records of a new subject of ``cell`` (any of sex, age decade, BMI class, diagnosis)
    from the cohort model ``config``: subjects are drawn from the model until one falls in the
    cell (rejection sampling), so within its cell the subject follows the model's own
    distribution. ``stream`` (a key of :data:`FRESH_STREAMS`) and ``index`` pick the random
    stream, which no prepared cohort of any seed uses."""
    rng = np.random.default_rng([seed, FRESH_STREAMS[stream], index])
    for _ in range(max_draws):
        meta = sample_metadata(rng, config)
        binned = subject_cell(meta)
        if all(binned[name] == value for name, value in cell.items()):
            anatomy = sample_anatomy(meta, rng, config)
            return _subject_records(f"phantom-{stream}-{index:06d}", meta, anatomy, rng, config, levels, {})
    raise ValueError(f"no phantom subject of cell {dict(cell)} in {max_draws} draws: the cohort model (almost) "
                     f"never makes one")


# Bias scenarios: named starting points of PhantomConfig, each a different reason a heart-failure
# classifier misses women. The synthetic arm can only help where more examples of the group would
# help; the oracle arm tells which scenario that is.
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "phenotype": (
        "Women's heart failure looks different: two thirds of it has a preserved ejection fraction (a third of "
        "men's), so it is hard to see whatever the number of examples; female heart failure is also rarer.",
        {},
    ),
    "representation": (
        "Female heart failure is rare in training but looks as men's does (the same preserved-EF share in both "
        "sexes), so the classifier misses women for lack of examples of their smaller hearts.",
        {"hfpef_share": {"Female": 0.35, "Male": 0.35}, "hf_odds_female": 0.12},
    ),
    "mixed": (
        "Both mechanisms at half strength: female heart failure is rare and somewhat more often of the "
        "preserved-EF kind (half of it against a third of men's).",
        {"hfpef_share": {"Female": 0.5, "Male": 0.35}, "hf_odds_female": 0.15},
    ),
    # The scarcity study's scenario (configs/scarcity.yaml): a kind of heart failure only the thin
    # cell has, which the classifier cannot learn from men but can from enough women who have it.
    # Concentric remodelling with a small cavity is the HFpEF pattern reported more often in women
    # (wall x 1.2-1.5, end-diastolic volume x 0.8-1.0 here): the other scenarios' rule "a dilated
    # or thick-walled LV means heart failure", learnt from men, reads such a heart as a healthy one.
    "concentric": (
        "Women's heart failure is rare, and nine in ten of their cases are a concentric preserved-EF kind (thicker "
        "wall, smaller cavity) that men's never is: the classifier cannot learn it from men, only from women "
        "who have it.",
        {"hfpef_share": {"Female": 0.9, "Male": 0.0}, "hf_odds_female": 0.12,
         "hfpef_wall_factor": (1.2, 1.5), "hfpef_volume_factor": (0.8, 1.0)},
    ),
}


def scenario_config(name: str, **overrides: Any) -> PhantomConfig:
    """The phantom configuration of bias scenario ``name`` (see :data:`SCENARIOS`), with ``overrides``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown phantom scenario {name!r}; choose from {sorted(SCENARIOS)}")
    return PhantomConfig.from_dict({**SCENARIOS[name][1], "scenario": name, **overrides})


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
    rng, meta, anatomy = _draw_subject(index, seed, config)
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
    chest = render_chest(anatomy, x, y, min(spacing_mm[:2]))
    for z in range(n_slices):
        level = (z - mid) * 0.8
        inside_heart = 0 < z < n_slices - 1
        for frame in ("ED", "ES"):
            clean, mask = render_frame(anatomy, x, y, min(spacing_mm[:2]), frame == "ES", level, chest)
            noisy = np.hypot(clean + rng.normal(0.0, sigma, clean.shape), rng.normal(0.0, sigma, clean.shape))
            # Scanner units, as stored by a real acquisition, not [0, 1].
            images[frame][:, :, z] = (600.0 * noisy).astype(np.float32)
            masks[frame][:, :, z] = mask if inside_heart else 0
    return meta, images, masks
