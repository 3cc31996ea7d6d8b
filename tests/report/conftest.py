"""The suite's tiny study (its shared ``tiny_*`` fixtures): a split phantom, a generator trained
on it, a plan, the synthetic records drawn for it, and the quality and fairness stages' results
computed on them, under the names the report tests use."""

import pytest


@pytest.fixture(scope="session")
def real(tiny_real):
    return tiny_real


@pytest.fixture(scope="session")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="session")
def plan(tiny_plan):
    return tiny_plan


@pytest.fixture(scope="session")
def synthetic(tiny_synthetic):
    return tiny_synthetic


@pytest.fixture(scope="session")
def quality(tiny_quality):
    return tiny_quality


@pytest.fixture(scope="session")
def fairness(tiny_fairness):
    return tiny_fairness
