"""A tiny split phantom, a tiny trained generator, a mask generator, a synthetic dataset and the
quality stage's results on it: the real inputs of `cardiofair app`, made in seconds."""

import pytest

from cardiofair.data.records import read_manifest
from cardiofair.data.split import training_rows
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import generate
from cardiofair.masks import train_mask_model
from cardiofair.metrics.quality import evaluate_synthetic
from cardiofair.plan import plan_synthesis
from cardiofair.settings import GenerateSettings, PlanSettings, QualitySettings


@pytest.fixture(scope="session")
def app_dataset(split_phantom):
    return split_phantom(60, 16, test=0.2, val=0.2)


@pytest.fixture(scope="session")
def app_model(app_dataset, tmp_path_factory):
    return train(app_dataset, tmp_path_factory.mktemp("app-model") / "tiny",
                 TrainSettings.for_preset(get_preset("tiny"), max_steps=2), progress_bar=False)


@pytest.fixture(scope="session")
def app_masks(app_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("app-masks")
    train_mask_model(app_dataset, progress=False).save(out)
    return out


@pytest.fixture(scope="session")
def app_synthetic(app_dataset, app_model, tmp_path_factory):
    settings = PlanSettings(strategy="prevalence", target_prevalence=0.4, attributes=("sex",), min_real_support=1,
                            max_ratio_overall=0.3)
    plan = plan_synthesis(training_rows(read_manifest(app_dataset)), settings)
    return generate(app_model, app_dataset, plan, tmp_path_factory.mktemp("app-syn") / "synthetic",
                    GenerateSettings(batch_size=16), progress=False)


@pytest.fixture(scope="session")
def app_quality(app_dataset, app_synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("app-quality") / "quality"
    evaluate_synthetic(app_dataset, app_synthetic, out, QualitySettings(steps=5, classifier_steps=5, min_images=2,
                                                                         counterfactual_pairs=2),
                       evaluators_dir=tmp_path_factory.mktemp("app-evaluators"), progress=False)
    return out


@pytest.fixture(scope="session")
def app_server(app_model, app_dataset, app_masks, app_synthetic, app_quality, tmp_path_factory):
    """The app on all five inputs, served by its command for the whole session."""
    from app_server import start_app, stop_app

    server = start_app(["--model", str(app_model), "--dataset", str(app_dataset), "--masks", str(app_masks),
                        "--synthetic", str(app_synthetic), "--quality", str(app_quality)],
                       tmp_path_factory.mktemp("app-log") / "app.log")
    yield server
    stop_app(server)
