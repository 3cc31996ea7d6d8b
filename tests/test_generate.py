"""Generation from a plan with a tiny real model: counts, provenance, resumption after SIGKILL."""

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cardiofair.cli import main
from cardiofair.data.phantom import PhantomConfig, phantom_subject
from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import load_dataset, read_manifest
from cardiofair.data.split import assign_splits, hold_back, subject_hashes, write_splits
from cardiofair.data.summary import with_cells
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import GenerateSettings, GenerationError, generate, merge_datasets, plan_jobs, warp_mask
from cardiofair.plan import PlanSettings, plan_synthesis, write_plan
from cardiofair.prompts import build_prompt


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantom16"
    prepare_phantom(60, 0, root, settings=PrepareSettings(size=16), progress=False, workers=1)
    return root


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    return train(dataset, out, TrainSettings.for_preset(get_preset("tiny"), max_steps=2), progress_bar=False)


def _plan(*cells):
    rows = []
    for prompt, count, policy in cells:
        rows.append({"cell": prompt.replace(", ", "|"), "diagnosis": prompt.split(", ")[-1], "real_count": 1,
                     "synthetic_count": count, "prompt": prompt, "mask_policy": policy})
    return pd.DataFrame(rows)


FEMALE_HF = "Female, age in 60s, normal BMI, heart failure"
MALE_HEALTHY = "Male, age in 50s, overweight BMI, healthy"


def test_generates_exactly_the_planned_records_with_provenance(dataset, model, tmp_path):
    plan = _plan((FEMALE_HF, 5, "matched"), (MALE_HEALTHY, 3, "random"))
    out = generate(model, dataset, plan, tmp_path / "syn", GenerateSettings(batch_size=3), progress=False)
    manifest = read_manifest(out)
    assert manifest["prompt"].value_counts().to_dict() == {FEMALE_HF: 5, MALE_HEALTHY: 3}
    assert manifest["is_synthetic"].all()
    cells = with_cells(manifest)
    assert (cells.loc[manifest["prompt"] == FEMALE_HF].values == ["Female", "60s", "normal", "heart failure"]).all()
    real = read_manifest(dataset).set_index("subject_id")
    for row in manifest.to_dict("records"):
        # Masks come from real records of the prompted diagnosis, and no real id is in a file name.
        assert real.loc[row["mask_source"], "diagnosis"] == row["diagnosis"]
        assert "phantom" not in row["image_path"] and "phantom" not in row["mask_path"]
        with gzip.open(out / row["image_path"]) as handle:
            assert b"SYNTHETIC" in handle.read(400)
    for record in load_dataset(out):
        source = [r for r in load_dataset(dataset) if r.record_id == record.meta["mask_source_record"]][0]
        # By default the lender's mask, warped: no patient's exact heart geometry is reused.
        assert np.array_equal(record.mask, warp_mask(source.mask, np.random.default_rng([int(record.meta["seed"]), 1])))
        assert not np.array_equal(record.mask, source.mask)
    assert {"model_hash", "seed", "sampler", "guidance_scale", "mask_policy"} <= set(manifest.columns)


def test_same_seed_same_records_and_rerun_is_idempotent(dataset, model, tmp_path):
    plan = _plan((FEMALE_HF, 4, "matched"))
    a = generate(model, dataset, plan, tmp_path / "a", GenerateSettings(seed=3, batch_size=2), progress=False)
    before = (a / "manifest.csv").read_bytes()
    generate(model, dataset, plan, a, GenerateSettings(seed=3, batch_size=2), progress=False)
    assert (a / "manifest.csv").read_bytes() == before
    b = generate(model, dataset, plan, tmp_path / "b", GenerateSettings(seed=3, batch_size=2), progress=False)
    assert (b / "manifest.csv").read_bytes() == before
    c = generate(model, dataset, plan, tmp_path / "c", GenerateSettings(seed=4, batch_size=2), progress=False)
    assert (c / "manifest.csv").read_bytes() != before
    with pytest.raises(GenerationError, match="another model, dataset, plan or settings"):
        generate(model, dataset, plan, a, GenerateSettings(seed=5, batch_size=2), progress=False)


def test_the_generate_and_sample_commands(dataset, model, tmp_path, capsys):
    plan = plan_synthesis(read_manifest(dataset), PlanSettings(strategy="prevalence", target_prevalence=0.5,
                                                               attributes=("sex",), max_ratio_overall=0.1))
    planned = int(plan["synthetic_count"].sum())
    plan_path = write_plan(plan, tmp_path / "plan.csv")
    out = tmp_path / "synthetic"
    command = ["generate", "--model", str(model), "--dataset", str(dataset), "--plan", str(plan_path), "--out",
               str(out), "--steps", "2", "--quiet"]
    assert main(command) == 0 and main(command) == 0  # run again when complete: nothing changes
    assert len(read_manifest(out)) == planned and f"{planned} synthetic" in capsys.readouterr().out
    assert main([*command, "--seed", "1"]) == 1 and "--overwrite" in capsys.readouterr().err
    assert main([*command, "--seed", "1", "--overwrite"]) == 0 and read_manifest(out)["seed"].nunique() == planned

    mask = dataset / read_manifest(dataset)["mask_path"][0]
    drawn = tmp_path / "drawn"
    assert main(["sample", str(model), "--mask", str(mask), "--prompt", FEMALE_HF, "-n", "2", "--steps", "2",
                 "--out", str(drawn)]) == 0
    manifest = read_manifest(drawn)
    assert len(manifest) == 2 and manifest["is_synthetic"].all() and (manifest["prompt"] == FEMALE_HF).all()
    assert set(manifest["sampler_steps"]) == {2} and set(manifest["mask_source"]) == {str(mask)}
    assert main(["sample", str(model), "--mask", str(mask), "--prompt", "Female, Male, healthy", "--out",
                 str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "gives sex twice" in err and "Traceback" not in err and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(dataset, model, tmp_path):
    plan = plan_synthesis(read_manifest(dataset), PlanSettings(strategy="prevalence", target_prevalence=0.5,
                                                               attributes=("sex",)))
    total = int(plan["synthetic_count"].sum())
    assert total >= 10
    plan_path = write_plan(plan, tmp_path / "plan.csv")
    command = [sys.executable, "-m", "cardiofair", "generate", "--model", str(model), "--dataset", str(dataset),
               "--plan", str(plan_path), "--batch-size", "1", "--steps", "60", "--quiet"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(command + ["--out", str(killed)])
    try:
        # A guard against a hung process, not a measure: a busy machine takes its time.
        deadline = time.monotonic() + 600
        while len(list((killed / "rows").glob("batch-*.json"))) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "generation made no progress"
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    done_before_rerun = len(list((killed / "rows").glob("batch-*.json")))
    assert 3 <= done_before_rerun < total and not (killed / "manifest.csv").exists()
    assert subprocess.run(command + ["--out", str(killed)]).returncode == 0
    assert subprocess.run(command + ["--out", str(tmp_path / "straight")]).returncode == 0
    assert (killed / "manifest.csv").read_bytes() == (tmp_path / "straight" / "manifest.csv").read_bytes()
    made = read_manifest(killed)["cell"].value_counts()
    # The plan balances sex only; age and BMI in each prompt come from the record lending the mask.
    for row in read_manifest(killed).to_dict("records"):
        lender = read_manifest(dataset).set_index("record_id").loc[row["mask_source_record"]]
        assert row["prompt"] == build_prompt({**lender.to_dict(), "sex": row["sex"]})
    planned = plan.set_index("cell")["synthetic_count"]
    assert made.to_dict() == planned[planned > 0].to_dict()
    for row in read_manifest(killed).to_dict("records"):
        for column in ("image_path", "mask_path"):
            assert (killed / row[column]).read_bytes() == (tmp_path / "straight" / row[column]).read_bytes()


def test_masks_never_come_from_the_test_split(dataset, model, tmp_path):
    split = tmp_path / "split"
    manifest = read_manifest(dataset)
    manifest["split"] = np.where(np.arange(len(manifest)) % 2 == 0, "train", "test")
    shutil.copytree(dataset, split)
    manifest.to_csv(split / "manifest.csv", index=False)
    # The model trained before the split learned today's test subjects: refused.
    with pytest.raises(GenerationError, match=r"learned 30 validation, test or held-back subject"):
        generate(model, split, _plan((MALE_HEALTHY, 6, "random")), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    split_model = train(split, tmp_path / "split-model", TrainSettings.for_preset(get_preset("tiny"), max_steps=2),
                        progress_bar=False)
    out = generate(split_model, split, _plan((MALE_HEALTHY, 6, "random")), tmp_path / "syn", progress=False)
    test_subjects = set(manifest.loc[manifest.split == "test", "subject_id"])
    assert not set(read_manifest(out)["mask_source"]) & test_subjects
    merged = merge_datasets(split, out, tmp_path / "merged")
    merged_manifest = read_manifest(merged)
    assert not set(merged_manifest["subject_id"]) & test_subjects
    assert merged_manifest["is_synthetic"].sum() == 6 and len(merged_manifest) == 6 + (manifest.split == "train").sum()


def test_copy_policy_needs_real_records_of_the_cell(dataset, model, tmp_path):
    with pytest.raises(GenerationError, match="copy needs real records"):
        generate(model, dataset, _plan(("Female, age in 90s, obese BMI, heart failure", 2, "copy")), tmp_path / "s",
                 progress=False)


def test_without_a_diagnosis_any_training_record_lends_its_mask_matched_on_what_the_cell_names():
    rows = [{"record_id": f"r{i}", "subject_id": f"s{i}", "sex": "Female" if i < 4 else "Male", "age_years": None,
             "bmi": None, "diagnosis": None, "prompt": "", "is_synthetic": False} for i in range(10)]
    candidates = pd.DataFrame(rows)
    plan = plan_synthesis(candidates, PlanSettings(attributes=("sex",), min_real_support=1))
    jobs = plan_jobs(plan, candidates, GenerateSettings())
    assert [job.prompt for job in jobs].count("Female") == 2 and all(job.prompt == "Female" for job in jobs)
    assert {candidates.loc[job.source_index, "sex"] for job in jobs} == {"Female"}
    # With no sensitive attribute either, every record is a candidate.
    anyone = candidates.assign(sex=None)
    plan = plan_synthesis(anyone, PlanSettings(strategy="target", targets=pd.DataFrame({"target_count": [20]})))
    jobs = plan_jobs(plan, anyone, GenerateSettings())
    assert len(jobs) == 10 and {job.prompt for job in jobs} == {""}
    assert len({job.source_index for job in jobs}) > 3


def test_a_cell_without_a_diagnosis_is_refused_where_the_dataset_has_diagnoses():
    candidates = pd.DataFrame([{"record_id": "r0", "subject_id": "s0", "sex": "Female", "age_years": 65.0,
                                "bmi": 22.0, "diagnosis": "healthy", "prompt": "", "is_synthetic": False}])
    with pytest.raises(GenerationError, match="prompt 'Female' names no diagnosis, and the dataset's training "
                                              "records have diagnoses"):
        plan_jobs(_plan(("Female", 2, "matched")), candidates, GenerateSettings())


def test_a_model_of_another_size_is_refused_before_sampling(model, tmp_path):
    prepare_phantom(4, 0, tmp_path / "d64", progress=False, workers=1)
    with pytest.raises(GenerationError, match="--size 16"):
        generate(model, tmp_path / "d64", _plan((FEMALE_HF, 2, "matched")), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_mask_warp_preserves_labels_and_moves_little():
    mask = phantom_subject(0, 0, PhantomConfig())[0].mask
    warped = warp_mask(mask, np.random.default_rng(0))
    assert set(np.unique(warped)) == set(np.unique(mask))
    for label in (1, 2, 3):
        assert abs(int((warped == label).sum()) - int((mask == label).sum())) < 0.15 * (mask == label).sum()
    assert not np.array_equal(warped, mask)


def test_held_back_subjects_never_reach_the_generator(dataset, model, tmp_path):
    scarce = tmp_path / "scarce"
    shutil.copytree(dataset, scarce)
    manifest = read_manifest(scarce)
    splits = hold_back(manifest, assign_splits(manifest, test=0.2, val=0.2, seed=0), {"diagnosis": "healthy"},
                       keep=0.5, min_kept=1)
    write_splits(scarce, splits)
    held = manifest.loc[splits == "held_back", "subject_id"]
    kept = manifest.loc[splits == "train", "subject_id"]
    assert len(held) and len(kept)
    trained = train(scarce, tmp_path / "model", TrainSettings.for_preset(get_preset("tiny"), max_steps=1),
                    progress_bar=False)
    learned = set(TrainedGenerator(trained).info["training_subject_hashes"])
    assert learned == set(subject_hashes(kept)) and not learned & set(subject_hashes(held))
    # The module's model learned the unsplit cohort, held-back subjects included: refused here.
    with pytest.raises(GenerationError, match="learned"):
        generate(model, scarce, _plan((FEMALE_HF, 1, "matched")), tmp_path / "out", progress=False)


def test_a_grown_dose_keeps_the_records_already_made_and_a_smaller_one_drops_the_rest(dataset, model, tmp_path):
    plan = _plan((FEMALE_HF, 3, "matched"), (MALE_HEALTHY, 2, "matched"))
    out = tmp_path / "dosed"
    settings = GenerateSettings(seed=1, batch_size=2, steps=2)
    generate(model, dataset, plan, out, settings, progress=False)
    once = read_manifest(out).set_index("record_id")
    made = {path.name: path.stat().st_mtime_ns for path in (out / "rows").glob("batch-*.json")}
    images = {record_id: (out / once.loc[record_id, "image_path"]).read_bytes() for record_id in once.index}
    generate(model, dataset, plan, out, replace(settings, dose=2.0), progress=False)
    twice = read_manifest(out).set_index("record_id")
    assert len(twice) == 10 and set(once.index) <= set(twice.index)
    # Every batch of the smaller dose (its last, part-filled one too: batches never straddle a
    # whole dose) is kept as it was, and every record is the same to the bit.
    assert len(made) == 3 and all((out / "rows" / name).stat().st_mtime_ns == ns for name, ns in made.items())
    assert all((out / twice.loc[record_id, "image_path"]).read_bytes() == image for record_id, image in images.items())
    assert twice.groupby("cell")["planned_count"].first().to_dict() == {FEMALE_HF.replace(", ", "|"): 3,
                                                                         MALE_HEALTHY.replace(", ", "|"): 2}
    fresh = generate(model, dataset, plan, tmp_path / "fresh", replace(settings, dose=2.0), progress=False)
    assert (fresh / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    generate(model, dataset, plan, out, replace(settings, dose=0.5), progress=False)
    half = read_manifest(out)
    assert len(half) == 3 and len(list((out / "images").glob("*"))) == 3

