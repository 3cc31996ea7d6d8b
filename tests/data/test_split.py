import shutil

import pandas as pd
import pytest

from cardiofair.cli import main
from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, training_rows
from cardiofair.data.summary import with_cells


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "phantom"
    prepare_phantom(300, 0, root, settings=PrepareSettings(slices_per_subject=2), progress=False, workers=1)
    return root


def test_splits_are_by_subject_stratified_and_deterministic(dataset):
    manifest = read_manifest(dataset)
    splits = assign_splits(manifest, test=0.2, val=0.1, seed=1)
    assert splits.equals(assign_splits(manifest, test=0.2, val=0.1, seed=1))
    assert not splits.equals(assign_splits(manifest, test=0.2, val=0.1, seed=2))
    # Both slices of a subject share its split.
    assert (manifest.assign(split=splits).groupby("subject_id")["split"].nunique() == 1).all()
    subjects = manifest.assign(split=splits).drop_duplicates("subject_id")
    shares = subjects["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.03) and shares["val"] == pytest.approx(0.1, abs=0.03)
    # Stratified: every cell with at least 5 subjects has test subjects, rare heart-failure ones included.
    cells = with_cells(subjects).astype(str).agg("|".join, axis=1)
    for cell, part in subjects.groupby(cells):
        if len(part) >= 5:
            assert (part["split"] == "test").any(), cell


def test_split_command_writes_the_column_and_protects_it(dataset, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    assert main(["split", str(copy), "--seed", "3"]) == 0
    assert "subjects per split" in capsys.readouterr().out
    manifest = read_manifest(copy)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert set(training_rows(manifest)["split"]) == {"train"}
    assert main(["split", str(copy)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["split", str(copy), "--overwrite", "--seed", "4"]) == 0


def test_bad_fractions_and_synthetic_records_are_refused():
    manifest = pd.DataFrame({"subject_id": ["a"], "sex": ["Female"], "age_years": [60], "bmi": [22],
                             "diagnosis": ["healthy"], "is_synthetic": [False]})
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(manifest, test=0.6, val=0.5)
    with pytest.raises(ValueError, match="synthetic"):
        assign_splits(manifest.assign(is_synthetic=True))


def test_scarcity_holds_back_the_stated_share_of_one_cells_training_subjects(dataset, tmp_path, capsys):
    copy = tmp_path / "scarce"
    shutil.copytree(dataset, copy)
    assert main(["split", str(copy), "--seed", "3", "--scarcity", "sex=Female,diagnosis=healthy,keep=0.25"]) == 0
    manifest = read_manifest(copy)
    plain = assign_splits(read_manifest(dataset), test=0.2, val=0.1, seed=3)
    subjects = manifest.assign(plain=plain).drop_duplicates("subject_id")
    in_cell = (subjects["sex"] == "Female") & (subjects["diagnosis"] == "healthy")
    trained_before = subjects[in_cell & (subjects["plain"] == "train")]
    held = subjects[subjects["split"] == "held_back"]
    # Only training subjects of the cell move, and all but a quarter of them do.
    assert set(held["subject_id"]) <= set(trained_before["subject_id"])
    assert len(trained_before) - len(held) == round(0.25 * len(trained_before))
    assert (subjects.loc[~subjects["subject_id"].isin(held["subject_id"]), "split"]
            == subjects.loc[~subjects["subject_id"].isin(held["subject_id"]), "plain"]).all()
    assert not set(held["subject_id"]) & set(training_rows(manifest)["subject_id"])
    assert "held_back" in capsys.readouterr().out


@pytest.mark.parametrize("scarcity, message", [
    ("sex=Female,diagnosis=no such disease,keep=0.5", "no training subject is of cell sex Female, diagnosis no such"),
    ("sex=Female,diagnosis=heart failure,keep=0.01", "fewer than the planner's minimum support of 5"),
    ("sex=Female,keep=1.5", "keep must be between 0 and 1"),
    ("colour=blue,keep=0.5", "names a cell by"),
])
def test_a_scarcity_that_cannot_be_met_is_refused_and_nothing_is_written(dataset, tmp_path, capsys, scarcity,
                                                                         message):
    copy = tmp_path / "scarce"
    shutil.copytree(dataset, copy)
    before = (copy / "manifest.csv").read_bytes()
    assert main(["split", str(copy), "--scarcity", scarcity]) != 0
    assert message in capsys.readouterr().err
    assert (copy / "manifest.csv").read_bytes() == before
