"""Study configuration: validated before anything runs, every key overridable, shipped examples valid."""

import subprocess
import sys
from pathlib import Path

import pytest

from cardiofair.config import ConfigError, config_yaml, load_config
from cardiofair.stages import PREPARE, STAGES
from cardiofair.study import Study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_phantom_yaml_is_the_embedded_default():
    shipped, _ = load_config(CONFIGS / "phantom.yaml")
    embedded, _ = load_config(None)
    assert shipped == embedded


def test_overrides_take_yaml_values_and_the_resolved_config_round_trips(tmp_path):
    config, _ = load_config(None, ["train.max_steps=200", "plan.attributes=[sex, bmi]", "train.max_minutes=null",
                                   "fairness.arms=real,reweight", "prepare.fov_mm=120"])
    assert config.train.max_steps == 200 and config.train.max_minutes is None
    assert config.plan.attributes == ("sex", "bmi") and config.fairness.arms == ("real", "reweight")
    assert config.prepare.fov_mm == 120.0
    saved = tmp_path / "resolved.yaml"
    saved.write_text(config_yaml(config))
    assert load_config(saved)[0] == config


@pytest.mark.parametrize("overrides, message", [
    (["train.max_stepz=3"], "unknown key 'train.max_stepz' (did you mean train.max_steps?)"),
    (["colour=red"], "unknown key 'colour'"),
    (["train.max_steps=many"], "train.max_steps must be an integer or null, got 'many'"),
    (["prepare.n=2.5"], "prepare.n must be an integer, got 2.5"),
    (["prepare.n=0"], "prepare.n must be at least 1, got 0"),
    (["plan.allow_unseen_cells=maybe"], "plan.allow_unseen_cells must be true or false"),
    (["prepare.source=ukbb"], "prepare.root is required for source 'ukbb'"),
    (["prepare.source=acdc", "prepare.root=/no/such/folder"], "prepare.root: /no/such/folder does not exist"),
    (["plan.strategy=fairest"], "plan.strategy must be one of"),
    (["fairness.arms=reweight"], "fairness.arms must include 'real'"),
    (["train.preset=sd21"], "train.weights is required with preset sd21"),
    (["split.test=0.9"], "split: test and val must be in (0, 1)"),
    (["train=5"], "train must be a mapping"),
    (["data.n=3"], "unknown key 'data' (its keys are now in prepare"),
    (["train.max_steps"], "--set expects KEY=VALUE"),
])
def test_bad_settings_are_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("name: x\ntrain:\n  max_stepz: 10\n", "unknown key 'train.max_stepz'"),
    ("name: x\nfairness:\n  repeats: five\n", "fairness.repeats must be an integer, got 'five'"),
    ("name: x\nprepare:\n  source: manifest\n  root: cohort.csv\n", "cohort.csv does not exist"),
    ("name: [unclosed\n", "is not valid YAML"),
])
def test_a_bad_config_file_fails_before_anything_runs_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "cardiofair", "run", str(path)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_every_shipped_config_parses_and_names_every_stage(tmp_path):
    # The real-cohort examples point at placeholder paths: give them paths that exist, so that
    # everything else in them is checked.
    exists = {"prepare.root": tmp_path, "prepare.metadata": tmp_path / "meta.csv", "train.weights": tmp_path}
    (tmp_path / "meta.csv").write_text("eid\n")
    for path in sorted(CONFIGS.rglob("*.yaml")):
        text = path.read_text()
        overrides = [f"{key}={value}" for key, value in exists.items() if f"  {key.split('.')[1]}:" in text]
        config, base = load_config(path, overrides)
        study = Study(config, base)
        assert [study.command_line(s)[1] for s in STAGES] == [s.name for s in STAGES], path


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "cohort.csv").write_text("subject_id\n")
    path = tmp_path / "cohort" / "study.yaml"
    path.write_text("name: mine\nruns: out\nprepare:\n  source: manifest\n  root: cohort.csv\n")
    config, base = load_config(path)
    study = Study(config, base)
    prepare = study.command_line(PREPARE)
    assert prepare[prepare.index("--root") + 1] == str(tmp_path / "cohort" / "cohort.csv")
    assert study.folder == tmp_path / "cohort" / "out" / "mine"


def test_a_study_names_its_base_and_only_what_it_changes(tmp_path):
    (tmp_path / "variants").mkdir()
    (tmp_path / "study.yaml").write_text("base: default\nname: mine\ntrain:\n  max_steps: 100\n")
    (tmp_path / "variants" / "fewer.yaml").write_text("base: ../study.yaml\nname: fewer\nprepare:\n  n: 300\n")
    default, _ = load_config(None)
    config, folder = load_config(tmp_path / "variants" / "fewer.yaml", ["plan.target_prevalence=0.3"])
    assert folder == tmp_path / "variants" and config.name == "fewer"
    assert (config.prepare.n, config.train.max_steps, config.plan.target_prevalence) == (300, 100, 0.3)
    # Every key the chain leaves alone is the default study's, within a section too.
    assert config.prepare.scenario == default.prepare.scenario and config.fairness == default.fairness


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "leads back to itself"),
    ({"a.yaml": "base: a.yaml\n"}, "leads back to itself"),
    ({"a.yaml": "base: missing.yaml\n"}, "missing.yaml does not exist"),
    ({"a.yaml": "base: [1]\n"}, "base must be a study file or 'default'"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "- 1\n"}, "its base b.yaml is not a mapping"),
])
def test_a_bad_base_is_an_error_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")


def test_base_is_not_a_set_override():
    with pytest.raises(ConfigError, match="base is a study file's key"):
        load_config(None, ["base=other.yaml"])


def test_each_shipped_scenario_is_the_default_study_with_its_scenario():
    default = load_config(None)[0].to_dict()
    for path in sorted((CONFIGS / "scenarios").glob("*.yaml")):
        config = load_config(path)[0].to_dict()
        assert config["prepare"].pop("scenario") == path.stem
        default["prepare"].pop("scenario", None)
        for key in ("name", "runs"):
            config.pop(key), default.pop(key, None)
        assert config == default, path
