"""Fixtures the whole suite shares."""

import pytest

from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, training_rows, write_splits
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import generate
from cardiofair.metrics.quality import evaluate_synthetic
from cardiofair.plan import plan_synthesis, read_plan, write_plan
from cardiofair.settings import FairnessSettings, GenerateSettings, PlanSettings, PrepareSettings, QualitySettings
from cardiofair.stages import fairness as fairness_stage


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


# --- a tiny study: a trained generator, what it drew, and its quality and fairness results, ----
# --- shared by the app and report tests ----------------------------------------------------------
# Session-wide and read by every user: a test that edits one of them copies it first.


@pytest.fixture(scope="session")
def tiny_real(split_phantom):
    """The split phantom the tiny generator learns from: 100 subjects at 16 px. At this size and
    split every split holds subjects with and without heart failure, which the fairness stage
    needs (60 subjects leave the few heart-failure cells wholly in training)."""
    return split_phantom(100, 16, test=0.3, val=0.2)


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


@pytest.fixture(scope="session")
def tiny_quality_settings():
    """The quality stage's settings for the tiny study: judges of a few steps, and few enough
    images needed that realism and the two-sample test give figures on its handful of subjects."""
    return QualitySettings(steps=5, classifier_steps=5, min_images=2, realism_min_images=2, counterfactual_pairs=2,
                           fd_draws=2, kernel_subsets=5, ms_ssim_pairs=10, c2st_folds=2, c2st_steps=10, c2st_resamples=50)


@pytest.fixture(scope="session")
def tiny_evaluators(tmp_path_factory):
    """The cache of the tiny study's judges: a test that evaluates again with the same judge
    settings loads them instead of training them."""
    return tmp_path_factory.mktemp("tiny-evaluators")


@pytest.fixture(scope="session")
def tiny_quality(tiny_real, tiny_synthetic, tiny_model, tiny_quality_settings, tiny_evaluators, tmp_path_factory):
    """The quality stage's output folder for ``tiny_synthetic``, with the generator's prompt effects."""
    out = tmp_path_factory.mktemp("tiny-quality") / "quality"
    evaluate_synthetic(tiny_real, tiny_synthetic, out, tiny_quality_settings, evaluators_dir=tiny_evaluators,
                       progress=False, model_dir=tiny_model)
    return out


@pytest.fixture(scope="session")
def tiny_fairness(tiny_real, tiny_synthetic, tiny_plan, tmp_path_factory):
    """The fairness stage's output folder on the tiny study: two repeats of one epoch of the
    reference arm, real+synthetic, oversample and the oracle (so that the arms are compared with
    real and with each other, and the oracle's share is taken), each dosed arm also at half dose
    (the dose-response). Its test split has five positives: every group with one positive and one
    negative enters the gaps, so that they have figures."""
    out = tmp_path_factory.mktemp("tiny-fairness") / "fairness"
    settings = FairnessSettings(arms=("real", "real+synthetic", "oversample", "oracle"), repeats=2, epochs=1,
                                bootstrap=20, doses=(0.5, 1.0), min_group_size=1, preset="compact", device="cpu")
    fairness_stage.run(settings, real=tiny_real, out=out, synthetic=tiny_synthetic, plan=tiny_plan, progress=False)
    return out
