"""`cardiofair run`: each stage's recorded command line reproduces its settings, and (slow) the
smoke study end to end: every stage, every result well formed, every report section filled, and
a run killed during generation resumes without redoing the finished stages."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from report_pages import SECTIONS, parse

from cardiofair.cli import build_parser
from cardiofair.config import load_config
from cardiofair.data.records import MANIFEST_COLUMNS
from cardiofair.options import from_args
from cardiofair.stages import FAIRNESS, REPORT, STAGES
from cardiofair.study import Study, run_study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_each_stage_records_a_command_line_that_gives_back_its_settings_and_paths(tmp_path):
    config, base = load_config(CONFIGS / "smoke.yaml", [f"runs={tmp_path}"])
    study = Study(config, base)
    for stage in STAGES:
        argv = study.command_line(stage)
        assert argv[:2] == ["cardiofair", stage.name]
        args = build_parser().parse_args(argv[1:])
        assert from_args(stage.settings, args) == study.settings(stage), stage.name
        given = study.paths(stage)
        assert {p.name: getattr(args, p.name) for p in stage.paths} == {p.name: given.get(p.name) for p in stage.paths}


def test_a_dry_run_prints_every_stage_and_writes_nothing(tmp_path):
    config, base = load_config(CONFIGS / "smoke.yaml", [f"runs={tmp_path / 'runs'}"])
    printed = []
    run_study(Study(config, base), dry_run=True, log=printed.append)
    assert [line.split(":")[0] for line in printed] == [f"[{i}/{len(STAGES)}] {s.name}"
                                                       for i, s in enumerate(STAGES, 1)]
    # The smoke study borrows masks, so the mask generator is the one stage it does not run.
    assert all(f"cardiofair {s.name} " in line for s, line in zip(STAGES, printed) if s.name != "masks")
    assert "masks: not needed (plan.mask_policy is matched" in printed[[s.name for s in STAGES].index("masks")]
    assert not (tmp_path / "runs").exists()


def test_the_fairness_stage_is_left_out_once_the_prepared_cohort_shows_no_diagnosis(tmp_path):
    config, base = load_config(CONFIGS / "smoke.yaml", [f"runs={tmp_path}"])
    study = Study(config, base)
    # Before prepare nobody knows: the stage is planned, and the report reads its folder.
    assert study.needed(FAIRNESS) and study.paths(REPORT)["fairness"] == study.path("fairness")
    records = pd.DataFrame({column: [None] * 3 for column in MANIFEST_COLUMNS}).assign(
        record_id=["a", "b", "c"], subject_id=["a", "b", "c"], is_synthetic=False)
    study.path("prepare").mkdir(parents=True)
    records.to_csv(study.path("prepare") / "manifest.csv", index=False)
    assert study.not_needed(FAIRNESS) == "no real record has a diagnosis, so a classifier has no positive class to detect"
    assert study.paths(REPORT)["fairness"] is None
    printed = []
    run_study(study, dry_run=True, log=printed.append)
    assert f"fairness: not needed ({study.not_needed(FAIRNESS)})" in printed[[s.name for s in STAGES].index("fairness")]
    records.assign(diagnosis=["healthy", None, None]).to_csv(study.path("prepare") / "manifest.csv", index=False)
    assert study.needed(FAIRNESS)


def _command(runs: Path) -> list[str]:
    return [sys.executable, "-m", "cardiofair", "run", str(CONFIGS / "smoke.yaml"), "--set", f"runs={runs}",
            "--set", "generate.batch_size=2"]


def _kill_during_generation(runs: Path, env: dict) -> None:
    rows = runs / "smoke" / "generate" / "rows"
    process = subprocess.Popen(_command(runs), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not list(rows.glob("batch-*.json")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_smoke_study_resumes_after_a_kill_in_generation_and_writes_every_result(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "CARDIOFAIR_CACHE": str(tmp_path / "cache")}
    _kill_during_generation(runs, env)
    study = runs / "smoke"
    finished = {p.stem for p in (study / ".stages").glob("*.json")}
    assert finished == {"prepare", "split", "train", "plan"}, finished
    model_card = (study / "train" / "cardiofair.json").stat().st_mtime_ns

    result = subprocess.run(_command(runs), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("prepare", "split", "train", "plan"):
        assert f"{stage}: done earlier" in result.stdout, stage
    assert "generate: done earlier" not in result.stdout
    assert (study / "train" / "cardiofair.json").stat().st_mtime_ns == model_card

    quality = json.loads((study / "quality" / "synthetic_quality.json").read_text())
    assert {"realism", "mask_fidelity", "prompt_fidelity", "privacy"} <= quality.keys()
    fairness = json.loads((study / "fairness" / "fairness.json").read_text())
    assert {"arms", "comparisons"} <= fairness.keys() and "real" in fairness["arms"]
    run = json.loads((study / "run.json").read_text())
    assert set(run["seconds_per_stage"]) >= {"prepare", "split", "train", "plan", "generate", "quality", "fairness"}
    assert run["commands"]["plan"].startswith("cardiofair plan ")
    record = json.loads((study / ".stages" / "plan.json").read_text())
    assert record["command"][:2] == ["cardiofair", "plan"]
    page = parse(study / "report.html")
    assert tuple(page.sections) == SECTIONS
    for section in SECTIONS:
        assert len(page.sections[section].strip()) > 40, section
        assert "Not available" not in page.sections[section], (section, page.sections[section][:300])
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    # Four training steps draw noise: the page says so before any figure.
    assert 'class="verdict"' in (study / "report.html").read_text()
    assert (study / "config.yaml").is_file()

    again = subprocess.run(_command(runs), env=env, capture_output=True, text=True)
    # Run again: every stage is skipped, done earlier or (the mask generator, for borrowed masks) not needed.
    assert again.returncode == 0 and again.stdout.count("done earlier") == len(STAGES) - 1, again.stdout
    assert "masks: not needed" in again.stdout
