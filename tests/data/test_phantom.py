"""The phantom must behave like a cohort of hearts: these tests pin the physiology it encodes."""

import numpy as np
import pytest
from scipy import ndimage, stats

from cardiofair.data.diagnoses import HEART_FAILURE
from cardiofair.data.phantom import PhantomConfig, heart_failure_probability, phantom_cohort, phantom_subject


@pytest.fixture(scope="module")
def cohort():
    records = list(phantom_cohort(1500, seed=11))
    areas = {
        "ed_cavity": np.array([(r.mask[0] == 1).sum() for r in records], dtype=float),
        "es_cavity": np.array([(r.mask[1] == 1).sum() for r in records], dtype=float),
        "ed_myo": np.array([(r.mask[0] == 2).sum() for r in records], dtype=float),
    }
    meta = {k: np.array([r.meta[k] for r in records])
            for k in ("sex", "age_years", "bmi", "height_cm", "weight_kg", "lvef_percent")}
    meta["hf"] = np.array([r.meta["diagnosis"] == HEART_FAILURE for r in records])
    return records, areas, meta


def test_same_seed_same_subject_in_any_order():
    a = phantom_subject(17, seed=3, config=PhantomConfig())[0]
    b = list(phantom_cohort(18, seed=3))[17]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.meta == b.meta
    c = phantom_subject(17, seed=4, config=PhantomConfig())[0]
    assert not np.array_equal(a.image, c.image)


def test_record_schema(cohort):
    records, _, _ = cohort
    r = records[0]
    assert r.image.shape == (2, 64, 64) and r.image.dtype == np.float32
    assert r.mask.shape == (2, 64, 64) and r.mask.dtype == np.uint8
    for record in records[:50]:
        assert 40 <= record.meta["age_years"] <= 80
        assert set(np.unique(record.mask)) == {0, 1, 2, 3}
        assert abs(record.meta["bmi"] - record.meta["weight_kg"] / (record.meta["height_cm"] / 100) ** 2) < 0.1


def test_mid_ventricular_anatomy(cohort):
    records, _, _ = cohort
    for record in records[:50]:
        for frame in range(2):
            cavity = record.mask[frame] == 1
            # The myocardium rings the cavity: the cavity never touches background or RV.
            ring = ndimage.binary_dilation(cavity) & ~cavity
            assert set(np.unique(record.mask[frame][ring])) <= {1, 2}
            image = record.image[frame]
            assert image[cavity].mean() > 2.0 * image[record.mask[frame] == 2].mean()  # bSSFP: bright blood


def test_cavity_scales_with_body_size_and_sex(cohort):
    _, areas, meta = cohort
    healthy = ~meta["hf"]
    bsa = np.sqrt(meta["height_cm"] * meta["weight_kg"] / 3600.0)
    assert stats.spearmanr(bsa[healthy], areas["ed_cavity"][healthy]).statistic > 0.5
    female, male = healthy & (meta["sex"] == "Female"), healthy & (meta["sex"] == "Male")
    assert areas["ed_cavity"][female].mean() < 0.85 * areas["ed_cavity"][male].mean()


def test_heart_failure_phenotypes_reduced_and_preserved_ejection_fraction(cohort):
    _, areas, meta = cohort
    hf = meta["hf"]
    reduced, preserved = hf & (meta["lvef_percent"] < 45), hf & (meta["lvef_percent"] >= 50)
    assert (reduced | preserved)[hf].all() and reduced.sum() > 40 and preserved.sum() > 40
    ratio = areas["es_cavity"] / areas["ed_cavity"]
    cavity_r = np.sqrt(areas["ed_cavity"] / np.pi)
    wall = np.sqrt((areas["ed_cavity"] + areas["ed_myo"]) / np.pi) - cavity_r
    healthy = ~hf
    # HFrEF: dilated, thin-walled, barely contracting.
    assert areas["ed_cavity"][reduced].mean() > 1.4 * areas["ed_cavity"][healthy].mean()
    assert ratio[reduced].mean() > 0.65 and ratio[healthy].mean() < 0.5
    assert wall[reduced].mean() < 0.9 * wall[healthy].mean()
    # HFpEF: normal cavity and contraction, thicker wall.
    assert areas["ed_cavity"][preserved].mean() < 1.2 * areas["ed_cavity"][healthy].mean()
    assert ratio[preserved].mean() < 0.5
    assert wall[preserved].mean() > 1.1 * wall[healthy].mean()
    # Preserved EF is the commoner kind in women, the rarer in men.
    female = meta["sex"] == "Female"
    assert preserved[hf & female].mean() > 0.5 > preserved[hf & ~female].mean()


def test_age_thickens_the_wall(cohort):
    _, areas, meta = cohort
    healthy = ~meta["hf"]
    wall = np.sqrt((areas["ed_cavity"] + areas["ed_myo"]) / np.pi) - np.sqrt(areas["ed_cavity"] / np.pi)
    assert stats.spearmanr(meta["age_years"][healthy], wall[healthy]).statistic > 0.15


def test_bmi_adds_bright_fat(cohort):
    records, _, meta = cohort
    bright = np.array([((r.image[0] > 0.75) & (r.mask[0] == 0)).sum() for r in records])
    assert stats.spearmanr(meta["bmi"], bright).statistic > 0.5


def test_a_dilated_female_lv_passes_for_a_normal_male_lv(cohort):
    """HF detection learned on men under-detects HF in women: the bias to be measured."""
    _, areas, meta = cohort
    hf, area = meta["hf"], areas["ed_cavity"]
    men, women = meta["sex"] == "Male", meta["sex"] == "Female"
    thresholds = np.unique(area[men])
    balanced = [((area[men & hf] >= t).mean() + (area[men & ~hf] < t).mean()) / 2 for t in thresholds]
    threshold = thresholds[int(np.argmax(balanced))]
    tpr_men = (area[men & hf] >= threshold).mean()
    tpr_women = (area[women & hf] >= threshold).mean()
    assert (women & hf).sum() >= 40
    assert tpr_women < tpr_men - 0.2
    # ... and female heart-failure cavities overlap the range of healthy male ones.
    low, high = np.percentile(area[men & ~hf], [25, 95])
    assert ((area[women & hf] >= low) & (area[women & hf] <= high)).mean() > 0.2


def test_default_imbalance_leaves_female_young_and_normal_bmi_hf_rare(cohort):
    _, _, meta = cohort
    hf = meta["hf"]
    female = meta["sex"] == "Female"
    assert hf[female].mean() < 0.5 * hf[~female].mean()
    assert hf[meta["age_years"] < 50].mean() < 0.5 * hf[meta["age_years"] >= 70].mean()
    normal = (meta["bmi"] >= 18.5) & (meta["bmi"] < 25)
    assert hf[normal].mean() < 0.5 * hf[meta["bmi"] >= 30].mean()


def test_imbalance_is_configurable():
    balanced = PhantomConfig(hf_odds_female=1.0)
    records = list(phantom_cohort(2000, seed=5, config=balanced))
    hf = np.array([r.meta["diagnosis"] == HEART_FAILURE for r in records])
    female = np.array([r.meta["sex"] == "Female" for r in records])
    assert abs(hf[female].mean() - hf[~female].mean()) < 0.06
    assert heart_failure_probability("Female", 65, 27, PhantomConfig(hf_odds_female=0.1)) < \
        heart_failure_probability("Female", 65, 27, PhantomConfig(hf_odds_female=1.0))


def test_any_size_keeps_physical_scale():
    small = phantom_subject(3, seed=0, config=PhantomConfig(size=64))[0]
    large = phantom_subject(3, seed=0, config=PhantomConfig(size=128))[0]
    assert large.image.shape == (2, 128, 128)
    mm2 = [(r.mask[0] == 1).sum() * r.meta["pixel_spacing_mm"] ** 2 for r in (small, large)]
    assert abs(mm2[0] - mm2[1]) / mm2[1] < 0.1


def test_config_validation_names_the_bad_key():
    with pytest.raises(ValueError, match="hf_odds_sex"):
        PhantomConfig.from_dict({"hf_odds_sex": 0.5})
    with pytest.raises(ValueError, match="female_fraction"):
        PhantomConfig(female_fraction=1.5)
