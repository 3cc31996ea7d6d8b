"""The classifier two-sample test: real against real cannot be told apart (its interval covers
0.5), real against blurred real can; folds never split a subject."""

import numpy as np
import pytest
from phantom_arrays import phantom_arrays
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from cardiofair.metrics.realism import (
    classifier_two_sample_tests,
    subject_bootstrap_interval,
    subject_folds,
    weighted_aurocs,
)


def test_folds_keep_each_subject_whole_and_hold_both_sets():
    subjects = np.array([f"s{i // 3}" for i in range(60)] + [f"t{i // 2}" for i in range(40)])
    labels = np.array([0] * 60 + [1] * 40)
    fold = subject_folds(subjects, labels, 5, seed=0)
    assert all(len(set(fold[subjects == s])) == 1 for s in set(subjects))
    for k in range(5):
        assert {0, 1} <= set(labels[fold == k])
        # Subjects are dealt evenly: 20 first-set subjects, 4 a fold.
        assert len(set(subjects[(fold == k) & (labels == 0)])) == 4
    assert np.array_equal(fold, subject_folds(subjects, labels, 5, seed=0))


def test_weighted_aurocs_agree_with_sklearn_ties_and_weights_included():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 20])
    scores = np.round(rng.random(50) + 0.3 * labels, 1)  # rounded: many ties
    weights = rng.integers(0, 3, (4, 50)).astype(float)
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    assert np.allclose(weighted_aurocs(labels, scores, weights), expected)
    # Within groups: a group read higher as a whole gives nothing away, though it holds more positives.
    groups = np.repeat([0, 1], 25)
    labels = np.r_[np.repeat([0, 1], [20, 5]), np.repeat([0, 1], [5, 20])]
    scores = rng.random(50) + groups
    assert roc_auc_score(labels, scores) > 0.75
    ones = np.ones((1, 50))
    within = [roc_auc_score(labels[groups == g], scores[groups == g]) for g in (0, 1)]
    assert weighted_aurocs(labels, scores, ones, groups)[0] == pytest.approx((100 * within[0] + 100 * within[1]) / 200)


def test_the_interval_resamples_subjects_not_slices():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 80)
    # Eight slices of ten subjects a set, each subject's slices alike: the subject is the unit.
    subject_effect = np.repeat(rng.normal(0, 1, 20), 8)
    scores = subject_effect + rng.normal(0, 0.05, 160)
    by_subject = subject_bootstrap_interval(labels, scores, np.repeat(np.arange(20), 8).astype(str), 500, 0)
    by_slice = subject_bootstrap_interval(labels, scores, np.arange(160).astype(str), 500, 0)
    assert by_subject[1] - by_subject[0] > 2 * (by_slice[1] - by_slice[0])


def test_real_against_real_covers_one_half_and_real_against_blurred_real_is_told_apart():
    real, _, _ = phantom_arrays(80, 0)
    other, _, _ = phantom_arrays(80, 2)
    blurred = gaussian_filter(other, sigma=(0, 0, 1.5, 1.5)).astype(np.float32)
    # Two slices a subject, as a cohort of several slices per subject has.
    subjects = np.array([f"a{i // 2}" for i in range(80)] + [f"b{i // 2}" for i in range(80)])
    labels = np.repeat([0, 1], 80)
    same, told = classifier_two_sample_tests([(np.concatenate([real, other]), labels, subjects),
                                              (np.concatenate([real, blurred]), labels, subjects)],
                                             resamples=200, seed=0)
    assert same.interval[0] < 0.5 < same.interval[1] and same.interval[1] - same.interval[0] < 0.4
    assert told.auroc > 0.9 and told.interval[0] > same.interval[1]
    assert same.scores.shape == (160,) and ((0 <= told.scores) & (told.scores <= 1)).all()


def test_a_comparison_gives_the_same_figures_alone_or_beside_another():
    images, _, _ = phantom_arrays(24, 0)
    small = images[:, :, ::4, ::4]
    subjects, labels = np.array([f"s{i}" for i in range(24)]), np.repeat([0, 1], 12)
    brighter = np.concatenate([small[:12], np.clip(small[12:] * 1.3, 0, 1)])
    pair = classifier_two_sample_tests([(small, labels, subjects), (brighter, labels, subjects)], folds=3, steps=4,
                                       resamples=50, seed=3)
    alone = classifier_two_sample_tests([(brighter, labels, subjects)], folds=3, steps=4, resamples=50, seed=3)[0]
    assert alone.auroc == pair[1].auroc and alone.interval == pair[1].interval
    assert np.array_equal(alone.scores, pair[1].scores)


def test_an_interval_counts_only_resamples_with_a_pair_and_is_undefined_without_one():
    # A fold holding one set only, in some resamples every fold: those resamples have no pair.
    labels, subjects = np.repeat([0, 1], 4), np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    scores = np.linspace(0, 1, 8)
    fold = subject_folds(subjects, labels, 5, seed=0)
    low, high = subject_bootstrap_interval(labels, scores, subjects, 200, 0, groups=fold)
    assert 0 <= low <= high <= 1
    lone = np.arange(8)  # every record its own fold: no fold holds both sets
    assert np.isnan(subject_bootstrap_interval(labels, scores, subjects, 50, 0, groups=lone)).all()
