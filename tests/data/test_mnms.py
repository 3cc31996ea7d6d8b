import numpy as np
import pytest
from cohort_fixtures import (
    ED_CAVITY,
    ES_CAVITY,
    MNMS_HEADER,
    MNMS_ROWS,
    MNMS_TABLE,
    SHAPE,
    SLICES,
    cine,
    heart_mask,
    load_all,
    write_cine,
    write_csv,
    write_frame,
    write_mnms_copy,
    write_nifti,
)

from cardiofair.data import mnms

@pytest.fixture
def mnms_root(tmp_path):
    root = tmp_path / "M&Ms"
    write_cine(root / "Training" / "Labeled", "A0S9V9", 0, 3)
    write_cine(root / "Training" / "Labeled", "A1K2P5", 2, 5)
    write_cine(root / "Training" / "Unlabeled", "C2L5P7", 0, 3, labelled=False)
    write_cine(root / "Validation", "E3F5U2", 0, 3)
    return root


def mnms_table(root, rows=MNMS_ROWS.values()):
    return write_csv(root / MNMS_TABLE, MNMS_HEADER, rows)


def test_mnms_picks_the_ed_and_es_frames_of_the_cine(mnms_root):
    mnms_table(mnms_root)
    sources = mnms.discover(mnms_root)
    assert [s.subject_id for s in sources] == ["A0S9V9", "A1K2P5", "C2L5P7", "E3F5U2"]
    cases, errors = load_all(sources)
    case = cases["A1K2P5"]  # ED is frame 2 and ES frame 5 (0-based), not the first and last
    assert case.images["ED"].shape == case.masks["ES"].shape == (*SHAPE, SLICES)
    assert case.spacing_mm == pytest.approx((1.8, 1.8, 8.0))
    np.testing.assert_array_equal(case.masks["ED"], heart_mask(ED_CAVITY))
    np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))
    assert (case.masks["ES"] == 1).sum() < (case.masks["ED"] == 1).sum()
    images, _ = cine(6, 2, 5)
    np.testing.assert_allclose(case.images["ES"], images[..., 5])


def test_mnms_metadata_and_extras(mnms_root):
    mnms_table(mnms_root)
    cases, _ = load_all(mnms.discover(mnms_root))
    meta = cases["A0S9V9"].meta
    assert meta["diagnosis"] == "hypertrophic cardiomyopathy"
    assert meta["sex"] == "Male" and meta["age_years"] == 45
    assert meta["bmi"] == pytest.approx(80.0 / 1.78**2)
    assert (meta["vendor"], meta["centre"], meta["source_split"]) == ("Siemens", "1", "training")
    assert cases["A1K2P5"].meta["sex"] == "Female"
    assert cases["E3F5U2"].meta["diagnosis"] == "hypertensive heart disease"
    assert cases["E3F5U2"].meta["source_split"] == "validation"


def test_unlabelled_subjects_are_excluded_with_a_reason(mnms_root):
    mnms_table(mnms_root)
    cases, errors = load_all(mnms.discover(mnms_root))
    assert sorted(cases) == ["A0S9V9", "A1K2P5", "E3F5U2"]
    assert errors["C2L5P7"].reason == "unlabelled subject: no ground-truth mask C2L5P7_sa_gt.nii.gz"


BAD_ROWS = {
    "ES beyond the cine": (["A1K2P5", "Philips", "B", 2, 2, 7, "NOR", "F", 38, 165.0, 60.0], "_sa.nii.gz",
                           "frame 7 is missing: the cine has 6 frames"),
    "ED not a number": (["A1K2P5", "Philips", "B", 2, "", 5, "NOR", "F", 38, 165.0, 60.0], ".csv",
                        "ED frame index '' is not a frame number"),
    "age -3": (["A1K2P5", "Philips", "B", 2, 2, 5, "NOR", "F", -3, 165.0, 60.0], ".csv", "age_years -3 is implausible"),
    "sex code X": (["A1K2P5", "Philips", "B", 2, 2, 5, "NOR", "X", 38, 165.0, 60.0], ".csv", "unknown sex code 'X'"),
    "unknown pathology": (["A1K2P5", "Philips", "B", 2, 2, 5, "CAD", "F", 38, 165.0, 60.0], ".csv",
                          "unknown M&Ms pathology code 'CAD'"),
    "pathology Other": (["A1K2P5", "Philips", "B", 2, 2, 5, "Other", "F", 38, 165.0, 60.0], ".csv",
                        "diagnosis code 'Other' names no specific diagnosis"),
}


@pytest.mark.parametrize("row, file_suffix, reason", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_rows_exclude_one_subject(mnms_root, row, file_suffix, reason):
    mnms_table(mnms_root, [MNMS_ROWS["A0S9V9"], row, MNMS_ROWS["E3F5U2"]])
    cases, errors = load_all(mnms.discover(mnms_root))
    assert sorted(cases) == ["A0S9V9", "E3F5U2"]
    assert reason in errors["A1K2P5"].reason
    assert errors["A1K2P5"].file.endswith(file_suffix)


def test_cine_without_metadata_row_is_excluded(mnms_root):
    mnms_table(mnms_root, [MNMS_ROWS["A1K2P5"]])
    cases, errors = load_all(mnms.discover(mnms_root, required=()))
    assert sorted(cases) == ["A1K2P5"]
    assert errors["A0S9V9"].reason == "no metadata row"
    assert errors["C2L5P7"].reason.startswith("unlabelled")


def test_other_pathology_is_unknown_when_not_required(mnms_root):
    row = ["A1K2P5", "Philips", "B", 2, 2, 5, "Other", "F", 38, 165.0, 60.0]
    mnms_table(mnms_root, [MNMS_ROWS["A0S9V9"], row])
    cases, _ = load_all(mnms.discover(mnms_root, required=()))
    assert cases["A1K2P5"].meta["diagnosis"] is None


def test_mnms_table_problems_are_clear(mnms_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="information CSV"):
        mnms.discover(mnms_root)
    older = write_csv(mnms_root / "201014_M&Ms_Dataset_Information_-_opendataset.csv", MNMS_HEADER[:6],
                      [r[:6] for r in MNMS_ROWS.values()])
    newer = mnms_table(mnms_root)
    assert mnms.discover(mnms_root)[0].arguments["source"] == str(newer)  # the release with pathologies
    with pytest.raises(ValueError, match="'ES'"):
        mnms.discover(mnms_root, write_csv(tmp_path / "no_es.csv", ("External code", "ED"), [["A0S9V9", 0]]))
    assert mnms.discover(mnms_root, older, required=())[0].load().meta["diagnosis"] is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no M&Ms subjects"):
        mnms.discover(tmp_path / "empty", newer)


# M&Ms-2: dataset_information.csv beside the dataset folder; SUBJECT_CODE 1 is folder 001.
MNMS2_HEADER = ("SUBJECT_CODE", "DISEASE", "SEX", "AGE", "VENDOR", "SCANNER", "FIELD")
MNMS2_ROWS = [
    [1, "NOR", "M", 45, "SIEMENS", "Avanto", 1.5],
    [2, "FALL", "F", 23, "PHILIPS", "Achieva", 3.0],
    [3, "LV", "M", 64, "GE", "Signa Excite", 1.5],
]


@pytest.fixture
def mnms2_root(tmp_path):
    root = tmp_path / "MnM2"
    for number in (1, 2, 3):
        folder = root / "dataset" / f"{number:03d}"
        for frame, cavity in (("ED", ED_CAVITY), ("ES", ES_CAVITY)):
            write_frame(folder / f"{number:03d}_SA_{frame}.nii.gz", folder / f"{number:03d}_SA_{frame}_gt.nii.gz",
                        cavity, seed=number)
        write_nifti(folder / f"{number:03d}_LA_ED.nii.gz", np.zeros((40, 40, 1), np.float32))
    write_csv(root / "dataset_information.csv", MNMS2_HEADER, MNMS2_ROWS)
    return root


def test_mnms2_loads_frames_and_metadata(mnms2_root):
    for root in (mnms2_root, mnms2_root / "dataset"):  # the table is found beside the dataset folder too
        sources = mnms.discover_mnms2(root)
        assert [s.subject_id for s in sources] == ["001", "002", "003"]
        cases, errors = load_all(sources)
        assert errors == {}
    case = cases["002"]
    assert case.dataset == "mnms2"
    np.testing.assert_array_equal(case.masks["ED"], heart_mask(ED_CAVITY))
    np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))
    assert case.meta["diagnosis"] == "tetralogy of fallot"
    assert case.meta["sex"] == "Female" and case.meta["age_years"] == 23
    assert (case.meta["vendor"], case.meta["scanner"], case.meta["field_strength_t"]) == ("PHILIPS", "Achieva", "3.0")
    assert cases["003"].meta["diagnosis"] == "dilated left ventricle"


def test_mnms2_bad_subjects(mnms2_root):
    (mnms2_root / "dataset" / "002" / "002_SA_ES.nii.gz").unlink()
    write_csv(mnms2_root / "dataset_information.csv", MNMS2_HEADER,
              [MNMS2_ROWS[0], MNMS2_ROWS[1], [3, "XYZ", "M", 64, "GE", "Signa", 1.5]])
    write_frame(mnms2_root / "dataset" / "004" / "004_SA_ED.nii.gz", mnms2_root / "dataset" / "004" / "004_SA_ED_gt.nii.gz")
    cases, errors = load_all(mnms.discover_mnms2(mnms2_root))
    assert sorted(cases) == ["001"]
    assert errors["002"].reason == "file is missing" and errors["002"].file.endswith("002_SA_ES.nii.gz")
    assert "unknown M&Ms-2 disease code 'XYZ'" in errors["003"].reason
    assert errors["004"].reason == "no metadata row"


def test_mnms2_without_table_has_unknown_metadata(mnms2_root):
    (mnms2_root / "dataset_information.csv").unlink()
    cases, errors = load_all(mnms.discover_mnms2(mnms2_root, required=()))
    assert sorted(cases) == ["001", "002", "003"]
    assert cases["001"].meta["diagnosis"] is None and cases["001"].meta["sex"] is None
    _, errors = load_all(mnms.discover_mnms2(mnms2_root))
    assert errors["001"].reason == "required metadata 'diagnosis' is missing"


def test_the_public_copy_gives_vendor_and_centre_and_no_diagnosis(tmp_path):
    root = write_mnms_copy(tmp_path / "copy", per_vendor=2)
    sources = mnms.discover_copy(root)
    # TRAIN_A repeats A file for file: read once.
    assert [s.subject_id for s in sources] == ["A00X0Y", "A01X1Y", "B00X0Y", "B01X1Y"]
    cases, errors = load_all(sources)
    assert errors == {}
    case = cases["B01X1Y"]
    assert (case.meta["vendor"], case.meta["vendor_code"], case.meta["centre"]) == ("Philips", "B", "2")
    assert case.meta["diagnosis"] is None and case.meta["sex"] is None
    assert case.files["ES_mask"].endswith("LABEL_B/ES_B01X1Y_sa_gt.nii.gz")
    assert (case.masks["ES"] == 1).sum() < (case.masks["ED"] == 1).sum()
    assert case.spacing_mm == (1.0, 1.0, 1.0)
    # Without the table the centre is unknown; the vendor still comes from the folder.
    (root / "train.csv").unlink()
    cases, _ = load_all(mnms.discover_copy(root / "Different_Vendor"))
    assert (cases["A00X0Y"].meta["vendor"], cases["A00X0Y"].meta["centre"]) == ("Siemens", None)


def test_the_public_copy_excludes_a_missing_mask_and_a_self_contradicting_centre(tmp_path):
    root = write_mnms_copy(tmp_path / "copy", per_vendor=2)
    (root / "Different_Vendor" / "LABEL_B" / "ED_B00X0Y_sa_gt.nii.gz").unlink()
    write_csv(root / "train.csv", ("External code", "Vendor", "Centre"),
              [["A00X0Y", "A", 1], ["A00X0Y", "A", 3], ["A01X1Y", "A", 1]])
    cases, errors = load_all(mnms.discover_copy(root))
    assert sorted(cases) == ["A01X1Y", "B01X1Y"] and cases["B01X1Y"].meta["centre"] is None
    assert errors["B00X0Y"].file.endswith("ED_B00X0Y_sa_gt.nii.gz") and errors["B00X0Y"].reason == "file is missing"
    assert "several centres ['1', '3']" in errors["A00X0Y"].reason
    with pytest.raises(ValueError, match="no M&Ms copy subjects.*LABEL_A"):
        mnms.discover_copy(root / "Different_Vendor" / "LABEL_A")
