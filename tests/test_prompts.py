import itertools

import pytest

from cardiofair.prompts import (
    PromptSchema,
    age_bin,
    bmi_class,
    build_prompt,
    cell_columns,
    normalise_sex,
    parse_prompt,
    prompt_from_attributes,
    subgroup_cell,
    without_attribute,
)


def test_default_grammar_matches_the_paper():
    meta = {"sex": "Female", "age_years": 64.2, "bmi": 23.9, "diagnosis": "heart failure"}
    assert build_prompt(meta) == "Female, age in 60s, normal BMI, heart failure"


@pytest.mark.parametrize("bmi, expected", [(18.4, "underweight"), (18.5, "normal"), (24.99, "normal"),
                                           (25.0, "overweight"), (29.99, "overweight"), (30.0, "obese"), (55, "obese")])
def test_bmi_classes_follow_who_thresholds(bmi, expected):
    assert bmi_class(bmi) == expected


def test_age_bins():
    assert age_bin(40.0) == "40s" and age_bin(49.99) == "40s" and age_bin(50) == "50s"
    assert age_bin(63, width=5) == "60-64"
    assert age_bin(None) is None and age_bin(float("nan")) is None


@pytest.mark.parametrize("code, expected", [("F", "Female"), ("female", "Female"), (0, "Female"), ("0", "Female"),
                                            ("M", "Male"), (1, "Male"), (1.0, "Male"), ("Male", "Male")])
def test_sex_codes(code, expected):
    assert normalise_sex(code, numeric_codes=True) == expected


def test_numeric_sex_codes_only_where_the_coding_is_known():
    assert normalise_sex("F") == "Female"
    with pytest.raises(ValueError, match="unknown sex code"):
        normalise_sex(1)


def test_unknown_sex_code_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown sex code"):
        normalise_sex("X")
    assert normalise_sex(None) is None and normalise_sex("") is None


def test_unknown_attributes_are_left_out_never_invented():
    prompt = build_prompt({"sex": None, "age_years": float("nan"), "bmi": 31.0, "diagnosis": "healthy"})
    assert prompt == "obese BMI, healthy"
    assert parse_prompt(prompt) == {"sex": None, "age": None, "bmi": "obese", "diagnosis": "healthy"}


@pytest.mark.parametrize("width", [10, 5])
def test_every_prompt_parses_back_to_its_binned_attributes(width):
    schema = PromptSchema(age_bin_width=width)
    sexes = ["Female", "Male", None]
    ages = [41.0, 58.5, 79.9, None]
    bmis = [17.0, 22.0, 27.5, 40.0, None]
    diagnoses = ["healthy", "heart failure", "dilated cardiomyopathy", None]
    for sex, age, bmi, diagnosis in itertools.product(sexes, ages, bmis, diagnoses):
        meta = {"sex": sex, "age_years": age, "bmi": bmi, "diagnosis": diagnosis}
        parsed = parse_prompt(build_prompt(meta, schema), schema)
        assert parsed == {"sex": sex, "age": age_bin(age, width), "bmi": bmi_class(bmi), "diagnosis": diagnosis}


def test_configurable_attribute_list_and_order():
    schema = PromptSchema(attributes=("diagnosis", "sex"))
    meta = {"sex": "Male", "age_years": 70, "bmi": 30, "diagnosis": "healthy"}
    assert build_prompt(meta, schema) == "healthy, Male"
    assert parse_prompt("healthy, Male", schema) == {"diagnosis": "healthy", "sex": "Male"}
    assert subgroup_cell(meta, schema) == ("Male", "healthy")
    assert cell_columns(schema) == ("sex", "diagnosis")
    with pytest.raises(ValueError, match="unknown prompt attribute"):
        PromptSchema(attributes=("sex", "ethnicity"))


def test_parse_rejects_malformed_prompts():
    with pytest.raises(ValueError, match="twice"):
        parse_prompt("Female, Male, healthy")
    with pytest.raises(ValueError, match="matches no attribute"):
        parse_prompt("Female, healthy", PromptSchema(attributes=("sex", "age")))


def test_a_comma_in_a_diagnosis_is_refused():
    with pytest.raises(ValueError, match="comma"):
        build_prompt({"diagnosis": "heart failure, reduced EF"})


def test_cells_spell_unknown_values():
    assert subgroup_cell({"sex": "F", "age_years": None, "bmi": 22, "diagnosis": "healthy"}) == (
        "Female", "unknown", "normal", "healthy")


@pytest.mark.parametrize("width", [10, 5])
def test_prompt_from_binned_attributes_matches_build_prompt_and_parses_back(width):
    schema = PromptSchema(age_bin_width=width)
    for sex, age, bmi, diagnosis in itertools.product(["Female", None], [63.0, None], [27.5, None], ["healthy", None]):
        meta = {"sex": sex, "age_years": age, "bmi": bmi, "diagnosis": diagnosis}
        values = {"sex": sex, "age": age_bin(age, width), "bmi": bmi_class(bmi), "diagnosis": diagnosis}
        assert prompt_from_attributes(values, schema) == build_prompt(meta, schema)
        assert parse_prompt(prompt_from_attributes(values, schema), schema) == values
    # Absent keys are left out, and the schema, not the mapping, sets the order.
    assert prompt_from_attributes({"diagnosis": "heart failure", "sex": "Male"}) == "Male, heart failure"


def test_prompt_from_attributes_refuses_values_that_would_not_parse_back():
    with pytest.raises(ValueError, match="not in the prompt schema"):
        prompt_from_attributes({"ethnicity": "x"})
    with pytest.raises(ValueError, match="does not parse back"):
        prompt_from_attributes({"sex": "female", "diagnosis": "healthy"})
    with pytest.raises(ValueError, match="parses back as"):
        prompt_from_attributes({"bmi": "normal BMI"})
    with pytest.raises(ValueError, match="does not parse back"):
        prompt_from_attributes({"diagnosis": "heart failure, severe", "sex": "Male"})


def test_without_attribute_leaves_out_that_phrase_alone():
    prompt = "Female, age in 60s, normal BMI, heart failure"
    assert without_attribute(prompt, "sex") == "age in 60s, normal BMI, heart failure"
    assert without_attribute(prompt, "diagnosis") == "Female, age in 60s, normal BMI"
    assert without_attribute(without_attribute(prompt, "bmi"), "age") == "Female, heart failure"
    assert without_attribute("age in 60s", "sex") == "age in 60s"
