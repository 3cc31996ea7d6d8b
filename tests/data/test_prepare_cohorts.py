"""Real-format cohorts through `cardiofair prepare`: good subjects survive, bad ones are
excluded with their reason in excluded.csv, --strict stops."""

import gzip
import json
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from cohort_fixtures import write_mnms_copy

from cardiofair.cli import main
from cardiofair.data.phantom import phantom_volume
from cardiofair.data.phantom_export import write_phantom_ukbb
from cardiofair.data.records import read_manifest
from cardiofair.errors import SettingsError, SubjectError


@pytest.fixture()
def ukbb(tmp_path):
    root = tmp_path / "ukbb"
    metadata = write_phantom_ukbb(root, 9, seed=2, shape=(80, 88), n_slices=6)
    return root, metadata


def _damage(root, metadata):
    """Break subjects 2-8 in seven different ways; subjects 0 and 1 stay good."""
    eids = sorted(p.name for p in root.iterdir() if p.is_dir())
    raw = (root / eids[2] / "sa_ED.nii.gz").read_bytes()
    (root / eids[2] / "sa_ED.nii.gz").write_bytes(raw[: len(raw) // 2])
    (root / eids[3] / "sa_ES.nii.gz").unlink()
    img = nib.load(str(root / eids[4] / "seg_sa_ES.nii.gz"))
    data = np.asarray(img.dataobj).copy()
    data[data == 3] = 5
    nib.save(nib.Nifti1Image(data, img.affine), str(root / eids[4] / "seg_sa_ES.nii.gz"))
    img = nib.load(str(root / eids[5] / "sa_ED.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(root / eids[5] / "sa_ED.nii.gz"))
    img = nib.load(str(root / eids[6] / "seg_sa_ED.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(root / eids[6] / "seg_sa_ED.nii.gz"))
    table = pd.read_csv(metadata, dtype=str)
    table.loc[table.eid == eids[7], "weight"] = "4000"
    table.loc[table.eid == eids[8], "sex"] = "7"
    table.to_csv(metadata, index=False)
    return eids


def test_bad_subjects_are_excluded_with_reasons_and_good_ones_prepared(ukbb, tmp_path, capsys):
    root, metadata = ukbb
    eids = _damage(root, metadata)
    out = tmp_path / "prepared"
    assert main(["prepare", "--source", "ukbb", "--root", str(root), "--metadata", str(metadata),
                 "--out", str(out), "--quiet", "--columns", "subject_id=eid,height_cm=height,weight_kg=weight"]) == 0
    assert "wrote 2 records from 2 subjects" in capsys.readouterr().out
    assert list(read_manifest(out)["subject_id"]) == eids[:2]
    excluded = pd.read_csv(out / "excluded.csv", dtype=str).set_index("subject_id")
    expected = {
        eids[2]: ("sa_ED.nii.gz", "cannot read NIfTI"),
        eids[3]: ("sa_ES.nii.gz", "file is missing"),
        eids[4]: ("seg_sa_ES.nii.gz", "labels [5] outside"),
        eids[5]: ("sa_ED.nii.gz", "NaN"),
        eids[6]: ("seg_sa_ED.nii.gz", "LV mask is empty"),
        eids[7]: ("metadata.csv", "implausible"),
        eids[8]: ("metadata.csv", "unknown sex code"),
    }
    assert sorted(excluded.index) == sorted(expected)
    for eid, (file, reason) in expected.items():
        assert excluded.loc[eid, "file"].endswith(file) and reason in excluded.loc[eid, "reason"], eid


def test_strict_stops_with_the_subject_and_file(ukbb, tmp_path, capsys):
    root, metadata = ukbb
    eids = _damage(root, metadata)
    out = tmp_path / "prepared"
    assert main(["prepare", "--source", "ukbb", "--root", str(root), "--metadata", str(metadata), "--out", str(out),
                 "--quiet", "--strict", "--workers", "1"]) == 1
    assert f"{eids[2]} (" in capsys.readouterr().err
    assert not out.exists()


def test_prepared_ukbb_matches_the_phantom_geometry(ukbb, tmp_path):
    root, metadata = ukbb
    out = tmp_path / "prepared"
    assert main(["prepare", "--source", "ukbb", "--root", str(root), "--out", str(out), "--quiet",
                 "--columns", "height_cm=height,weight_kg=weight"]) == 0
    manifest = read_manifest(out).set_index("subject_id")
    assert len(manifest) == 9 and manifest["prompt"].str.contains("age in").all()
    for index in range(9):
        truth = phantom_volume(index, 2, shape=(80, 88), n_slices=6)[0]
        row = manifest.loc[str(1000001 + index)]
        assert (row["sex"], row["diagnosis"]) == (truth["sex"], truth["diagnosis"])
        assert row["bmi"] == pytest.approx(truth["bmi"], abs=0.1)
    with gzip.open(out / manifest["image_path"].iloc[0]) as handle:
        assert b"cardiofair prepared" in handle.read(400)


def test_a_placeholder_spacing_refuses_the_crop_until_the_spacing_is_stated(tmp_path, capsys):
    root = write_mnms_copy(tmp_path / "copy")
    out = tmp_path / "prepared"
    command = ["prepare", "--source", "mnms-copy", "--root", str(root), "--out", str(out), "--quiet"]
    assert main(command) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pixel_spacing_mm is needed" in error
    assert "ED_A00X0Y_sa.nii.gz) says 1 x 1 x 1 mm" in error and "--pixel-spacing-mm" in error
    assert not out.exists()
    assert main([*command, "--pixel-spacing-mm", "1.48"]) == 0
    assert "wrote 6 records from 6 subjects" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert list(manifest["vendor"]) == ["Siemens"] * 3 + ["Philips"] * 3
    assert manifest["diagnosis"].isna().all()
    preparation = json.loads((out / "prepare.json").read_text())
    assert preparation["pixel_spacing_mm"] == 1.48 and "warnings" not in preparation


def test_a_spacing_that_makes_the_heart_implausible_warns_naming_the_files(tmp_path, capsys):
    # 0.4 mm pixels: the 20-pixel LV cavity is 8 mm across, no adult's.
    root = write_mnms_copy(tmp_path / "copy", per_vendor=1, spacing=(0.4, 0.4, 8.0))
    out = tmp_path / "prepared"
    assert main(["prepare", "--source", "mnms-copy", "--root", str(root), "--out", str(out), "--quiet",
                 "--fov-mm", "30"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 records from 2 subjects" in printed and "2 warning(s)" in printed
    warnings = json.loads((out / "prepare.json").read_text())["warnings"]
    assert len(warnings) == 2 and "A00X0Y (" in warnings[0]
    assert "A/ED_A00X0Y_sa.nii.gz" in warnings[0] and "LABEL_A/ED_A00X0Y_sa_gt.nii.gz" in warnings[0]
    assert "the LV blood pool is 8 mm across at ED" in warnings[0]


def test_errors_survive_the_trip_back_from_a_worker_process():
    subject = pickle.loads(pickle.dumps(SubjectError("A00X0Y", "ED.nii.gz", "file is missing")))
    setting = pickle.loads(pickle.dumps(SettingsError("pixel_spacing_mm", "is needed")))
    assert (str(subject), subject.file, str(setting), setting.key) == \
        ("A00X0Y (ED.nii.gz): file is missing", "ED.nii.gz", "pixel_spacing_mm is needed", "pixel_spacing_mm")
