"""`cardiofair run` end to end on the smoke study: every stage, every result well formed, and a
run killed during generation resumes without redoing the finished stages."""

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _command(runs: Path) -> list[str]:
    return [sys.executable, "-m", "cardiofair", "run", str(CONFIGS / "smoke.yaml"), "--set", f"runs={runs}",
            "--set", "generate.batch_size=2"]


def _kill_during_generation(runs: Path, env: dict) -> None:
    rows = runs / "smoke" / "generate" / "rows"
    process = subprocess.Popen(_command(runs), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(rows.glob("batch-*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_smoke_study_resumes_after_a_kill_in_generation_and_writes_every_result(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "CARDIOFAIR_CACHE": str(tmp_path / "cache")}
    _kill_during_generation(runs, env)
    study = runs / "smoke"
    finished = {p.stem for p in (study / ".stages").glob("*.json")}
    assert finished == {"prepare", "train", "plan"}, finished
    model_card = (study / "train" / "cardiofair.json").stat().st_mtime_ns

    result = subprocess.run(_command(runs), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("prepare", "train", "plan"):
        assert f"{stage}: done earlier" in result.stdout, stage
    assert "generate: done earlier" not in result.stdout
    assert (study / "train" / "cardiofair.json").stat().st_mtime_ns == model_card

    quality = json.loads((study / "quality" / "synthetic_quality.json").read_text())
    assert {"realism", "mask_fidelity", "prompt_fidelity", "privacy"} <= quality.keys()
    fairness = json.loads((study / "fairness" / "fairness.json").read_text())
    assert {"arms", "comparisons"} <= fairness.keys() and "real" in fairness["arms"]
    run = json.loads((study / "run.json").read_text())
    assert set(run["seconds_per_stage"]) >= {"prepare", "train", "plan", "generate", "quality", "fairness"}
    report = (study / "report.html").read_text()
    HTMLParser().feed(report)
    assert "data:image/png;base64," in report
    assert (study / "config.yaml").is_file()

    again = subprocess.run(_command(runs), env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("done earlier") == 7, again.stdout
