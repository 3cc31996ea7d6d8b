import pytest

from cardiofair.diagnoses import (
    ACDC_GROUPS,
    DIAGNOSES,
    MNMS2_DISEASES,
    MNMS_PATHOLOGIES,
    acdc_diagnosis,
    canonical_diagnosis,
    free_text_diagnosis,
    icd10_diagnosis,
    mnms2_diagnosis,
    mnms_diagnosis,
)
from cardiofair.prompts import build_prompt, parse_prompt


def test_vocabulary_is_prompt_safe_and_every_table_maps_into_it():
    for name in DIAGNOSES:
        assert name == name.lower() and "," not in name
        prompt = build_prompt({"sex": "Female", "age_years": 64, "bmi": 22.0, "diagnosis": name})
        assert parse_prompt(prompt)["diagnosis"] == name
    for table in (ACDC_GROUPS, MNMS_PATHOLOGIES, MNMS2_DISEASES):
        assert set(table.values()) - {None} <= set(DIAGNOSES)


@pytest.mark.parametrize("value, expected", [
    ("heart failure", "heart failure"), ("Heart  Failure", "heart failure"), ("HF", "heart failure"),
    ("1", "heart failure"), (1, "heart failure"), (1.0, "heart failure"), ("0", "healthy"), (0, "healthy"),
    ("Healthy", "healthy"), ("normal", "healthy"), ("DCM", "dilated cardiomyopathy"),
    ("ischemic heart disease", "ischaemic heart disease"), ("athlete's heart", "athlete's heart"),
])
def test_canonical_diagnosis_accepts_names_and_synonyms(value, expected):
    assert canonical_diagnosis(value) == expected


@pytest.mark.parametrize("value", ["2", "angina", "RV", "LV", "", None])
def test_canonical_diagnosis_rejects_unknown_and_ambiguous_values(value):
    with pytest.raises(ValueError, match="unknown diagnosis"):
        canonical_diagnosis(value)


@pytest.mark.parametrize("codes, expected", [
    ("I10;I500", "heart failure"), ("I10, I50.9", "heart failure"), ("E119|i501", "heart failure"),
    ("I10 I500", "heart failure"), ("I10;E119", "healthy"), ("I150", "healthy"), ("I51.7", "healthy"), ("", "healthy"),
])
def test_icd10_heart_failure_is_any_I50_code(codes, expected):
    assert icd10_diagnosis(codes) == expected


def test_dataset_codes():
    assert acdc_diagnosis("MINF") == "myocardial infarction"
    assert acdc_diagnosis(" rv ") == "abnormal right ventricle"
    assert mnms_diagnosis("LVNC") == "left ventricular non-compaction"
    assert mnms_diagnosis("AHS") == "athlete's heart"
    assert mnms_diagnosis("Other") is None
    assert mnms2_diagnosis("RV") == "dilated right ventricle"
    assert mnms2_diagnosis("HC") == mnms2_diagnosis("HCM") == "hypertrophic cardiomyopathy"
    with pytest.raises(ValueError, match="unknown ACDC group code 'ARV'"):
        acdc_diagnosis("ARV")
    with pytest.raises(ValueError, match="unknown M&Ms-2 disease code 'DCM'"):
        mnms2_diagnosis("DCM")


def test_free_text_diagnosis():
    assert free_text_diagnosis("HF") == "heart failure"
    assert free_text_diagnosis("  Cardiac   Amyloidosis ") == "cardiac amyloidosis"
    with pytest.raises(ValueError, match="comma"):
        free_text_diagnosis("heart failure, NYHA III")
