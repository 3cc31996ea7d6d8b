"""Fairness measures against fairlearn and against numbers worked out by hand; intervals that
find a built-in bias and do not invent one."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    balanced_accuracy_score_group_min,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equal_opportunity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cardiofair.io import json_ready
from cardiofair.metrics.group_metrics import (
    MATCHED_TPR,
    RATE_METRICS,
    bootstrap_weights,
    detectable_change,
    evaluate_repeat,
    gap_values,
    group_table,
    holm,
    matched_fpr_decisions,
    measurable_groupings,
    paired_difference,
    power_sentence,
    reference_groups,
    share_of_oracle,
    summarise_arms,
    t_interval,
    too_small_notes,
    weighted_rates,
)

SEX = {"sex": ("sex",)}


def _random_predictions(n=600, seed=0, groups=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    group = rng.choice(groups, n)
    y = rng.integers(0, 2, n)
    score = np.clip(0.35 * y + 0.65 * rng.random(n) - 0.1 * (group == groups[0]), 0, 1)
    return y, (score >= 0.5).astype(int), score, pd.Series(group)


def test_group_table_and_gaps_match_fairlearn():
    y, pred, score, group = _random_predictions()
    table = group_table(y, pred, score, group)
    for name, function in {"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate,
                           "selection_rate": selection_rate, "balanced_accuracy": balanced_accuracy_score}.items():
        expected = MetricFrame(metrics=function, y_true=y, y_pred=pred, sensitive_features=group).by_group
        assert np.allclose(table[name].to_numpy(), expected.to_numpy()), name
    for g in table.index:
        assert table.at[g, "roc_auc"] == pytest.approx(roc_auc_score(y[group == g], score[group == g]))
        assert table.at[g, "count"] == (group == g).sum()
    gaps = gap_values({m: table[m].to_numpy() for m in RATE_METRICS})
    fairlearn_gaps = {
        "demographic_parity_difference": demographic_parity_difference,
        "demographic_parity_ratio": demographic_parity_ratio,
        "equalized_odds_difference": equalized_odds_difference,
        "equalized_odds_ratio": equalized_odds_ratio,
        "equal_opportunity_difference": equal_opportunity_difference,
        "equal_opportunity_ratio": equal_opportunity_ratio,
    }
    for name, function in fairlearn_gaps.items():
        assert gaps[name] == pytest.approx(function(y, pred, sensitive_features=group)), name
    assert gaps["balanced_accuracy_group_min"] == pytest.approx(
        balanced_accuracy_score_group_min(y, pred, sensitive_features=group))
    assert gaps["balanced_accuracy_difference"] == pytest.approx(
        MetricFrame(metrics=balanced_accuracy_score, y_true=y, y_pred=pred, sensitive_features=group).difference())


def test_measures_by_hand():
    # Women: 2 positives (1 found), 2 negatives (1 false alarm). Men: 2 positives (both found),
    # 2 negatives (none called).
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    pred = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    sex = pd.DataFrame({"sex": ["Female"] * 4 + ["Male"] * 4})
    result = evaluate_repeat(y, pred, pred.astype(float), sex, SEX)
    gaps = {path[-1]: v for path, v in result.values.items() if path[:3] == ("attributes", "sex", "gaps")}
    assert gaps["equal_opportunity_difference"] == pytest.approx(0.5)
    assert gaps["equal_opportunity_ratio"] == pytest.approx(0.5)
    assert gaps["equalized_odds_difference"] == pytest.approx(0.5)  # max(TPR gap 0.5, FPR gap 0.5)
    assert gaps["demographic_parity_difference"] == pytest.approx(0.0)  # both call half positive
    assert gaps["balanced_accuracy_group_min"] == pytest.approx(0.5)
    assert gaps["balanced_accuracy_difference"] == pytest.approx(0.5)
    assert result.descriptions["sex"]["reference_group"] == "Female"  # tie on positives and size: first
    assert result.values[("attributes", "sex", "groups", "Male", "true_positive_rate_vs_reference")] == 0.5
    assert result.values[("overall", "true_positive_rate")] == pytest.approx(0.75)


def test_weighted_rates_are_fairlearns_with_sample_weights():
    y, pred, _, group = _random_predictions(n=300, seed=1)
    codes = pd.Categorical(group).codes
    weights = bootstrap_weights(len(y), 3, seed=5)
    assert (weights.sum(axis=1) == len(y)).all()
    rates = weighted_rates(y, pred, codes, 3, weights)
    for b in range(3):
        for name, function in {"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate,
                               "selection_rate": selection_rate, "balanced_accuracy": balanced_accuracy_score}.items():
            frame = MetricFrame(metrics=function, y_true=y, y_pred=pred, sensitive_features=group,
                                sample_params={"sample_weight": weights[b]})
            assert np.allclose(rates[name][b], frame.by_group.to_numpy()), (name, b)


def test_a_perfect_classifier_has_zero_gaps():
    rng = np.random.default_rng(2)
    sex = pd.DataFrame({"sex": rng.choice(["Female", "Male"], 400)})
    y = (rng.random(400) < np.where(sex["sex"] == "Female", 0.1, 0.3)).astype(int)
    result = evaluate_repeat(y, y, y.astype(float), sex, SEX, bootstrap_weights(400, 200, 0))
    gaps = {path[-1]: v for path, v in result.values.items() if path[:3] == ("attributes", "sex", "gaps")}
    for name in ("equalized_odds_difference", "equal_opportunity_difference", "balanced_accuracy_difference"):
        assert gaps[name] == 0.0, name
        assert np.all(result.draws[("attributes", "sex", "gaps", name)] == 0.0), name
    assert gaps["equal_opportunity_ratio"] == 1.0 and gaps["balanced_accuracy_group_min"] == 1.0
    # No group has a false positive, so the FPR ratio (and equalized odds ratio) is 0/0: undefined, said why.
    assert math.isnan(gaps["equalized_odds_ratio"])
    assert result.reasons[("attributes", "sex", "gaps", "equalized_odds_ratio")] == "every group has false_positive_rate 0"
    # Demographic parity is not a gap of the classifier here: it is the difference in prevalence.
    prevalence = pd.Series(y).groupby(sex["sex"]).mean()
    assert gaps["demographic_parity_difference"] == pytest.approx(prevalence.max() - prevalence.min())


def _repeats(tpr_female, tpr_male, n_repeats=5, n=500, seed=0):
    rng = np.random.default_rng(seed)
    sex = pd.DataFrame({"sex": rng.choice(["Female", "Male"], n)})
    y = (rng.random(n) < 0.3).astype(int)
    weights = bootstrap_weights(n, 500, seed)
    results = []
    for _ in range(n_repeats):
        found = rng.random(n) < np.where(sex["sex"] == "Female", tpr_female, tpr_male)
        pred = np.where(y == 1, found, rng.random(n) < 0.05).astype(int)
        results.append(evaluate_repeat(y, pred, pred + 0.1 * rng.random(n), sex, SEX, weights))
    return results


def test_a_classifier_biased_by_construction_shows_the_gap_with_an_interval_excluding_zero():
    arms, comparisons = summarise_arms({"real": _repeats(0.5, 0.9), "fair": _repeats(0.85, 0.85, seed=1)})
    biased = arms["real"]["attributes"]["sex"]
    assert biased["reference_group"] == "Male"
    signed = biased["groups"]["Female"]["true_positive_rate_vs_reference"]
    assert signed["mean"] == pytest.approx(-0.4, abs=0.08)
    assert signed["interval"][1] < 0 and signed["bootstrap_interval"][1] < 0
    gap = biased["gaps"]["equal_opportunity_difference"]
    assert gap["interval"][0] > 0.25 and gap["bootstrap_interval"][0] > 0.2
    # The same machinery on a classifier fair by construction: the signed interval holds zero.
    fair = arms["fair"]["attributes"]["sex"]["groups"]["Female"]["true_positive_rate_vs_reference"]
    assert fair["bootstrap_interval"][0] < 0 < fair["bootstrap_interval"][1]
    # ... and the paired comparison says the fair arm closed the gap, with its uncertainty.
    change = comparisons["fair"]["attributes"]["sex"]["groups"]["Female"]["true_positive_rate_vs_reference"]
    assert change["difference"] == pytest.approx(0.4, abs=0.1)
    assert change["interval"][0] > 0 and change["bootstrap_interval"][0] > 0 and change["p_value"] < 0.01
    assert change["p_holm"] == change["p_value"]  # one arm compared: Holm changes nothing


def test_a_group_without_positives_is_undefined_with_its_reason_never_zero():
    y = np.array([1, 0, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 0, 0, 0, 1, 0, 1, 0])
    age = pd.DataFrame({"age": ["60s", "60s", "60s", "60s", "40s", "40s", "70s", "70s"]})
    result = evaluate_repeat(y, pred, pred.astype(float), age, {"age": ("age",)}, bootstrap_weights(8, 50, 0))
    table = result.tables["age"]
    assert math.isnan(table.at["40s", "true_positive_rate"]) and table.at["40s", "false_positive_rate"] == 0.5
    assert math.isnan(table.at["40s", "balanced_accuracy"]) and math.isnan(table.at["40s", "roc_auc"])
    path = ("attributes", "age", "groups", "40s", "true_positive_rate")
    assert result.reasons[path] == "no positives in group"
    # The gap leaves the group out and says so; fairlearn would count it as a TPR of 0.
    gap_path = ("attributes", "age", "gaps", "equal_opportunity_difference")
    assert result.values[gap_path] == pytest.approx(0.5)  # 70s found 1/1, 60s 1/2
    assert result.left_out[gap_path] == ["40s (no positives in group)"]
    assert equal_opportunity_difference(y, pred, sensitive_features=age["age"]) == pytest.approx(1.0)
    arms, _ = summarise_arms({"real": [result, result]})
    entry = json.loads(json.dumps(json_ready(arms["real"]["attributes"]["age"]["groups"]["40s"]["true_positive_rate"]),
                                  allow_nan=False))
    assert entry["mean"] is None and entry["values"] == [None, None] and entry["reason"] == "no positives in group"
    assert arms["real"]["attributes"]["age"]["gaps"]["equal_opportunity_difference"]["groups_left_out"] == \
        ["40s (no positives in group)"]


def test_with_fewer_than_two_defined_groups_a_gap_is_undefined():
    y = np.array([1, 0, 0, 0])
    sex = pd.DataFrame({"sex": ["Female", "Female", "Male", "Male"]})
    result = evaluate_repeat(y, y, y.astype(float), sex, SEX)
    path = ("attributes", "sex", "gaps", "equal_opportunity_difference")
    assert math.isnan(result.values[path])
    assert result.reasons[path] == "fewer than two groups with a defined true_positive_rate"


def test_an_unknown_attribute_leaves_the_subject_out_of_that_attribute_only():
    rng = np.random.default_rng(3)
    groups = pd.DataFrame({"sex": rng.choice(["Female", "Male"], 100), "age": rng.choice(["50s", "60s"], 100)})
    groups.loc[:9, "age"] = "unknown"
    y = rng.integers(0, 2, 100)
    result = evaluate_repeat(y, y, y.astype(float), groups, {"sex": ("sex",), "age": ("age",),
                                                            "sex&age": ("sex", "age")})
    assert result.descriptions["age"]["excluded_unknown"] == 10
    assert result.descriptions["sex&age"]["excluded_unknown"] == 10
    assert result.descriptions["sex"]["excluded_unknown"] == 0
    assert result.tables["age"]["count"].sum() == 90 and "unknown" not in result.tables["age"].index
    assert result.tables["sex"]["count"].sum() == 100 and result.tables["overall"].at["all", "count"] == 100
    assert set(result.tables["sex&age"].index) <= {"Female|50s", "Female|60s", "Male|50s", "Male|60s"}


def test_a_grouping_no_subject_can_be_placed_in_is_left_out_with_the_reason():
    groups = pd.DataFrame({"sex": ["unknown"] * 4, "age": ["50s", "60s", "unknown", "unknown"],
                           "bmi": ["unknown", "unknown", "obese", "normal"]})
    kept, skipped = measurable_groupings({"sex": ("sex",), "age": ("age",), "sex&age": ("sex", "age"),
                                          "age&bmi": ("age", "bmi"), "bmi": ("bmi",)}, groups, "test subject")
    assert kept == {"age": ("age",), "bmi": ("bmi",)}
    assert skipped == {"sex": "sex unknown for every test subject",
                       "sex&age": "sex unknown for every test subject",
                       "age&bmi": "no test subject has age and bmi known together"}


def test_intervals_paired_test_and_holm():
    values = [0.61, 0.58, 0.66, 0.63, 0.60]
    mean, low, high, n = t_interval(values + [None, math.nan])
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert n == 5 and (low, high) == pytest.approx(expected) and mean == pytest.approx(np.mean(values))
    reference = [0.55, 0.57, 0.60, 0.55, 0.58]
    paired = paired_difference(values, reference)
    assert paired["p_value"] == pytest.approx(stats.ttest_rel(values, reference).pvalue)
    assert paired["difference"] == pytest.approx(np.mean(np.subtract(values, reference)))
    assert paired_difference([0.5, 0.5], [0.4, 0.4])["reason"].startswith("the differences do not vary")
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 0.03, max(0.06, 0.03), max(0.04, 0.06).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)


def test_fairness_code_never_imports_torch():
    code = "import sys, cardiofair.metrics.group_metrics, cardiofair.downstream.arms; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_worst_group_figures_skip_small_groups_and_list_them_with_their_counts():
    # Group "c" has 3 positives: with them it decides the worst group (all missed), without
    # them the worst group is "b".
    y = np.array([1] * 20 + [0] * 20 + [1] * 20 + [0] * 20 + [1] * 3 + [0] * 30)
    pred = np.array([1] * 20 + [0] * 20 + [1] * 15 + [0] * 5 + [0] * 20 + [0] * 3 + [0] * 30)
    groups = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 40 + ["c"] * 33})
    grouping = {"g": ("g",)}
    worst = ("attributes", "g", "gaps", "balanced_accuracy_group_min")
    spread = ("attributes", "g", "gaps", "balanced_accuracy_difference")
    every = evaluate_repeat(y, pred, pred.astype(float), groups, grouping, bootstrap_weights(len(y), 50, 0))
    assert every.values[worst] == pytest.approx(0.5) and every.values[spread] == pytest.approx(0.5)
    large = evaluate_repeat(y, pred, pred.astype(float), groups, grouping, bootstrap_weights(len(y), 50, 0),
                            min_group_size=10)
    assert large.values[worst] == pytest.approx(0.875) and large.values[spread] == pytest.approx(0.125)
    assert large.left_out[worst] == ["c (too small: 3 positives, 30 negatives; needs 10 of each)"]
    assert large.descriptions["g"]["too_small"] == {"c": {"positives": 3, "negatives": 30}}
    # The group's own rates are still reported.
    assert large.values[("attributes", "g", "groups", "c", "true_positive_rate")] == 0.0
    assert np.all(large.draws[worst] >= 0.75)
    none = evaluate_repeat(y, pred, pred.astype(float), groups, grouping, min_group_size=50)
    assert math.isnan(none.values[worst]) and "no group is large enough" in none.reasons[worst]
    arms, _ = summarise_arms({"real": [large]})
    assert too_small_notes(arms["real"]["attributes"]) == [
        "Too small for g gaps and worst-group figures (fewer than 10 positives or negatives in test): c (3 pos., 30 neg.)"]


def test_the_detectable_change_of_a_gap_follows_from_the_positives_in_test():
    entry = detectable_change({"Female": 100, "Male": 400}, "Male")
    error = math.sqrt(0.25 / 100 + 0.25 / 400)
    assert entry["group"] == "Female" and entry["half_width"] == pytest.approx(1.959964 * error)
    assert entry["minimum_detectable_change"] == pytest.approx((1.959964 + 0.841621) * error)
    # Four times the positives halve both.
    larger = detectable_change({"Female": 400, "Male": 1600}, "Male")
    assert larger["half_width"] == pytest.approx(entry["half_width"] / 2)
    # The group with fewest positives is the one compared; none at all cannot be measured.
    assert detectable_change({"40s": 3, "50s": 30, "60s": 90}, "60s")["group"] == "40s"
    assert "fewer than two groups" in detectable_change({"Female": 0, "Male": 50}, "Male")["reason"]
    assert power_sentence(entry, "sex").startswith("Power: with 100 positives in Female, 400 in Male")


def test_a_tie_in_test_positives_takes_the_reference_from_training():
    test = pd.DataFrame({"sex": ["Female", "Male"] * 50, "label": [1, 1, 0, 0] * 25})
    train = pd.DataFrame({"sex": ["Female"] * 10 + ["Male"] * 30, "label": [1] * 40})
    assert reference_groups(test, train, SEX) == {"sex": "Male"}
    assert reference_groups(test, train.assign(sex=train["sex"].map({"Female": "Male", "Male": "Female"})),
                            SEX) == {"sex": "Female"}
    unbalanced = pd.concat([test, pd.DataFrame({"sex": ["Female"], "label": [1]})])
    assert reference_groups(unbalanced, train, SEX) == {"sex": "Female"}


def _gap_closing(share, n=2000, repeats=4, seed=0):
    """Repeats of three 'arms' on one test set: TPR women 0.5 (reference arm), 0.5 + 0.4 * share
    and 0.9 (oracle); men 0.9 throughout."""
    rng = np.random.default_rng(seed)
    sex = pd.DataFrame({"sex": np.where(np.arange(n) % 2, "Male", "Female")})
    y = (np.arange(n) // 2) % 2
    weights = bootstrap_weights(n, 300, seed)
    arms = {}
    for name, female_tpr in (("real", 0.5), ("arm", 0.5 + 0.4 * share), ("oracle", 0.9)):
        arms[name] = []
        for _ in range(repeats):
            tpr = np.where(sex["sex"] == "Female", female_tpr, 0.9)
            pred = np.where(y == 1, rng.random(n) < tpr, rng.random(n) < 0.1).astype(int)
            arms[name].append(evaluate_repeat(y, pred, pred.astype(float), sex, SEX, weights,
                                              references={"sex": "Male"}))
    return arms


def test_a_share_of_the_oracle_has_an_interval_that_finds_it():
    path = ("attributes", "sex", "groups", "Female", "true_positive_rate_vs_reference")
    arms = _gap_closing(0.5)
    entry = share_of_oracle(arms["arm"], arms["oracle"], arms["real"], path, seed=0)
    assert entry["oracle_change"] == pytest.approx(0.4, abs=0.05) and entry["reason"] is None
    assert entry["interval"][0] < 0.5 < entry["interval"][1] and entry["interval"][1] - entry["interval"][0] < 0.5
    nothing = _gap_closing(0.0, seed=1)
    entry = share_of_oracle(nothing["arm"], nothing["oracle"], nothing["real"], path, seed=0)
    assert entry["interval"][0] < 0 < entry["interval"][1]
    # An oracle that changes nothing leaves nothing to take a share of.
    flat = share_of_oracle(nothing["arm"], nothing["real"], nothing["real"], path, seed=0)
    assert math.isnan(flat["share"]) and "nothing to take a share of" in flat["reason"]


def test_matched_fpr_thresholds_hold_each_groups_false_positive_rate_on_validation():
    rng = np.random.default_rng(0)
    scores, labels = rng.random(400), rng.integers(0, 2, 400)
    groups = np.where(np.arange(400) < 300, "Male", "Female")
    decisions, reasons = matched_fpr_decisions(scores, labels, groups, scores, groups, fpr=0.1)
    assert reasons == {}
    for group in ("Male", "Female"):
        negatives = (groups == group) & (labels == 0)
        rate = decisions[negatives].mean()
        # At most the target, and one more false positive would pass it.
        assert rate <= 0.1 < rate + 1.5 / negatives.sum()
    only_positives = np.where(labels == 1, "x", groups)
    decisions, reasons = matched_fpr_decisions(scores, labels, only_positives, scores, only_positives, fpr=0.1)
    assert np.isnan(decisions[only_positives == "x"]).all() and "no validation subjects without" in reasons["x"]


def test_at_a_matched_fpr_a_prior_shift_leaves_no_gap_where_the_plain_threshold_shows_one():
    """Women's scores shifted down (what a classifier does that saw their disease rarely) but
    ranked as well as men's: at one threshold their TPR falls; at each group's own threshold for
    the same FPR it does not."""
    rng = np.random.default_rng(1)
    n = 2000
    sex = np.where(rng.random(n) < 0.5, "Female", "Male")
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(3.0 * (labels - 0.5) + rng.normal(0, 1, n) - 1.5 * (sex == "Female"))))
    val = rng.random(n) < 0.5
    groups = pd.DataFrame({"sex": sex[~val]})
    matched = {"sex": matched_fpr_decisions(scores[val], labels[val], sex[val], scores[~val], sex[~val], 0.1)}
    result = evaluate_repeat(labels[~val], (scores[~val] >= 0.5).astype(int), scores[~val], groups, {"sex": ("sex",)},
                             references={"sex": "Male"}, matched=matched)
    plain = result.values[("attributes", "sex", "groups", "Female", "true_positive_rate_vs_reference")]
    at_fpr = result.values[("attributes", "sex", "groups", "Female", f"{MATCHED_TPR}_vs_reference")]
    assert plain < -0.2 and abs(at_fpr) < 0.07
