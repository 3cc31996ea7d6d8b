import pickle

import numpy as np
import pytest
from cohort_fixtures import (
    ED_CAVITY,
    ES_CAVITY,
    SHAPE,
    SLICES,
    affine,
    heart_image,
    heart_mask,
    load_all,
    truncate,
    write_csv,
    write_frame,
    write_nifti,
)

from cardiofair.data import ukbb

# A showcase export names columns by data-field: 31 sex, 21003 age at the imaging visit,
# 50 standing height, 21002 weight, 41270 ICD-10 diagnoses.
FIELD_HEADER = ("eid", "31-0.0", "21003-2.0", "50-2.0", "21002-2.0", "41270-0.0")
FIELD_COLUMNS = {"sex": "31-0.0", "age_years": "21003-2.0", "height_cm": "50-2.0", "weight_kg": "21002-2.0",
                 "icd10": "41270-0.0"}
FIELD_ROWS = [
    [1000015, 0, 63, 162.0, 58.0, "I10;I500"],
    [1000027, 1, 55, 180.0, 81.0, "E119|I10"],
    [1000039, 0, 71, 158.0, 70.0, ""],
]
PLAIN_HEADER = ("eid", "sex", "age", "bmi", "diagnosis", "icd10")


def write_subject(root, eid, seed=0):
    folder = root / str(eid)
    write_frame(folder / "sa_ED.nii.gz", folder / "seg_sa_ED.nii.gz", ED_CAVITY, seed)
    write_frame(folder / "sa_ES.nii.gz", folder / "seg_sa_ES.nii.gz", ES_CAVITY, seed + 1)
    return folder


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "ukbb"
    for seed, row in enumerate(FIELD_ROWS):
        write_subject(root, row[0], seed)
    return root


def test_loads_subjects_with_a_field_mapping(root, tmp_path):
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    sources = ukbb.discover(root, table, columns=FIELD_COLUMNS, required=())
    assert [s.subject_id for s in sources] == ["1000015", "1000027", "1000039"]
    cases, errors = load_all(sources)
    assert errors == {}
    case = cases["1000015"]
    assert case.dataset == "ukbb"
    assert case.images["ED"].shape == case.masks["ES"].shape == (*SHAPE, SLICES)
    assert case.spacing_mm == pytest.approx((1.8, 1.8, 8.0))
    np.testing.assert_array_equal(case.masks["ED"], heart_mask(ED_CAVITY))
    np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))
    np.testing.assert_allclose(case.images["ED"], heart_image(heart_mask(ED_CAVITY), 0), atol=1e-4)
    assert case.files["ES_mask"].endswith("1000015/seg_sa_ES.nii.gz")
    assert case.meta["sex"] == "Female" and cases["1000027"].meta["sex"] == "Male"
    assert case.meta["age_years"] == 63
    assert case.meta["diagnosis"] == "heart failure"  # I500 among I10;I500
    assert case.meta["bmi"] == pytest.approx(58.0 / 1.62**2)
    assert cases["1000027"].meta["diagnosis"] == "healthy"
    assert cases["1000039"].meta["diagnosis"] is None  # no codes recorded: unknown, not invented
    assert "icd10" not in case.meta


def test_missing_diagnosis_excludes_only_that_subject_when_required(root, tmp_path):
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    cases, errors = load_all(ukbb.discover(root, table, columns=FIELD_COLUMNS))
    assert sorted(cases) == ["1000015", "1000027"]
    assert errors["1000039"].reason == "required metadata 'diagnosis' is missing"


def test_diagnosis_column_wins_over_icd10_codes(root):
    write_csv(root / "metadata.csv", PLAIN_HEADER, [
        [1000015, "F", 63, 22.5, "HF", ""],
        [1000027, "M", 55, 25.1, "0", "I500"],
        [1000039, "F", 71, "", "", "I50.9"],
    ])
    cases, errors = load_all(ukbb.discover(root))  # the only CSV in the root is the metadata
    assert errors == {}
    assert [cases[e].meta["diagnosis"] for e in ("1000015", "1000027", "1000039")] == [
        "heart failure", "healthy", "heart failure"]
    assert cases["1000015"].meta["bmi"] == 22.5


def test_folder_without_metadata_row_is_excluded(root, tmp_path):
    write_subject(root, 1000041, seed=7)
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    cases, errors = load_all(ukbb.discover(root, table, columns=FIELD_COLUMNS, required=()))
    assert sorted(cases) == ["1000015", "1000027", "1000039"]
    assert errors["1000041"].reason == "no metadata row"
    assert errors["1000041"].file == str(table)


def _rewrite_mask(name, mask, matrix=None):
    def damage(folder):
        write_nifti(folder / name, mask, matrix)
    return damage


def _rewrite_image(name, value):
    def damage(folder):
        image = heart_image(heart_mask()).copy()
        image[10, 10, 2] = value
        write_nifti(folder / name, image)
    return damage


def _with_label_five():
    mask = heart_mask()
    mask[2, 3, 0] = 5
    return mask


FILE_DAMAGE = {
    "corrupt gzip": (lambda folder: truncate(folder / "sa_ED.nii.gz"), "sa_ED.nii.gz", "cannot read NIfTI"),
    "ES file absent": (lambda folder: (folder / "sa_ES.nii.gz").unlink(), "sa_ES.nii.gz", "file is missing"),
    "shape mismatch": (_rewrite_mask("seg_sa_ED.nii.gz", heart_mask(slices=4)), "seg_sa_ED.nii.gz",
                       "mask shape (48, 40, 4) differs from image shape (48, 40, 5)"),
    "affine mismatch": (_rewrite_mask("seg_sa_ES.nii.gz", heart_mask(ES_CAVITY), affine(angle_deg=0.0)),
                        "seg_sa_ES.nii.gz", "mask affine differs from image affine"),
    "label 5": (_rewrite_mask("seg_sa_ED.nii.gz", _with_label_five()), "seg_sa_ED.nii.gz",
                "mask has labels [5] outside [0, 1, 2, 3]"),
    "NaN intensity": (_rewrite_image("sa_ES.nii.gz", np.nan), "sa_ES.nii.gz", "image has NaN or infinite"),
    "inf intensity": (_rewrite_image("sa_ED.nii.gz", np.inf), "sa_ED.nii.gz", "image has NaN or infinite"),
}


@pytest.mark.parametrize("damage, file_name, reason", FILE_DAMAGE.values(), ids=FILE_DAMAGE.keys())
def test_bad_files_exclude_one_subject(root, tmp_path, damage, file_name, reason):
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    damage(root / "1000027")
    cases, errors = load_all(ukbb.discover(root, table, columns=FIELD_COLUMNS, required=()))
    assert sorted(cases) == ["1000015", "1000039"]
    assert reason in errors["1000027"].reason
    assert errors["1000027"].file.endswith(f"1000027/{file_name}")


META_DAMAGE = {
    "BMI 400": ([1000027, 1, 55, 400, "healthy", ""], "bmi 400 is implausible (expected 10-80)"),
    "age -3": ([1000027, 1, -3, 24.0, "healthy", ""], "age_years -3 is implausible"),
    "sex code 2": ([1000027, 2, 55, 24.0, "healthy", ""], "unknown sex code '2'"),
    "age not a number": ([1000027, 1, "fifty", 24.0, "healthy", ""], "age_years 'fifty' is not a number"),
    "unknown diagnosis": ([1000027, 1, 55, 24.0, "angina", ""], "unknown diagnosis 'angina'"),
}


@pytest.mark.parametrize("bad_row, reason", META_DAMAGE.values(), ids=META_DAMAGE.keys())
def test_bad_metadata_excludes_one_subject(root, tmp_path, bad_row, reason):
    good = [[1000015, 0, 63, 22.0, "heart failure", ""], [1000039, 0, 71, 30.5, "healthy", ""]]
    table = write_csv(tmp_path / "metadata.csv", PLAIN_HEADER, [good[0], bad_row, good[1]])
    cases, errors = load_all(ukbb.discover(root, table))
    assert sorted(cases) == ["1000015", "1000039"]
    assert reason in errors["1000027"].reason
    assert errors["1000027"].file == str(table)


def test_discovery_reads_no_images_and_sources_pickle(root, tmp_path):
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    for path in root.glob("*/*.nii.gz"):
        if path.parent.name != "1000015":
            truncate(path)
    sources = ukbb.discover(root, table, columns=FIELD_COLUMNS)
    assert len(sources) == 3  # corrupt files are found, not read, at discovery
    restored = pickle.loads(pickle.dumps(sources))  # they travel to worker processes
    assert restored[0].load().meta["diagnosis"] == "heart failure"


def test_whole_root_problems_are_clear(root, tmp_path):
    table = write_csv(tmp_path / "ukb_fields.csv", FIELD_HEADER, FIELD_ROWS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ukbb.discover(tmp_path / "nowhere", table)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no UK Biobank subjects"):
        ukbb.discover(tmp_path / "empty", table)
    with pytest.raises(ValueError, match="'31-0.0'"):  # a mapped column the CSV lacks
        ukbb.discover(root, write_csv(tmp_path / "plain.csv", PLAIN_HEADER, []), columns={"sex": "31-0.0"})
    with pytest.raises(ValueError, match="'eid'"):
        ukbb.discover(root, write_csv(tmp_path / "noid.csv", ("id", "sex"), [[1, 0]]))
    with pytest.raises(ValueError, match="unknown UK Biobank column key"):
        ukbb.discover(root, table, columns={"gender": "31-0.0"})
    with pytest.raises(FileNotFoundError, match="needs a metadata CSV"):
        ukbb.discover(root)
