"""Every arm trains on the one split and nothing leaks into it: refusals, training sets, the
threshold post-processing."""

import numpy as np
import pandas as pd
import pytest
from downstream_fixtures import blank_attribute, rows_of, write_synthetic

from cardiofair.data.records import read_manifest
from cardiofair.data.split import SplitError
from cardiofair.downstream.arms import ARMS, ORACLE, Arm, arm_doses, training_set
from cardiofair.downstream.cohort import ExperimentError, load_cohort, planned_cells, positive_class
from cardiofair.downstream.threshold import equalized_odds_thresholds


def test_an_unsplit_dataset_is_refused_with_the_command_to_fix_it(dataset_copy):
    read_manifest(dataset_copy).drop(columns="split").to_csv(dataset_copy / "manifest.csv", index=False)
    with pytest.raises(SplitError, match="cardiofair split"):
        load_cohort(dataset_copy)


def test_a_subject_in_two_splits_is_refused(dataset_copy):
    manifest = read_manifest(dataset_copy)
    test_row = manifest[manifest["split"] == "test"].iloc[[0]]
    # The same subject again, as a training slice: its test images would be learned.
    leaked = test_row.assign(record_id=test_row["record_id"] + "-s1", split="train")
    pd.concat([manifest, leaked]).to_csv(dataset_copy / "manifest.csv", index=False)
    with pytest.raises(SplitError, match=f"{test_row['subject_id'].iloc[0]}.*more than one split"):
        load_cohort(dataset_copy)


def test_splits_never_mix(split_dataset):
    cohort = load_cohort(split_dataset)
    roles = cohort.table.groupby("subject_id")["role"].nunique()
    assert (roles == 1).all()
    for arm in ("real", "reweight", "oversample"):
        chosen = training_set(arm, cohort, seed=0, cells=planned_cells(cohort))
        assert set(cohort.table["role"].iloc[chosen.rows]) == {"train"}, arm


def test_a_synthetic_record_whose_mask_came_from_a_test_subject_is_refused(split_dataset, tmp_path):
    sources = rows_of(split_dataset, "train")[:3] + rows_of(split_dataset, "test")[:1]
    synthetic = write_synthetic(split_dataset, tmp_path / "leaky", sources)
    with pytest.raises(ExperimentError, match="outside the real training split.*a test subject"):
        load_cohort(split_dataset, synthetic)
    val_source = write_synthetic(split_dataset, tmp_path / "val-leak", rows_of(split_dataset, "val")[:1])
    with pytest.raises(ExperimentError, match="a val subject"):
        load_cohort(split_dataset, val_source)


def test_a_synthetic_dataset_of_another_size_or_with_real_records_is_refused(split_dataset, tmp_path):
    smaller = write_synthetic(split_dataset, tmp_path / "small", rows_of(split_dataset, "train")[:2], crop=16)
    with pytest.raises(ExperimentError, match=r"\(2, 16, 16\) pair .* \(2, 32, 32\)"):
        load_cohort(split_dataset, smaller)
    with pytest.raises(ExperimentError, match="not marked synthetic"):
        load_cohort(split_dataset, split_dataset)


def test_a_synthetic_prompt_outside_the_grammar_is_refused(split_dataset, tmp_path):
    synthetic = write_synthetic(split_dataset, tmp_path / "odd", rows_of(split_dataset, "train")[:2])
    manifest = read_manifest(synthetic)
    manifest.loc[0, "prompt"] = "Female, age in 60s, normal BMI, heart failure, tall"
    manifest.to_csv(synthetic / "manifest.csv", index=False)
    with pytest.raises(ExperimentError, match="prompt grammar"):
        load_cohort(split_dataset, synthetic)


def test_training_sets_of_the_arms(split_dataset, synthetic_dataset):
    cohort = load_cohort(split_dataset, synthetic_dataset)
    real = set(cohort.rows("train"))
    synthetic = set(cohort.rows("synthetic"))
    assert set(training_set("real", cohort, 0).rows) == real
    assert set(training_set("real+synthetic", cohort, 0).rows) == real | synthetic
    assert set(training_set("synthetic", cohort, 0).rows) == synthetic

    cells = planned_cells(cohort)
    # The cells are read from the synthetic dataset's `cell` column: sex x age x diagnosis.
    assert list(cells.columns[:3]) == ["sex", "age", "diagnosis"]
    assert cells["synthetic_count"].sum() == len(synthetic)

    reweight = training_set("reweight", cohort, 0, cells)
    keys = cohort.table.iloc[reweight.rows][["sex", "age", "diagnosis"]].astype(str).agg("|".join, axis=1)
    per_cell = pd.Series(reweight.weights, index=keys.to_numpy()).groupby(level=0).sum()
    assert np.allclose(per_cell, 1.0)  # every cell is drawn equally often

    dro = training_set("group-dro", cohort, 0, cells)
    assert set(dro.rows) == real and dro.weights is None and list(dro.groups) == list(keys)
    pretrain = training_set("synthetic-pretrain", cohort, 0, cells)
    assert set(pretrain.rows) == real and set(pretrain.pretrain) == synthetic

    oversample = training_set("oversample", cohort, 0, cells)
    extra = oversample.rows[len(real):]
    assert set(oversample.rows[:len(real)]) == real and set(extra) <= real
    table = cohort.table.iloc[extra]
    added = table.groupby(["sex", "age", "diagnosis"]).size()
    expected = cells.set_index(["sex", "age", "diagnosis"])["synthetic_count"]
    assert added.to_dict() == expected[expected > 0].to_dict()
    assert oversample.info["n_duplicates"] == len(synthetic)
    again = training_set("oversample", cohort, 0, cells)
    assert np.array_equal(again.rows, oversample.rows)
    assert not np.array_equal(training_set("oversample", cohort, 1, cells).rows, oversample.rows)


def test_every_registered_arm_builds_from_the_split_or_post_processes(split_dataset, synthetic_dataset):
    """What the registry promises of each arm, so that a new one is checked by being added."""
    cohort = load_cohort(split_dataset, synthetic_dataset)
    cells = planned_cells(cohort)
    for arm in ARMS.values():
        if arm.build is None:
            assert arm.post_process is not None and arm.trainings == 0
            with pytest.raises(ExperimentError, match="post-processes"):
                training_set(arm, cohort, 0, cells)
        elif ORACLE in arm.needs:
            with pytest.raises(ExperimentError, match="fresh subjects"):
                training_set(arm, cohort, 0, cells)
        else:
            chosen = training_set(arm, cohort, 0, cells)
            # Nothing outside the training split and the synthetic records reaches training.
            assert set(cohort.table["role"].iloc[chosen.rows]) <= {"train", "synthetic"}, arm.name
            assert chosen.info["n_records"] == len(chosen.rows) > 0 and arm.trainings >= 1
    with pytest.raises(ValueError, match="either"):
        Arm("both", "#000000", ARMS["real"].build, ARMS["threshold"].post_process)


def test_a_dosed_arm_runs_at_every_dose_under_its_own_name():
    runs = arm_doses((ARMS["real"], ARMS["reweight"], ARMS["oracle"]), (0.5, 1.0, 2.0))
    assert [run.name for run in runs] == ["real", "reweight", "oracle", "oracle@0.5", "oracle@2"]
    assert [(run.arm.name, run.dose) for run in runs[-2:]] == [("oracle", 0.5), ("oracle", 2.0)]


def test_arms_needing_synthetic_data_say_so(split_dataset):
    cohort = load_cohort(split_dataset)
    with pytest.raises(ExperimentError, match="--synthetic"):
        training_set("real+synthetic", cohort, 0)


def test_without_synthetic_data_oversampling_follows_the_planner(split_dataset):
    cohort = load_cohort(split_dataset)
    cells = planned_cells(cohort)
    assert list(cells.columns[:4]) == ["sex", "age", "bmi", "diagnosis"]
    assert cells["source"].iloc[0] == "plan_synthesis(PlanSettings())"
    chosen = training_set("oversample", cohort, 0, cells)
    assert chosen.info["n_duplicates"] + len(chosen.info["cells_without_real_records"]) > 0


def test_training_prevalence_is_set_once_for_all_arms(split_dataset):
    natural = load_cohort(split_dataset)
    cohort = load_cohort(split_dataset, train_prevalence=0.25, seed=0)
    train = cohort.subjects("train")
    assert train["label"].mean() == pytest.approx(0.25, abs=0.02)
    assert cohort.info["train_prevalence"]["achieved"] == pytest.approx(train["label"].mean(), abs=1e-4)
    for role in ("val", "test"):
        assert cohort.subjects(role).index.equals(natural.subjects(role).index)


def test_missing_sensitive_attribute_keeps_the_record_in_training(dataset_copy):
    train_ids = rows_of(dataset_copy, "train")[:7]
    blank_attribute(dataset_copy, "sex", train_ids)
    cohort = load_cohort(dataset_copy)
    chosen = training_set("real", cohort, 0)
    used = set(cohort.table["record_id"].iloc[chosen.rows])
    assert set(train_ids) <= used
    assert (cohort.table.set_index("record_id").loc[train_ids, "sex"] == "unknown").all()


def test_the_positive_class_may_be_several_diagnoses_or_every_disease():
    present = ["healthy", "dilated cardiomyopathy", "myocardial infarction", "unknown"]
    assert positive_class(("heart failure",), present) == (("heart failure",), "heart failure")
    assert positive_class(("dilated cardiomyopathy", "myocardial infarction"), present, "cardiomyopathy or MI") == \
        (("dilated cardiomyopathy", "myocardial infarction"), "cardiomyopathy or MI")
    assert positive_class(("non-healthy",), present) == \
        (("dilated cardiomyopathy", "myocardial infarction"), "any disease")
    with pytest.raises(ExperimentError, match="cannot be 'healthy'"):
        positive_class(("healthy",), present)


def test_a_cohort_labels_every_diagnosis_of_the_positive_set(dataset_copy):
    manifest = read_manifest(dataset_copy)
    failing = manifest.index[manifest["diagnosis"] == "heart failure"]
    manifest.loc[failing[::2], "diagnosis"] = "dilated cardiomyopathy"
    manifest.to_csv(dataset_copy / "manifest.csv", index=False)
    only_heart_failure = load_cohort(dataset_copy)
    assert len(only_heart_failure.excluded) == len(failing[::2])
    both = load_cohort(dataset_copy, positive=("heart failure", "dilated cardiomyopathy"), positive_name="failing")
    assert both.excluded == [] and both.positive_name == "failing"
    assert both.table["label"].sum() == len(failing) and len(both.records) == len(manifest)
    assert both.records.images.shape == (len(manifest), 2, 32, 32)


def test_equalized_odds_post_processing_closes_a_built_in_gap():
    rng = np.random.default_rng(0)

    def subjects(n):
        sex = pd.Series(rng.choice(["Female", "Male"], n))
        label = (rng.random(n) < 0.3).astype(int)
        # Women's heart failure scores lower: one threshold misses more of it.
        score = np.clip(0.25 + 0.5 * label - 0.2 * label * (sex == "Female") + 0.12 * rng.standard_normal(n), 0, 1)
        return sex, label, score

    val_sex, val_label, val_score = subjects(1500)
    test_sex, test_label, test_score = subjects(3000)
    single = (test_score >= 0.55).astype(int)
    decisions, probabilities, unadjusted = equalized_odds_thresholds(val_score, val_label, val_sex, test_score,
                                                                     test_sex, fallback_threshold=0.55, seed=0)
    assert unadjusted == {}

    def tpr_gap(pred):
        tpr = pd.Series(pred[test_label == 1]).groupby(test_sex[test_label == 1].to_numpy()).mean()
        return tpr["Male"] - tpr["Female"]

    assert tpr_gap(single) > 0.3 and abs(tpr_gap(decisions)) < 0.08
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    again, _, _ = equalized_odds_thresholds(val_score, val_label, val_sex, test_score, test_sex, 0.55, seed=0)
    assert np.array_equal(again, decisions)
    # A test subject of unknown sex keeps the plain threshold's decision.
    unknown = test_sex.copy()
    unknown[:10] = "unknown"
    kept, _, unadjusted = equalized_odds_thresholds(val_score, val_label, val_sex, test_score, unknown, 0.55, seed=0)
    assert np.array_equal(kept[:10], single[:10]) and unadjusted == {"unknown": "group unknown"}
    # So does a group whose validation subjects are all healthy: no thresholds can be placed for it.
    healthy_women = ~((val_sex == "Female") & (val_label == 1)).to_numpy()
    kept, _, unadjusted = equalized_odds_thresholds(val_score[healthy_women], val_label[healthy_women],
                                                    val_sex[healthy_women], test_score, test_sex, 0.55, seed=0)
    assert unadjusted == {"Female": "no validation subjects with the diagnosis"}
    women = (test_sex == "Female").to_numpy()
    assert np.array_equal(kept[women], single[women]) and not np.array_equal(kept[~women], single[~women])
