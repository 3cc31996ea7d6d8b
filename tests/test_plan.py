import dataclasses
import json
import math

import pandas as pd
import pytest

from cardiofair.data.phantom import phantom_cohort
from cardiofair.errors import OutputExistsError
from cardiofair.plan import (
    PlanError,
    PlanSettings,
    format_plan,
    plan_synthesis,
    read_plan,
    write_plan,
)
from cardiofair.prompts import PromptSchema, parse_prompt

# One raw value per bin, so that a cell written "Female|60s|normal|heart failure" becomes records.
AGE_YEARS = {"40s": 45.0, "50s": 55.0, "60s": 65.0, "70s": 75.0}
BMI = {"underweight": 17.0, "normal": 22.0, "overweight": 27.0, "obese": 33.0}
HF = "heart failure"


def make_manifest(counts: dict[str, int], is_synthetic: bool | str = False) -> pd.DataFrame:
    """``n`` records per cell ``"sex|age|bmi|diagnosis"``."""
    rows = []
    for cell, n in counts.items():
        sex, age, bmi, diagnosis = cell.split("|")
        for _ in range(n):
            rows.append({"record_id": f"r{len(rows):04d}", "subject_id": f"s{len(rows):04d}", "sex": sex,
                         "age_years": AGE_YEARS[age], "bmi": BMI[bmi], "diagnosis": diagnosis, "prompt": "",
                         "is_synthetic": is_synthetic})
    return pd.DataFrame(rows)


def by_cell(plan: pd.DataFrame) -> pd.DataFrame:
    return plan.set_index("cell")


SEX_ONLY = ("sex",)


def test_equalize_raises_every_cell_to_the_largest_cell_of_its_diagnosis():
    manifest = make_manifest({
        "Female|60s|normal|healthy": 20, "Male|60s|normal|healthy": 30, "Female|70s|normal|healthy": 25,
        "Male|70s|normal|healthy": 10, "Female|60s|normal|heart failure": 6, "Male|60s|normal|heart failure": 12,
        "Female|70s|normal|heart failure": 5, "Male|70s|normal|heart failure": 8,
    })
    plan = plan_synthesis(manifest, PlanSettings(attributes=("sex", "age")))
    assert len(plan) == 8
    assert (plan.loc[plan["diagnosis"] == "healthy", "target_count"] == 30).all()
    assert (plan.loc[plan["diagnosis"] == HF, "target_count"] == 12).all()
    assert (plan["synthetic_count"] == plan["target_count"] - plan["real_count"]).all()
    assert by_cell(plan).at["Female|70s|heart failure", "synthetic_count"] == 7
    assert not plan[["low_support", "unseen", "capped"]].any().any()
    assert plan.attrs["capped_overall"] is False and plan.attrs["strategy"] == "equalize"


def test_prevalence_reaches_the_target_in_every_sensitive_group_with_the_fewest_records():
    manifest = make_manifest({
        "Female|60s|normal|healthy": 71, "Female|60s|normal|dilated cardiomyopathy": 20,
        "Female|60s|normal|heart failure": 10, "Male|60s|normal|healthy": 50, "Male|60s|normal|heart failure": 50,
    })
    settings = PlanSettings(strategy="prevalence", target_prevalence=0.25, attributes=SEX_ONLY)
    plan = plan_synthesis(manifest, settings)
    for sex, group in plan.groupby("sex"):
        n = group["target_count"].sum()
        positives = group.loc[group["diagnosis"] == HF, "target_count"].sum()
        assert 0.25 <= positives / n < 0.25 + 1.0 / n
        # One record fewer would miss the target: the plan adds no more than it needs.
        added = group["synthetic_count"].sum()
        smaller = (positives - 1) / (n - 1) if sex == "Female" else positives / (n - 1)
        assert added > 0 and (smaller < 0.25 if sex == "Female" else smaller > 0.25)
    cells = by_cell(plan)
    # Women lack heart failure (10 of 101): positives are added. Men have too much (50 %):
    # healthy records are added. Other diagnoses count in the denominator, never get records.
    assert cells.at["Female|heart failure", "synthetic_count"] == 21
    assert cells.at["Male|healthy", "synthetic_count"] == 100
    assert cells.at["Female|dilated cardiomyopathy", "synthetic_count"] == 0
    assert cells.at["Female|healthy", "synthetic_count"] == 0 and cells.at["Male|heart failure", "synthetic_count"] == 0


def test_prevalence_needs_its_diagnoses_in_the_data():
    manifest = make_manifest({"Female|60s|normal|healthy": 10, "Male|60s|normal|healthy": 10})
    with pytest.raises(ValueError, match="heart failure"):
        plan_synthesis(manifest, PlanSettings(strategy="prevalence", target_prevalence=0.25, attributes=SEX_ONLY))


BASE = {"Female|60s|normal|healthy": 60, "Female|60s|normal|heart failure": 10,
        "Male|60s|normal|healthy": 60, "Male|60s|normal|heart failure": 30}


def test_target_counts():
    targets = pd.DataFrame({"sex": ["Female", "Male"], "diagnosis": [HF, HF], "target_count": [30, 20]})
    plan = by_cell(plan_synthesis(make_manifest(BASE), PlanSettings(strategy="target", attributes=SEX_ONLY,
                                                                     targets=targets)))
    assert plan.at["Female|heart failure", "synthetic_count"] == 20
    # A target below the real count adds nothing: the planner never removes real records.
    assert plan.at["Male|heart failure", "synthetic_count"] == 0
    assert plan["synthetic_count"].sum() == 20 and len(plan) == 4


def test_target_proportions_of_the_final_total():
    targets = pd.DataFrame({"sex": ["Female", "Female", "Male", "Male"], "diagnosis": ["healthy", HF, "healthy", HF],
                            "target_proportion": [0.25] * 4})
    plan = by_cell(plan_synthesis(make_manifest(BASE), PlanSettings(strategy="target", attributes=SEX_ONLY,
                                                                     targets=targets)))
    assert (plan["target_count"] == 60).all()
    assert plan.at["Female|heart failure", "synthetic_count"] == 50


def test_target_beyond_the_caps_is_an_error():
    targets = pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_count": [70]})
    with pytest.raises(ValueError, match=r"Female\|heart failure needs 60 synthetic records, above its cap of 50"):
        plan_synthesis(make_manifest(BASE), PlanSettings(strategy="target", attributes=SEX_ONLY, targets=targets))
    targets = pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_count": [55]})
    with pytest.raises(ValueError, match=r"need 45 synthetic records, above the overall cap of 32"):
        plan_synthesis(make_manifest(BASE), PlanSettings(strategy="target", attributes=SEX_ONLY, targets=targets,
                                                         max_ratio_overall=0.2))


@pytest.mark.parametrize("sex, age, diagnosis, missing", [("Female", "20s", HF, "age '20s'"),
                                                          ("Female", "60s", "myocarditis", "diagnosis 'myocarditis'"),
                                                          ("female", "60s", HF, "sex 'female'")])
def test_target_cell_outside_the_dataset_is_an_error(sex, age, diagnosis, missing):
    targets = pd.DataFrame({"sex": [sex], "age": [age], "diagnosis": [diagnosis], "target_count": [20]})
    with pytest.raises(ValueError, match=f"does not exist in the dataset: {missing}"):
        plan_synthesis(make_manifest(BASE), PlanSettings(strategy="target", attributes=("sex", "age"), targets=targets))


def test_target_on_an_unseen_combination_needs_allow_unseen_cells():
    manifest = make_manifest({**BASE, "Male|70s|normal|healthy": 20})
    targets = pd.DataFrame({"sex": ["Female"], "age": ["70s"], "diagnosis": [HF], "target_count": [8]})
    settings = PlanSettings(strategy="target", attributes=("sex", "age"), targets=targets)
    with pytest.raises(ValueError, match=r"Female\|70s\|heart failure needs 8 synthetic records but has only 0 real"):
        plan_synthesis(manifest, settings)
    plan = by_cell(plan_synthesis(manifest, dataclasses.replace(settings, allow_unseen_cells=True)))
    assert plan.at["Female|70s|heart failure", "synthetic_count"] == 8
    assert plan.at["Female|70s|heart failure", "unseen"]


def test_target_table_errors():
    manifest = make_manifest(BASE)
    bad_tables = {
        "needs the columns": pd.DataFrame({"sex": ["Female"], "target_count": [5]}),
        "not planned attributes": pd.DataFrame({"sex": ["Female"], "bmi": ["normal"], "diagnosis": [HF],
                                                "target_count": [5]}),
        "twice": pd.DataFrame({"sex": ["Female", "Female"], "diagnosis": [HF, HF], "target_count": [5, 6]}),
        "non-negative number": pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_count": [-1]}),
        "whole number": pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_count": [2.5]}),
        "sum to 1": pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_proportion": [0.5]}),
        "never removes": pd.DataFrame({"sex": ["Female", "Male"], "diagnosis": [HF, HF],
                                       "target_proportion": [1.0, 0.0]}),
    }
    for message, targets in bad_tables.items():
        with pytest.raises(ValueError, match=message):
            plan_synthesis(manifest, PlanSettings(strategy="target", attributes=SEX_ONLY, targets=targets))


def test_per_cell_cap_limits_a_cell_and_says_so():
    manifest = make_manifest({"Female|60s|normal|heart failure": 5, "Male|60s|normal|heart failure": 100})
    plan = by_cell(plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY, max_ratio_overall=10.0)))
    assert plan.at["Female|heart failure", "requested_count"] == 95
    assert plan.at["Female|heart failure", "synthetic_count"] == 25
    assert plan.at["Female|heart failure", "capped"] and not plan.at["Male|heart failure", "capped"]


def test_overall_cap_scales_every_cell_down_proportionally():
    manifest = make_manifest({"Female|60s|normal|healthy": 20, "Male|60s|normal|healthy": 40,
                              "Female|60s|normal|heart failure": 20, "Male|60s|normal|heart failure": 30})
    plan = plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY, max_ratio_overall=0.15))
    cells = by_cell(plan)
    # Requests 20 and 10 against a budget of floor(0.15 * 110) = 16: quotas 10.67 and 5.33.
    assert cells.at["Female|healthy", "synthetic_count"] == 11
    assert cells.at["Female|heart failure", "synthetic_count"] == 5
    assert plan["synthetic_count"].sum() == 16 == plan.attrs["synthetic_budget"]
    assert plan.attrs["capped_overall"] is True
    assert "overall cap of 16" in format_plan(plan)


def test_thin_and_unseen_cells_are_filled_only_when_allowed_and_reported_apart():
    manifest = make_manifest({
        "Female|40s|normal|healthy": 20, "Female|50s|normal|healthy": 20, "Male|40s|normal|healthy": 20,
        "Male|50s|normal|healthy": 20, "Female|50s|normal|heart failure": 2, "Male|40s|normal|heart failure": 10,
        "Male|50s|normal|heart failure": 10,
    })
    settings = PlanSettings(attributes=("sex", "age"))
    plan = plan_synthesis(manifest, settings)
    cells = by_cell(plan)
    assert "Female|40s|heart failure" not in cells.index and plan.attrs["unseen_cells_left_out"] == 1
    assert cells.at["Female|50s|heart failure", "low_support"]
    assert cells.at["Female|50s|heart failure", "requested_count"] == 8
    assert cells.at["Female|50s|heart failure", "synthetic_count"] == 0
    text = format_plan(plan)
    assert "Low-support and unseen cells (< 5)" in text and "not filled" in text
    assert "1 combination(s) of observed levels have no real record" in text

    allowed = plan_synthesis(manifest, PlanSettings(attributes=("sex", "age"), allow_unseen_cells=True))
    cells = by_cell(allowed)
    assert cells.at["Female|40s|heart failure", "unseen"] and cells.at["Female|40s|heart failure", "low_support"]
    # An empty cell is capped at the largest real cell of its diagnosis, not at a ratio of zero.
    assert cells.at["Female|40s|heart failure", "synthetic_count"] == 10
    assert cells.at["Female|50s|heart failure", "synthetic_count"] == 8
    assert allowed.attrs["unseen_cells_left_out"] == 0
    assert "the model composes attributes it saw rarely or never together" in format_plan(allowed)


@pytest.mark.parametrize("settings", [PlanSettings(),
                                      PlanSettings(strategy="prevalence", target_prevalence=0.25, attributes=SEX_ONLY)])
def test_an_already_balanced_dataset_plans_zero(settings):
    manifest = make_manifest({"Female|60s|normal|healthy": 30, "Male|60s|normal|healthy": 30,
                              "Female|60s|normal|heart failure": 10, "Male|60s|normal|heart failure": 10})
    plan = plan_synthesis(manifest, settings)
    assert plan["synthetic_count"].sum() == 0 and plan["requested_count"].sum() == 0
    assert "(none: the dataset already meets the plan)" in format_plan(plan)


def test_settings_errors():
    with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['ethnicity'\]; choose from \['sex', 'age', 'bmi'\]"):
        PlanSettings(attributes=("sex", "ethnicity"))
    bad = [dict(attributes=("sex", "diagnosis")), dict(attributes=()), dict(strategy="oversample"),
           dict(mask_policy="nearest"), dict(strategy="prevalence"), dict(strategy="prevalence", target_prevalence=1.0),
           dict(strategy="target"), dict(max_ratio_per_cell=-1), dict(min_real_support=-1)]
    for kwargs in bad:
        with pytest.raises(ValueError):
            PlanSettings(**kwargs)


def test_planned_attributes_must_be_in_the_prompt_schema():
    with pytest.raises(ValueError, match=r"planned attribute\(s\) \['bmi'\] are not in the prompt schema"):
        plan_synthesis(make_manifest(BASE), PlanSettings(), PromptSchema(attributes=("sex", "age", "diagnosis")))


def test_unknown_values_are_left_out_and_counted():
    manifest = make_manifest(BASE)
    manifest.loc[0:1, "sex"] = None
    manifest.loc[2, "diagnosis"] = float("nan")
    manifest.loc[3:5, "age_years"] = None  # age is not planned here: these records still count
    plan = plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY))
    assert plan.attrs["excluded_unknown"] == 3
    assert plan["real_count"].sum() == len(manifest) - 3
    assert "3 real records left out of planning" in format_plan(plan)


def test_an_attribute_no_real_record_has_is_left_out_with_the_reason():
    # As in ACDC: no sex and no age, BMI and diagnosis known.
    manifest = make_manifest({"Female|60s|normal|healthy": 20, "Female|60s|obese|healthy": 8,
                              "Female|60s|normal|heart failure": 5, "Female|60s|obese|heart failure": 9})
    manifest["sex"], manifest["age_years"] = None, None
    plan = plan_synthesis(manifest, PlanSettings())
    assert plan.attrs["skipped_attributes"] == {"sex": "unknown for every real record",
                                                "age": "unknown for every real record"}
    assert by_cell(plan)["synthetic_count"].to_dict() == {"normal|healthy": 0, "normal|heart failure": 4,
                                                         "obese|healthy": 12, "obese|heart failure": 0}
    assert by_cell(plan).loc["obese|healthy", "prompt"] == "obese BMI, healthy"
    assert "Left out of planning: sex (unknown for every real record)" in format_plan(plan)


def test_a_cohort_that_records_no_sensitive_attribute_is_planned_by_diagnosis():
    # As in the public M&Ms copy with its diagnoses known: no sex, age or BMI.
    manifest = make_manifest({"Female|60s|normal|healthy": 30, "Female|60s|normal|heart failure": 6})
    manifest["sex"], manifest["age_years"], manifest["bmi"] = None, None, None
    targets = pd.DataFrame({"diagnosis": ["heart failure"], "target_count": [20]})
    plan = plan_synthesis(manifest, PlanSettings(strategy="target", targets=targets))
    assert plan.attrs["skipped_attributes"] == dict.fromkeys(("sex", "age", "bmi"), "unknown for every real record")
    assert by_cell(plan)["synthetic_count"].to_dict() == {"healthy": 0, "heart failure": 14}
    assert by_cell(plan).loc["heart failure", "prompt"] == "heart failure"
    printed = format_plan(plan)
    assert "Left out of planning: bmi (unknown for every real record)" in printed
    assert "cohort   all    36       50  16.7 -> 40.0" in printed  # the cohort as one group
    # The whole cohort is the one group whose prevalence the strategy reaches: 6 + 4 of 40.
    plan = plan_synthesis(manifest, PlanSettings(strategy="prevalence", target_prevalence=0.25))
    assert by_cell(plan)["synthetic_count"].to_dict() == {"healthy": 0, "heart failure": 4}
    # With no group to balance, equalize has nothing to add.
    assert plan_synthesis(manifest, PlanSettings())["synthetic_count"].sum() == 0
    with pytest.raises(PlanError, match=r"column\(s\) \['sex'\], which are not planned"):
        plan_synthesis(manifest, PlanSettings(strategy="target", targets=targets.assign(sex="Female")))


def test_a_cohort_that_records_no_diagnosis_is_planned_as_one_cell_of_the_whole_cohort(tmp_path):
    # As in the public M&Ms copy: no sex, age, BMI or diagnosis.
    manifest = make_manifest({"Female|60s|normal|healthy": 36})
    manifest[["sex", "age_years", "bmi", "diagnosis"]] = None
    plan = plan_synthesis(manifest, PlanSettings(strategy="target", targets=pd.DataFrame({"target_count": [50]})))
    assert plan.attrs["skipped_attributes"] == dict.fromkeys(("sex", "age", "bmi", "diagnosis"),
                                                             "unknown for every real record")
    assert plan[["cell", "real_count", "synthetic_count", "prompt"]].values.tolist() == [["unknown", 36, 14, ""]]
    assert plan.attrs["excluded_unknown"] == 0
    printed = format_plan(plan)
    assert printed.count("Left out of planning: diagnosis (unknown for every real record)") == 1
    assert "Diagnosis prevalence" not in printed
    # The table may also name the cell by its unknown diagnosis.
    named = pd.DataFrame({"diagnosis": ["unknown"], "target_count": [50]})
    assert plan.equals(plan_synthesis(manifest, PlanSettings(strategy="target", targets=named)))
    path = write_plan(plan, tmp_path / "plan.csv")
    pd.testing.assert_frame_equal(read_plan(path), plan, check_dtype=False)
    equalized = plan_synthesis(manifest, PlanSettings())
    assert equalized["synthetic_count"].tolist() == [0]
    assert "equalize has nothing to equalize, as the cohort is one cell" in format_plan(equalized)
    with pytest.raises(PlanError, match="prevalence strategy needs a diagnosis, and the diagnosis is unknown for "
                                        "every real record"):
        plan_synthesis(manifest, PlanSettings(strategy="prevalence", target_prevalence=0.25))


def test_without_a_diagnosis_the_cells_are_the_sensitive_groups():
    manifest = make_manifest({"Female|60s|normal|healthy": 10, "Male|60s|normal|healthy": 16})
    manifest["diagnosis"] = None
    plan = plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY))
    assert by_cell(plan)[["synthetic_count", "prompt"]].to_dict("index") == {
        "Female|unknown": {"synthetic_count": 6, "prompt": "Female"},
        "Male|unknown": {"synthetic_count": 0, "prompt": "Male"}}
    # A diagnosis known for some records only: those without one are left out, as before.
    manifest.loc[0, "diagnosis"] = "healthy"
    plan = plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY))
    assert plan["cell"].tolist() == ["Female|healthy"] and plan.attrs["excluded_unknown"] == 25


def test_synthetic_records_are_not_support():
    real = make_manifest(BASE)
    synthetic = make_manifest({"Female|60s|normal|heart failure": 40}, is_synthetic="True")
    plan = plan_synthesis(pd.concat([real, synthetic], ignore_index=True), PlanSettings(attributes=SEX_ONLY))
    assert by_cell(plan).at["Female|heart failure", "real_count"] == 10
    assert plan.equals(plan_synthesis(real, PlanSettings(attributes=SEX_ONLY)))


def test_prompts_parse_back_to_the_cell_and_leave_unplanned_attributes_out():
    manifest = make_manifest({"Female|60s|normal|healthy": 8, "Male|70s|obese|heart failure": 6,
                              "Male|40s|overweight|healthy": 5})
    plan = plan_synthesis(manifest, PlanSettings(allow_unseen_cells=True))
    for row in plan.to_dict("records"):
        assert parse_prompt(row["prompt"]) == {a: row[a] for a in ("sex", "age", "bmi", "diagnosis")}
        assert row["cell"] == "|".join(row[a] for a in ("sex", "age", "bmi", "diagnosis"))
    plan = plan_synthesis(manifest, PlanSettings(attributes=("bmi", "sex")))
    assert plan.columns[:4].tolist() == ["cell", "sex", "bmi", "diagnosis"]
    assert by_cell(plan).at["Male|obese|heart failure", "prompt"] == "Male, obese BMI, heart failure"


def test_plans_are_deterministic_and_in_reading_order():
    manifest = make_manifest({"Male|70s|obese|heart failure": 6, "Female|40s|normal|healthy": 9,
                              "Female|40s|underweight|healthy": 7, "Male|50s|obese|healthy": 12})
    settings = PlanSettings(allow_unseen_cells=True, max_ratio_overall=0.5)
    plan = plan_synthesis(manifest, settings)
    shuffled = manifest.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(plan, plan_synthesis(shuffled, settings))
    assert plan["cell"].iloc[0] == "Female|40s|underweight|healthy"
    assert plan["cell"].iloc[1] == "Female|40s|underweight|heart failure"
    assert plan["cell"].iloc[2] == "Female|40s|normal|healthy"


def test_write_read_round_trip_and_no_silent_overwrite(tmp_path):
    plan = plan_synthesis(make_manifest(BASE), PlanSettings(attributes=SEX_ONLY))
    path = write_plan(plan, tmp_path / "plan" / "plan.csv")
    read = read_plan(path)
    pd.testing.assert_frame_equal(read, plan, check_dtype=False)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_plan(plan, path)
    write_plan(plan.assign(mask_policy="copy"), path, overwrite=True)
    assert (read_plan(path)["mask_policy"] == "copy").all()
    assert [p.name for p in path.parent.iterdir()] == ["plan.csv"]


@pytest.mark.parametrize("column, value, message", [
    ("synthetic_count", "-3", "synthetic_count must be a non-negative whole number, got '-3'"),
    ("real_count", "2.5", "real_count must be a non-negative whole number"),
    ("mask_policy", "nearest", "unknown mask policy 'nearest'"),
    ("capped", "maybe", "capped must be True or False"),
    ("target_count", "999", "target_count must equal real_count \\+ synthetic_count"),
    ("prompt", "Male, heart failure", "disagrees with the cell's attributes"),
    ("prompt", "Male, age in 60s, tall, heart failure", "gives diagnosis twice"),
    ("cell", "Female|healthy", "listed twice"),
])
def test_read_plan_names_the_file_and_line(tmp_path, column, value, message):
    plan = plan_synthesis(make_manifest(BASE), PlanSettings(attributes=SEX_ONLY))
    plan = plan.astype({column: object})
    plan.loc[1, column] = value
    path = write_plan(plan, tmp_path / "plan.csv")
    with pytest.raises(ValueError, match=f"plan.csv, line 3 .*{message}"):
        read_plan(path)


def test_read_plan_needs_a_plan(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such plan file"):
        read_plan(tmp_path / "missing.csv")
    pd.DataFrame({"cell": ["a"], "real_count": [1]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match=r"not a synthesis plan: it lacks the column\(s\) \['synthetic_count'"):
        read_plan(tmp_path / "other.csv")


def test_settings_resolve_to_json():
    targets = pd.DataFrame({"sex": ["Female"], "diagnosis": [HF], "target_count": [30]})
    values = json.loads(json.dumps(PlanSettings(strategy="target", targets=targets).to_dict()))
    assert values["targets"] == [{"sex": "Female", "diagnosis": HF, "target_count": 30}]
    assert values["attributes"] == ["sex", "age", "bmi"] and values["mask_policy"] == "matched"


def test_phantom_cohort_plan_boosts_female_heart_failure_most():
    # The phantom makes female heart failure rare, as in UK Biobank: equalizing by sex must
    # put the largest relative boost exactly there.
    manifest = pd.DataFrame([record.meta for record in phantom_cohort(400, seed=0)])
    plan = plan_synthesis(manifest, PlanSettings(attributes=SEX_ONLY))
    totals = plan.groupby(["sex", "diagnosis"])[["real_count", "target_count"]].sum()
    boost = totals["target_count"] / totals["real_count"]
    assert boost.idxmax() == ("Female", HF) and boost.max() > 1.5
    assert math.isclose(boost[("Male", HF)], 1.0)
    prevalence = format_plan(plan).split("Diagnosis prevalence")[1]
    assert "Female" in prevalence and "->" in prevalence
