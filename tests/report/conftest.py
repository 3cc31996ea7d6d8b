"""A tiny split phantom, a tiny trained generator, a plan and the synthetic records it made (the
suite's shared ``tiny_*`` fixtures), and evaluation outputs written by hand in the schemas of
synthetic_quality.json and fairness.json."""


import pytest
from report_fixtures import fairness_report, quality_report


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
def quality(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality")
    quality_report().save(folder)
    return folder


@pytest.fixture(scope="session")
def fairness(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fairness")
    fairness_report().save(folder)
    return folder
