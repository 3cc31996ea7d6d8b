"""The mask generator on a real phantom cohort: valid anatomy, determinism, attribute effects
that follow the training data, and refusal of models that cannot be trusted with a split."""

import shutil

import numpy as np
import pandas as pd
import pytest

from cardiofair.cli import main
from cardiofair.data.records import load_images, read_manifest
from cardiofair.data.split import training_rows
from cardiofair.data.summary import with_cells
from cardiofair.generate import GenerateSettings, GenerationError, draw_masks, generate, plan_jobs
from cardiofair.masks import train_mask_model
from cardiofair.masks.anatomy import CHECKS, failed_checks, geometry, nearest_masks
from cardiofair.masks.shape_model import MaskModelError, ShapeModel, draw_valid, fit_shape_model
from cardiofair.settings import MaskSettings

HF = "heart failure"


@pytest.fixture(scope="module")
def cohort(split_phantom):
    return split_phantom(400, 64, 0.2, 0.1)


@pytest.fixture(scope="module")
def model(cohort):
    return train_mask_model(cohort, MaskSettings(components=12), progress=False)


def _draw(model, attributes, n, seed=0):
    rng = np.random.default_rng(seed)
    return [draw_valid(model, attributes, rng, 20) for _ in range(n)]


def test_real_masks_pass_and_broken_ones_fail_the_checks(cohort):
    real = load_images(cohort, read_manifest(cohort).iloc[:40])
    spacing = float(real.rows["pixel_spacing_mm"].iloc[0])
    assert all(not failed_checks(mask, spacing) for mask in real.masks)
    broken = real.masks[0].copy()
    broken[0][broken[0] == 2] = 0  # no myocardium around the ED cavity
    assert "structures present" in failed_checks(broken, spacing)
    leaking = real.masks[0].copy()
    ring = np.argwhere(leaking[0] == 2)
    leaking[0][tuple(ring[ring[:, 1] == ring[:, 1].max()][0])] = 0  # a hole in the wall
    rows, cols = np.nonzero(leaking[0] == 1)
    leaking[0][rows.min():rows.max() + 1, cols.max():cols.max() + 4] = 1  # the cavity runs through it
    assert "LV cavity enclosed by myocardium" in failed_checks(leaking, spacing)
    swapped = real.masks[0][::-1].copy()  # ES before ED: the cavity grows
    assert "ES LV cavity not larger than ED" in failed_checks(swapped, spacing)
    assert set(failed_checks(np.zeros_like(broken), spacing)) <= set(CHECKS)


def test_drawn_masks_always_pass_and_the_same_seed_draws_the_same(model):
    cells = [{"sex": s, "age": a, "bmi": "overweight", "diagnosis": d}
             for s in ("Female", "Male") for a in ("50s", "70s") for d in ("healthy", HF)]
    for cell in cells:
        drawn = _draw(model, cell, 25)
        assert all(mask is not None and not failed_checks(mask, model.spacing_mm) for mask, _ in drawn), cell
        again = _draw(model, cell, 25)
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(drawn, again))
    assert not np.array_equal(_draw(model, cells[0], 1, seed=1)[0][0], _draw(model, cells[0], 1, seed=2)[0][0])


def test_sex_and_diagnosis_move_the_lv_cavity_as_the_training_data_do(cohort, model):
    rows = training_rows(read_manifest(cohort)).reset_index(drop=True)
    binned = with_cells(rows)
    real = geometry(load_images(cohort, rows).masks, model.spacing_mm)[:, 0]
    base = {"age": "60s", "bmi": "overweight"}

    def drawn_area(sex, diagnosis):
        masks = [m for m, _ in _draw(model, {**base, "sex": sex, "diagnosis": diagnosis}, 150)]
        return geometry(np.stack(masks), model.spacing_mm)[:, 0].mean()

    def real_area(**cell):
        return real[np.all([binned[k] == v for k, v in cell.items()], axis=0)].mean()

    # The phantom's truth: women's LV is smaller, heart failure dilates it. The drawn difference
    # has the training data's sign and lies within half to twice its size.
    sex_drawn = drawn_area("Male", "healthy") - drawn_area("Female", "healthy")
    sex_real = real_area(sex="Male", diagnosis="healthy") - real_area(sex="Female", diagnosis="healthy")
    hf_drawn = drawn_area("Female", HF) - drawn_area("Female", "healthy")
    hf_real = real_area(diagnosis=HF) - real_area(diagnosis="healthy")
    assert sex_real > 0 and hf_real > 0
    assert 0.5 * sex_real < sex_drawn < 2.0 * sex_real
    assert 0.5 * hf_real < hf_drawn < 2.0 * hf_real


def test_drawn_masks_are_not_copies_of_training_masks(cohort, model):
    manifest = read_manifest(cohort)
    train = load_images(cohort, manifest[manifest["split"] == "train"]).masks
    held_out = load_images(cohort, manifest[manifest["split"] != "train"]).masks
    drawn = np.stack([m for m, _ in _draw(model, {"sex": "Male", "age": "60s", "bmi": "overweight",
                                                  "diagnosis": "healthy"}, 60)])
    assert np.median(nearest_masks(drawn, train)[0]) >= 0.8 * np.median(nearest_masks(held_out, train)[0])
    assert nearest_masks(train[:5], train)[0].max() == 0.0


def test_saved_model_draws_the_same_and_an_unseen_level_is_refused(model, tmp_path):
    model.save(tmp_path)
    loaded = ShapeModel.load(tmp_path)
    cell = {"sex": "Female", "age": "60s", "bmi": "normal", "diagnosis": HF}
    assert np.array_equal(_draw(model, cell, 1)[0][0], _draw(loaded, cell, 1)[0][0])
    assert loaded.hash == model.hash
    with pytest.raises(MaskModelError, match="never saw"):
        loaded.draw({**cell, "diagnosis": "dilated cardiomyopathy"}, np.random.default_rng(0))


def _plan(prompt, count, **flags):
    return pd.DataFrame([{"cell": prompt.replace(", ", "|"), "real_count": 1, "synthetic_count": count,
                          "prompt": prompt, "mask_policy": "synthesized", **flags}])


def test_unseen_cells_are_refused_unless_allowed_and_then_marked_extrapolated(cohort, model):
    candidates = training_rows(read_manifest(cohort))
    seen = with_cells(candidates)
    unseen = next(f"{s}, age in {a}, {HF}" for s in ("Female", "Male") for a in ("40s", "50s", "60s", "70s")
                  if not ((seen["sex"] == s) & (seen["age"] == a) & (seen["diagnosis"] == HF)).any())
    plan = _plan(unseen, 3)
    jobs = plan_jobs(plan, candidates, GenerateSettings())
    with pytest.raises(GenerationError, match="learned no record of it"):
        draw_masks(jobs, plan, model, GenerateSettings())
    allowed = _plan(unseen, 3, unseen=True)
    drawn = draw_masks(plan_jobs(allowed, candidates, GenerateSettings()), allowed, model, GenerateSettings())
    assert len(drawn) == 3 and all(d.extrapolated for d in drawn.values())


def test_a_mask_model_that_learned_held_out_subjects_is_refused(cohort, tmp_path):
    unsplit = tmp_path / "unsplit"
    manifest = read_manifest(cohort)
    shutil.copytree(cohort, unsplit)
    manifest.drop(columns="split").to_csv(unsplit / "manifest.csv", index=False)
    assert main(["masks", str(unsplit), "--out", str(tmp_path / "leaky"), "--components", "8", "--quiet"]) == 0
    plan = _plan(f"Male, age in 60s, {HF}", 2)
    with pytest.raises(GenerationError, match=r"learned \d+ validation, test or held-back subject"):
        generate(tmp_path / "no-image-model", cohort, plan, tmp_path / "syn", masks=tmp_path / "leaky",
                 progress=False)
    assert not (tmp_path / "syn").exists()


def test_a_cell_whose_draws_keep_failing_stops_with_the_rate_and_the_cell(cohort, model):
    # The same shapes read at ten times the pixel spacing are hearts 100 times too large in area:
    # every draw fails the plausible-area check.
    oversized = ShapeModel(model.mean, model.components, model.effects, model.residual_factors,
                           {**model.info, "pixel_spacing_mm": 10 * model.spacing_mm})
    candidates = training_rows(read_manifest(cohort))
    plan = _plan(f"Male, age in 60s, {HF}", 2)
    with pytest.raises(GenerationError, match=r"Male\|age in 60s\|heart failure: 20 of 20 drawn masks \(100%\)"):
        draw_masks(plan_jobs(plan, candidates, GenerateSettings()), plan, oversized, GenerateSettings())


def test_the_fairness_leak_check_reads_a_drawn_masks_nearest_training_record(cohort):
    from cardiofair.downstream.cohort import ExperimentError, check_synthetic

    real = read_manifest(cohort)
    train_record = real.loc[real["split"] == "train", "record_id"].iloc[0]
    test_record = real.loc[real["split"] == "test", "record_id"].iloc[0]
    drawn = pd.DataFrame([{"record_id": "synthetic-c000-00000", "subject_id": "synthetic-c000-00000",
                           "is_synthetic": True, "mask_policy": "synthesized", "mask_source": "",
                           "mask_source_record": "", "mask_nearest_record": train_record}])
    check_synthetic(real, drawn, "drawn")
    with pytest.raises(ExperimentError, match="a test subject"):
        check_synthetic(real, drawn.assign(mask_nearest_record=test_record), "drawn")


def test_the_synthesized_study_differs_from_the_default_only_in_its_mask_policy():
    from pathlib import Path

    from cardiofair.config import load_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    default = load_config(configs / "phantom.yaml")[0].to_dict()
    drawn = load_config(configs / "masks-synthesized.yaml")[0].to_dict()
    assert (default["plan"]["mask_policy"], drawn["plan"]["mask_policy"]) == ("matched", "synthesized")
    for config in (default, drawn):
        config.pop("name")
        config["plan"].pop("mask_policy")
    assert drawn == default


def test_a_mask_model_of_another_size_is_refused_before_drawing(model, tmp_path):
    from cardiofair.data.prepare import PrepareSettings, prepare_phantom

    small = tmp_path / "small"
    prepare_phantom(12, 0, small, settings=PrepareSettings(size=32), progress=False, workers=1)
    model.save(tmp_path)
    with pytest.raises(GenerationError, match="draws 64 px masks .* records are 32 px"):
        generate(tmp_path / "no-image-model", small, _plan(f"Male, age in 60s, {HF}", 2), tmp_path / "syn",
                 masks=tmp_path, progress=False)
    assert not (tmp_path / "syn").exists()


def test_a_cohort_with_few_distinct_shapes_keeps_only_the_modes_that_vary(cohort):
    rows = training_rows(read_manifest(cohort)).iloc[:40]
    masks = load_images(cohort, rows).masks
    attributes = with_cells(rows).reset_index(drop=True)
    # Two shapes repeated: one mode of variation, whatever number is asked for.
    repeated = np.stack([masks[i % 2] for i in range(len(masks))])
    fitted = fit_shape_model(repeated, attributes, 2.3, 12, {})
    assert fitted.info["components"] == 1 and np.isfinite(fitted.components).all()
    with pytest.raises(MaskModelError, match="all the same shape"):
        fit_shape_model(np.stack([masks[0]] * len(masks)), attributes, 2.3, 12, {})
