"""A tiny split phantom, a tiny trained generator, a plan and the synthetic records it made, and
evaluation outputs written by hand in the schemas of synthetic_quality.json and fairness.json."""

import json

import pytest

from cardiofair.data.records import read_manifest
from cardiofair.data.split import training_rows
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import GenerateSettings, generate
from cardiofair.plan import PlanSettings, plan_synthesis, write_plan
from report_fixtures import fairness_report, quality_report


@pytest.fixture(scope="session")
def real(split_phantom):
    return split_phantom(60, 16, test=0.2, val=0.2)


@pytest.fixture(scope="session")
def model(real, tmp_path_factory):
    return train(real, tmp_path_factory.mktemp("model") / "tiny", TrainSettings.for_preset(get_preset("tiny"), max_steps=2),
                 progress_bar=False)


@pytest.fixture(scope="session")
def plan(real, tmp_path_factory):
    settings = PlanSettings(strategy="prevalence", target_prevalence=0.4, attributes=("sex",), min_real_support=1,
                            max_ratio_overall=0.3)
    return write_plan(plan_synthesis(training_rows(read_manifest(real)), settings),
                      tmp_path_factory.mktemp("plan") / "plan.csv")


@pytest.fixture(scope="session")
def synthetic(real, model, plan, tmp_path_factory):
    from cardiofair.plan import read_plan

    return generate(model, real, read_plan(plan), tmp_path_factory.mktemp("syn") / "synthetic",
                    GenerateSettings(batch_size=16), progress=False)


@pytest.fixture(scope="session")
def quality(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality")
    (folder / "synthetic_quality.json").write_text(json.dumps(quality_report()))
    return folder


@pytest.fixture(scope="session")
def fairness(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fairness")
    (folder / "fairness.json").write_text(json.dumps(fairness_report()))
    return folder
