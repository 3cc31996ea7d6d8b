"""The ``threshold`` arm's post-processing: fairlearn's ``ThresholdOptimizer`` on a trained
model's scores (equalized odds), fitted on the validation split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from cardiofair.prompts import UNKNOWN


class _ScoreModel(ClassifierMixin, BaseEstimator):
    """A fitted 'estimator' whose single feature is the classifier's own score, so fairlearn
    can post-process scores that came from anywhere."""

    def __init__(self) -> None:
        self.classes_ = np.array([0, 1])

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_ScoreModel":
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        score = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - score, score])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=float)[:, 0] >= 0.5).astype(int)


def equalized_odds_thresholds(val_scores: np.ndarray, val_labels: np.ndarray, val_groups: pd.Series,
                              test_scores: np.ndarray, test_groups: pd.Series, fallback_threshold: float,
                              seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(decisions, positive probabilities, groups left unadjusted with the reason) for the test
    subjects, from fairlearn's ``ThresholdOptimizer`` (equalized odds, maximising balanced
    accuracy) fitted on the validation subjects. Its decisions are randomised between two
    thresholds per group (``seed`` fixes the draw); its probability of calling a subject positive
    serves as the score for AUROC. The optimiser needs both classes in a group's validation
    subjects to place that group's thresholds: a test subject of unknown group, or of a group
    without them, keeps the plain decision at ``fallback_threshold``."""
    val_groups, test_groups = val_groups.astype(str).to_numpy(), test_groups.astype(str).to_numpy()
    val_labels = np.asarray(val_labels)

    def problem(group: str) -> str | None:
        classes = set(val_labels[val_groups == group].tolist())
        if group == UNKNOWN:
            return "group unknown"
        if not classes:
            return "no validation subjects"
        if classes != {0, 1}:
            return f"no validation subjects {'with' if classes == {0} else 'without'} the diagnosis"
        return None

    problems = {group: problem(group) for group in {*val_groups, *test_groups}}
    unadjusted = {group: problems[group] for group in sorted(set(test_groups)) if problems[group]}
    fitted = np.array([problems[group] is None for group in val_groups], dtype=bool)
    adjusted = ~np.isin(test_groups, list(unadjusted))
    decisions = (np.asarray(test_scores) >= fallback_threshold).astype(int)
    probabilities = np.asarray(test_scores, dtype=float).copy()
    if fitted.any() and adjusted.any():
        optimiser = ThresholdOptimizer(estimator=_ScoreModel(), constraints="equalized_odds",
                                       objective="balanced_accuracy_score", prefit=True, predict_method="predict_proba")
        optimiser.fit(np.asarray(val_scores)[fitted, None], val_labels[fitted], sensitive_features=val_groups[fitted])
        x, groups = np.asarray(test_scores)[adjusted, None], test_groups[adjusted]
        decisions[adjusted] = optimiser.predict(x, sensitive_features=groups, random_state=seed)
        # fairlearn has no public method for the randomised decision's probability.
        probabilities[adjusted] = optimiser._pmf_predict(x, sensitive_features=groups)[:, 1]
    return decisions, probabilities, unadjusted
