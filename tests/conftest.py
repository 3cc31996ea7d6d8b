"""Fixtures the whole suite shares."""

import pytest

from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, training_rows, write_splits
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import generate
from cardiofair.plan import plan_synthesis, read_plan, write_plan
from cardiofair.settings import GenerateSettings, PlanSettings, PrepareSettings


@pytest.fixture(scope="session")
def split_phantom(tmp_path_factory):
    """``make(n, size, test, val)``: a prepared phantom cohort of ``n`` subjects (seed 0) at
    ``size`` px, split by subject (seed 0); each kind is made once per session, so a test that
    edits one copies it first."""
    made = {}

    def make(n, size, test, val):
        key = (n, size, test, val)
        if key not in made:
            root = tmp_path_factory.mktemp("phantom") / f"phantom{n}-{size}px"
            prepare_phantom(n, 0, root, settings=PrepareSettings(size=size), progress=False, workers=1)
            write_splits(root, assign_splits(read_manifest(root), test=test, val=val, seed=0))
            made[key] = root
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """``make(dataset)``: a tiny generator trained for two steps on ``dataset``; each is trained
    once per session, so a test that edits one copies it first."""
    made = {}

    def make(dataset):
        if dataset not in made:
            made[dataset] = train(dataset, tmp_path_factory.mktemp("tiny-model") / "tiny",
                                  TrainSettings.for_preset(get_preset("tiny"), max_steps=2), progress_bar=False)
        return made[dataset]

    return make


# --- a tiny trained generator and what it drew, shared by the app and report tests -------------
# Session-wide and read by every user: a test that edits one of them copies it first.


@pytest.fixture(scope="session")
def tiny_real(split_phantom):
    """The split phantom the tiny generator learns from: 60 subjects at 16 px."""
    return split_phantom(60, 16, test=0.2, val=0.2)


@pytest.fixture(scope="session")
def tiny_model(tiny_real, tiny_trained):
    """The tiny generator of ``tiny_real``."""
    return tiny_trained(tiny_real)


@pytest.fixture(scope="session")
def tiny_plan(tiny_real, tmp_path_factory):
    """The plan file of a prevalence plan by sex over ``tiny_real``'s training rows."""
    settings = PlanSettings(strategy="prevalence", target_prevalence=0.4, attributes=("sex",), min_real_support=1,
                            max_ratio_overall=0.3)
    return write_plan(plan_synthesis(training_rows(read_manifest(tiny_real)), settings),
                      tmp_path_factory.mktemp("tiny-plan") / "plan.csv")


@pytest.fixture(scope="session")
def tiny_synthetic(tiny_real, tiny_model, tiny_plan, tmp_path_factory):
    """The synthetic dataset ``tiny_model`` drew for ``tiny_plan``."""
    return generate(tiny_model, tiny_real, read_plan(tiny_plan), tmp_path_factory.mktemp("tiny-syn") / "synthetic",
                    GenerateSettings(batch_size=16), progress=False)
