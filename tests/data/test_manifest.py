import numpy as np
import pandas as pd
import pytest
from cohort_fixtures import ED_CAVITY, ES_CAVITY, SHAPE, SLICES, cine, heart_mask, load_all, write_csv, write_frame, write_nifti

from cardiofair.data import manifest
from cardiofair.data.case import ACDC_LABELS

HEADER = ("subject_id", "ed_image", "es_image", "ed_mask", "es_mask", "ed_frame", "es_frame", "sex", "age_years",
          "height_cm", "weight_kg", "bmi", "diagnosis", "site")


@pytest.fixture
def cohort(tmp_path):
    """Three subjects: 3D files under the CSV's folder, a 4D cine, and files given by absolute path."""
    folder = tmp_path / "study"
    for name, cavity in (("ed", ED_CAVITY), ("es", ES_CAVITY)):
        write_frame(folder / "images" / f"s01_{name}.nii.gz", folder / "masks" / f"s01_{name}.nii.gz", cavity)
        write_frame(tmp_path / "elsewhere" / f"s03_{name}.nii.gz", tmp_path / "elsewhere" / f"s03_{name}_seg.nii.gz",
                    cavity)
    images, masks = cine(frames=8, ed=1, es=4)
    write_nifti(folder / "cines" / "s02.nii.gz", images)
    write_nifti(folder / "cines" / "s02_seg.nii.gz", masks)
    far = tmp_path / "elsewhere"
    rows = [
        ["s01", "images/s01_ed.nii.gz", "images/s01_es.nii.gz", "masks/s01_ed.nii.gz", "masks/s01_es.nii.gz", "", "",
         "F", 67, 160, 48, "", "Heart Failure", "Leeds"],
        ["s02", "cines/s02.nii.gz", "cines/s02.nii.gz", "cines/s02_seg.nii.gz", "cines/s02_seg.nii.gz", 1, 4,
         "M", 58, "", "", 31.2, "cardiac amyloidosis", "York"],
        ["s03", far / "s03_ed.nii.gz", far / "s03_es.nii.gz", far / "s03_ed_seg.nii.gz", far / "s03_es_seg.nii.gz",
         "", "", "male", 44, 181, 77, "", "0", "Leeds"],
    ]
    return write_csv(folder / "cohort.csv", HEADER, rows)


def test_loads_relative_absolute_and_4d_entries(cohort):
    sources = manifest.discover(cohort.parent)  # a folder means its cohort.csv
    assert [s.subject_id for s in sources] == ["s01", "s02", "s03"]
    cases, errors = load_all(sources)
    assert errors == {}
    for case in cases.values():
        assert case.dataset == "in-house"
        assert case.images["ED"].shape == (*SHAPE, SLICES)
        assert case.spacing_mm == pytest.approx((1.8, 1.8, 8.0))
        np.testing.assert_array_equal(case.masks["ED"], heart_mask(ED_CAVITY))
        np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))
    images, _ = cine(frames=8, ed=1, es=4)
    np.testing.assert_allclose(cases["s02"].images["ES"], images[..., 4])


def test_metadata_and_free_text_diagnoses(cohort):
    cases, _ = load_all(manifest.discover(cohort))
    s01, s02, s03 = (cases[s].meta for s in ("s01", "s02", "s03"))
    assert (s01["sex"], s01["diagnosis"], s01["site"]) == ("Female", "heart failure", "Leeds")
    assert s01["bmi"] == pytest.approx(48 / 1.6**2)
    assert (s02["diagnosis"], s02["bmi"]) == ("cardiac amyloidosis", 31.2)  # kept: not in the vocabulary
    assert (s03["sex"], s03["diagnosis"]) == ("Male", "healthy")
    for meta in (s01, s02, s03):
        assert not {"ed_image", "es_mask", "ed_frame"} & set(meta)


def test_acdc_label_order(tmp_path):
    for name, cavity in (("ed", ED_CAVITY), ("es", ES_CAVITY)):
        write_frame(tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_gt.nii.gz", cavity, labels=ACDC_LABELS)
    table = write_csv(tmp_path / "acdc_like.csv", HEADER[:5] + ("diagnosis",),
                      [["p1", "ed.nii.gz", "es.nii.gz", "ed_gt.nii.gz", "es_gt.nii.gz", "HCM"]])
    case = manifest.discover(table, label_order="acdc")[0].load()
    assert case.masks["ED"][27, 20, 2] == 1 and case.masks["ED"][15, 20, 2] == 3
    np.testing.assert_array_equal(case.masks["ES"], heart_mask(ES_CAVITY))
    assert case.meta["diagnosis"] == "hypertrophic cardiomyopathy"
    unmapped = manifest.discover(table)[0].load()  # the default UK Biobank order leaves 3 as RV
    assert unmapped.masks["ED"][27, 20, 2] == 3


BAD_ROWS = {
    "comma in diagnosis": (["s02", "diagnosis"], "heart failure, NYHA III", "contains a comma"),
    "missing image path": (["s02", "es_image"], "", "ES image or mask path is empty"),
    "negative frame": (["s02", "es_frame"], "-1", "es_frame '-1' is not a frame number"),
    "missing file": (["s02", "ed_mask"], "cines/gone.nii.gz", "file is missing"),
    "weight 400": (["s02", "weight_kg"], "400", "weight_kg 400 is implausible"),
}


@pytest.mark.parametrize("where, value, reason", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_rows_exclude_one_subject(cohort, where, value, reason):
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    table.loc[table.subject_id == where[0], where[1]] = value
    table.to_csv(cohort, index=False)
    cases, errors = load_all(manifest.discover(cohort))
    assert sorted(cases) == ["s01", "s03"]
    assert reason in errors["s02"].reason


def test_duplicated_subject_rows_are_excluded(cohort):
    with cohort.open("a") as handle:
        handle.write("s01,images/s01_ed.nii.gz,images/s01_es.nii.gz,masks/s01_ed.nii.gz,masks/s01_es.nii.gz,,,F,67,,,,"
                     "healthy,Leeds\n")
    cases, errors = load_all(manifest.discover(cohort))
    assert sorted(cases) == ["s02", "s03"]
    assert errors["s01"].reason == "more than one metadata row"


def test_whole_file_problems_are_clear(cohort, tmp_path):
    with pytest.raises(FileNotFoundError, match="cohort.csv does not exist"):
        manifest.discover(tmp_path)
    with pytest.raises(ValueError, match="label_order"):
        manifest.discover(cohort, label_order="mnms")
    with pytest.raises(ValueError, match="'es_mask'"):
        manifest.discover(write_csv(tmp_path / "short.csv", HEADER[:4], []))
    with pytest.raises(ValueError, match=r"\['prompt'\] are written by `prepare`"):
        manifest.discover(write_csv(tmp_path / "prompted.csv", HEADER[:5] + ("prompt",), [["a"] * 6]))
    with pytest.raises(ValueError, match="lists no subjects"):
        manifest.discover(write_csv(tmp_path / "empty.csv", HEADER[:5], []))
