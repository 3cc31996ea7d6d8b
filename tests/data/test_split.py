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
