"""Each stage's typed result: its run returns it with the fields of what it wrote, ``load``
reads the same back, and a folder without the stage's output is an error naming the command."""

import json
import shutil
from dataclasses import asdict

import pandas as pd
import pytest

from cardiofair.data.records import read_manifest
from cardiofair.data.summary import summary_text
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.errors import MissingInputError
from cardiofair.plan import read_plan
from cardiofair.results import (
    GenerateResult,
    MasksResult,
    PlanResult,
    ReportResult,
    ResultError,
    SplitResult,
    TrainResult,
)
from cardiofair.settings import GenerateSettings, MaskSettings, PlanSettings, ReportSettings, SplitSettings
from cardiofair.stages import BY_NAME
from cardiofair.stages import generate as generate_stage
from cardiofair.stages import masks as masks_stage
from cardiofair.stages import plan as plan_stage
from cardiofair.stages import report as report_stage
from cardiofair.stages import split as split_stage
from cardiofair.stages import train as train_stage

RESULTS = {"split": SplitResult, "train": TrainResult, "masks": MasksResult, "plan": PlanResult,
           "generate": GenerateResult, "report": ReportResult}


@pytest.mark.parametrize("stage", sorted(RESULTS))
def test_each_stage_module_names_its_typed_result(stage):
    module = {"split": split_stage, "train": train_stage, "masks": masks_stage, "plan": plan_stage,
              "generate": generate_stage, "report": report_stage}[stage]
    assert module.Result is RESULTS[stage] and module.Result.STAGE == stage
    assert BY_NAME[stage].module == module.__name__


@pytest.mark.parametrize("stage", sorted(RESULTS))
def test_a_folder_without_the_stages_output_names_the_command_to_run(stage, tmp_path):
    with pytest.raises(MissingInputError, match=f"`cardiofair {stage}`"):
        RESULTS[stage].load(tmp_path / "absent" / "output")
    with pytest.raises(ResultError, match=f"holds no {RESULTS[stage].FILE}: is it the output folder of "
                                          f"`cardiofair {stage}`"):
        RESULTS[stage].load(tmp_path)


def test_split_returns_the_subjects_per_split_stored_in_the_manifest(tiny_real, tmp_path):
    dataset = tmp_path / "real"
    shutil.copytree(tiny_real, dataset)
    result = split_stage.run(SplitSettings(test=0.3, val=0.2, seed=1), dataset=dataset, overwrite=True)
    assert isinstance(result, SplitResult) and result.dataset == dataset
    manifest = read_manifest(dataset)
    subjects = manifest.drop_duplicates("subject_id")
    assert result.subjects.loc["All", "All"] == manifest["subject_id"].nunique()
    for split in ("train", "val", "test"):
        assert result.subjects.loc["All", split] == (subjects["split"] == split).sum()
    pd.testing.assert_frame_equal(SplitResult.load(dataset).subjects, result.subjects)
    assert split_stage.summary(result, {"dataset": dataset}).endswith(result.subjects.to_string())

    manifest.drop(columns="split").to_csv(dataset / SplitResult.FILE, index=False)
    with pytest.raises(ResultError, match="`cardiofair split"):
        SplitResult.load(dataset)


def test_train_result_holds_the_model_card(tiny_model, tmp_path):
    result = TrainResult.load(tiny_model)
    assert result.folder == tiny_model
    assert result.card == json.loads((tiny_model / TrainResult.FILE).read_text())
    assert (tiny_model / TrainResult.TRAINING).is_dir()
    assert str(tiny_model) in train_stage.summary(result, {})
    unfinished = tmp_path / "model"
    shutil.copytree(tiny_model, unfinished)
    (unfinished / TrainResult.FILE).unlink()
    with pytest.raises(ResultError, match="`cardiofair train`"):
        TrainResult.load(unfinished)


def test_masks_returns_the_card_it_wrote(tiny_real, tmp_path):
    out = tmp_path / "masks"
    result = masks_stage.run(MaskSettings(components=4), dataset=tiny_real, out=out, progress=False)
    assert isinstance(result, MasksResult) and result.folder == out
    assert result.card == json.loads((out / MasksResult.FILE).read_text())
    assert (out / MasksResult.WEIGHTS).is_file()
    assert result.card["components"] == 4 and MasksResult.load(out).card == result.card
    assert f"{result.card['components']} shape modes" in masks_stage.summary(result, {"out": out})


def test_plan_returns_the_plan_it_wrote_and_loads_from_its_file_or_folder(tiny_real, tmp_path):
    out = tmp_path / "plan" / PlanResult.FILE
    result = plan_stage.run(PlanSettings(min_real_support=1), dataset=tiny_real, out=out)
    assert isinstance(result, PlanResult) and result.path == out
    on_disk = read_plan(out)
    assert list(result.plan.columns) == list(on_disk.columns)
    assert result.plan["synthetic_count"].tolist() == on_disk["synthetic_count"].tolist()
    for given in (out, out.parent):
        loaded = PlanResult.load(given)
        assert loaded.path == out
        pd.testing.assert_frame_equal(loaded.plan, on_disk)
    assert plan_stage.summary(result, {"out": out}).endswith(f"plan written to {out}")
    with pytest.raises(ResultError, match="holds no other.csv: is it the output folder of `cardiofair plan`"):
        PlanResult.load(out.parent / "other.csv")
    with pytest.raises(MissingInputError, match="nowhere/plan.csv does not exist: give the plan CSV"):
        PlanResult.load(tmp_path / "nowhere" / "plan.csv")


def test_generate_returns_the_synthetic_records_and_prints_the_dataset_summary(tiny_real, tiny_model, tiny_plan,
                                                                              tiny_synthetic, tmp_path):
    out = tmp_path / "synthetic"
    shutil.copytree(tiny_synthetic, out)
    # A finished run of the same settings: generation finds every batch done and changes nothing.
    result = generate_stage.run(GenerateSettings(batch_size=16), model=tiny_model, dataset=tiny_real, plan=tiny_plan,
                                out=out, progress=False)
    assert isinstance(result, GenerateResult) and result.folder == out
    manifest = read_manifest(out)
    assert len(result.records) == len(manifest) == int(read_plan(tiny_plan)["synthetic_count"].sum()) > 0
    assert result.records["record_id"].tolist() == manifest["record_id"].tolist()
    assert generate_stage.summary(result, {"out": out}) == summary_text(out)
    assert result.sampler == asdict(TrainedGenerator(tiny_model).defaults)

    real = GenerateResult.load(tiny_real)
    assert real.records.empty and real.sampler is None


def test_report_returns_the_page_and_the_files_beside_it(tiny_real, tiny_plan, tmp_path):
    out = tmp_path / "report"
    result = report_stage.run(ReportSettings(counterfactuals=False), real=tiny_real, out=out, plan=tiny_plan)
    assert isinstance(result, ReportResult)
    assert (result.page, result.model_card, result.datasheet, result.figures) == (
        out / ReportResult.FILE, out / ReportResult.MODEL_CARD, out / ReportResult.DATASHEET, out / ReportResult.FIGURES)
    assert result.page.is_file() and result.model_card.is_file() and result.datasheet.is_file()
    assert result.figures.is_dir()
    assert ReportResult.load(out) == result
    assert f'href="{ReportResult.MODEL_CARD}"' in result.page.read_text()
    assert report_stage.summary(result, {"out": out}) == (f"wrote {out / ReportResult.FILE}, "
                                                          f"{out / ReportResult.MODEL_CARD}, "
                                                          f"{out / ReportResult.DATASHEET} and {out / 'figures'}")
