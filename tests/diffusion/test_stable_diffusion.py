"""The Stable Diffusion path on a tiny random model in SD's on-disk layout (CPU, seconds).

Real SD weights cannot be shipped or downloaded; the same code runs them on a GPU
(benchmarks/bench_sd_gpu.py)."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import load_dataset
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.diffusion.stable_diffusion import (
    WeightsNotFoundError,
    load_stable_diffusion,
    write_random_stable_diffusion,
)
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.errors import SettingsError


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return write_random_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd", "tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantom32"
    prepare_phantom(6, 0, root, settings=PrepareSettings(size=32), progress=False, workers=1)
    return root


def _settings(sd_folder, **overrides):
    values = dict(weights=str(sd_folder), size=32, max_steps=2, batch_size=2, mixed_precision="no",
                  gradient_checkpointing=False, checkpoint_every=1, validate_every=100)
    values.update(overrides)
    return TrainSettings.for_preset(get_preset("sd21"), **values)


def test_controlnet_on_stable_diffusion_trains_and_samples(sd_folder, dataset, tmp_path):
    out = train(dataset, tmp_path / "m", _settings(sd_folder), progress_bar=False)
    info = json.loads((out / "cardiofair.json").read_text())
    assert info["family"] == "stable-diffusion" and info["condition_mode"] == "grey-rgb"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionControlNetPipeline"
    # sd_locked: the checkpoints hold only the ControlNet, and the UNet is the one loaded.
    checkpoint = sorted((out / "training" / "checkpoints").glob("step-*"))[-1]
    assert sorted(p.name for p in checkpoint.iterdir() if p.is_dir()) == ["controlnet"]
    original = UNet2DConditionModel.from_pretrained(sd_folder / "unet").state_dict()
    saved = UNet2DConditionModel.from_pretrained(out / "unet").state_dict()
    assert all(torch.equal(original[k], saved[k]) for k in original)

    generator = TrainedGenerator(out)
    masks = np.stack([r.mask for r in load_dataset(dataset)[:2]])
    images = generator.sample(masks, ["Female, age in 60s, normal BMI, heart failure"] * 2, [0, 1],
                              generator.defaults.override(steps=2))
    assert images.shape == (2, 2, 32, 32) and np.isfinite(images).all()
    again = generator.sample(masks, ["Female, age in 60s, normal BMI, heart failure"] * 2, [0, 1],
                             generator.defaults.override(steps=2))
    np.testing.assert_allclose(images, again, atol=1e-6)
    # diffusers' pipeline guides every step; a setting it cannot honour is refused, not ignored.
    with pytest.raises(SettingsError, match="guidance_start must be 0 for a Stable Diffusion model"):
        generator.sample(masks, ["Female"] * 2, [0, 1], generator.defaults.override(steps=2, guidance_start=0.5))
    with pytest.raises(SettingsError, match="autoguidance must be 1 for a Stable Diffusion model"):
        generator.sample(masks, ["Female"] * 2, [0, 1], generator.defaults.override(steps=2, autoguidance=2.0))


def test_decoder_stage_unlocks_only_the_unet_decoder(sd_folder, dataset, tmp_path):
    out = train(dataset, tmp_path / "m", _settings(sd_folder, stages=(("decoder", 1.0),), learning_rate=1e-2),
                progress_bar=False)
    original = UNet2DConditionModel.from_pretrained(sd_folder / "unet").state_dict()
    trained = UNet2DConditionModel.from_pretrained(out / "unet").state_dict()
    changed = {k for k in original if not torch.equal(original[k], trained[k])}
    assert changed and all(k.startswith(("up_blocks", "conv_norm_out", "conv_out")) for k in changed)


def test_base_stage_and_a_guide_are_refused_for_stable_diffusion(sd_folder, dataset, tmp_path):
    with pytest.raises(ValueError, match="trains the stages"):
        train(dataset, tmp_path / "m", _settings(sd_folder, stages=(("base", 1.0),)), progress_bar=False)
    with pytest.raises(SettingsError, match="guide_at preset sd21 samples with diffusers' Stable Diffusion pipeline"):
        train(dataset, tmp_path / "g", _settings(sd_folder, guide_at=0.5), progress_bar=False)


def test_missing_weights_say_what_to_put_where(tmp_path):
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError, match=r"lacks \['vae', 'text_encoder', 'tokenizer', 'scheduler'\]"):
        load_stable_diffusion(tmp_path / "sd")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match="--sd-config"):
        load_stable_diffusion(tmp_path / "model.safetensors")
    with pytest.raises(WeightsNotFoundError, match="no weights are downloaded"):
        load_stable_diffusion(tmp_path / "nowhere")
