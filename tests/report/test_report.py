"""The study report: every section renders, images are embedded, missing inputs say so, the
cards carry the evaluation's figures, and the page parses as balanced HTML."""

import base64
import json

import pandas as pd
import pytest
from report_fixtures import fairness_report, quality_report
from report_pages import SECTIONS, parse

from cardiofair.cli import main
from cardiofair.data.records import read_manifest
from cardiofair.errors import OutputExistsError
from cardiofair.metrics.quality_metrics import prompt_fidelity_table
from cardiofair.report import ReportError, write_report
from cardiofair.report.tables import group_series, prevalence_grid, quality_verdict
from cardiofair.results import FairnessResult
from cardiofair.stages.report import generator_facts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script> & terms"


@pytest.fixture(scope="module")
def full(tmp_path_factory, real, synthetic, model, quality, fairness, plan):
    out = tmp_path_factory.mktemp("full") / "report"
    metadata = {"versions": {"cardiofair": "0.1.0"}, "time per stage (s)": {"train": 12.5}, "<b>seed</b>": 7}
    path = write_report(out, real=real, synthetic=synthetic, generator=generator_facts(model), quality=quality, fairness=fairness,
                        plan=plan, metadata=metadata, licence=HOSTILE)
    return path


def test_every_section_renders_with_embedded_images(full):
    page = parse(full)
    assert tuple(page.sections) == SECTIONS
    assert "script" not in page.tags
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE) for src in page.images)
    # heatmap, examples, counterfactuals, two fairness charts; the closest pairs only when the
    # evaluation wrote its picture (the hand-written one did not)
    assert len(page.images) == 5
    figures = sorted(p.name for p in (full.parent / "figures").iterdir())
    assert figures == ["cohort_prevalence.png", "counterfactuals.png", "examples.png",
                       "fairness_balanced_accuracy.png", "fairness_true_positive_rate.png"]
    assert not any(h.startswith(("http:", "https:", "//")) for h in page.hrefs)
    assert "Not available" not in "".join(page.sections[s] for s in SECTIONS if s != "closest-pairs")
    # The synthetic masks: validity, the per-cell distance to the phantom truth beside its reference.
    assert "3.2%" in page.sections["masks"] and "0.331 / 0.221" in page.sections["masks"]


def test_the_page_says_first_when_the_synthetic_images_are_far_from_real(full):
    text = full.read_text()
    top = text[:text.index("<nav>")]
    # FD-cardiofair 1.803 against 0.498 for real held-out images
    assert 'class="verdict"' in top and "far from real ones" in top and "3.6 times" in top


def test_the_verdict_names_distance_mask_fidelity_and_too_few_images():
    close = quality_report()
    close.section("realism")["overall"]["fd"] = {"synthetic": 0.6, "real_reference": 0.5}
    assert quality_verdict(close) == []
    far = quality_report()
    far.section("mask_fidelity")["overall"]["synthetic"]["ES_MYO"] = 0.544
    far.section("mask_fidelity")["overall"]["real_reference"]["ES_MYO"] = 0.869
    sentences = quality_verdict(far)
    assert "3.6 times" in sentences[0] and "ES LV myocardium 0.544 (real 0.869)" in sentences[1]
    told = quality_report()
    told.section("c2st")["overall"].update(auroc={"synthetic": 0.97, "real_reference": 0.52},
                                           auroc_interval={"synthetic": [0.94, 0.99], "real_reference": [0.46, 0.58]})
    assert "AUROC 0.970 (real training images from the same: 0.520)" in quality_verdict(told)[1]
    few = quality_report()
    few.section("realism")["overall"] = {"status": "too few images for a stable figure: 48 synthetic (need 100)"}
    assert quality_verdict(few) == ["Realism was not measured: too few images for a stable figure: 48 synthetic "
                                    "(need 100)."]


def test_an_attribute_the_cohort_lacks_is_said_to_be_unmeasured():
    prompt = quality_report().section("prompt_fidelity")
    prompt["overall"]["not_measured"] = {"sex": "unknown for every real training record"}
    assert "Not measured: sex (unknown for every real training record)." in prompt_fidelity_table(prompt).notes


def test_tables_show_synthetic_beside_named_reference(full):
    sections = parse(full).sections
    assert "1.803" in sections["realism"] and "0.498" in sections["realism"]
    assert "real held-out (val + test) vs real train" in sections["realism"]
    # the two-sample classifier's AUROC beside real training images', with both intervals
    assert "0.862" in sections["realism"] and "0.513" in sections["realism"]
    assert "0.82-0.90" in sections["realism"] and "0.46-0.57" in sections["realism"]
    assert "0.912" in sections["mask-fidelity"] and "0.982" in sections["mask-fidelity"] \
        and "0.432" in sections["mask-fidelity"]
    assert "0.654" in sections["prompt-fidelity"] and "0.887" in sections["prompt-fidelity"]
    # age is barely readable on real images either: said so rather than left to mislead
    assert "barely reads age" in sections["prompt-fidelity"]
    # prompt effects: the generator's pairs beside the phantom's own cues, and why age has no reference
    assert "3.1%" in sections["prompt-fidelity"] and "90.6%" in sections["prompt-fidelity"]
    assert "0.735" in sections["prompt-fidelity"] and "age cues lie in the heart" in sections["prompt-fidelity"]
    assert "5.6%" in sections["privacy"] and "5.7%" in sections["privacy"]
    assert "phantom-000042" in sections["closest-pairs"] and "0.092" in sections["closest-pairs"]
    assert "0.314 [0.20, 0.40]" in sections["fairness"] and "p = 0.432" in sections["fairness"]
    assert "too few images" in sections["quality-cells"]


def test_inputs_made_from_other_data_are_flagged(full):
    inputs = parse(full).sections["inputs"]
    # the hand-written evaluation names datasets "real" and "synthetic"; the model was trained
    # on the real fixture itself
    assert "The quality evaluation was made from the real dataset real, not from" in inputs
    assert "The generator was made" not in inputs


def test_text_is_escaped(full):
    text = full.read_text()
    assert "<script>" not in text and "<b>seed</b>" not in text
    assert "&lt;b&gt;seed&lt;/b&gt;" in text and "&lt;script&gt;" in text
    assert "time per stage (s)" in parse(full).sections["metadata"]


def test_cards_carry_the_evaluation_figures(full, model, synthetic):
    card = (full.parent / "model_card.md").read_text()
    sheet = (full.parent / "datasheet.md").read_text()
    info = json.loads((model / "cardiofair.json").read_text())
    assert f"{info['family']} / tiny" in card and str(info["training"]["steps"]) in card
    assert "1.803" in card and "0.498" in card and "5.6%" in card
    assert "## Not for" in card and "evaluators trained by cardiofair" in card
    # the hand-written evaluation names other datasets: both cards say so beside its figures
    assert "**Check.** The quality evaluation was made from the real dataset real" in card
    assert "**Check.** The quality evaluation was made from the synthetic dataset synthetic" in sheet
    assert "SYNTHETIC" in sheet.splitlines()[0]
    assert HOSTILE in sheet
    assert "1.803" in sheet and "copy rate, pixel space" in sheet
    assert f"| records | {len(read_manifest(synthetic))} |" in sheet


def test_missing_inputs_are_said_plainly(tmp_path, real):
    path = write_report(tmp_path / "bare", real=real, synthetic=None, generator=None, quality=None, fairness=None)
    page = parse(path)
    assert tuple(page.sections) == SECTIONS
    for section in SECTIONS:
        if section not in ("inputs", "cohort", "cards"):
            assert "Not available" in page.sections[section], section
    assert "no 'after augmentation'" in page.sections["cohort"]
    assert len(page.images) == 1  # the real cohort's heatmap is there without any other input
    assert "No model was given" in (tmp_path / "bare" / "model_card.md").read_text()
    assert "No synthetic dataset was given" in (tmp_path / "bare" / "datasheet.md").read_text()


def test_rewrite_needs_overwrite_and_gives_the_same_files(tmp_path, real, model):
    out = tmp_path / "again"
    first = write_report(out, real=real, synthetic=None, generator=generator_facts(model), quality=None, fairness=None, seed=3)
    figures = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    with pytest.raises(OutputExistsError):
        write_report(out, real=real, synthetic=None, generator=generator_facts(model), quality=None, fairness=None, seed=3)
    second = write_report(out, real=real, synthetic=None, generator=generator_facts(model), quality=None, fairness=None, seed=3,
                          overwrite=True)
    assert first == second
    assert {p.name: p.read_bytes() for p in (out / "figures").iterdir()} == figures


def test_a_given_input_that_cannot_be_read_is_an_error(tmp_path, real):
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ReportError, match="fairness.json"):
        write_report(tmp_path / "out", real=real, synthetic=None, generator=None, quality=None,
                     fairness=tmp_path / "unfinished")
    with pytest.raises(ReportError, match="no synthetic records"):
        write_report(tmp_path / "out", real=real, synthetic=real, generator=None, quality=None, fairness=None)
    assert not (tmp_path / "out").exists()


def test_prevalence_grid_counts_records_and_positives():
    binned = pd.DataFrame({"sex": ["Female", "Female", "Female", "Male"], "age": ["40s", "40s", "50s", "40s"],
                           "diagnosis": ["heart failure", "healthy", "healthy", "heart failure"],
                           "synthetic": [True, False, False, False]})
    grid = prevalence_grid(binned, "heart failure").set_index(["sex", "age"])
    assert grid.loc[("Female", "40s"), ["n", "positives", "synthetic"]].tolist() == [2, 1, 1]
    assert grid.loc[("Female", "40s"), "prevalence"] == 50.0
    assert grid.loc[("Female", "50s"), "prevalence"] == 0.0
    assert grid.loc[("Male", "40s"), "prevalence"] == 100.0


def test_group_series_reads_means_and_intervals(fairness):
    report = FairnessResult.load(fairness)
    series = group_series(report, "sex", "true_positive_rate").set_index(["arm", "group"])
    assert series.loc[("oversample", "Female"), ["mean", "low", "high", "count", "positives"]].tolist() == \
        [0.75, 0.55, 0.85, 20, 4]
    undefined = group_series(report, "sex&age", "true_positive_rate").set_index(["arm", "group"])
    assert undefined.loc[("real", "Female|40s"), "reason"] == "no positives in group"


def test_cli_report(tmp_path, real, model, quality, capsys):
    out = tmp_path / "cli"
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"hardware": {"cpu_cores": 2}, "seconds_per_stage": {"train": 61.5}}))
    assert main(["report", "--real", str(real), "--model", str(model), "--quality", str(quality),
                 "--metadata", str(run), "--no-counterfactuals", "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    sections = parse(out / "report.html").sections
    assert "cpu_cores" in sections["metadata"] and "61.5" in sections["metadata"]
    assert "turned off" in sections["counterfactuals"]
    assert main(["report", "--real", str(real), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    run.write_text("{not json")
    assert main(["report", "--real", str(real), "--metadata", str(run), "--out", str(out), "--overwrite"]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_the_fairness_section_states_power_mechanism_small_groups_and_the_oracle_share(real, tmp_path):
    report = fairness_report()
    report.settings["threshold_attribute"] = "sex"
    report.data.update(test_set={"source": "fresh phantom subjects", "power": {
        "group": "Female", "reference_group": "Male", "positives": {"Female": 500, "Male": 500}, "confidence": 0.95,
        "power": 0.8, "half_width": 0.062, "minimum_detectable_change": 0.0886, "reason": None}},
        mechanism={"scenario": "representation", "description": "Female heart failure is rare."})
    report.arms["real"]["attributes"]["sex&age"].update(min_group_size=10, too_small={
        "Female|40s": {"positives": 0, "negatives": 5}})
    report.oracle_shares.update({"measure": "TPR Female - Male", "arms": {"oversample": {
        "share": 0.4, "change": 0.04, "oracle_change": 0.1, "interval": [0.1, 0.7], "reason": None}},
        "path": ["attributes", "sex", "groups", "Female", "true_positive_rate_vs_reference"]})
    report.settings["matched_fpr"] = 0.1
    report.comparisons["oversample"]["attributes"]["sex"]["groups"] = {"Female": {
        "true_positive_rate_at_matched_fpr_vs_reference": {"difference": 0.0123, "interval": [-0.01, 0.03],
                                                           "p_value": 0.3, "p_holm": 0.6, "reason": None}}}
    report.versus.append({"arm": "oversample", "other": "real", "comparisons": {"attributes": {"sex": {"groups": {
        "Female": {"true_positive_rate_vs_reference": {"difference": 0.0412, "interval": [0.01, 0.07],
                                                       "p_value": 0.01, "p_holm": 0.02, "reason": None}}}}}}})
    folder = tmp_path / "fairness"
    folder.mkdir()
    report.save(folder)
    path = write_report(tmp_path / "report", real=real, synthetic=None, generator=None, quality=None, fairness=folder)
    section = parse(path).sections["fairness"]
    assert section.index("Power: with 500 positives in Female, 500 in Male") < section.index("Overall test-set")
    assert "+-0.062" in section and "smaller than 0.089" in section
    assert "Bias scenario of the phantom cohort: representation. Female heart failure is rare." in section
    assert "Female|40s (0 pos., 5 neg.)" in section
    assert "oversample: +0.040, 40% of the oracle arm's +0.100 [10%, 70%]" in section
    # The first result line answers the user's question; the pair's table follows the comparisons.
    answer = ("Oversample closed 40% [10%, 70%] of the oracle's change of TPR Female - Male (at each group's own "
              "threshold for an FPR of 0.1: +0.012 [-0.01, +0.03]; the rest is a prior shift); against real: "
              "+0.041 [+0.01, +0.07] (paired over the same seeds, 95% t-interval).")
    assert section.index(answer) < section.index("Power: with 500 positives")
    assert "Paired difference of one arm minus another" in section and "oversample - real" in section


def test_every_arm_and_dose_has_its_own_colour_in_every_figure():
    """Ten bars in the default study's figures (seven arms, three at half the dose) and up to
    nine arms: each its own colour, a dose its arm's colour lighter below 1 and darker above."""
    from cardiofair.downstream.arms import ARMS
    from cardiofair.report.figures import arm_colour

    dosed = [arm.name for arm in ARMS.values() if arm.dosed]
    runs = [*((arm, 1.0) for arm in ARMS), *((arm, dose) for arm in dosed for dose in (0.5, 2.0))]
    assert len({arm_colour(*run) for run in runs}) == len(runs)
    for arm in dosed:
        assert sum(arm_colour(arm, 0.5)) > sum(arm_colour(arm)) > sum(arm_colour(arm, 2.0))
