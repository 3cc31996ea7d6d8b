"""Honesty checks of realism and privacy, and `cardiofair quality` end to end (under its earlier
name, `cardiofair evaluate synthetic`, which still works).

A distance is only worth reporting if real-vs-real is smaller than real-vs-noise and
real-vs-(images on the wrong masks); a copy detector only if it flags near-copies of training
images and not new real patients.
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from phantom_arrays import phantom_arrays
from scipy import linalg

from cardiofair.cli import main
from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import DatasetWriter, ImageSet, Record, load_dataset, read_manifest
from cardiofair.data.split import write_splits
from cardiofair.metrics.privacy import CopyDetector, flatten_pixels, nearest_neighbours
from cardiofair.metrics.quality import (
    Features,
    QualitySettings,
    evaluate_synthetic,
    held_to_target,
    matched_by_cell,
    realism_scope,
    same_cell_reference,
)
from cardiofair.metrics.realism import (
    frechet_distance,
    kernel_distance,
    mask_geometry,
    mean_pairwise_ms_ssim,
    ms_ssim,
)


def _standardised(evaluators, reference, *others):
    ref = evaluators.features(reference)
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    return [(ref - mean) / std] + [(evaluators.features(x) - mean) / std for x in others]


def test_real_vs_real_is_closer_than_real_vs_noise_and_than_images_on_shuffled_masks(judged, training_cohort):
    evaluators, (test_images, test_masks, _) = judged
    train_images, train_masks, _ = training_cohort
    rng = np.random.default_rng(0)
    noisy = np.clip(test_images + rng.normal(0, 0.15, test_images.shape), 0, 1).astype(np.float32)
    noise = rng.random(test_images.shape).astype(np.float32)
    train, real, noisy_f, noise_f = _standardised(evaluators, train_images, test_images, noisy, noise)
    real_fd = frechet_distance(train, real)
    assert real_fd < frechet_distance(train, noisy_f) / 3
    assert real_fd < frechet_distance(train, noise_f) / 3
    real_kd = kernel_distance(train, real, subsets=20, subset_size=100)[0]
    assert real_kd < kernel_distance(train, noisy_f, subsets=20, subset_size=100)[0] / 3

    # The same real images drawn on other subjects' masks: each half is real, the pair is not.
    geometry = mask_geometry(train_masks)
    mean, std = geometry.mean(0), geometry.std(0) + 1e-6
    joint = lambda features, masks: np.concatenate([features, (mask_geometry(masks) - mean) / std], 1)
    shuffled = test_masks[rng.permutation(len(test_masks))]
    own = frechet_distance(joint(train, train_masks), joint(real, test_masks))
    assert own < frechet_distance(joint(train, train_masks), joint(real, shuffled)) / 2


def test_copy_detector_flags_noised_training_images_but_not_new_real_patients(training_cohort, test_cohort):
    train_images = training_cohort[0]
    test_images = test_cohort[0]
    other_images = phantom_arrays(100, 3)[0]
    train = flatten_pixels(train_images)
    detector = CopyDetector.fit(nearest_neighbours(flatten_pixels(test_images), train)[0])
    rng = np.random.default_rng(1)
    copies = np.clip(train_images[:100] + rng.normal(0, 0.01, train_images[:100].shape), 0, 1)
    assert detector.rate(nearest_neighbours(flatten_pixels(copies), train)[0]) > 0.95
    assert detector.rate(nearest_neighbours(flatten_pixels(other_images), train)[0]) < 0.15


def test_distances_and_ms_ssim_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)
    # Against the textbook formula with a general matrix square root, on correlated features.
    c = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 1.0
    cov_c = np.cov(c, rowvar=False)
    d = a[:300, :3].repeat(2, 1) + rng.normal(size=(300, 6))
    cov_d = np.cov(d, rowvar=False)
    textbook = np.sum((d.mean(0) - c.mean(0)) ** 2) + np.trace(cov_d) + np.trace(cov_c) \
        - 2 * np.trace(linalg.sqrtm(cov_d @ cov_c).real)
    assert frechet_distance(d, c) == pytest.approx(textbook, rel=1e-6)
    # Weights that drop half of a set leave the distance of a homogeneous set unchanged.
    weights = np.r_[np.ones(2000), np.zeros(2000)]
    assert frechet_distance(a, b, weights) == pytest.approx(4.0, rel=0.08)
    assert abs(kernel_distance(a, rng.normal(size=(4000, 3)), subsets=10)[0]) < 0.05
    assert kernel_distance(a, b, subsets=10)[0] > 0.5

    x = torch.rand(4, 1, 64, 64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(4), atol=1e-5)
    assert (ms_ssim(x, torch.rand(4, 1, 64, 64)) < 0.2).all()
    same = np.repeat(rng.random((1, 2, 64, 64)), 10, axis=0)
    assert mean_pairwise_ms_ssim(same) == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(mean_pairwise_ms_ssim(same[:1]))

    mask = np.zeros((1, 2, 8, 8), np.uint8)
    mask[0, 0, :4, :4] = 1
    geometry = mask_geometry(mask)
    assert geometry[0, 0] == pytest.approx(16 / 64) and geometry[0, 1] < 0 and geometry[0, 2] < 0


def test_matching_by_cell_gives_both_sets_the_same_mix():
    synthetic = pd.Series(["a"] * 30 + ["b"] * 5)
    held_out = pd.Series(["a"] * 4 + ["b"] * 20 + ["c"] * 7)
    train = pd.Series(["a"] * 50 + ["b"] * 10 + ["c"] * 5)
    syn, held, weights, left_out = matched_by_cell(synthetic, held_out, train, seed=0)
    assert synthetic[syn].value_counts().to_dict() == held_out[held].value_counts().to_dict() == {"b": 5, "a": 4}
    assert left_out == []
    share = pd.Series(weights).groupby(train).sum()
    assert share["a"] == pytest.approx(4) and share["b"] == pytest.approx(5) and share["c"] == 0


def test_the_realism_distance_is_the_mean_over_draws_of_the_compared_images():
    rng = np.random.default_rng(0)
    features = lambda n, shift: Features(rng.normal(shift, 1.0, (n, 4)), rng.normal(shift, 1.0, (n, 6)),
                                         np.zeros((n, 1)))
    train, synthetic, held_out = features(400, 0.0), features(90, 0.5), features(60, 0.0)
    images = lambda n: rng.random((n, 2, 8, 8)).astype(np.float32)
    settings = QualitySettings(min_images=20, fd_draws=6, ms_ssim_pairs=5, kernel_subsets=3)
    scope = realism_scope(train, synthetic, held_out, images(90), images(60), settings, seed=0)
    # The larger set is subsampled to the smaller one's size in each draw, differently each time.
    redrawn = np.random.default_rng(0)
    draws = [(np.sort(redrawn.choice(90, 60, replace=False)), np.sort(redrawn.choice(60, 60, replace=False)))
             for _ in range(6)]
    one_by_one = [frechet_distance(train.encoder, synthetic.encoder[s]) for s, _ in draws]
    assert scope["n_compared"] == 60 and scope["fd_draws"] == 6
    assert scope["fd"]["synthetic"] == pytest.approx(np.mean(one_by_one))
    assert scope["fd_std"]["synthetic"] == pytest.approx(np.std(one_by_one)) and np.std(one_by_one) > 0
    # Every draw holds all of the smaller set: its distance does not move between draws.
    assert scope["fd_std"]["real_reference"] == pytest.approx(0.0, abs=1e-9)
    assert scope["fd"]["synthetic"] > scope["fd"]["real_reference"]
    # Given draws (the cell-matched ones) are used as they are, and counted by their size.
    given = realism_scope(train, synthetic, held_out, images(90), images(60), settings, seed=0, draws=draws[:2])
    assert given["fd_draws"] == 2 and given["n_synthetic"] == 60
    assert given["fd"]["synthetic"] == pytest.approx(np.mean(one_by_one[:2]))


def _gaussian_features(rng, n, shift, dimensions):
    encoder = rng.normal(shift, 1.0, (n, dimensions))
    return Features(encoder, np.concatenate([encoder, rng.normal(0.0, 1.0, (n, 2))], 1), np.zeros((n, 1)))


def test_the_reference_interval_covers_its_figure_narrows_with_n_and_matches_the_spread_between_cohorts():
    rng = np.random.default_rng(0)
    features = lambda n, shift=0.0: _gaussian_features(rng, n, shift, 16)
    images = lambda n: rng.random((n, 2, 8, 8)).astype(np.float32)
    settings = QualitySettings(fd_draws=4, ms_ssim_pairs=5, kernel_subsets=3)
    train = features(2000)
    widths = {}
    for n in (40, 320):
        held_out = features(n, 0.1)
        # Two images per subject: the halves are drawn by subject.
        subjects = (np.arange(n) // 2, np.arange(n) // 2)
        scope = realism_scope(train, features(n, 0.5), held_out, images(n), images(n), settings, seed=0,
                              subjects=subjects)
        for key in ("fd", "fd_image_mask", "kd"):
            for side in ("synthetic", "real_reference"):
                low, high = scope[f"{key}_interval"][side]
                assert low <= scope[key][side] <= high, (n, key, side)
        low, high = scope["fd_interval"]["real_reference"]
        widths[n] = high - low
        # Every held-out image is compared (n of n): the interval still spreads, and about as
        # wide as the reference of other real cohorts of n images does.
        cohorts = [frechet_distance(train.encoder, features(n, 0.1).encoder) for _ in range(200)]
        spread = np.subtract(*np.quantile(cohorts, [0.975, 0.025]))
        assert 0.5 * spread < widths[n] < 2.0 * spread, (n, widths[n], spread)
    assert widths[320] < widths[40] / 3


def test_a_distance_is_too_few_where_the_real_interval_is_wider_than_the_targets_margin():
    rng = np.random.default_rng(0)
    features = lambda n, shift: _gaussian_features(rng, n, shift, 2)
    images = lambda n: rng.random((n, 2, 8, 8)).astype(np.float32)
    settings = QualitySettings(fd_draws=4, ms_ssim_pairs=5, kernel_subsets=3, realism_target=2.0)
    train, held_out = features(1000, 0.0), features(400, 0.3)
    few = realism_scope(train, features(25, 0.5), held_out, images(25), images(400), settings, seed=0)
    low, high = few["fd_interval"]["real_reference"]
    assert high - low > few["fd"]["real_reference"] * (settings.realism_target - 1)
    judged = held_to_target(few, train, held_out, np.arange(400), settings, seed=0)
    assert judged["status"].startswith("too few images for a stable figure: at 25 images real-vs-real")
    assert judged["n_needed"] in (50, 100, 200, 400) and judged["status"].endswith(f"(need {judged['n_needed']})")
    assert "fd" not in judged and judged["real_reference_at_n"]["fd_interval"] == [low, high]
    # Where the cohort holds fewer images than any size that would do, it says so.
    short = held_to_target(few, train, held_out.take(np.arange(40)), np.arange(40), settings, seed=0)
    assert short["n_needed"] is None and short["status"].endswith("(need more than 40)")
    many = realism_scope(train, features(400, 0.5), held_out, images(400), images(400), settings, seed=0)
    assert held_to_target(many, train, held_out, np.arange(400), settings, seed=0) is many
    assert many["status"] == "ok" and many["fd"]["synthetic"] > many["fd"]["real_reference"]
    # Below the floor no distance is computed at all.
    floor = realism_scope(train, features(10, 0.5), held_out, images(10), images(400), settings, seed=0)
    assert floor["status"].endswith("(need 20)") and "fd_interval" not in floor


# --- the command ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dataset(split_phantom):
    return split_phantom(260, 64, test=0.25, val=0.15)


def _synthetic_from(records, out, noise, seed, mask_source=True):
    """Write ``records`` as a synthetic dataset (images lightly noised), as the generator would."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(out) as writer:
        for i, record in enumerate(records):
            meta = {**{k: v for k, v in record.meta.items() if k not in ("split",)},
                    "record_id": f"synthetic-c000-{i:05d}", "subject_id": f"synthetic-c000-{i:05d}",
                    "dataset": "synthetic", "is_synthetic": True, "age_years": None, "bmi": None,
                    "height_cm": None, "weight_kg": None,
                    "cell": f"{record.meta['sex']}|{record.meta['diagnosis']}"}
            if mask_source:
                meta["mask_source_record"] = record.meta["record_id"]
            image = np.clip(record.image + rng.normal(0, noise, record.image.shape), 0, 1)
            writer.add(Record(image.astype(np.float32), record.mask, meta))
        writer.finish({"test": "synthetic fixture"})
    return out


def _by_split(root, split):
    return [r for r in load_dataset(root) if r.meta["split"] == split]


# The segmenter learns from degraded images: a hundred steps before it reads a ventricle. The
# two-sample test's ten trainings run where a test reads its section.
FAST = ["--steps", "100", "--classifier-steps", "100", "--min-images", "10", "--no-c2st"]


def test_a_real_cohorts_prompt_reference_is_its_held_out_images_of_the_synthetic_cells():
    keys = pd.Series(["F|hf", "M|hf", "M|healthy", "F|hf", "F|healthy"])
    held_out = ImageSet(pd.DataFrame({"record_id": [f"r{i}" for i in range(5)]}), np.arange(5.0).reshape(5, 1, 1, 1),
                        np.zeros((5, 1, 1, 1), np.uint8))
    reference, reference_keys, source = same_cell_reference(pd.Series(["F|hf", "F|hf", "M|hf"]), ["sex", "diagnosis"],
                                                            held_out, keys, None, minimum=100)
    assert reference.rows["record_id"].tolist() == ["r0", "r1", "r3"]
    assert reference_keys.tolist() == ["F|hf", "M|hf", "F|hf"] and source.startswith("real held-out")


def test_evaluate_synthetic_writes_every_section_beside_its_reference(real_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    copies = _synthetic_from(_by_split(real_dataset, "train")[:60], tmp_path / "copies", noise=0.005, seed=0)
    assert main(["evaluate", "synthetic", "--real", str(real_dataset), "--synthetic", str(copies),
                 "--out", str(tmp_path / "q1"), *FAST, "--c2st"]) == 0
    printed = capsys.readouterr().out
    assert "FD-cardiofair" in printed and "copy rate (pixel)" in printed and "C2ST AUROC" in printed
    report = json.loads((tmp_path / "q1" / "synthetic_quality.json").read_text())
    assert {"realism", "mask_fidelity", "prompt_fidelity", "privacy"} <= report.keys()
    assert report["cell_attributes"] == ["sex", "diagnosis"]
    for section in ("realism", "mask_fidelity", "prompt_fidelity", "privacy"):
        assert report[section]["cells"], section
        assert (tmp_path / "q1" / f"{section}_by_cell.csv").is_file()
    # Near-copies of training images: the detector must say so, real held-out patients must not trip it.
    copy_rate = report["privacy"]["overall"]["copy_rate"]["pixel"]
    assert copy_rate["synthetic"] > 0.9 and copy_rate["real_reference"] < 0.2
    assert report["privacy"]["overall"]["median_distance_to_mask_source"] < 0.01
    # Their masks are training masks: the mask measures must call them copies, and real ones valid.
    masks = report["mask_geometry"]
    assert masks["novelty"]["copy_rate"]["synthetic"] > 0.9 and masks["novelty"]["copy_rate"]["real_reference"] < 0.2
    assert masks["validity"]["valid_share"] == 1.0 and (tmp_path / "q1" / "mask_geometry_per_mask.csv").is_file()
    assert all(scope["distance_to_phantom_truth"]["real_reference"] > 0 for scope in masks["cells"].values())
    assert len(report["privacy"]["closest_pairs"]) == 8 and (tmp_path / "q1" / "closest_pairs.png").is_file()
    realism = report["realism"]["overall"]
    assert realism["status"] == "ok" and set(realism["fd"]) == {"synthetic", "real_reference"}
    assert report["realism"]["feature_space"].startswith("FD-/KD-cardiofair: 96-d features of cardiofair's attribute")
    # The two-sample test, right after realism: both sides told from the same real held-out images,
    # drawn like realism's first draw; each synthetic image it saw has its held-out-fold score.
    assert list(report).index("c2st") == list(report).index("realism") + 1
    c2st = report["c2st"]["overall"]
    assert c2st["status"] == "ok" and c2st["n_synthetic"] == realism["n_compared"] == c2st["n_real_held_out"]
    for side in ("synthetic", "real_reference"):
        low, high = c2st["auroc_interval"][side]
        assert 0 <= low <= c2st["auroc"][side] <= high <= 1
    mask = report["mask_fidelity"]["overall"]
    assert mask["synthetic"]["ED_LV"] > mask["shuffled_mask_floor"]["ED_LV"]
    # Prompt fidelity's reference: new phantom subjects of each synthetic cell, at least --min-images
    # of each; the whole real test split beside it.
    prompt = report["prompt_fidelity"]
    assert prompt["overall"]["reference"] == "new phantom subjects of the same cells"
    synthetic_counts = pd.Series([f"{r.meta['sex']}|{r.meta['diagnosis']}"
                                  for r in _by_split(real_dataset, "train")[:60]]).value_counts()
    for cell, scope in prompt["cells"].items():
        assert scope["n_synthetic"] == synthetic_counts[cell] and scope["n_real_same_cells"] == max(10, scope["n_synthetic"])
    assert prompt["overall"]["n_real_same_cells"] == sum(max(10, n) for n in synthetic_counts)
    assert prompt["overall"]["n_real_test"] == len(_by_split(real_dataset, "test"))
    assert set(prompt["overall"]["real_test"]) == set(prompt["overall"]["real_reference"])
    per_image = pd.read_csv(tmp_path / "q1" / "synthetic_per_image.csv")
    assert len(per_image) == 60 and per_image["copy_pixel"].mean() > 0.9
    assert per_image["c2st_score"].notna().sum() == c2st["n_synthetic"]

    # New patients of another seed, marked synthetic: no longer copies. The evaluators come from the cache.
    other = tmp_path / "other"
    prepare_phantom(60, 7, other, settings=PrepareSettings(size=64), progress=False, workers=1)
    fresh = _synthetic_from(load_dataset(other), tmp_path / "fresh", noise=0.0, seed=0, mask_source=False)
    assert main(["evaluate", "synthetic", "--real", str(real_dataset), "--synthetic", str(fresh),
                 "--out", str(tmp_path / "q2"), *FAST]) == 0
    assert len(list((tmp_path / "cache" / "evaluators").iterdir())) == 1
    second = json.loads((tmp_path / "q2" / "synthetic_quality.json").read_text())
    assert second["evaluators"] == report["evaluators"]
    assert second["c2st"]["overall"]["status"] == "not run (quality.c2st is off)"
    assert second["frd"]["overall"]["status"] == "not run (quality.frd is off)"
    assert second["privacy"]["overall"]["copy_rate"]["pixel"]["synthetic"] < 0.2
    assert second["privacy"]["overall"]["mask_source_not_in_train"] == 60
    assert second["mask_geometry"]["novelty"]["copy_rate"]["synthetic"] < 0.2


def _without_attributes(root, out):
    """A copy of a dataset that records no sex, age, BMI or diagnosis and is no phantom, as the
    public M&Ms copy."""
    shutil.copytree(root, out)
    (out / "prepare.json").unlink(missing_ok=True)
    manifest = pd.read_csv(out / "manifest.csv")
    manifest[["sex", "age_years", "height_cm", "weight_kg", "bmi", "diagnosis", "prompt"]] = None
    manifest.to_csv(out / "manifest.csv", index=False)
    return out


def test_a_cohort_without_attributes_measures_realism_in_the_segmenters_features(real_dataset, tmp_path,
                                                                                  monkeypatch, capsys):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    real = _without_attributes(real_dataset, tmp_path / "real")
    copies = _without_attributes(_synthetic_from(_by_split(real_dataset, "train")[:60], tmp_path / "copies",
                                                 noise=0.005, seed=0), tmp_path / "synthetic")
    assert main(["quality", "--real", str(real), "--synthetic", str(copies), "--out", str(tmp_path / "q"),
                 *FAST]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "q" / "synthetic_quality.json").read_text())
    assert report["evaluators"]["classes"] == {}
    assert "cardiofair's segmenter" in report["realism"]["feature_space"]
    assert report["realism"]["overall"]["status"] == "ok"
    # Said once, not once per attribute.
    assert printed.count("attribute judge left out") == 1 and printed.count("attribute judge was left out") == 1
    assert "prompt effects: not measured" in printed and "prompt effect sex" not in printed
    assert "classifier steps" not in printed


def test_too_few_images_are_reported_not_measured(real_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    few = _synthetic_from(_by_split(real_dataset, "train")[:6], tmp_path / "few", noise=0.05, seed=0)
    report = evaluate_synthetic(real_dataset, few, tmp_path / "q", QualitySettings(steps=5, classifier_steps=5,
                                                                                    c2st=False), progress=False)
    realism = report.section("realism")["overall"]
    assert "too few images" in realism["status"] and "fd" not in realism
    assert realism["n_synthetic"] <= 6
    assert all("fd" not in scope for scope in report.section("realism")["cells"].values())
    # A cohort that records no vendor or centre has no scope of either.
    assert not {"by_vendor", "by_centre"} & report.section("realism").keys()
    assert not list((tmp_path / "q").glob("realism_by_[!c]*.csv"))


def test_realism_per_vendor_where_the_real_manifest_records_it(real_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    real = tmp_path / "real"
    shutil.copytree(real_dataset, real)
    manifest = pd.read_csv(real / "manifest.csv")
    codes = manifest["subject_id"].astype("category").cat.codes
    manifest["vendor"] = np.where(codes % 2 == 0, "Siemens", "Philips")
    manifest.loc[codes % 7 == 0, "vendor"] = None  # unknown for some subjects
    manifest.to_csv(real / "manifest.csv", index=False)
    synthetic = _synthetic_from(_by_split(real_dataset, "train")[:60], tmp_path / "syn", noise=0.05, seed=0)
    assert main(["quality", "--real", str(real), "--synthetic", str(synthetic), "--out", str(tmp_path / "q"),
                 "--steps", "5", "--classifier-steps", "5", "--no-c2st"]) == 0
    printed = capsys.readouterr().out
    realism = json.loads((tmp_path / "q" / "synthetic_quality.json").read_text())["realism"]
    assert list(realism["by_vendor"]) == ["Philips", "Siemens"] and "by_centre" not in realism
    held_out = manifest[manifest["split"].isin(["val", "test"])]
    train = manifest[manifest["split"] == "train"]
    for vendor, scope in realism["by_vendor"].items():
        assert scope["n_real_held_out"] == (held_out["vendor"] == vendor).sum()
        assert scope["n_real_train"] == (train["vendor"] == vendor).sum()
        assert scope["n_synthetic"] == 60
        if scope["status"] == "ok":
            assert scope["n_compared"] == min(60, scope["n_real_held_out"])
            low, high = scope["fd_interval"]["real_reference"]
            assert low <= scope["fd"]["real_reference"] <= high
            assert f"FD-cardiofair vendor {vendor} (n={scope['n_compared']})" in printed
        else:
            assert f"realism vendor {vendor}: too few images" in printed
    table = pd.read_csv(tmp_path / "q" / "realism_by_vendor.csv")
    assert table["vendor"].tolist() == ["Philips", "Siemens"]
    assert {"fd_interval_real_reference_low", "fd_interval_real_reference_high"} <= set(table.columns) or \
        table["status"].str.startswith("too few").all()


def test_bad_inputs_are_refused_with_the_reason(real_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    train = _by_split(real_dataset, "train")[:12]
    synthetic = _synthetic_from(train, tmp_path / "syn", noise=0.05, seed=0)
    args = ["evaluate", "synthetic", "--synthetic", str(synthetic), *FAST]
    unsplit = tmp_path / "unsplit"
    prepare_phantom(20, 1, unsplit, settings=PrepareSettings(size=64), progress=False, workers=1)
    small = tmp_path / "small"
    prepare_phantom(20, 1, small, settings=PrepareSettings(size=32), progress=False, workers=1)
    write_splits(small, pd.Series(np.resize(["train", "val", "test"], 20), name="split"))
    relabelled = _synthetic_from(train, tmp_path / "labels", noise=0.0, seed=0)
    first = relabelled / read_manifest(relabelled)["mask_path"][0]
    volume = nib.load(first)
    nib.save(nib.Nifti1Image(np.where(np.asarray(volume.dataobj) == 3, 5, volume.dataobj).astype(np.uint8),
                             volume.affine, volume.header), first)
    cases = {
        "cardiofair split": ["--real", str(unsplit)],
        "image shapes differ": ["--real", str(small)],
        "holds no synthetic records": ["--real", str(real_dataset), "--synthetic", str(real_dataset)],
        "not a synthetic dataset": ["--real", str(real_dataset), "--synthetic", str(tmp_path / "nowhere")],
        "labels [5]": ["--real", str(real_dataset), "--synthetic", str(relabelled)],
    }
    for expected, extra in cases.items():
        out = tmp_path / f"out-{len(expected)}"
        code = main([*args, *extra, "--out", str(out)])
        assert code == 1 and expected in capsys.readouterr().err, expected
        assert not out.exists(), expected
    assert main([*args, "--real", str(real_dataset), "--out", str(tmp_path / "q")]) == 0
    assert main([*args, "--real", str(real_dataset), "--out", str(tmp_path / "q")]) == 1  # exists: no overwrite
