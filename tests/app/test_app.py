"""`cardiofair app`: the real server, started by its command on a free local port, driven
through its HTTP API with gradio_client; and the inputs it refuses at start."""

import gzip
import shutil
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from app_server import NO_APP_EXTRA, free_port, start_app, stop_app
from thread_policy import spin_counts

pytest.importorskip("gradio", reason=NO_APP_EXTRA)

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from cardiofair.cli import main
from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import SYNTHETIC_DESCRIPTION, read_manifest, read_pair_nifti
from cardiofair.settings import PrepareSettings
from cardiofair.threads import THREAD_POLICY

FROM_DATASET = "a training record of the dataset"
FROM_UPLOAD = "an uploaded NIfTI mask pair"
FROM_DRAWN = "a new heart drawn for the prompt by the mask generator"
PROMPT_VALUES = ["Female", "60s", "normal", "heart failure"]


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def train_record(app_dataset):
    manifest = read_manifest(app_dataset)
    return str(manifest.loc[manifest["split"] == "train", "record_id"].iloc[0])


def _draw(client, record=None, upload=None, values=PROMPT_VALUES, seed=3, autoguidance=1.5):
    source = FROM_UPLOAD if upload else FROM_DATASET
    return client.predict(source, record, handle_file(upload) if upload else None, *values, seed, 2.0, 4, autoguidance,
                          api_name="/draw")


def _pixels(path):
    return np.asarray(Image.open(path))


def test_draw_returns_a_pair_of_the_models_size_identical_for_a_seed_changed_by_the_prompt(client, train_record):
    ed, es, overlay, prompt, drawn_with, readout, files = _draw(client, train_record)
    assert _pixels(ed).shape == _pixels(es).shape == (16, 16)
    assert _pixels(overlay).shape == (16, 32, 3)
    assert prompt == "Female, age in 60s, normal BMI, heart failure"
    assert drawn_with.startswith("seed 3, dpm++, 4 steps, guidance 2 and autoguidance 1.5, ControlNet scale 1; drawn in ")
    again = _draw(client, train_record)
    assert np.array_equal(_pixels(again[0]), _pixels(ed)) and np.array_equal(_pixels(again[1]), _pixels(es))
    male = _draw(client, train_record, values=["Male", *PROMPT_VALUES[1:]])
    assert male[3] == "Male, age in 60s, normal BMI, heart failure"
    assert not np.array_equal(_pixels(male[0]), _pixels(ed))
    other_seed = _draw(client, train_record, seed=4)
    assert not np.array_equal(_pixels(other_seed[0]), _pixels(ed))
    unsteered = _draw(client, train_record, autoguidance=1.0)
    assert unsteered[4].startswith("seed 3, dpm++, 4 steps, guidance 2, ControlNet scale 1; drawn in ")
    assert not np.array_equal(_pixels(unsteered[0]), _pixels(ed))
    # The judges of the quality results read every drawn pair.
    assert readout.startswith("judge reads: ") and "Dice to mask: LV" in readout


def test_an_attribute_left_out_is_left_out_of_the_prompt(client, train_record):
    prompt = _draw(client, train_record, values=["unknown", "60s", "unknown", "healthy"])[3]
    assert prompt == "age in 60s, healthy"


def test_the_download_is_the_pair_as_nifti_marked_synthetic_named_without_patient_ids(client, train_record):
    ed, es, _, _, _, _, files = _draw(client, train_record)
    assert len(files) == 2
    # gradio serves each file from a folder named by its content's hash: told apart by name.
    image_file, mask_file = sorted(files, key=lambda path: path.rsplit("/", 1)[-1])
    for path in files:
        name = path.rsplit("/", 1)[-1]
        assert name.startswith("synthetic-app-seed3-") and "phantom" not in name and train_record not in name
    image, _, description = read_pair_nifti(image_file)
    assert description == SYNTHETIC_DESCRIPTION.decode()
    assert np.array_equal((np.clip(image[0], 0, 1) * 255).round().astype(np.uint8), _pixels(ed))
    mask, _, _ = read_pair_nifti(mask_file)
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and mask.shape == (2, 16, 16)


def test_a_drawn_heart_is_the_one_generate_draws_for_that_cell_and_seed(client, app_masks):
    from cardiofair.generate import draw_record_mask
    from cardiofair.masks.shape_model import ShapeModel

    model = ShapeModel.load(app_masks)
    masks = {}
    for sex in ("Female", "Male"):
        values = [sex, *PROMPT_VALUES[1:]]
        *_, files = client.predict(FROM_DRAWN, None, None, *values, 3, 2.0, 4, 1.5, api_name="/draw")
        masks[sex], _, _ = read_pair_nifti(next(f for f in files if "mask" in f.rsplit("/", 1)[-1]))
        expected, _ = draw_record_mask(model, dict(zip(("sex", "age", "bmi", "diagnosis"), values)), 3)
        assert np.array_equal(masks[sex], expected)
    # The prompt's sex reaches the heart: the shape model draws a woman's and a man's differently.
    assert not np.array_equal(masks["Female"], masks["Male"])
    with pytest.raises(AppError, match="draws a heart for a stated sex: choose it .*Female, Male"):
        client.predict(FROM_DRAWN, None, None, "unknown", *PROMPT_VALUES[1:], 3, 2.0, 4, 1.5, api_name="/draw")


def test_a_mask_generator_of_another_size_than_the_model_is_refused(app_model, split_phantom, tmp_path, capsys):
    from cardiofair.masks import train_mask_model
    from cardiofair.settings import MaskSettings

    train_mask_model(split_phantom(40, 24, test=0.2, val=0.2), MaskSettings(components=4),
                     progress=False).save(tmp_path)
    assert main(["app", "--model", str(app_model), "--masks", str(tmp_path), "--port", str(free_port())]) == 1
    assert "draws 24 px masks but the model" in capsys.readouterr().err


def _nifti(path, volume):
    nib.save(nib.Nifti1Image(np.asarray(volume), np.eye(4)), str(path))
    return path


@pytest.fixture(scope="module")
def good_mask(app_dataset, train_record):
    return app_dataset / "masks" / f"{train_record}.nii.gz"


def test_bad_uploads_give_their_reason_and_the_app_keeps_drawing(client, good_mask, tmp_path):
    pair, _, _ = read_pair_nifti(good_mask)
    as_file = lambda mask: np.moveaxis(mask, 0, -1)[:, :, None, :].astype(np.uint8)
    outside = pair.copy()
    outside[0, 0, 0] = 7
    no_lv = np.where(pair == 1, 2, pair)
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(gzip.compress(b"not an image"))
    bad = {
        text: "cannot read as NIfTI",
        _nifti(tmp_path / "volume.nii.gz", np.zeros((16, 16, 3), np.uint8)): "expected a (H, W, 1, 2) cardiofair pair",
        _nifti(tmp_path / "large.nii.gz", np.zeros((32, 32, 1, 2), np.uint8)): "this model draws 16x16 pairs",
        _nifti(tmp_path / "labels.nii.gz", as_file(outside)): "labels [7] outside 0-3",
        _nifti(tmp_path / "no-lv.nii.gz", as_file(no_lv)): "LV blood pool (label 1) is empty in ED and ES",
    }
    for path, reason in bad.items():
        with pytest.raises(AppError) as raised:
            _draw(client, upload=path)
        assert reason in str(raised.value) and path.name in str(raised.value)
    ed, es, *_ = _draw(client, upload=_nifti(tmp_path / "good.nii.gz", as_file(pair)))
    assert _pixels(ed).shape == (16, 16)


def test_an_unknown_record_is_a_message_not_a_crash(client):
    with pytest.raises(AppError, match="is not a training record"):
        _draw(client, "phantom-999999")


def test_counterfactuals_sweep_each_value_with_the_judges_readout_under_each_image(client, train_record):
    gallery, table = client.predict(FROM_DATASET, train_record, None, *PROMPT_VALUES, 3, 2.0, 4, 1.5, "sex",
                                     api_name="/counterfactuals")
    assert [item["caption"].split(": judge reads ")[0] for item in gallery] == ["Female", "Male"]
    # Under each image, the judge's reading of the swept attribute; the whole read-out in the table.
    assert all(item["caption"].split(": judge reads ")[1].split()[0] in ("Female", "Male") for item in gallery)
    assert all("Dice to mask" in row[2] for row in table["data"])
    assert [row[1] for row in table["data"]] == ["Female, age in 60s, normal BMI, heart failure",
                                                 "Male, age in 60s, normal BMI, heart failure"]
    pictures = [_pixels(item["image"]) for item in gallery]
    assert pictures[0].shape == (16, 32, 3) and not np.array_equal(pictures[0], pictures[1])
    gallery, table = client.predict(FROM_DATASET, train_record, None, *PROMPT_VALUES, 3, 2.0, 4, 1.5, "age",
                                    api_name="/counterfactuals")
    decades = [row[0] for row in table["data"]]
    assert len(decades) >= 3 and decades == sorted(decades) and all(d.endswith("0s") for d in decades)


def test_browse_sorts_synthetic_records_and_shows_each_beside_its_mask_source_and_nearest_image(
        client, app_synthetic, app_quality):
    per_image = pd.read_csv(app_quality / "synthetic_per_image.csv")
    table, chosen = client.predict("all cells", "distance to nearest training image (closest first)",
                                   api_name="/browse")
    listed = pd.DataFrame(table["data"], columns=table["headers"])
    assert len(listed) == len(per_image)
    assert listed["nn_pixel_distance"].is_monotonic_increasing
    assert chosen["value"] == listed["record_id"][0]
    table, _ = client.predict("all cells", "mask fidelity (worst first)", api_name="/browse")
    assert pd.DataFrame(table["data"], columns=table["headers"])["mask_dice"].is_monotonic_increasing
    record = listed.iloc[-1]
    view = client.predict(record["record_id"], api_name="/privacy_view")
    nearest = per_image.set_index("record_id").loc[record["record_id"], "nn_pixel_record"]
    captions = [item["caption"] for item in view]
    assert captions[0] == f"{record['record_id']} (synthetic)"
    assert captions[1] == f"mask source {record['mask_source_record']}"
    assert captions[2].startswith(f"nearest training image {nearest}, distance ")
    assert all(_pixels(item["image"]).shape == (32, 32, 3) for item in view)
    cell = next(c for c in listed["cell"])
    table, _ = client.predict(f"{cell} ({(listed['cell'] == cell).sum()})", "record id", api_name="/browse")
    assert {row[1] for row in table["data"]} == {cell}


def _snapshot(*folders):
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for folder in folders
            for path in sorted(folder.rglob("*"))}


def test_the_server_binds_to_localhost_writes_nothing_into_model_or_dataset_and_stops_cleanly(
        app_model, app_dataset, train_record, tmp_path):
    before = _snapshot(app_model, app_dataset)
    server = start_app(["--model", str(app_model), "--dataset", str(app_dataset)], tmp_path / "app.log")
    assert server.url.startswith("http://127.0.0.1:")
    ed, *_ = _draw(Client(server.url, verbose=False), train_record)
    assert _pixels(ed).shape == (16, 16)
    returncode, log = stop_app(server)
    assert returncode == 0 and log.rstrip().endswith("cardiofair app: stopped"), log
    assert "Traceback" not in log
    # Its torch threads wait as the thread policy says, as every cardiofair process's do (issue 31).
    assert spin_counts(log) == [THREAD_POLICY["GOMP_SPINCOUNT"]]
    # The port is free again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", server.port))
    assert _snapshot(app_model, app_dataset) == before


# --- what the app refuses at start -------------------------------------------------------------


def test_a_folder_that_is_not_a_cardiofair_model_is_refused(tmp_path, capsys):
    assert main(["app", "--model", str(tmp_path), "--port", str(free_port())]) == 1
    assert "is not a finished cardiofair model" in capsys.readouterr().err


def test_a_model_with_pickled_weights_is_refused_not_loaded(app_model, tmp_path, capsys):
    model = shutil.copytree(app_model, tmp_path / "pickled")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), weights.with_suffix(".bin"))
    weights.unlink()
    assert main(["app", "--model", str(model), "--port", str(free_port())]) == 1
    assert "never loads pickled ones" in capsys.readouterr().err


def test_a_dataset_of_another_size_than_the_model_is_refused_with_the_reason(app_model, tmp_path, capsys):
    prepare_phantom(6, 0, tmp_path / "phantom24", settings=PrepareSettings(size=24), progress=False, workers=1)
    assert main(["app", "--model", str(app_model), "--dataset", str(tmp_path / "phantom24"),
                 "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "(2, 24, 24) pair" in err and "draws 16 px pairs" in err and "--size 16" in err


def test_a_port_in_use_is_a_clear_error(app_model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--model", str(app_model), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_without_gradio_the_command_says_how_to_install_it(app_model):
    # Python refuses to import a module whose sys.modules entry is None: gradio as not installed.
    code = ("import sys; sys.modules['gradio'] = None; from cardiofair.cli import main; "
            f"sys.exit(main(['app', '--model', {str(app_model)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install 'cardiofair[app]'" in done.stderr and "Traceback" not in done.stderr


def test_without_quality_results_the_app_finds_each_nearest_training_image_as_the_quality_stage_does(
        app_model, app_dataset, app_synthetic, app_quality, tmp_path):
    from cardiofair.app.explorer import Explorer

    explorer = Explorer(app_model, app_dataset, app_synthetic, workdir=tmp_path)
    assert explorer.sorts() == ["distance to nearest training image (closest first)", "record id"]
    table = explorer.synthetic_table("all cells", explorer.sorts()[0]).set_index("record_id")
    measured = pd.read_csv(app_quality / "synthetic_per_image.csv").set_index("record_id").loc[table.index]
    assert np.allclose(table["nn_pixel_distance"], measured["nn_pixel_distance"].round(3))
    assert (explorer.synthetic_rows.set_index("record_id").loc[table.index, "nn_pixel_record"]
            == measured["nn_pixel_record"]).all()


def test_the_controls_offer_only_the_grammars_values_the_model_was_trained_on(app_model):
    from cardiofair.app.explorer import model_vocabulary
    from cardiofair.diffusion.sample import TrainedGenerator
    from cardiofair.prompts import DEFAULT_SCHEMA

    # An ACDC-like model: its cohort records no sex or age, so neither can be chosen or swept.
    cells = [{"sex": "unknown", "age": "unknown", "bmi": "obese", "DCM": 1, "healthy": 0, "total": 1},
             {"sex": "unknown", "age": "unknown", "bmi": "normal", "DCM": 3, "healthy": 2, "total": 5}]
    assert model_vocabulary({"training_cells": cells}, DEFAULT_SCHEMA) == {
        "sex": [], "age": [], "bmi": ["normal", "obese"], "diagnosis": ["DCM", "healthy"]}
    vocabulary = model_vocabulary(TrainedGenerator.read_card(app_model), DEFAULT_SCHEMA)
    assert vocabulary["sex"] == ["Female", "Male"] and vocabulary["diagnosis"] == ["healthy", "heart failure"]


def test_quality_results_of_another_synthetic_dataset_are_refused(app_model, app_dataset, app_synthetic,
                                                                  app_quality, tmp_path):
    from cardiofair.app.explorer import Explorer
    from cardiofair.errors import CardiofairError

    other = shutil.copytree(app_synthetic, tmp_path / "other")
    manifest = read_manifest(other)
    manifest.loc[0, "record_id"] = "synthetic-elsewhere-00000"
    manifest.to_csv(other / "manifest.csv", index=False)
    with pytest.raises(CardiofairError, match="judged another synthetic dataset .* synthetic-elsewhere-00000"):
        Explorer(app_model, app_dataset, other, app_quality, workdir=tmp_path)
