import nibabel as nib
import numpy as np
import pytest
from cohort_fixtures import ED_CAVITY, ES_CAVITY, SHAPE, SLICES, heart_mask, load_all, truncate, write_acdc_patient, write_nifti

from cardiofair.data import acdc


@pytest.fixture
def database(tmp_path):
    """The official archive's layout: database/training and database/testing."""
    database = tmp_path / "ACDC" / "database"
    write_acdc_patient(database / "training" / "patient001", ed=1, es=4, group="DCM", dtype=np.int16)
    write_acdc_patient(database / "training" / "patient002", ed=1, es=3, group="NOR", height=160.0, weight=52.0,
                       dtype=np.float32)
    write_acdc_patient(database / "testing" / "patient101", ed=2, es=5, group="MINF", dtype=np.float32)
    return database


def test_finds_patients_from_the_archive_root(database):
    sources = acdc.discover(database.parent)
    assert [s.subject_id for s in sources] == ["patient001", "patient002", "patient101"]
    cases, errors = load_all(sources)
    assert errors == {}
    assert cases["patient001"].meta["source_split"] == "training"
    assert cases["patient101"].meta["source_split"] == "testing"
    assert cases["patient101"].files["ED"].endswith("patient101_frame02.nii.gz")


def test_int16_and_float32_images_load_alike(database):
    assert nib.load(str(database / "training/patient001/patient001_frame01.nii.gz")).get_data_dtype() == np.int16
    assert nib.load(str(database / "training/patient002/patient002_frame01.nii.gz")).get_data_dtype() == np.float32
    cases, _ = load_all(acdc.discover(database))
    for case in cases.values():
        assert case.images["ED"].dtype == np.float32
        assert case.images["ES"].shape == (*SHAPE, SLICES)
        assert case.spacing_mm == pytest.approx((1.8, 1.8, 8.0))


def test_labels_are_remapped_to_cardiofair_order(database):
    folder = database / "training" / "patient001"
    on_disk = np.asarray(nib.load(str(folder / "patient001_frame01_gt.nii.gz")).dataobj)
    case = acdc.discover(folder.parent)[0].load()
    lv_centre, rv_voxel, wall = (27, 20, 2), (15, 20, 2), (27, 28, 2)
    assert on_disk[lv_centre] == 3 and case.masks["ED"][lv_centre] == 1  # ACDC LV -> LV blood pool 1
    assert on_disk[rv_voxel] == 1 and case.masks["ED"][rv_voxel] == 3  # ACDC RV -> RV blood pool 3
    assert on_disk[wall] == 2 and case.masks["ED"][wall] == 2
    np.testing.assert_array_equal(case.masks["ED"], heart_mask(ED_CAVITY))
    np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))


def test_info_cfg_gives_diagnosis_and_bmi_but_no_sex_or_age(database):
    cases, _ = load_all(acdc.discover(database))
    meta = cases["patient001"].meta
    assert meta["diagnosis"] == "dilated cardiomyopathy"
    assert meta["height_cm"] == 184.0 and meta["weight_kg"] == 95.0
    assert meta["bmi"] == pytest.approx(95.0 / 1.84**2)
    assert meta["sex"] is None and meta["age_years"] is None
    assert cases["patient002"].meta["diagnosis"] == "healthy"
    assert cases["patient101"].meta["diagnosis"] == "myocardial infarction"


def test_root_may_be_a_split_folder(database):
    sources = acdc.discover(database / "testing")
    assert [s.subject_id for s in sources] == ["patient101"]
    assert sources[0].load().meta["source_split"] == "testing"


INFO_DAMAGE = {
    "no ES line": ("ED: 1\nGroup: DCM\nHeight: 184.0\nNbFrame: 6\nWeight: 95.0\n", "Info.cfg has no ES line"),
    "non-numeric ES": ("ED: 1\nES: twelve\nGroup: DCM\nNbFrame: 6\n", "Info.cfg: ES 'twelve' is not a frame number"),
    "ES beyond NbFrame": ("ED: 1\nES: 9\nGroup: DCM\nNbFrame: 6\n", "ES frame 9 is beyond NbFrame 6"),
    "line without colon": ("ED: 1\nES 4\nGroup: DCM\n", "Info.cfg line 2 is not 'key: value'"),
    "unknown group": ("ED: 1\nES: 4\nGroup: ARVC\nHeight: 184\nWeight: 95\n", "unknown ACDC group code 'ARVC'"),
    "absurd weight": ("ED: 1\nES: 4\nGroup: DCM\nHeight: 184\nWeight: 950\n", "weight_kg 950 is implausible"),
}


@pytest.mark.parametrize("info, reason", INFO_DAMAGE.values(), ids=INFO_DAMAGE.keys())
def test_malformed_info_cfg_names_the_file(database, info, reason):
    (database / "training" / "patient002" / "Info.cfg").write_text(info)
    cases, errors = load_all(acdc.discover(database))
    assert sorted(cases) == ["patient001", "patient101"]
    assert reason in errors["patient002"].reason
    assert errors["patient002"].file.endswith("patient002/Info.cfg")


def _label_five(folder):
    mask = heart_mask(ES_CAVITY)
    mask[30, 20, 1] = 5
    write_nifti(folder / "patient002_frame03_gt.nii.gz", mask)


FILE_DAMAGE = {
    "Info.cfg absent": (lambda f: (f / "Info.cfg").unlink(), "Info.cfg", "Info.cfg is missing"),
    "ES frame absent": (lambda f: (f / "patient002_frame03.nii.gz").unlink(), "patient002_frame03.nii.gz",
                        "file is missing"),
    "corrupt ED mask": (lambda f: truncate(f / "patient002_frame01_gt.nii.gz"), "patient002_frame01_gt.nii.gz",
                        "cannot read NIfTI"),
    "label 5": (_label_five, "patient002_frame03_gt.nii.gz", "mask has labels [5] outside [0, 1, 2, 3]"),
}


@pytest.mark.parametrize("damage, file_name, reason", FILE_DAMAGE.values(), ids=FILE_DAMAGE.keys())
def test_bad_files_exclude_one_patient(database, damage, file_name, reason):
    damage(database / "training" / "patient002")
    cases, errors = load_all(acdc.discover(database))
    assert sorted(cases) == ["patient001", "patient101"]
    assert reason in errors["patient002"].reason
    assert errors["patient002"].file.endswith(f"patient002/{file_name}")


def test_whole_root_problems_are_clear(database, tmp_path):
    with pytest.raises(FileNotFoundError, match="ACDC root"):
        acdc.discover(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no ACDC subjects"):
        acdc.discover(database / "training" / "patient001")
    write_acdc_patient(database / "copy" / "patient001")
    with pytest.raises(ValueError, match="patient001 is found twice"):
        acdc.discover(database)
