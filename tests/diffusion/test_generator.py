"""The generator on tiny real diffusers models: seconds per test, no mocks."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import ControlNetModel
from PIL import Image
from thread_policy import policy_env, spin_counts
from transformers import AutoTokenizer

from cardiofair.cli import main
from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import load_dataset, read_manifest
from cardiofair.diffusion import presets
from cardiofair.diffusion import train as train_module
from cardiofair.diffusion.checkpoint import CheckpointError, latest_checkpoint
from cardiofair.diffusion.conditioning import control_image, mask_condition
from cardiofair.diffusion.loss import diffusion_loss
from cardiofair.diffusion.models import MODEL_CLASSES, Models, build_models, load_models
from cardiofair.diffusion.presets import SamplerSettings, get_preset
from cardiofair.diffusion.sample import ModelNotFoundError, TrainedGenerator
from cardiofair.diffusion.tokenizer import build_prompt_tokenizer
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.diffusion.validation import JUMP_FACTOR, loss_jump, validation_indices
from cardiofair.errors import SettingsError
from cardiofair.precision import resolve_precision
from cardiofair.prompts import prompt_phrases
from cardiofair.settings import TrainOptions
from cardiofair.stages import train as train_stage
from cardiofair.threads import THREAD_POLICY, one_thread_each

PROMPT = "Female, age in 60s, normal BMI, heart failure"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantom16"
    prepare_phantom(24, 0, root, settings=PrepareSettings(size=16), progress=False, workers=1)
    return root


def _settings(**overrides):
    return TrainSettings.for_preset(get_preset("tiny"), **overrides)


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    # A high rate: the ControlNet's zero-initialised convolutions must move before the mask matters.
    train(dataset, out, _settings(max_steps=6, learning_rate=3e-2, ema_decay=None), progress_bar=False)
    return out


@pytest.fixture(scope="module")
def generator(model):
    return TrainedGenerator(model)


@pytest.fixture(scope="module")
def masks(dataset):
    records = load_dataset(dataset)
    return np.stack([records[0].mask, records[1].mask])


def test_model_directory_layout(model):
    for name in ("unet", "controlnet", "text_encoder", "tokenizer", "scheduler", "model_index.json", "cardiofair.json"):
        assert (model / name).exists(), name
    assert not list(model.rglob("*.bin")) and not list(model.rglob("*.pt")) and not list(model.rglob("*.pkl"))
    info = json.loads((model / "cardiofair.json").read_text())
    assert info["preset"] == "tiny" and info["image_channels"] == 2 and info["size"] == 16
    assert info["training"]["steps"] == 6 and info["training_cells"]
    assert info["training"]["loss_jump"] is None
    assert (model / "training" / "loss.png").is_file()
    assert list((model / "training" / "validation").glob("step-*.png"))


def test_same_seed_same_samples_and_seeds_are_per_image(generator, masks):
    a = generator.sample(masks, [PROMPT] * 2, [1, 2])
    b = generator.sample(masks, [PROMPT] * 2, [1, 2], batch_size=1)
    c = generator.sample(masks, [PROMPT] * 2, [1, 3])
    assert a.shape == (2, 2, 16, 16) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.allclose(a[0], c[0], atol=1e-5) and not np.allclose(a[1], c[1], atol=1e-3)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "unipc"])
def test_every_scheduler_runs(generator, masks, sampler):
    images = generator.sample(masks, [PROMPT] * 2, [0, 1], SamplerSettings(sampler=sampler, steps=4))
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


def test_mask_conditioning_and_a_masked_out_controlnet(generator, masks):
    swapped = masks[::-1].copy()
    on = generator.defaults
    off = on.override(controlnet_scale=0.0)
    # Sampling is deterministic (identical calls give identical bits), so any difference is the mask's.
    assert np.abs(generator.sample(masks, [PROMPT] * 2, [5, 5], on) -
                  generator.sample(swapped, [PROMPT] * 2, [5, 5], on)).max() > 1e-5
    np.testing.assert_array_equal(generator.sample(masks, [PROMPT] * 2, [5, 5], off),
                                  generator.sample(swapped, [PROMPT] * 2, [5, 5], off))


def test_prompt_conditioning_changes_the_output(generator, masks):
    a = generator.sample(masks[:1], [PROMPT], [9])
    b = generator.sample(masks[:1], ["Male, age in 40s, obese BMI, healthy"], [9])
    assert not np.allclose(a, b, atol=1e-4)


@pytest.fixture
def two_threads():
    """torch on two threads, whatever the machine's cores: a batch then runs in two parts."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_batch_drawn_in_parts_is_the_batch_drawn_whole(generator, masks, two_threads):
    """On the CPU each thread runs its own part of every denoising pass (issue 31): each pass of
    the whole batch runs as two halves, and the images are the whole batch's but for rounding."""
    prompts = [PROMPT, "Male, age in 40s, obese BMI, healthy"]

    def drawn(one_thread):
        rows = []
        hook = generator.pipeline.unet.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
        try:
            with one_thread_each() if one_thread else contextlib.nullcontext():
                return generator.sample(masks, prompts, [3, 4]), rows
        finally:
            hook.remove()

    parted, parted_rows = drawn(one_thread=False)
    whole, whole_rows = drawn(one_thread=True)
    assert len(whole_rows) == generator.defaults.steps
    assert sorted(parted_rows) == sorted(n // 2 for n in whole_rows for _ in range(2))
    np.testing.assert_allclose(parted, whole, atol=1e-5)
    assert np.abs(parted[0] - parted[1]).max() > 1e-3  # two different images, not one copied


def test_a_training_step_in_parts_follows_the_whole_batch(dataset, tmp_path, two_threads):
    """Each thread's part of the batch gives its share of the gradient: the first step's loss is
    the whole batch's, and the weights move the same way as when the batch runs whole."""
    settings = _settings(max_steps=2, ema_decay=None)
    parted = train(dataset, tmp_path / "parted", settings, progress_bar=False)
    with one_thread_each():
        whole = train(dataset, tmp_path / "whole", settings, progress_bar=False)
    losses = {name: pd.read_csv(folder / "training" / "loss.csv")["loss"].to_numpy()
              for name, folder in (("parted", parted), ("whole", whole))}
    assert losses["parted"][0] == pytest.approx(losses["whole"][0], rel=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(whole / "tokenizer")
    untrained = build_models(get_preset("tiny"), len(tokenizer.get_vocab()), tokenizer.model_max_length, settings.seed)
    start = {f"{n}.{k}": v.flatten() for n, m in untrained.named().items() for k, v in m.state_dict().items()}
    moved = {name: torch.cat([(v.flatten() - start[k]) for k, v in sorted(_weights(folder).items())])
             for name, folder in (("parted", parted), ("whole", whole))}
    assert moved["whole"].abs().max() > 0
    assert torch.nn.functional.cosine_similarity(moved["parted"], moved["whole"], dim=0) > 0.99


def test_guidance_left_out_of_the_noisiest_steps_runs_one_pass_there(generator, masks):
    batches = []
    hook = generator.pipeline.unet.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    guided = SamplerSettings(sampler="dpm++", steps=4, guidance_scale=3.0)
    try:
        with one_thread_each():  # the batch whole, not in a part per thread
            late = generator.sample(masks, [PROMPT] * 2, [4, 4], guided.override(guidance_start=0.5))
    finally:
        hook.remove()
    # Two unguided steps with the conditional pass alone, then two with both passes in one batch.
    assert batches == [2, 2, 4, 4]
    assert guided.override(guidance_start=0.5).unguided_steps == batches.count(2)
    assert guided.override(guidance_start=0.5).passes == sum(batches) // 2
    assert not np.allclose(late, generator.sample(masks, [PROMPT] * 2, [4, 4], guided), atol=1e-5)
    # With no step left to guide, it draws what no guidance draws.
    np.testing.assert_array_equal(generator.sample(masks, [PROMPT] * 2, [4, 4], guided.override(guidance_start=0.9)),
                                  generator.sample(masks, [PROMPT] * 2, [4, 4], guided.override(guidance_scale=1.0)))
    assert guided.override(guidance_start=0.5).describe() == "dpm++, 4 steps, guidance 3 from step 3, ControlNet scale 1"
    with pytest.raises(ValueError, match="guidance_start"):
        guided.override(guidance_start=1.0)


def test_attribute_guidance_steers_by_what_the_attributes_phrase_adds(generator, masks):
    """One more pass on every step reads the prompt without the guided attribute's phrase; the
    images move only by what that phrase adds, so a prompt without it draws what no attribute
    guidance draws (up to the float rounding of a pass of another batch)."""
    prompts = []
    encode = generator.pipeline.encode_prompts
    generator.pipeline.encode_prompts = lambda texts, *args: prompts.append(list(texts)) or encode(texts, *args)
    sampler = SamplerSettings(sampler="dpm++", steps=4, guidance_scale=3.0, guidance_start=0.5)
    steered = sampler.override(attribute_guidance=3.0)
    batches = []
    hook = generator.pipeline.unet.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    try:
        with one_thread_each():  # the batch whole, not in a part per thread
            guided = generator.sample(masks, [PROMPT] * 2, [4, 4], steered)
    finally:
        hook.remove()
        generator.pipeline.encode_prompts = encode
    assert ["age in 60s, normal BMI, heart failure"] * 2 in prompts
    # The prompt without sex on every step, after the whole prompt (with the empty one beside it
    # from the third step, where classifier-free guidance starts).
    assert batches == [2, 2, 2, 2, 4, 2, 4, 2] and steered.passes == sum(batches) // 2
    assert not np.allclose(guided, generator.sample(masks, [PROMPT] * 2, [4, 4], sampler), atol=1e-5)
    sexless = ["age in 60s, normal BMI, heart failure"] * 2
    np.testing.assert_allclose(generator.sample(masks, sexless, [4, 4], steered),
                               generator.sample(masks, sexless, [4, 4], sampler), atol=1e-4)
    age = steered.override(guided_attribute="age")
    assert not np.allclose(generator.sample(masks, [PROMPT] * 2, [4, 4], age), guided, atol=1e-5)
    assert steered.describe() == "dpm++, 4 steps, guidance 3 from step 3, sex guidance 3 on every step, ControlNet scale 1"
    assert steered.override(guidance_scale=1.0).describe() == \
        "dpm++, 4 steps, guidance 1, sex guidance 3 on every step, ControlNet scale 1"
    with pytest.raises(ValueError, match="attribute_guidance"):
        sampler.override(attribute_guidance=0.5)
    with pytest.raises(ValueError, match="guided_attribute"):
        sampler.override(guided_attribute="vendor")


def test_unknown_prompt_words_warn_instead_of_failing(generator, masks):
    with pytest.warns(UserWarning, match="unknown to the model"):
        images = generator.sample(masks[:1], ["Female, age in 60s, purple BMI"], [0])
    assert np.isfinite(images).all()


def test_the_saved_model_draws_what_the_trained_model_drew(dataset, model, generator):
    """At the end of training the in-memory model draws the last validation grid; the folder it
    saved, loaded back, must draw the same images from the same masks, prompts and seeds (a
    weight, config or scheduler lost on the way would change them)."""
    steps = json.loads((model / "cardiofair.json").read_text())["training"]["steps"]
    grid = np.asarray(Image.open(model / "training" / "validation" / f"step-{steps:06d}.png"))[:, :, 0]
    data = train_module.TrainingData.from_dataset(dataset, get_preset("tiny"))
    index = validation_indices(data.prompts)
    drawn = generator.sample(data.masks[index].numpy(), [data.prompts[i] for i in index], list(range(len(index))))
    size = data.masks.shape[-1]
    for k in range(len(index)):
        # A grid row: real ED with its mask | sample ED | sample ES | real ED, as 8-bit grey.
        for frame, column in ((0, 1), (1, 2)):
            tile = grid[k * size:(k + 1) * size, column * size:(column + 1) * size].astype(int)
            saved = (np.clip(drawn[k, frame], 0, 1) * 255).astype(np.uint8).astype(int)
            assert np.abs(tile - saved).max() <= 1, (k, frame)
    assert drawn.std() > 0.01  # the grid is of drawn images, not blank tiles


def _weights(folder):
    return {f"{n}.{k}": v for n, m in load_models(folder).items() for k, v in m.state_dict().items()}


def test_resume_continues_exactly(dataset, tmp_path, monkeypatch):
    """2 steps, an interruption, then 2 resumed steps equal 4 straight steps (two stages)."""
    settings = _settings(max_steps=4, stages=(("base", 0.5), ("control", 0.5)), checkpoint_every=100)
    train(dataset, tmp_path / "straight", settings, progress_bar=False)

    real_step = train_module.training_step
    calls = {"n": 0}

    def interrupted_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during the first step of the control stage
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "training_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(dataset, tmp_path / "resumed", settings, progress_bar=False)
    monkeypatch.setattr(train_module, "training_step", real_step)
    assert latest_checkpoint(tmp_path / "resumed" / "training" / "checkpoints").name == "step-000003"
    assert not (tmp_path / "resumed" / "cardiofair.json").exists()
    train(dataset, tmp_path / "resumed", settings, resume=True, progress_bar=False)

    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The guide (kept at step 2, before the interruption) is the same too.
    assert settings.guide_step == 2
    guides = [TrainedGenerator(tmp_path / run).pipeline.guide_unet.state_dict() for run in ("straight", "resumed")]
    assert all(torch.equal(guides[0][k], guides[1][k]) for k in guides[0])


def test_a_crash_while_writing_a_checkpoint_keeps_the_last_good_one(dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = _settings(max_steps=4, checkpoint_every=2)
    real_save = train_module.save_models

    def crashing_save(models, folder, names=tuple(MODEL_CLASSES)):
        if folder.name.startswith(".step-000004"):
            (folder / "unet").mkdir()
            (folder / "unet" / "half.safetensors").write_bytes(b"\0" * 10)
            raise OSError("disk full")
        real_save(models, folder, names)

    monkeypatch.setattr(train_module, "save_models", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        train(dataset, out, settings, progress_bar=False)
    checkpoints = out / "training" / "checkpoints"
    assert latest_checkpoint(checkpoints).name == "step-000002"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-000002"]
    monkeypatch.setattr(train_module, "save_models", real_save)
    train(dataset, out, settings, resume=True, progress_bar=False)
    assert (out / "cardiofair.json").is_file()


def test_a_corrupt_checkpoint_is_a_clear_error_and_stays_untouched(dataset, tmp_path):
    out = tmp_path / "run"
    settings = _settings(max_steps=2, checkpoint_every=1)
    train(dataset, out, settings, progress_bar=False)
    checkpoints = out / "training" / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    weights = next((latest / "unet").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    before = sorted((p.name, p.stat().st_size) for p in checkpoints.rglob("*"))
    with pytest.raises(CheckpointError, match="cannot be read"):
        train(dataset, out, settings, resume=True, progress_bar=False)
    assert sorted((p.name, p.stat().st_size) for p in checkpoints.rglob("*")) == before
    assert (checkpoints / "step-000001").is_dir()


def test_a_study_resumes_only_a_checkpoint_that_is_there(dataset, tmp_path):
    out = tmp_path / "run"
    checkpoints = out / "training" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # A checkpoints folder emptied by hand: the stage starts again instead of failing to resume.
    assert not train_stage.continuable(out)
    options = TrainOptions(preset="tiny", max_steps=2, checkpoint_every=1)
    result = train_stage.run(options, dataset=dataset, out=out, resume=True, overwrite=True, progress=False)
    assert (out / "cardiofair.json").is_file() and not train_stage.continuable(out)
    assert result.folder == out and result.card == json.loads((out / "cardiofair.json").read_text())
    (out / "cardiofair.json").unlink()
    assert train_stage.continuable(out)
    shutil.rmtree(latest_checkpoint(checkpoints))
    assert not train_stage.continuable(out)


def test_wrong_image_size_is_a_clear_error(tmp_path):
    prepare_phantom(3, 0, tmp_path / "d64", progress=False, workers=1)
    with pytest.raises(ValueError, match="--size 16"):
        train(tmp_path / "d64", tmp_path / "m", _settings(), progress_bar=False)


def test_the_train_command_applies_its_options_over_the_preset(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    command = ["train", str(dataset), "--out", str(out), "--preset", "tiny", "--max-steps", "1", "--learning-rate",
               "0.01", "--quiet"]
    assert main(command) == 0 and f"model written to {out}" in capsys.readouterr().out
    training = json.loads((out / "cardiofair.json").read_text())["training"]
    assert training["steps"] == 1 and training["settings"]["learning_rate"] == 0.01
    assert training["settings"]["batch_size"] == get_preset("tiny").training.batch_size
    assert main(command) == 1 and "--resume" in capsys.readouterr().err
    assert main([*command, "--preset", "sd21"]) == 1 and "--weights is required" in capsys.readouterr().err


def test_existing_output_needs_resume_or_overwrite(dataset, model):
    with pytest.raises(FileExistsError, match="--resume"):
        train(dataset, model, _settings(), progress_bar=False)


def test_an_unfinished_model_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match="cardiofair.json"):
        TrainedGenerator(tmp_path / "m")


def test_balanced_sampler_caps_rare_prompt_weights():
    data = train_module.TrainingData(images=torch.zeros(7, 2, 4, 4), masks=torch.zeros(7, 2, 4, 4, dtype=torch.uint8),
                                     prompts=["a"] * 5 + ["b", "c"], manifest=None)
    weights = data.sampling_weights(cap=3.0)
    assert weights[0] == pytest.approx(weights[1]) and weights[5] == pytest.approx(3.0 * weights[0])
    assert float(weights.sum()) == pytest.approx(1.0)


@pytest.mark.slow
def test_two_processes_through_accelerate(dataset, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "cardiofair", "train", str(dataset), "--preset", "tiny", "--out",
                             str(out), "--max-steps", "2", "--num-processes", "2", "--quiet"],
                            capture_output=True, text=True, timeout=300, env=policy_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "cardiofair.json").is_file()
    assert "distributed" in json.loads((out / "cardiofair.json").read_text())["training"]
    # The command and both training processes wait as the thread policy says (issue 31).
    counts = spin_counts(result.stderr)
    assert len(counts) >= 3 and set(counts) == {THREAD_POLICY["GOMP_SPINCOUNT"]}, counts


def test_grey_level_mask_conditioning_is_configurable(dataset, tmp_path, masks):
    out = train(dataset, tmp_path / "grey", _settings(max_steps=2, condition_mode="grey"), progress_bar=False)
    generator = TrainedGenerator(out)
    assert generator.info["condition_mode"] == "grey"
    # two grey frames, folded 2x2 like the tiny preset's images
    assert generator.pipeline.controlnet.config.conditioning_channels == 2 * 2 * 2
    assert generator.pipeline.config.condition_unshuffle == 2
    assert np.isfinite(generator.sample(masks, [PROMPT] * 2, [0, 1])).all()
    with pytest.raises(ValueError, match="unknown condition mode"):
        train(dataset, tmp_path / "bad", _settings(condition_mode="rainbow"), progress_bar=False)


def test_the_generator_never_sees_validation_or_test_subjects(dataset, tmp_path):
    split = tmp_path / "split"
    shutil.copytree(dataset, split)
    manifest = read_manifest(split)
    manifest["split"] = ["train", "val", "test"] * (len(manifest) // 3) + ["train"] * (len(manifest) % 3)
    manifest.to_csv(split / "manifest.csv", index=False)
    out = train(split, tmp_path / "m", _settings(max_steps=1), progress_bar=False)
    info = json.loads((out / "cardiofair.json").read_text())
    assert info["training"]["n_records"] == (manifest["split"] == "train").sum()


def test_a_folded_mask_is_the_unfolded_mask_rearranged():
    """The ControlNet's folded input loses nothing: unfolding it gives the one-hot mask back,
    and each pixel's labels land in the channels of its 2x2 block."""
    masks = torch.randint(0, 4, (3, 2, 8, 8), generator=torch.Generator().manual_seed(0))
    folded = control_image(masks, "onehot", 2)
    assert folded.shape == (3, 6 * 4, 4, 4)
    assert torch.equal(torch.nn.functional.pixel_shuffle(folded, 2), mask_condition(masks, "onehot"))
    # ED label 2 (myocardium) of pixel (1, 3): channel 1 of the one-hot, block (0, 1), offset (1, 1)
    assert folded[0, 1 * 4 + 1 * 2 + 1, 0, 1] == float(masks[0, 0, 1, 3] == 2)


def test_the_image_prediction_loss_is_zero_for_a_model_that_returns_the_clean_image():
    """With the clean image as the target, a perfect prediction costs nothing at any timestep;
    any other prediction costs its squared error, weighted by min(SNR, gamma)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    images = torch.rand(4, 8, 4, 4) * 2 - 1

    class Oracle:
        def __init__(self, offset):
            self.offset = offset

        def __call__(self, noisy, t, encoder_hidden_states):
            return type("Out", (), {"sample": images + self.offset})()

    models = Models(unet=Oracle(0.0), controlnet=None, text_encoder=None)
    loss = diffusion_loss(models, scheduler, images, None, None, torch.Generator().manual_seed(0), 5.0)
    assert loss.item() == 0.0
    models = Models(unet=Oracle(0.5), controlnet=None, text_encoder=None)
    unweighted = diffusion_loss(models, scheduler, images, None, None, torch.Generator().manual_seed(0), None)
    weighted = diffusion_loss(models, scheduler, images, None, None, torch.Generator().manual_seed(0), 5.0)
    assert unweighted.item() == pytest.approx(0.25)
    # weights lie in [1, gamma] for image prediction
    assert 0.25 <= weighted.item() <= 0.25 * 5.0


def test_training_draws_timesteps_from_the_presets_floor_on(dataset, tmp_path):
    """The cpu preset trains only where its sampler works (t >= 100); a floor of 0 draws the
    whole schedule, and a floor the schedule does not reach is refused before training."""
    assert get_preset("cpu").training.min_timestep == 100
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    drawn = []

    class Recorder:
        def __call__(self, noisy, t, encoder_hidden_states):
            drawn.append(t.clone())
            return type("Out", (), {"sample": noisy})()

    models = Models(unet=Recorder(), controlnet=None, text_encoder=None)
    images = torch.zeros(256, 2, 4, 4)
    for floor in (0, 900):
        diffusion_loss(models, scheduler, images, None, None, torch.Generator().manual_seed(0), 5.0, min_timestep=floor)
    assert drawn[0].min() < 50 and drawn[0].max() >= 950
    assert drawn[1].min() >= 900 and drawn[1].max() >= 990
    with pytest.raises(SettingsError, match="min_timestep"):
        _settings(min_timestep=-1)
    with pytest.raises(SettingsError, match="below the noise schedule's 1000"):
        train(dataset, tmp_path / "m", _settings(min_timestep=1000), progress_bar=False)


def test_bf16_training_autocasts_every_part_and_the_model_draws_in_it(dataset, tmp_path, masks, two_threads):
    """Under bf16 each thread's part of the batch runs in bfloat16 (autocast is a mode each thread
    holds for itself: entered only around the parts, they would train the float32 model), the
    same configuration still trains the same model, the card records the format used, and the
    model draws in it but for the last step, whose float32 output carries no bfloat16 grid."""
    fp32 = train(dataset, tmp_path / "fp32", _settings(max_steps=2), progress_bar=False)
    bf16 = [train(dataset, tmp_path / f"bf16-{n}", _settings(max_steps=2, mixed_precision="bf16"), progress_bar=False)
            for n in range(2)]
    first_loss = {folder: pd.read_csv(folder / "training" / "loss.csv")["loss"][0] for folder in (fp32, bf16[0])}
    assert first_loss[bf16[0]] != first_loss[fp32]
    assert first_loss[bf16[0]] == pytest.approx(first_loss[fp32], rel=0.05)
    assert TrainedGenerator(bf16[0]).hash == TrainedGenerator(bf16[1]).hash != TrainedGenerator(fp32).hash
    cards = {folder: json.loads((folder / "cardiofair.json").read_text())["training"] for folder in (fp32, bf16[0])}
    assert (cards[fp32]["precision"], cards[bf16[0]]["precision"]) == ("no", "bf16")

    drawn = TrainedGenerator(bf16[0])
    assert drawn.pipeline.config.mixed_precision == "bf16"
    in_bf16 = drawn.sample(masks, [PROMPT] * 2, [1, 2], SamplerSettings(steps=3))
    drawn.pipeline.register_to_config(mixed_precision="no")
    in_fp32 = drawn.sample(masks, [PROMPT] * 2, [1, 2], SamplerSettings(steps=3))
    assert 0 < np.abs(in_bf16 - in_fp32).max() < 0.05
    assert len(np.unique(in_bf16)) >= 0.95 * len(np.unique(in_fp32))


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_it():
    """auto asks the hardware: emulated bfloat16 makes a UNet forward 27x slower than float32."""
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}
    else:
        pytest.skip("no /proc/cpuinfo to read the CPU's instructions from")
    native = bool(flags & {"avx512_bf16", "amx_tile"})
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "no")
    assert [resolve_precision(value, "cpu") for value in ("no", "fp16", "bf16")] == ["no", "no", "bf16"]
    assert get_preset("cpu").training.mixed_precision == get_preset("cpu-real").training.mixed_precision == "auto"


def test_the_same_configuration_trains_the_same_model(dataset, tmp_path):
    """A fixed number of steps and seeded batches: two runs give the same weights, bit for bit,
    and so the same figures downstream; another seed gives another model."""
    first = train(dataset, tmp_path / "a", _settings(max_steps=3), progress_bar=False)
    second = train(dataset, tmp_path / "b", _settings(max_steps=3), progress_bar=False)
    other = train(dataset, tmp_path / "c", _settings(max_steps=3, seed=1), progress_bar=False)
    assert TrainedGenerator(first).hash == TrainedGenerator(second).hash != TrainedGenerator(other).hash


def test_a_unet_that_reads_the_mask_in_its_input_and_the_prompt_in_its_timestep(dataset, tmp_path, masks,
                                                                              monkeypatch):
    """The cpu preset's design at the tiny preset's size: the folded mask joins the noisy image
    at the input (so it shapes the image even with the ControlNet masked out), and the pooled
    prompt joins the timestep embedding, in the ControlNet too with the UNet's head count (which
    diffusers' from_unet would leave at a default the 16-wide text encoder cannot divide)."""
    tiny = get_preset("tiny")
    variant = replace(tiny, name="tiny-input", mask_in_input=True,
                      unet={**tiny.unet, "addition_embed_type": "text", "addition_embed_type_num_heads": 2})
    monkeypatch.setitem(presets.PRESETS, "tiny-input", variant)
    settings = TrainSettings.for_preset(variant, max_steps=3, learning_rate=3e-2, ema_decay=None)
    generator = TrainedGenerator(train(dataset, tmp_path / "m", settings, progress_bar=False))
    unet, controlnet = generator.pipeline.unet, generator.pipeline.controlnet
    assert generator.pipeline.config.mask_in_input
    assert unet.config.in_channels == unet.config.out_channels + 6 * 2 * 2 == controlnet.config.in_channels
    assert controlnet.config.addition_embed_type_num_heads == 2
    off = generator.defaults.override(controlnet_scale=0.0)
    assert np.abs(generator.sample(masks, [PROMPT] * 2, [5, 5], off) -
                  generator.sample(masks[::-1].copy(), [PROMPT] * 2, [5, 5], off)).max() > 1e-5
    # The paper's two stages: the UNet learns the mask from its input first, without running the
    # ControlNet it does not train, then the ControlNet.
    controlnet_passes, passes_per_step = [0], []
    real_forward, real_step = ControlNetModel.forward, train_module.training_step

    def counted_forward(self, *args, **kwargs):
        controlnet_passes[0] += 1
        return real_forward(self, *args, **kwargs)

    def counted_step(*args, **kwargs):
        before = controlnet_passes[0]
        loss = real_step(*args, **kwargs)
        passes_per_step.append(controlnet_passes[0] - before)
        return loss

    monkeypatch.setattr(ControlNetModel, "forward", counted_forward)
    monkeypatch.setattr(train_module, "training_step", counted_step)
    staged = TrainSettings.for_preset(variant, max_steps=2, stages=(("base", 0.5), ("control", 0.5)))
    with one_thread_each():  # each step's batch whole, in one pass
        assert np.isfinite(TrainedGenerator(train(dataset, tmp_path / "staged", staged, progress_bar=False))
                           .sample(masks, [PROMPT] * 2, [0, 1])).all()
    assert passes_per_step == [0, 1]


def test_autoguidance_steers_by_the_weights_kept_on_the_way(dataset, tmp_path, masks):
    """The guide is the run's own averaged weights at its guide step (a run stopped there holds
    the same), keeping it leaves training untouched, and each guided step adds one guide pass."""
    settings = _settings(max_steps=4, lr_schedule="constant_with_warmup", warmup_steps=1, guide_at=0.5)
    guided = train(dataset, tmp_path / "guided", settings, progress_bar=False)
    plain = train(dataset, tmp_path / "plain", replace(settings, guide_at=None), progress_bar=False)
    short = train(dataset, tmp_path / "short", replace(settings, max_steps=2, guide_at=None), progress_bar=False)
    assert settings.guide_step == 2
    for name in ("guide_unet", "guide_controlnet", "guide_text_encoder"):
        assert (guided / name).is_dir() and not (plain / name).exists()
    final = _weights(plain)
    assert all(torch.equal(v, final[k]) for k, v in _weights(guided).items())
    kept = {f"{n}.{k}": v for n in ("unet", "controlnet", "text_encoder")
            for k, v in load_models(guided / "training" / "guide", [n])[n].state_dict().items()}
    assert kept.keys() == _weights(short).keys()
    assert all(torch.equal(kept[k], v) for k, v in _weights(short).items())
    assert not all(torch.equal(kept[k], v) for k, v in final.items())

    generator = TrainedGenerator(guided)
    assert generator.pipeline.has_guide and not TrainedGenerator(plain).pipeline.has_guide
    sampler = SamplerSettings(sampler="dpm++", steps=4, guidance_scale=3.0, guidance_start=0.5)
    batches = []
    hook = generator.pipeline.guide_unet.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        with one_thread_each():  # the batch whole, not in a part per thread
            steered = generator.sample(masks, [PROMPT] * 2, [4, 4], sampler.override(autoguidance=2.0))
    finally:
        hook.remove()
    assert batches == [2, 2]  # the conditional batch, on the two guided steps only
    assert sampler.override(autoguidance=2.0).passes == 4 + 2 + 2
    off = generator.sample(masks, [PROMPT] * 2, [4, 4], sampler)
    assert not np.allclose(steered, off, atol=1e-5)
    np.testing.assert_array_equal(off, TrainedGenerator(plain).sample(masks, [PROMPT] * 2, [4, 4], sampler))
    assert sampler.override(autoguidance=2.0).describe() == \
        "dpm++, 4 steps, guidance 3 and autoguidance 2 from step 3, ControlNet scale 1"
    with pytest.raises(SettingsError, match="autoguidance needs a model trained with a guide"):
        TrainedGenerator(plain).sample(masks, [PROMPT] * 2, [4, 4], sampler.override(autoguidance=2.0))
    with pytest.raises(ValueError, match="autoguidance"):
        sampler.override(autoguidance=0.5)
    with pytest.raises(SettingsError, match="guide_at"):
        replace(settings, guide_at=1.0)


def test_a_controlnet_after_a_base_stage_starts_from_the_trained_encoder(dataset, tmp_path):
    """The ControlNet recipe: a copy of the encoder as trained, not as initialised. With the
    ControlNet's rate at zero its weights stay what the copy gave it."""
    out = train(dataset, tmp_path / "staged", _settings(max_steps=4, stages=(("base", 0.5), ("control", 0.5)),
                                                        controlnet_lr_scale=0.0, learning_rate=3e-2),
                progress_bar=False)
    models = load_models(out, ("unet", "controlnet"))
    unet, controlnet = models["unet"].state_dict(), models["controlnet"].state_dict()
    encoder = [name for name in controlnet if name.startswith(("down_blocks.", "mid_block.", "conv_in."))]
    assert encoder and all(torch.equal(controlnet[name], unet[name]) for name in encoder)
    untrained = build_models(get_preset("tiny"), 64, 16, 0).unet.state_dict()
    assert not all(torch.equal(untrained[name], unet[name]) for name in encoder)
    # Its own parts are not the UNet's: the zero convolutions still add nothing.
    assert all(not value.any() for name, value in controlnet.items() if name.startswith("controlnet_down_blocks"))


def test_the_first_steps_draw_the_early_batch(dataset, tmp_path):
    settings = _settings(batch_size=4, early_batch_size=2, early_steps=3)
    preset = get_preset("tiny")
    data = train_module.TrainingData.from_dataset(dataset, preset)
    batches = train_module.BatchSource(data, build_prompt_tokenizer(data.prompts), preset, settings)
    sizes = [len(batches.draw(torch.Generator().manual_seed(0), True, step)[0]) for step in range(5)]
    assert sizes == [2, 2, 2, 4, 4]
    assert "batch 4, 2 for the first 3 steps, lr 0.001 cosine)" in train_module.describe_budget(settings)
    out = train(dataset, tmp_path / "early", replace(settings, max_steps=4), progress_bar=False)
    assert TrainedGenerator(out).sample(np.stack([r.mask for r in load_dataset(dataset)[:1]]), [PROMPT], [0]).shape[0] == 1


def test_attribute_dropout_leaves_out_single_phrases_and_off_draws_whole_prompts(dataset):
    """Each attribute's phrase is left out on its own (so "Female" is also seen without the rest),
    the phrases kept stay in the grammar's order, and at 0 every prompt is drawn whole."""
    preset = get_preset("tiny")
    data = train_module.TrainingData.from_dataset(dataset, preset)
    tokenizer = build_prompt_tokenizer(data.prompts)

    def drawn(settings) -> list[tuple[str, ...]]:
        batches = train_module.BatchSource(data, tokenizer, preset, settings)
        ids = torch.cat([batches.draw(torch.Generator().manual_seed(step), False, step)[1] for step in range(40)])
        return [tuple(prompt_phrases(text)) for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    whole = {tuple(prompt_phrases(p.lower())) for p in data.prompts}
    assert set(drawn(_settings(batch_size=8, prompt_dropout=0.0))) <= whole
    dropped = drawn(_settings(batch_size=8, prompt_dropout=0.0, attribute_dropout=0.5))
    shortened = [p for p in dropped if p not in whole]
    assert shortened, "no phrase was ever left out at 0.5"
    # What is kept is a subsequence of a training prompt: phrases dropped, never reordered or mixed.
    assert all(any(list(p) == [ph for ph in w if ph in p] for w in whole) for p in shortened)
    assert {("female",), ("male",)} & set(dropped), "the sex phrase was never drawn alone"
    with pytest.raises(SettingsError, match="attribute_dropout"):
        _settings(attribute_dropout=1.0)


def test_a_run_past_the_step_where_its_rate_diverged_is_warned_about_before_it_starts(dataset, tmp_path,
                                                                                     monkeypatch):
    """The cpu preset's constant rate diverged past step 1,700 on a real cohort for one training
    seed: a user who trains longer at it is told so, and one who changes the schedule is not."""
    tiny = get_preset("tiny")
    variant = replace(tiny, name="tiny-unstable",
                      training=replace(tiny.training, lr_schedule="constant_with_warmup", diverges_near=2))
    monkeypatch.setitem(presets.PRESETS, "tiny-unstable", variant)
    with pytest.warns(UserWarning, match="3 steps at preset tiny-unstable's constant_with_warmup rate.*past step 2 "):
        train(dataset, tmp_path / "long", TrainSettings.for_preset(variant, max_steps=3), progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*steps at preset tiny-unstable")
        train(dataset, tmp_path / "short", TrainSettings.for_preset(variant, max_steps=2), progress_bar=False)
        train(dataset, tmp_path / "cosine", TrainSettings.for_preset(variant, max_steps=3, lr_schedule="cosine"),
              progress_bar=False)
    assert get_preset("cpu").training.diverges_near == 1700


def test_a_loss_that_jumps_is_found_where_it_jumps_and_a_falling_noisy_one_is_not():
    steps = np.arange(1, 601)
    # A loss falling as training does, with step-to-step noise larger than a real run's.
    loss = (0.5 * np.exp(-steps / 60) + 0.08) * np.random.default_rng(0).lognormal(0.0, 0.3, steps.size)

    def history(values, stages=("joint",) * 600):
        return [{"step": int(s), "stage": stage, "loss": float(v)} for s, stage, v in zip(steps, stages, values)]

    assert loss_jump(history(loss)) is None
    jumped = loss * np.where(steps > 400, 3.5, 1.0)
    found = loss_jump(history(jumped))
    assert found is not None and 400 < found.step <= 450 and found.after > JUMP_FACTOR * found.before
    assert loss_jump(history(np.where(steps == 501, np.nan, loss))).step == 501
    # A later stage trains other parameters from its own loss level: no jump across stages.
    assert loss_jump(history(jumped, ("base",) * 400 + ("control",) * 200)) is None
