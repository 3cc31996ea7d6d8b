"""A tiny split phantom, a tiny trained generator, a mask generator, a synthetic dataset and the
quality stage's results on it: the real inputs of `cardiofair app`, made in seconds. The phantom,
the generator, the synthetic dataset and its quality results are the suite's shared ``tiny_*``
fixtures."""

import pytest

from cardiofair.masks import train_mask_model


@pytest.fixture(scope="session")
def app_dataset(tiny_real):
    return tiny_real


@pytest.fixture(scope="session")
def app_model(tiny_model):
    return tiny_model


@pytest.fixture(scope="session")
def app_masks(app_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("app-masks")
    train_mask_model(app_dataset, progress=False).save(out)
    return out


@pytest.fixture(scope="session")
def app_synthetic(tiny_synthetic):
    return tiny_synthetic


@pytest.fixture(scope="session")
def app_quality(tiny_quality):
    return tiny_quality


@pytest.fixture(scope="session")
def app_server(app_model, app_dataset, app_masks, app_synthetic, app_quality, tmp_path_factory):
    """The app on all five inputs, served by its command for the whole session."""
    from app_server import start_app, stop_app

    server = start_app(["--model", str(app_model), "--dataset", str(app_dataset), "--masks", str(app_masks),
                        "--synthetic", str(app_synthetic), "--quality", str(app_quality)],
                       tmp_path_factory.mktemp("app-log") / "app.log")
    yield server
    stop_app(server)
