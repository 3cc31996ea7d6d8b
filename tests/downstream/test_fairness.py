"""`cardiofair fairness` (and its earlier name, `cardiofair evaluate fairness`) end to end on a tiny
phantom: the report, its files, the same seeds for every arm, determinism, groupings a cohort
cannot measure, and bad input through the command line."""

import json

import numpy as np
import pandas as pd
import pytest
from downstream_fixtures import blank_attribute, rows_of, write_synthetic

from cardiofair.cli import main
from cardiofair.data.records import read_manifest
from cardiofair.downstream.arms import ARMS
from cardiofair.downstream.fairness import evaluate_runs
from cardiofair.metrics.group_metrics import bootstrap_weights
from cardiofair.report.tables import dose_series
from cardiofair.results import FairnessResult

FAST = ["--repeats", "2", "--epochs", "2", "--patience", "1", "--bootstrap", "50", "--quiet"]


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _test_subjects(dataset):
    manifest = read_manifest(dataset)
    return set(manifest.loc[manifest["split"] == "test", "subject_id"])


def test_evaluate_fairness_writes_the_report_tables_and_predictions(split_dataset, synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "fairness"
    argv = ["evaluate", "fairness", "--real", str(split_dataset), "--synthetic", str(synthetic_dataset),
            "--out", str(out), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Paired difference against 'real'" in printed and "TPR Female-Male" in printed
    assert printed.startswith("Real+synthetic closed ") and "of the oracle's change of TPR Female - Male" in printed
    assert "; the rest is a prior shift); against reweight: " in printed.splitlines()[0]
    assert "d AUROC Female" in printed  # threshold-free: what the arm taught about the group
    assert "d TPR at FPR 0.1 Female" in printed  # each group's own threshold: apart from the prior shift
    assert "Arm against arm, paired over the same seeds" in printed and "real+synthetic - oversample" in printed
    assert "Too small for sex&age gaps and worst-group figures (fewer than 10 positives or negatives" in printed
    report = json.loads((out / "fairness.json").read_text())
    default = {arm.name for arm in ARMS.values() if not arm.opt_in}
    assert set(report["arms"]) == default and set(report["comparisons"]) == default - {"real"}
    for arm, entry in report["arms"].items():
        assert [run["seed"] for run in entry["training"]] == [0, 1], arm
        sex = entry["attributes"]["sex"]
        assert set(sex["groups"]) == {"Female", "Male"} and sex["reference_group"] == "Male"
        assert {"mean", "interval", "bootstrap_interval", "values", "reason"} <= set(sex["gaps"]["equalized_odds_difference"])
        assert "sex&age" in entry["attributes"]
    comparison = report["comparisons"]["reweight"]["attributes"]["sex"]["gaps"]["equal_opportunity_difference"]
    assert {"difference", "interval", "bootstrap_interval", "p_value", "p_holm", "n_pairs"} <= set(comparison)
    # Arm against arm, paired over the same seeds: the difference of the two arms' changes against real.
    assert [(pair["arm"], pair["other"]) for pair in report["versus"]] == [("real+synthetic", "reweight"),
                                                                          ("real+synthetic", "oversample")]
    checked = 0
    for pair in report["versus"]:
        for path in (("overall", "balanced_accuracy"), ("overall", "roc_auc"),
                     ("attributes", "sex", "gaps", "equal_opportunity_difference"),
                     ("attributes", "sex", "groups", "Female", "true_positive_rate_vs_reference"),
                     ("attributes", "sex", "groups", "Female", "roc_auc"),
                     ("attributes", "sex", "groups", "Female", "true_positive_rate_at_matched_fpr")):
            versus, mine, theirs = (_at(tree, path) for tree in (pair["comparisons"], report["comparisons"][pair["arm"]],
                                                                 report["comparisons"][pair["other"]]))
            if mine["difference"] is None or theirs["difference"] is None:
                continue  # a measure this tiny test set leaves undefined
            assert versus["difference"] == pytest.approx(mine["difference"] - theirs["difference"], abs=1e-12), path
            assert versus["n_pairs"] == 2
            # No p-value where the two arms' differences do not vary (a tiny group's AUROC of 1 in both).
            assert versus["p_value"] is None or 0.0 <= versus["p_value"] <= versus["p_holm"] <= 1.0
            checked += 1
    assert checked >= 6
    threshold = report["arms"]["threshold"]["attributes"]["sex"]["groups"]["Female"]
    # Post-processing moves decisions, not the model's scores: at a matched FPR it is the real model.
    assert threshold["true_positive_rate_at_matched_fpr"] == \
        report["arms"]["real"]["attributes"]["sex"]["groups"]["Female"]["true_positive_rate_at_matched_fpr"]
    training = {arm: report["arms"][arm]["training"][0] for arm in ("real", "real+synthetic", "synthetic", "oversample")}
    n_synthetic = len(read_manifest(synthetic_dataset))
    assert training["real+synthetic"]["n_synthetic"] == n_synthetic
    assert training["synthetic"]["n_real"] == 0
    assert training["oversample"]["n_records"] == training["real"]["n_records"] + n_synthetic
    assert report["data"]["splits"]["test"]["subjects"] == len(_test_subjects(split_dataset))
    cells = report["arms"]["real"]["attributes"]["sex&age"]
    assert cells["too_small"] and all(min(c.values()) < 10 for c in cells["too_small"].values())

    predictions = pd.read_csv(out / "predictions.csv", dtype={"subject_id": str})
    test = _test_subjects(split_dataset)
    assert set(predictions["subject_id"]) == test  # test subjects only, never train or val
    assert len(predictions) == len(default) * 2 * len(test)
    assert (predictions.groupby(["arm", "repeat"])["subject_id"].nunique() == len(test)).all()
    assert {"score", "prediction", "threshold", "sex", "age", "bmi"} <= set(predictions.columns)
    groups = pd.read_csv(out / "groups.csv")
    female_tpr = groups[(groups["arm"] == "real") & (groups["attribute"] == "sex") & (groups["group"] == "Female")
                        & (groups["measure"] == "true_positive_rate")]
    assert len(female_tpr) == 1 and {"bootstrap_low", "interval_high", "reason"} <= set(groups.columns)
    assert {"equalized_odds_difference", "balanced_accuracy_group_min"} <= set(pd.read_csv(out / "gaps.csv")["measure"])
    compared = pd.read_csv(out / "comparisons.csv")
    assert set(compared["arm"]) == default - {"real"}
    assert set(compared.loc[compared["reference"] != "real", "reference"]) == {"reweight", "oversample"}
    by_repeat = pd.read_csv(out / "groups_by_repeat.csv")
    assert {"true_positive_rate", "false_positive_rate", "roc_auc", "selection_rate", "count"} <= set(by_repeat.columns)
    assert set(pd.read_csv(out / "training.csv")["arm"]) == default - {"threshold"}

    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_same_command_same_results(split_dataset, tmp_path):
    for name in ("a", "b"):
        assert main(["fairness", "--real", str(split_dataset), "--arms", "real,threshold",
                     "--out", str(tmp_path / name), *FAST]) == 0
    for file in ("predictions.csv", "fairness.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


def test_a_missing_attribute_is_reported_and_the_subjects_kept(dataset_copy, tmp_path, capsys):
    test_ids, train_ids = rows_of(dataset_copy, "test")[:4], rows_of(dataset_copy, "train")[:6]
    blank_attribute(dataset_copy, "sex", test_ids + train_ids)
    out = tmp_path / "fairness"
    assert main(["evaluate", "fairness", "--real", str(dataset_copy), "--arms", "real,reweight", "--out", str(out),
                 *FAST]) == 0
    assert "left out of its groups (not of training or overall metrics): sex 4" in capsys.readouterr().out
    report = json.loads((out / "fairness.json").read_text())
    sex = report["arms"]["real"]["attributes"]["sex"]
    assert sex["excluded_unknown"] == 4 and report["arms"]["real"]["attributes"]["age"]["excluded_unknown"] == 0
    assert sex["groups"]["Female"]["count"]["mean"] + sex["groups"]["Male"]["count"]["mean"] == \
        report["data"]["splits"]["test"]["subjects"] - 4
    assert report["arms"]["real"]["training"][0]["n_records"] == len(rows_of(dataset_copy, "train"))
    predictions = pd.read_csv(out / "predictions.csv")
    assert (predictions["sex"] == "unknown").sum() == 4 * 2 * 2  # kept in predictions for both arms and repeats


def test_an_attribute_no_test_subject_has_is_left_out_with_the_reason(dataset_copy, tmp_path, capsys):
    # As in ACDC: nobody's sex or age is known.
    blank_attribute(dataset_copy, "sex", read_manifest(dataset_copy)["record_id"].tolist())
    blank_attribute(dataset_copy, "age_years", read_manifest(dataset_copy)["record_id"].tolist())
    out = tmp_path / "fairness"
    assert main(["fairness", "--real", str(dataset_copy), "--arms", "real,threshold", "--threshold-attribute", "bmi",
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Left out: sex (sex unknown for every test subject)" in printed
    assert "Left out: sex&age (sex and age unknown for every test subject)" in printed
    report = json.loads((out / "fairness.json").read_text())
    assert set(report["data"]["skipped_groupings"]) == {"sex", "age", "sex&age"}
    assert set(report["arms"]["real"]["attributes"]) == {"bmi"}
    assert set(pd.read_csv(out / "groups.csv")["attribute"]) == {"bmi"}


def test_bad_input_is_refused_by_the_command(split_dataset, tmp_path, capsys):
    leaky = write_synthetic(split_dataset, tmp_path / "leaky", rows_of(split_dataset, "test")[:1])
    assert main(["evaluate", "fairness", "--real", str(split_dataset), "--synthetic", str(leaky),
                 "--out", str(tmp_path / "o"), *FAST]) == 1
    assert "outside the real training split" in capsys.readouterr().err
    assert main(["evaluate", "fairness", "--real", str(split_dataset), "--arms", "reweight,synthetic",
                 "--out", str(tmp_path / "o"), *FAST]) == 1
    assert "must include 'real'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_doses_scale_the_added_records_of_each_dosed_arm_and_draw_a_dose_response(split_dataset, tmp_path, capsys):
    # A synthetic dataset made at dose 2: every cell holds twice its planned count.
    sources = rows_of(split_dataset, "train", "heart failure", "Female") * 4
    synthetic = write_synthetic(split_dataset, tmp_path / "synthetic", sources, dose=2)
    out = tmp_path / "fairness"
    assert main(["fairness", "--real", str(split_dataset), "--synthetic", str(synthetic), "--arms",
                 "real,real+synthetic,oversample,oracle", "--doses", "0.5,1,2", "--phantom-test-subjects", "32",
                 "--out", str(out), *FAST]) == 0
    report = json.loads((out / "fairness.json").read_text())
    planned = len(sources) // 2
    added = {"real+synthetic": "n_synthetic", "oracle": "n_oracle", "oversample": "n_records"}
    for arm, column in added.items():
        counts = {dose: report["arms"][name]["training"][0][column] for dose, name in
                  ((0.5, f"{arm}@0.5"), (1.0, arm), (2.0, f"{arm}@2"))}
        base = report["arms"]["real"]["training"][0]["n_records"] if arm == "oversample" else 0
        assert {d: n - base for d, n in counts.items()} == {0.5: planned // 2, 1.0: planned, 2.0: 2 * planned}, arm
    # Each arm at a dose is measured against the oracle at that dose.
    assert report["oracle_shares"]["arms"]["oversample@2"]["oracle_arm"] == "oracle@2"
    series = dose_series(FairnessResult.load(out))
    assert set(series["arm"]) == set(added) and sorted(series["dose"].unique()) == [0.0, 0.5, 1.0, 2.0]
    # A dose the synthetic dataset cannot supply says how many records are missing.
    assert main(["fairness", "--real", str(split_dataset), "--synthetic", str(synthetic), "--arms",
                 "real,real+synthetic", "--doses", "1,3", "--out", str(tmp_path / "f3"), *FAST]) == 1
    assert f"({len(sources) // 2} missing): run `cardiofair generate`" in capsys.readouterr().err


def test_a_dose_needs_records_ranked_in_their_cell(split_dataset, synthetic_dataset, tmp_path, capsys):
    assert main(["fairness", "--real", str(split_dataset), "--synthetic", str(synthetic_dataset), "--arms",
                 "real,real+synthetic", "--doses", "1,2", "--out", str(tmp_path / "f"), *FAST]) == 1
    assert "cell_rank" in capsys.readouterr().err and not (tmp_path / "f").exists()


def test_the_literature_arms_run_when_named(split_dataset, synthetic_dataset, tmp_path):
    out = tmp_path / "fairness"
    assert main(["fairness", "--real", str(split_dataset), "--synthetic", str(synthetic_dataset), "--arms",
                 "real,group-dro,synthetic-pretrain", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "fairness.json").read_text())
    assert set(report["comparisons"]) == {"group-dro", "synthetic-pretrain"}
    n_synthetic = len(read_manifest(synthetic_dataset))
    for run in report["arms"]["synthetic-pretrain"]["training"]:
        # Pretrained on every synthetic record, then fine-tuned on the real ones only.
        assert run["n_pretrain"] == n_synthetic and run["n_synthetic"] == 0 and run["epochs_run"] >= 2
    assert "group DRO" in report["arms"]["group-dro"]["training"][0]["sampling"]



def test_runs_evaluated_in_worker_processes_give_what_one_process_gives():
    rng = np.random.default_rng(0)
    n = 300
    groups = pd.DataFrame({"sex": rng.choice(["Female", "Male"], n), "age": rng.choice(["50s", "60s", "70s"], n)})
    predictions = []
    for _ in range(3):
        label = rng.integers(0, 2, n)
        score = np.clip(0.3 * label + 0.7 * rng.random(n), 0.0, 1.0)
        predictions.append(pd.DataFrame({"label": label, "prediction": (score > 0.5).astype(int), "score": score}))
    shared = {"groups": groups, "attributes": {"sex": ("sex",), "sex&age": ("sex", "age")},
              "references": {"sex": "Male"}, "weights": bootstrap_weights(n, 50, 0), "min_group_size": 5}
    alone, pooled = (evaluate_runs(predictions, shared, workers=w) for w in (1, 2))
    assert len(alone) == len(pooled) == 3
    for a, b in zip(alone, pooled):
        assert a.values.keys() == b.values.keys() and a.draws.keys() == b.draws.keys()
        np.testing.assert_array_equal(np.array(list(a.values.values())), np.array(list(b.values.values())))
        for key, draws in a.draws.items():
            np.testing.assert_array_equal(draws, b.draws[key])
        for name, table in a.tables.items():
            pd.testing.assert_frame_equal(table, b.tables[name])
    # The runs differ, so equal results are not one run evaluated three times.
    assert alone[0].values != alone[1].values


def test_a_comparison_naming_an_arm_that_does_not_run_is_refused_before_training(split_dataset, tmp_path, capsys):
    argv = ["fairness", "--real", str(split_dataset), "--arms", "real,reweight", "--versus", "reweight:oversample",
            "--out", str(tmp_path / "f"), *FAST]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "compares arm(s) ['oversample'] that do not run; the arms that run: ['real', 'reweight']" in error
    assert main([*argv[:-len(FAST) - 2], "--versus", "reweight", "--out", str(tmp_path / "g"), *FAST]) == 1
    assert "--versus must be pairs of two different arms written ARM:OTHER, got 'reweight'" in capsys.readouterr().err
