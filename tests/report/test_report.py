"""The study report on the tiny study's computed results: every section renders, images are
embedded, each figure of the quality and fairness results stands in its section beside its
reference, missing inputs say so, the cards carry the evaluation's figures, a new quality metric
reaches the page without a fixture edit, and the page parses as balanced HTML."""

import base64
import json
import shutil
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from report_pages import SECTIONS, parse

from cardiofair.cli import main
from cardiofair.data.records import load_record, read_manifest
from cardiofair.errors import OutputExistsError
from cardiofair.formatting import Table, number, percent
from cardiofair.metrics.quality import evaluate_synthetic
from cardiofair.metrics.quality_metrics import (
    FAR_DISTANCE_RATIO,
    METRICS,
    Measurement,
    Metric,
    Page,
    mask_geometry_table,
    prompt_fidelity_table,
    structure_name,
    summary_line,
)
from cardiofair.report import ReportError, write_report
from cardiofair.report.tables import group_series, headline, prevalence_grid, quality_verdict
from cardiofair.results import FairnessResult, GenerateResult, QualityResult, TrainResult
from cardiofair.stages.quality import summary_table
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


def _spread(scope, key):
    """A realism distance as its table writes it: mean +/- s.d. over draws, synthetic and reference."""
    return [f"{number(scope[key][side])} +/- {number(scope[f'{key}_std'][side])}" for side in ("synthetic", "real_reference")]


def _interval(entry, signed=False):
    """A fairness summary's mean (or a comparison's difference) with its interval, as the page writes it."""
    if signed:
        low, high = entry["interval"]
        return f"{entry['difference']:+.3f} [{low:+.2f}, {high:+.2f}]"
    low, high = entry["bootstrap_interval"]
    return f"{entry['mean']:.3f} [{low:.2f}, {high:.2f}]"


def _card_line(text, start):
    """The one Markdown table row of ``text`` whose first cell starts with ``start``."""
    lines = [line for line in text.splitlines() if line.startswith(f"| {start}")]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def _quiet(result):
    """``result`` with mask fidelity at its reference and the two-sample test unable to tell the
    sets apart, so that only the verdict a test sets up speaks (the tiny judges' figures are
    whatever five training steps give)."""
    mask = result.section("mask_fidelity")["overall"]
    mask["synthetic"] = dict(mask["real_reference"])
    c2st = result.section("c2st")["overall"]
    c2st["auroc"] = {"synthetic": 0.5, "real_reference": 0.5}
    return result


def test_every_section_renders_with_embedded_images(full, quality):
    page = parse(full)
    assert tuple(page.sections) == SECTIONS
    assert "script" not in page.tags
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE) for src in page.images)
    # heatmap, examples, counterfactuals, the closest pairs, the mask histograms, two fairness
    # charts and the dose-response
    assert (quality / QualityResult.CLOSEST_PAIRS).is_file() and (quality / QualityResult.MASK_GEOMETRY).is_file()
    assert len(page.images) == 8
    figures = sorted(p.name for p in (full.parent / "figures").iterdir())
    assert figures == ["closest_pairs.png", "cohort_prevalence.png", "counterfactuals.png", "dose_response.png",
                       "examples.png", "fairness_balanced_accuracy.png", "fairness_true_positive_rate.png",
                       "mask-geometry.png"]
    assert not any(h.startswith(("http:", "https:", "//")) for h in page.hrefs)
    assert "Not available" not in "".join(page.sections[s] for s in SECTIONS)
    # The synthetic masks: validity, the per-cell distance to the phantom truth beside its reference.
    masks = QualityResult.load(quality).section("mask_geometry")
    validity = masks["validity"]
    assert f"{percent(validity['valid_share'])} of {validity['n']} synthetic masks pass" in page.sections["masks"]
    for cell, scope in masks["cells"].items():
        truth = scope["distance_to_phantom_truth"]
        row = next(r for r in page.rows["masks"] if r[0] == cell.replace("|", ", "))
        assert row[1:3] == [str(scope["n_synthetic"]), percent(scope["valid_share"])]
        assert row[4:6] == [f"{number(truth['synthetic'])} / {number(truth['real_reference'])}",
                            number(truth["ratio"], 2)]
    # The tiny study copies its masks from real ones; masks drawn by the mask generator also
    # record the share of draws it rejected, which the note gives.
    drawn = {**masks, "validity": {**validity, "rejected_share_of_draws": 0.0322}}
    assert "the mask generator rejected 3.2% of its draws" in mask_geometry_table(drawn).notes[0]


def test_the_page_says_first_when_the_synthetic_images_are_far_from_real(full, quality):
    text = full.read_text()
    top = text[:text.index("<nav>")]
    fd = QualityResult.load(quality).section("realism")["overall"]["fd"]
    # The tiny generator, trained for two steps, draws noise: far from real by any measure.
    assert fd["synthetic"] > FAR_DISTANCE_RATIO * fd["real_reference"]
    assert 'class="verdict"' in top and "far from real ones" in top
    assert f"{fd['synthetic'] / fd['real_reference']:.1f} times" in top
    assert f"({number(fd['synthetic'])} against {number(fd['real_reference'])})" in top


def test_the_verdict_names_distance_mask_fidelity_and_too_few_images(quality):
    fd = QualityResult.load(quality).section("realism")["overall"]["fd"]
    close = _quiet(QualityResult.load(quality))
    close.section("realism")["overall"]["fd"] = {"synthetic": 0.6, "real_reference": 0.5}
    assert quality_verdict(close) == []
    far = _quiet(QualityResult.load(quality))
    far.section("mask_fidelity")["overall"]["synthetic"]["ES_MYO"] = 0.544
    far.section("mask_fidelity")["overall"]["real_reference"]["ES_MYO"] = 0.869
    sentences = quality_verdict(far)
    assert f"{fd['synthetic'] / fd['real_reference']:.1f} times" in sentences[0]
    assert "ES LV myocardium 0.544 (real 0.869)" in sentences[1]
    told = _quiet(QualityResult.load(quality))
    told.section("c2st")["overall"].update(auroc={"synthetic": 0.97, "real_reference": 0.52},
                                           auroc_interval={"synthetic": [0.94, 0.99], "real_reference": [0.46, 0.58]})
    assert "AUROC 0.970 (real training images from the same: 0.520)" in quality_verdict(told)[1]
    few = _quiet(QualityResult.load(quality))
    few.section("realism")["overall"] = {"status": "too few images for a stable figure: 48 synthetic (need 100)"}
    assert quality_verdict(few) == ["Realism was not measured: too few images for a stable figure: 48 synthetic "
                                    "(need 100)."]


def test_an_attribute_the_cohort_lacks_is_said_to_be_unmeasured(quality):
    prompt = QualityResult.load(quality).section("prompt_fidelity")
    prompt["overall"]["not_measured"] = {"sex": "unknown for every real training record"}
    assert "Not measured: sex (unknown for every real training record)." in prompt_fidelity_table(prompt).notes


def test_tables_show_synthetic_beside_named_reference(full, quality, fairness):
    page = parse(full)
    sections, rows = page.sections, page.rows
    result = QualityResult.load(quality)
    realism = result.section("realism")["overall"]
    fd_row = next(r for r in rows["realism"] if r[0].startswith("FD-cardiofair (n="))
    assert fd_row[1:] == _spread(realism, "fd")
    assert ["FD-cardiofair, image + mask geometry", *_spread(realism, "fd_image_mask")] in rows["realism"]
    assert "real held-out (val + test) vs real train" in sections["realism"]
    # the two-sample classifier's AUROC beside real training images', with both intervals
    c2st = result.section("c2st")
    auroc, intervals = c2st["overall"]["auroc"], c2st["overall"]["auroc_interval"]
    assert ["AUROC", number(auroc["synthetic"]), number(auroc["real_reference"])] in rows["realism"]
    assert [c2st["interval"], *(f"{number(intervals[side][0], 2)}-{number(intervals[side][1], 2)}"
                                for side in ("synthetic", "real_reference"))] in rows["realism"]
    mask = result.section("mask_fidelity")["overall"]
    for key in mask["synthetic"]:
        assert [structure_name(key), number(mask["synthetic"][key]), number(mask["real_reference"][key]),
                number(mask["shuffled_mask_floor"][key])] in rows["mask-fidelity"], key
    prompt = result.section("prompt_fidelity")["overall"]
    for name in prompt["synthetic"]:
        assert [name, *(number(prompt[side][name]) for side in ("synthetic", "real_reference", "real_test", "chance"))] \
            in rows["prompt-fidelity"], name
    # an attribute barely read on real images either (the tiny judges read most at chance): said
    # so rather than left to mislead
    unread = [name for name, value in prompt["real_reference"].items() if value < prompt["chance"][name] + 0.1]
    assert unread and all(f"barely reads {name}" in sections["prompt-fidelity"] for name in unread)
    # prompt effects: the generator's pairs beside the phantom's own cues, and why an attribute
    # has no reference (the phantom's age cues lie in the heart)
    for attribute, effect in result.section("prompt_effects")["attributes"].items():
        row = next(r for r in rows["prompt-fidelity"] if r[0].startswith(f"{attribute} ("))
        for side, cells in (("synthetic", row[1:4]), ("real_reference", row[4:7])):
            measured = effect[side]
            if measured["status"] == "ok":
                assert cells == [percent(measured["moved"]), percent(measured["follows_both"]),
                                 number(measured["probability_shift"])], (attribute, side)
            else:
                assert cells == ["n/a"] * 3 and measured["status"] in sections["prompt-fidelity"]
    assert "age cues lie in the heart" in sections["prompt-fidelity"]
    privacy = result.section("privacy")
    for space in ("pixel", "encoder"):
        copies, distances = privacy["overall"]["copy_rate"][space], privacy["overall"]["median_nn_distance"][space]
        row = next(r for r in rows["privacy"] if r[0].startswith(f"copy rate, {space} space"))
        assert row[1:] == [percent(copies["synthetic"]), percent(copies["real_reference"])]
        assert [f"median nearest-neighbour distance, {space} space", number(distances["synthetic"]),
                number(distances["real_reference"])] in rows["privacy"]
    for pair in privacy["closest_pairs"]:
        assert [pair["synthetic"], pair["nearest_training_record"], number(pair["pixel_distance"]),
                "yes" if pair["flagged_as_copy"] else "no"] in rows["closest-pairs"]
    # a cell with too few real images says so in its row
    few = [cell for cell, scope in result.section("realism")["cells"].items() if scope["status"] != "ok"]
    assert few and all("too few images" in next(r for r in rows["quality-cells"] if r[0] == cell.replace("|", ", "))[-1]
                       for cell in few)
    experiment = FairnessResult.load(fairness)
    odds = experiment.arms["real"]["attributes"]["sex"]["gaps"]["equalized_odds_difference"]
    row = next(r for r in rows["fairness"] if r[:2] == ["sex", "equalized odds difference"])
    assert row[2] == _interval(odds)
    change = experiment.comparisons["oversample"]["overall"]["balanced_accuracy"]
    row = next(r for r in rows["fairness"] if r[:2] == ["overall", "balanced accuracy"])
    assert row[2 + list(experiment.comparisons).index("oversample")] == \
        f"{_interval(change, signed=True)}, p = {change['p_holm']:.3g}"


def test_inputs_made_from_other_data_are_flagged(full, real, synthetic, model, quality, tmp_path):
    # Every result of the tiny study was made from the data the report is given.
    assert "its figures may describe other data" not in parse(full).sections["inputs"]
    # Figures of another run: the same quality result, as if it had judged other datasets.
    result = QualityResult.load(quality)
    elsewhere = replace(result, real={**result.real, "path": str(tmp_path / "real")},
                        synthetic={**result.synthetic, "path": str(tmp_path / "synthetic")})
    moved = tmp_path / "quality"
    moved.mkdir()
    elsewhere.save(moved)
    path = write_report(tmp_path / "report", real=real, synthetic=synthetic, generator=generator_facts(model),
                        quality=moved, fairness=None, counterfactual_prompts={})
    inputs = parse(path).sections["inputs"]
    assert f"The quality evaluation was made from the real dataset {tmp_path / 'real'}, not from {real}" in inputs
    # the model was trained on the real fixture itself
    assert "The generator was made" not in inputs
    # both cards say so beside its figures
    card = (path.parent / "model_card.md").read_text()
    sheet = (path.parent / "datasheet.md").read_text()
    assert f"**Check.** The quality evaluation was made from the real dataset {tmp_path / 'real'}" in card
    assert f"**Check.** The quality evaluation was made from the synthetic dataset {tmp_path / 'synthetic'}" in sheet


def test_a_model_whose_training_loss_jumped_is_said_to_have_diverged_first(real, model, tmp_path):
    jumped = tmp_path / "jumped"
    shutil.copytree(model, jumped)
    card_file = jumped / TrainResult.FILE
    card = json.loads(card_file.read_text())
    card["training"]["loss_jump"] = {"step": 1821, "before": 0.0816, "after": 0.1737}
    card_file.write_text(json.dumps(card))
    for folder, diverged in ((model, False), (jumped, True)):
        path = write_report(tmp_path / folder.name, real=real, synthetic=None, generator=generator_facts(folder),
                            quality=None, fairness=None, counterfactual_prompts={})
        text = path.read_text()
        top = text[:text.index("<nav>")]
        model_card = (path.parent / "model_card.md").read_text()
        assert ("The generator may have diverged." in top) is diverged
        assert ("its loss jumped at step 1,821 (mean over 50 steps 0.0816 -> 0.174)" in model_card) is diverged
        assert ("| loss | no jump (see training/loss.png) |" in model_card) is not diverged


def test_counterfactual_row_is_drawn_with_the_synthetic_runs_sampler(real, synthetic, model, tmp_path):
    # A run drawn with sex guidance (the scarcity study's) looks otherwise than the model's
    # defaults; the row beside its figures must show what its records look like.
    guided = tmp_path / "guided"
    shutil.copytree(synthetic, guided)
    run_file = guided / GenerateResult.RUN
    run = json.loads(run_file.read_text())
    run["sampler"] = {**(run.get("sampler") or {}), "attribute_guidance": 3.0, "guided_attribute": "sex"}
    run_file.write_text(json.dumps(run))
    default, chosen = generator_facts(model), generator_facts(model, guided)
    assert "sex guidance" not in default.sampling and "sex guidance 3 on every step" in chosen.sampling
    assert generator_facts(model, synthetic).sampling == default.sampling
    pair = load_record(real, read_manifest(real).iloc[0].to_dict()).mask[None]
    prompts, seeds = ["Female, age in 60s, normal BMI, heart failure"], [0]
    assert not np.allclose(default.draw(pair, prompts, seeds), chosen.draw(pair, prompts, seeds))


def test_text_is_escaped(full):
    text = full.read_text()
    assert "<script>" not in text and "<b>seed</b>" not in text
    assert "&lt;b&gt;seed&lt;/b&gt;" in text and "&lt;script&gt;" in text
    assert "time per stage (s)" in parse(full).sections["metadata"]


def test_cards_carry_the_evaluation_figures(full, model, synthetic, quality):
    card = (full.parent / "model_card.md").read_text()
    sheet = (full.parent / "datasheet.md").read_text()
    info = json.loads((model / "cardiofair.json").read_text())
    assert f"{info['family']} / tiny" in card and str(info["training"]["steps"]) in card
    result = QualityResult.load(quality)
    realism, copies = result.section("realism")["overall"], result.section("privacy")["overall"]["copy_rate"]["pixel"]
    fd = " | ".join(_spread(realism, "fd")) + " |"
    copy_rate = f"{percent(copies['synthetic'])} | {percent(copies['real_reference'])} |"
    assert _card_line(card, "FD-cardiofair (n=").endswith(fd)
    assert _card_line(card, "copy rate, pixel space").endswith(copy_rate)
    assert "## Not for" in card and "evaluators trained by cardiofair" in card
    assert "SYNTHETIC" in sheet.splitlines()[0]
    assert HOSTILE in sheet
    assert _card_line(sheet, "FD-cardiofair (n=").endswith(fd)
    assert _card_line(sheet, "copy rate, pixel space").endswith(copy_rate)
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
    female = report.arms["oversample"]["attributes"]["sex"]["groups"]["Female"]
    tpr = female["true_positive_rate"]
    assert series.loc[("oversample", "Female"), ["mean", "low", "high", "count", "positives"]].tolist() == \
        [tpr["mean"], *tpr["bootstrap_interval"], female["count"]["mean"], female["positives"]["mean"]]
    cells = report.arms["real"]["attributes"]["sex&age"]["groups"]
    empty = [group for group, measures in cells.items() if measures["positives"]["mean"] == 0]
    undefined = group_series(report, "sex&age", "true_positive_rate").set_index(["arm", "group"])
    assert empty and all(undefined.loc[("real", group), "reason"] == "no positives in group" for group in empty)


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


def test_the_fairness_section_states_power_mechanism_small_groups_and_the_oracle_share(real, fairness, tmp_path):
    report = FairnessResult.load(fairness)
    gap = ["attributes", "sex", "groups", "Female", "true_positive_rate_vs_reference"]
    assert report.oracle_shares["path"] == gap and report.versus[0]["arm"] == "real+synthetic"
    # The tiny study's oracle moves the TPR gap within noise, so its shares have no interval;
    # one with an interval is set here to check how the answer line and the share line state it.
    report.oracle_shares["arms"]["real+synthetic"] = {"share": 0.4, "change": 0.04, "oracle_change": 0.1,
                                                      "interval": [0.1, 0.7], "reason": None}
    folder = tmp_path / "fairness"
    folder.mkdir()
    report.save(folder)
    path = write_report(tmp_path / "report", real=real, synthetic=None, generator=None, quality=None, fairness=folder)
    section = parse(path).sections["fairness"]
    power = report.data["test_set"]["power"]
    stated = f"Power: with {power['positives']['Female']} positives in Female, {power['positives']['Male']} in Male"
    assert section.index(stated) < section.index("Overall test-set")
    assert f"+-{number(power['half_width'])}" in section
    assert f"smaller than {number(power['minimum_detectable_change'])}" in section
    mechanism = report.data["mechanism"]
    assert f"Bias scenario of the phantom cohort: {mechanism['scenario']}. {mechanism['description']}" in section
    too_small = report.arms["real"]["attributes"]["sex&age"]["too_small"]
    assert too_small and all(f"{group} ({counts['positives']} pos., {counts['negatives']} neg.)" in section
                             for group, counts in too_small.items())
    assert "real+synthetic: +0.040, 40% of the oracle arm's +0.100 [10%, 70%]" in section
    # The first result line answers the user's question; the pair's table follows the comparisons.
    matched = report.comparisons["real+synthetic"]["attributes"]["sex"]["groups"]["Female"][
        "true_positive_rate_at_matched_fpr_vs_reference"]
    versus = report.versus[0]["comparisons"]["attributes"]["sex"]["groups"]["Female"]["true_positive_rate_vs_reference"]
    answer = (f"Real+synthetic closed 40% [10%, 70%] of the oracle's change of TPR Female - Male (at each group's own "
              f"threshold for an FPR of {report.settings['matched_fpr']:g}: {_interval(matched, signed=True)}; the "
              f"rest is a prior shift); against oversample: {_interval(versus, signed=True)} (paired over the same "
              "seeds, 95% t-interval).")
    assert section.index(answer) < section.index(stated)
    assert "Paired difference of one arm minus another" in section and "real+synthetic - oversample" in section
    # Beside the gap, what the records taught the classifier to rank: the thin group's AUROC.
    auroc = report.comparisons["real+synthetic"]["attributes"]["sex"]["groups"]["Female"]["roc_auc"]
    versus_auroc = report.versus[0]["comparisons"]["attributes"]["sex"]["groups"]["Female"]["roc_auc"]
    assert (f"On AUROC Female, which no threshold moves: {_interval(auroc, signed=True)}") in section
    assert f"against oversample: {_interval(versus_auroc, signed=True)}." in section


def test_the_answer_gives_the_share_of_the_oracles_auroc_change_only_where_the_oracle_makes_one(fairness):
    report = FairnessResult.load(fairness)
    female = ("attributes", "sex", "groups", "Female", "roc_auc")

    def set_change(arm, difference, interval):
        tree = report.comparisons[arm]
        for key in female[:-1]:
            tree = tree[key]
        tree[female[-1]] = {**tree[female[-1]], "difference": difference, "interval": interval}

    set_change("real+synthetic", 0.04, [0.01, 0.07])
    set_change("oracle", 0.05, [0.02, 0.08])
    assert "On AUROC Female, which no threshold moves: +0.040 [+0.01, +0.07], 80% of the oracle's +0.050 [+0.02, " \
           "+0.08]; against oversample: " in headline(report)
    set_change("oracle", 0.05, [-0.01, 0.11])
    assert "+0.040 [+0.01, +0.07]; against oversample" in headline(report) and "of the oracle's +0.050" not in \
        headline(report)
    # An oracle change without an interval (a single seed) gives no share either, and no error.
    set_change("oracle", 0.05, [None, None])
    assert "+0.040 [+0.01, +0.07]; against oversample" in headline(report)


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


# --- a quality metric added to the registry reaches the result and the page ---------------------


def measure_mean_intensity(context):
    """A toy quality metric: the synthetic images' mean intensity beside real test images'."""
    return Measurement({"overall": {"synthetic": float(np.mean(context.sets["synthetic"].images)),
                                    "real_reference": float(np.mean(context.sets["test"].images))}})


def _mean_intensity_table(section):
    scope = section["overall"]
    return Table("Mean intensity", ["measure", "synthetic", "reference: real test"],
                 [["mean intensity", number(scope["synthetic"]), number(scope["real_reference"])]])


def _mean_intensity_summary(section):
    return [summary_line("mean intensity", number(section["overall"]["synthetic"]),
                         number(section["overall"]["real_reference"]))]


def test_a_quality_metric_added_to_the_registry_reaches_the_result_and_the_report(
        monkeypatch, tmp_path, real, synthetic, tiny_quality_settings, tiny_evaluators):
    toy = Metric("mean_intensity", f"{__name__}:measure_mean_intensity", _mean_intensity_table,
                 _mean_intensity_summary, page=Page("mean-intensity", "Mean intensity"))
    # Every module that holds the registry by name gets the one with the toy metric.
    for module in [m for m in sys.modules.values() if getattr(m, "METRICS", None) is METRICS]:
        monkeypatch.setattr(module, "METRICS", (*METRICS, toy))
    # The judges are the tiny study's, from its cache; the two-sample test is not what this is about.
    result = evaluate_synthetic(real, synthetic, tmp_path / "quality", replace(tiny_quality_settings, c2st=False),
                                evaluators_dir=tiny_evaluators, progress=False)
    intensity = QualityResult.load(tmp_path / "quality").section("mean_intensity")["overall"]
    assert intensity == result.section("mean_intensity")["overall"]
    assert 0.0 < intensity["synthetic"] and 0.0 < intensity["real_reference"]
    assert summary_line("mean intensity", number(intensity["synthetic"]), number(intensity["real_reference"])) \
        in summary_table(result)
    page = parse(write_report(tmp_path / "report", real=real, synthetic=None, generator=None,
                              quality=tmp_path / "quality", fairness=None))
    sections = tuple(page.sections)
    assert sections.index("privacy") < sections.index("mean-intensity") < sections.index("quality-cells")
    assert ["mean intensity", number(intensity["synthetic"]), number(intensity["real_reference"])] \
        in page.rows["mean-intensity"]
