"""The diagnosis vocabulary: one lowercase phrase per diagnosis, used verbatim in prompts.

Every cohort codes diagnoses its own way (ACDC groups, M&Ms pathology codes, ICD-10 codes,
free text). Mapping them all onto one vocabulary makes subgroup cells comparable across cohorts;
the phrases hold no commas because the prompt grammar separates attributes with commas. A code
this module does not know is an error naming the code, never a guess.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

HEALTHY = "healthy"
HEART_FAILURE = "heart failure"
DILATED_CARDIOMYOPATHY = "dilated cardiomyopathy"
HYPERTROPHIC_CARDIOMYOPATHY = "hypertrophic cardiomyopathy"
MYOCARDIAL_INFARCTION = "myocardial infarction"
ABNORMAL_RIGHT_VENTRICLE = "abnormal right ventricle"
HYPERTENSIVE_HEART_DISEASE = "hypertensive heart disease"
ISCHAEMIC_HEART_DISEASE = "ischaemic heart disease"
LV_NON_COMPACTION = "left ventricular non-compaction"
ATHLETES_HEART = "athlete's heart"
DILATED_LEFT_VENTRICLE = "dilated left ventricle"
DILATED_RIGHT_VENTRICLE = "dilated right ventricle"
CONGENITAL_ARRHYTHMOGENESIS = "congenital arrhythmogenesis"
TETRALOGY_OF_FALLOT = "tetralogy of fallot"
INTERATRIAL_COMMUNICATION = "interatrial communication"
TRICUSPID_REGURGITATION = "tricuspid regurgitation"

DIAGNOSES: tuple[str, ...] = (
    HEALTHY,
    HEART_FAILURE,
    DILATED_CARDIOMYOPATHY,
    HYPERTROPHIC_CARDIOMYOPATHY,
    MYOCARDIAL_INFARCTION,
    ABNORMAL_RIGHT_VENTRICLE,
    HYPERTENSIVE_HEART_DISEASE,
    ISCHAEMIC_HEART_DISEASE,
    LV_NON_COMPACTION,
    ATHLETES_HEART,
    DILATED_LEFT_VENTRICLE,
    DILATED_RIGHT_VENTRICLE,
    CONGENITAL_ARRHYTHMOGENESIS,
    TETRALOGY_OF_FALLOT,
    INTERATRIAL_COMMUNICATION,
    TRICUSPID_REGURGITATION,
)

# ACDC (Bernard et al., IEEE TMI 2018): five groups of 30 patients each; "RV" is an abnormal
# right ventricle (dilated or with a low ejection fraction).
ACDC_GROUPS: dict[str, str] = {
    "NOR": HEALTHY,
    "DCM": DILATED_CARDIOMYOPATHY,
    "HCM": HYPERTROPHIC_CARDIOMYOPATHY,
    "MINF": MYOCARDIAL_INFARCTION,
    "RV": ABNORMAL_RIGHT_VENTRICLE,
}

# M&Ms-1 (Campello et al., IEEE TMI 2021), the "Pathology" column of the 2021 release. "Other"
# is a residual group, not a diagnosis: it maps to None (unknown) rather than to a guess.
MNMS_PATHOLOGIES: dict[str, str | None] = {
    "NOR": HEALTHY,
    "DCM": DILATED_CARDIOMYOPATHY,
    "HCM": HYPERTROPHIC_CARDIOMYOPATHY,
    "HHD": HYPERTENSIVE_HEART_DISEASE,
    "ARV": ABNORMAL_RIGHT_VENTRICLE,
    "AHS": ATHLETES_HEART,
    "IHD": ISCHAEMIC_HEART_DISEASE,
    "LVNC": LV_NON_COMPACTION,
    "OTHER": None,
}

# M&Ms-2 (Martin-Isla et al., IEEE JBHI 2023), the DISEASE column of dataset_information.csv.
# Its "LV" and "RV" are dilated ventricles, which is why they are not ACDC's abnormal RV or DCM.
MNMS2_DISEASES: dict[str, str] = {
    "NOR": HEALTHY,
    "LV": DILATED_LEFT_VENTRICLE,
    "HC": HYPERTROPHIC_CARDIOMYOPATHY,
    "HCM": HYPERTROPHIC_CARDIOMYOPATHY,
    "ARR": CONGENITAL_ARRHYTHMOGENESIS,
    "FALL": TETRALOGY_OF_FALLOT,
    "CIA": INTERATRIAL_COMMUNICATION,
    "RV": DILATED_RIGHT_VENTRICLE,
    "TRI": TRICUSPID_REGURGITATION,
}

# Common spellings of the canonical names. Bare "LV"/"RV" are left out: they mean different
# things in ACDC and M&Ms-2, so only a dataset's own table may read them.
SYNONYMS: dict[str, str] = {
    "1": HEART_FAILURE,
    "1.0": HEART_FAILURE,
    "hf": HEART_FAILURE,
    "chf": HEART_FAILURE,
    "congestive heart failure": HEART_FAILURE,
    "0": HEALTHY,
    "0.0": HEALTHY,
    "nor": HEALTHY,
    "normal": HEALTHY,
    "control": HEALTHY,
    "healthy control": HEALTHY,
    "dcm": DILATED_CARDIOMYOPATHY,
    "hcm": HYPERTROPHIC_CARDIOMYOPATHY,
    "mi": MYOCARDIAL_INFARCTION,
    "minf": MYOCARDIAL_INFARCTION,
    "previous myocardial infarction": MYOCARDIAL_INFARCTION,
    "arv": ABNORMAL_RIGHT_VENTRICLE,
    "hhd": HYPERTENSIVE_HEART_DISEASE,
    "ihd": ISCHAEMIC_HEART_DISEASE,
    "ischemic heart disease": ISCHAEMIC_HEART_DISEASE,
    "lvnc": LV_NON_COMPACTION,
    "left ventricular noncompaction": LV_NON_COMPACTION,
    "left ventricle non-compaction": LV_NON_COMPACTION,
    "ahs": ATHLETES_HEART,
    "athlete heart": ATHLETES_HEART,
    "athletes heart": ATHLETES_HEART,
    "athlete's heart syndrome": ATHLETES_HEART,
    "tricuspidal regurgitation": TRICUSPID_REGURGITATION,
}

_ICD10_SEPARATORS = re.compile(r"[;,|\s]+")


def _phrase(value: Any) -> str:
    return " ".join(str(value).split()).lower()


def canonical_diagnosis(value: Any) -> str:
    """The canonical name of ``value``: a canonical name or a common synonym, any case.

    ``"HF"`` and ``"1"`` mean heart failure, ``"0"`` and ``"normal"`` healthy (a 0/1 heart-failure
    column). Raises ``ValueError`` for anything else, so that a wrong column is caught early.
    """
    phrase = _phrase(value)
    if phrase in DIAGNOSES:
        return phrase
    if phrase in SYNONYMS:
        return SYNONYMS[phrase]
    raise ValueError(f"unknown diagnosis {value!r}; expected one of {list(DIAGNOSES)} or a common abbreviation")


def free_text_diagnosis(value: Any) -> str:
    """A canonical name where ``value`` is one, else the text itself in lowercase.

    In-house cohorts name diagnoses the vocabulary does not have; those are kept, in lowercase so
    that spelling variants by case fall in one subgroup cell. A comma is refused: the prompt
    grammar reserves it.
    """
    try:
        return canonical_diagnosis(value)
    except ValueError:
        phrase = _phrase(value)
    if "," in phrase:
        raise ValueError(f"diagnosis {value!r} contains a comma, which the prompt grammar reserves")
    return phrase


def _coded(table: Mapping[str, str | None], value: Any, what: str) -> str | None:
    code = str(value).strip().upper()
    if code not in table:
        raise ValueError(f"unknown {what} code {str(value).strip()!r}; known codes: {sorted(table)}")
    return table[code]


def acdc_diagnosis(group: Any) -> str:
    """The canonical name of an ACDC ``Group`` (NOR, DCM, HCM, MINF, RV)."""
    return _coded(ACDC_GROUPS, group, "ACDC group")


def mnms_diagnosis(pathology: Any) -> str | None:
    """The canonical name of an M&Ms-1 ``Pathology`` code; None for the residual "Other"."""
    return _coded(MNMS_PATHOLOGIES, pathology, "M&Ms pathology")


def mnms2_diagnosis(disease: Any) -> str:
    """The canonical name of an M&Ms-2 ``DISEASE`` code."""
    return _coded(MNMS2_DISEASES, disease, "M&Ms-2 disease")


def icd10_diagnosis(codes: str) -> str:
    """Heart failure when any ICD-10 code starts with I50, healthy otherwise.

    Codes may be separated by ``;``, ``,``, ``|`` or white space, with or without the dot
    (``I50.0`` or ``I500``), as UK Biobank exports of data-field 41270 have them.
    """
    found = [code.upper() for code in _ICD10_SEPARATORS.split(str(codes)) if code]
    return HEART_FAILURE if any(code.startswith("I50") for code in found) else HEALTHY
