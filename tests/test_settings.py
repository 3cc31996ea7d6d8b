"""One declaration per stage: every flag of every stage command is a key of its study-file section
with the same default, every option is documented, and the allowed values that settings.py
mirrors from torch-importing modules agree with those modules."""

import argparse
import importlib
import inspect
import re
import subprocess
import sys

import pytest

from cardiofair.cli import build_parser
from cardiofair.config import StudyConfig, load_config
from cardiofair.errors import SettingsError
from cardiofair.options import flag, options
from cardiofair.settings import FairnessSettings
from cardiofair.stages import STAGES

# What a command reads and how it runs, not what it computes: paths, and the run controls.
RUN_CONTROLS = {"overwrite", "resume", "quiet", "help"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _flags(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in command._actions if a.option_strings}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_flag_of_a_stage_is_a_key_of_its_section_with_the_same_default(stage):
    command = _subparsers(build_parser())[stage.name]
    paths = {p.name for p in stage.paths}
    flags = {dest: action for dest, action in _flags(command).items() if dest not in RUN_CONTROLS | paths}
    section = getattr(StudyConfig(), stage.name)
    keys = {f.name: getattr(section, f.name) for f in options(stage.settings)}
    assert set(flags) == set(keys), stage.name
    for dest, action in flags.items():
        assert action.default == keys[dest], (stage.name, dest)
        assert flag(dest) in action.option_strings, (stage.name, dest)
    # A key left out of a study file takes the command's default.
    loaded, _ = load_config(None)
    assert type(getattr(loaded, stage.name)) is stage.settings


def test_every_stage_is_a_command_a_section_a_folder_and_a_module_of_one_name(tmp_path):
    from cardiofair.study import Study

    commands = _subparsers(build_parser())
    config, base = load_config(None, [f"runs={tmp_path}"])
    study = Study(config, base)
    for stage in STAGES:
        assert stage.name in commands and stage.name in StudyConfig.__dataclass_fields__
        assert stage.module.rsplit(".", 1)[-1] == stage.name
        run = inspect.signature(importlib.import_module(stage.module).run)
        assert {p.name for p in stage.paths} <= set(run.parameters), stage.name
        # The split is a column of the prepared dataset, not a folder of its own.
        out = study.paths(stage).get("out", study.paths(stage).get("dataset"))
        folder = study.path("prepare" if stage.name == "split" else stage.name)
        assert out == folder or folder in out.parents, stage.name


def test_every_option_of_every_command_is_documented():
    parser = build_parser()
    for name, command in _subparsers(parser).items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                for inner in action.choices.values():
                    assert all(a.help for a in inner._actions), (name, inner.prog)
            else:
                assert action.help, (name, action.dest)
        assert command.description, name


def test_the_values_settings_mirrors_from_torch_modules_agree_with_them():
    from cardiofair import precision, settings
    from cardiofair.data import manifest
    from cardiofair.diffusion import conditioning, pipeline, presets
    from cardiofair.downstream import classifier

    assert settings.LABEL_ORDERS == tuple(manifest.LABEL_ORDERS)
    assert set(settings.PRESETS) == set(presets.PRESETS)
    assert set(settings.STABLE_DIFFUSION_PRESETS) == {n for n, p in presets.PRESETS.items()
                                                      if p.family == "stable-diffusion"}
    assert settings.CONDITION_MODES == conditioning.CONDITION_MODES
    assert settings.SAMPLERS == tuple(pipeline.SAMPLERS)
    assert settings.CLASSIFIER_PRESETS == ("auto", *classifier.PRESETS)
    assert settings.MIXED_PRECISION == precision.MIXED_PRECISIONS


def test_a_study_file_is_checked_and_the_commands_built_without_torch(tmp_path):
    code = ("import sys; from cardiofair.config import load_config; from cardiofair.cli import build_parser; "
            "load_config(None); build_parser(); print('torch' in sys.modules, 'pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.split() == ["False", "False"]


def test_the_arms_are_read_from_their_registry_only_when_a_study_names_them():
    code = ("import sys; from cardiofair.settings import FairnessSettings; FairnessSettings(); "
            "print('cardiofair.downstream.arms' in sys.modules); FairnessSettings(arms=('real', 'oracle')); "
            "print('cardiofair.downstream.arms' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
    from cardiofair.downstream.arms import ARMS

    with pytest.raises(SettingsError, match=re.escape(f"must be one of {list(ARMS)}, got 'bogus'")):
        FairnessSettings(arms=("real", "bogus"))


def test_a_source_is_checked_against_the_registry_only_when_one_is_named():
    from cardiofair.data.sources import SOURCES
    from cardiofair.settings import PrepareSettings

    for name in SOURCES:
        assert PrepareSettings(source=name, root=".").source == name
    with pytest.raises(ValueError, match=r"source must be one of \['phantom', 'ukbb'"):
        PrepareSettings(source="kaggle", root=".")


def test_every_registry_option_defaults_to_names_of_its_registry():
    from cardiofair.options import Registry

    checked = 0
    for stage in STAGES:
        for field in options(stage.settings):
            choices = field.metadata["choices"]
            if isinstance(choices, Registry) and field.default is not None:
                default = field.default if isinstance(field.default, tuple) else (field.default,)
                assert set(default) <= set(choices), (stage.name, field.name)
                checked += 1
    assert checked >= 1
