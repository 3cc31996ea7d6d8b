"""Evaluators trained once per session on a small real phantom cohort, and held-out cohorts of
other seeds to judge with them."""

import pytest
from phantom_arrays import phantom_arrays

from cardiofair.metrics.evaluators import train_evaluators


@pytest.fixture(scope="session")
def training_cohort():
    return phantom_arrays(400, 0)


@pytest.fixture(scope="session")
def test_cohort():
    """A real test cohort of another seed: 120 subjects the evaluators never saw."""
    return phantom_arrays(120, 2)


@pytest.fixture(scope="session")
def judged(training_cohort, test_cohort):
    """Evaluators trained on the training cohort, and the real test cohort."""
    evaluators = train_evaluators(*training_cohort, *phantom_arrays(100, 1), steps=300, classifier_steps=400, batch=32)
    return evaluators, test_cohort
