"""Study configuration: validated before anything runs, every key overridable, shipped examples valid."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardiofair.config import ConfigError, config_yaml, load_config
from cardiofair.study import STAGES, Study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_phantom_yaml_is_the_embedded_default():
    shipped, _ = load_config(CONFIGS / "phantom.yaml")
    embedded, _ = load_config(None)
    assert shipped == embedded


def test_overrides_take_yaml_values_and_the_resolved_config_round_trips(tmp_path):
    config, _ = load_config(None, ["train.max_steps=200", "plan.attributes=[sex, bmi]", "train.max_minutes=null",
                                   "fairness.arms=real,reweight", "data.fov_mm=120"])
    assert config.train.max_steps == 200 and config.train.max_minutes is None
    assert config.plan.attributes == ["sex", "bmi"] and config.fairness.arms == ["real", "reweight"]
    assert config.data.fov_mm == 120.0
    saved = tmp_path / "resolved.yaml"
    saved.write_text(config_yaml(config))
    assert load_config(saved)[0] == config


@pytest.mark.parametrize("overrides, message", [
    (["train.max_stepz=3"], "unknown key 'train.max_stepz' (did you mean train.max_steps?)"),
    (["colour=red"], "unknown key 'colour'"),
    (["train.max_steps=many"], "train.max_steps must be an integer or null, got 'many'"),
    (["data.n=2.5"], "data.n must be an integer, got 2.5"),
    (["plan.allow_unseen_cells=maybe"], "plan.allow_unseen_cells must be true or false"),
    (["data.source=ukbb"], "data.root is required for data.source 'ukbb'"),
    (["data.source=acdc", "data.root=/no/such/folder"], "data.root: /no/such/folder does not exist"),
    (["plan.strategy=fairest"], "plan.strategy must be one of"),
    (["train.preset=sd21"], "train.weights is required with train.preset sd21"),
    (["data.test=0.9"], "data.test and data.val"),
    (["train=5"], "train. must be a mapping"),
    (["train.max_steps"], "--set expects KEY=VALUE"),
])
def test_bad_settings_are_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("name: x\ntrain:\n  max_stepz: 10\n", "unknown key 'train.max_stepz'"),
    ("name: x\nfairness:\n  repeats: five\n", "fairness.repeats must be an integer, got 'five'"),
    ("name: x\ndata:\n  source: manifest\n  root: cohort.csv\n", "cohort.csv does not exist"),
    ("name: [unclosed\n", "is not valid YAML"),
])
def test_a_bad_config_file_fails_in_under_a_second_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cardiofair", "run", str(path)], capture_output=True, text=True,
                            cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert elapsed < 1.0, elapsed
    assert not (tmp_path / "runs").exists()


def test_every_shipped_config_parses_and_names_every_stage(tmp_path):
    for path in sorted(CONFIGS.glob("*.yaml")):
        try:
            config, base = load_config(path)
        except ConfigError as error:
            # The real-cohort examples point at placeholder paths; nothing else may be wrong.
            assert "does not exist" in str(error), (path, error)
            continue
        study = Study(config, base)
        assert [s for s in STAGES if study.commands(s)] == list(STAGES)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "cohort.csv").write_text("subject_id\n")
    path = tmp_path / "cohort" / "study.yaml"
    path.write_text("name: mine\nruns: out\ndata:\n  source: manifest\n  root: cohort.csv\n")
    config, base = load_config(path)
    study = Study(config, base)
    prepare = study.commands("prepare")[0]
    assert prepare[prepare.index("--root") + 1] == str(tmp_path / "cohort" / "cohort.csv")
    assert study.folder == tmp_path / "cohort" / "out" / "mine"
