"""Each shipped real-cohort study runs end to end on a small cohort written in its layout (slow).

The cohorts are small and the generator is the `tiny` preset trained for two steps, so the
overrides below change sizes and budgets only: everything about the cohort (its source and
layout, the attributes it has, the positive class, the planning strategy, the groupings) is the
shipped file's. A study file that cannot finish on its cohort's layout fails here, not in a
user's hands.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cohort_fixtures import write_acdc_cohort, write_mnms_cohort, write_mnms_copy, write_ukbb_cohort
from report_pages import parse

from cardiofair.cli import main
from cardiofair.data.records import read_manifest
from cardiofair.stages import STAGES

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZES = ("prepare.size=16", "train.preset=tiny", "train.max_steps=2", "quality.steps=5", "quality.classifier_steps=5",
         "quality.min_images=2", "fairness.repeats=2", "fairness.epochs=1", "fairness.bootstrap=20",
         "plan.min_real_support=1")


def _study(config: str, tmp_path: Path, monkeypatch, capsys, *paths: str,
           not_needed: tuple[str, ...] = ("masks",)) -> tuple[Path, str]:
    """Run the shipped ``config`` with ``paths`` pointing at the fixture cohort; return the
    study folder and what it printed (the stage times included). The stages in ``not_needed``
    must be left out, saying so."""
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    name = yaml.safe_load((CONFIGS / config).read_text())["name"]
    settings = [f"runs={tmp_path / 'runs'}", *paths, *SIZES]
    code = main(["run", str(CONFIGS / config), *(a for s in settings for a in ("--set", s))])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-4000:]
    study = tmp_path / "runs" / name
    # Every stage finished but the mask generator, which a study runs only for drawn masks (and
    # any other the cohort cannot feed).
    times = {stage.name: json.loads((study / ".stages" / f"{stage.name}.json").read_text())["seconds"]
             for stage in STAGES if stage.name not in not_needed}
    for stage in not_needed:
        assert not (study / ".stages" / f"{stage}.json").exists() and f"{stage}: not needed" in printed.out
    with capsys.disabled():
        print(f"\n{config}: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in times.items()))
    assert (study / "report.html").is_file()
    return study, printed.out


@pytest.mark.slow
def test_the_acdc_study_finishes_without_sex_or_age_and_says_what_it_left_out(tmp_path, monkeypatch, capsys):
    root = write_acdc_cohort(tmp_path / "ACDC" / "database")
    study, printed = _study("acdc.yaml", tmp_path, monkeypatch, capsys, f"prepare.root={root}")
    assert "Left out of planning: sex (unknown for every real record)" in printed
    fairness = json.loads((study / "fairness" / "fairness.json").read_text())
    assert fairness["data"]["positive_diagnosis"] == "any disease"
    assert set(fairness["data"]["positive_diagnoses"]) == {"dilated cardiomyopathy", "hypertrophic cardiomyopathy",
                                                           "myocardial infarction", "abnormal right ventricle"}
    skipped = fairness["data"]["skipped_groupings"]
    assert set(skipped) == {"sex", "age", "sex&age"} and skipped["sex"] == "sex unknown for every test subject"
    assert set(fairness["arms"]["real"]["attributes"]) == {"bmi"}
    page = parse(study / "report.html")
    assert "Left out: sex&age (sex and age unknown for every test subject)" in page.sections["fairness"]
    assert "Not measured: sex (unknown for every real training record)" in page.sections["prompt-fidelity"]


@pytest.mark.slow
def test_the_mnms_study_finishes_with_vendor_and_centre(tmp_path, monkeypatch, capsys):
    root = write_mnms_cohort(tmp_path / "MnM")
    metadata = next(root.glob("*.csv"))
    study, _ = _study("mnms.yaml", tmp_path, monkeypatch, capsys, f"prepare.root={root / 'Training'}",
                      f"prepare.metadata={metadata}")
    manifest = read_manifest(study / "prepare")
    assert {"vendor", "centre"} <= set(manifest.columns) and manifest["vendor"].nunique() == 4
    fairness = json.loads((study / "fairness" / "fairness.json").read_text())
    assert fairness["data"]["positive_diagnosis"] == "any disease"
    assert set(fairness["arms"]["real"]["attributes"]["sex"]["groups"]) == {"Female", "Male"}
    assert pd.read_csv(study / "plan" / "plan.csv")["synthetic_count"].sum() > 0


@pytest.mark.slow
def test_the_uk_biobank_study_finishes_on_its_field_names(tmp_path, monkeypatch, capsys):
    columns = yaml.safe_load((CONFIGS / "ukbb.yaml").read_text())["prepare"]["columns"]
    metadata = write_ukbb_cohort(tmp_path / "ukbb", 60, columns)
    study, _ = _study("ukbb.yaml", tmp_path, monkeypatch, capsys, f"prepare.root={tmp_path / 'ukbb'}",
                      f"prepare.metadata={metadata}")
    fairness = json.loads((study / "fairness" / "fairness.json").read_text())
    assert fairness["data"]["positive_diagnosis"] == "heart failure"
    assert fairness["data"]["train_prevalence"]["target"] == 0.25
    assert set(fairness["arms"]["real"]["attributes"]["sex"]["groups"]) == {"Female", "Male"}


@pytest.mark.slow
def test_the_mnms_copy_study_finishes_without_any_attribute_or_diagnosis(tmp_path, monkeypatch, capsys):
    root = write_mnms_copy(tmp_path / "copy", per_vendor=10)
    # The shipped table's cell, at a count that fits the fixture's 70 training records (14 subjects
    # of 5 slices) and adds some.
    targets = pd.read_csv(CONFIGS / "mnms-copy-targets.csv").assign(target_count=100)
    targets.to_csv(tmp_path / "targets.csv", index=False)
    study, printed = _study("mnms-copy.yaml", tmp_path, monkeypatch, capsys, f"prepare.root={root}",
                            f"plan.targets={tmp_path / 'targets.csv'}", not_needed=("masks", "fairness"))
    for attribute in ("sex", "age", "bmi", "diagnosis"):
        assert printed.count(f"Left out of planning: {attribute} (unknown for every real record)") == 1
    # No attribute to flip, so no prompt-effect pairs are drawn or announced.
    assert "prompt-effect pairs" not in printed and "prompt effects on" not in printed
    plan = pd.read_csv(study / "plan" / "plan.csv", keep_default_na=False)
    assert len(plan) == 1 and plan["synthetic_count"].sum() > 0 and plan["prompt"].tolist() == [""]
    reason = "no real record has a diagnosis, so a classifier has no positive class to detect"
    assert f"fairness: not needed ({reason})" in printed
    quality = json.loads((study / "quality" / "synthetic_quality.json").read_text())
    assert {"realism", "mask_fidelity"} <= set(quality)
    manifest = read_manifest(study / "prepare")
    assert set(manifest["vendor"]) == {"Siemens", "Philips"} and manifest["diagnosis"].isna().all()
    page = parse(study / "report.html")
    assert f"The fairness experiment was not run: {reason}" in page.sections["fairness"]
