"""Real-format cohorts through `cardiofair prepare`: good subjects survive, bad ones are
excluded with their reason in excluded.csv, --strict stops."""

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardiofair.cli import main
from cardiofair.data.phantom import phantom_volume
from cardiofair.data.phantom_export import write_phantom_ukbb
from cardiofair.data.records import read_manifest


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
