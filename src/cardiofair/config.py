"""The study configuration: one YAML file, typed and validated before anything runs.

A study file has ``name``, ``runs`` and one section per stage, named as the stage (``prepare``,
``split``, ``train``, ``masks``, ``plan``, ``generate``, ``quality``, ``fairness``, ``report``); each
section *is* that stage's settings dataclass (:mod:`cardiofair.settings`), so its keys are the
command's options (``train.max_steps`` is ``cardiofair train --max-steps``) with the same
defaults. ``cardiofair run`` without a file runs the embedded default study, the packaged copy of
``configs/phantom.yaml``. A file may start from another with ``base:`` (``default`` for the
embedded study, or a path relative to the file) and name only what it changes, so a variant
study (a bias scenario, drawn masks) cannot drift from the study it varies. Pure Python and
YAML: a bad configuration fails before torch is even imported.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from cardiofair import settings
from cardiofair.errors import CardiofairError, SettingsError
from cardiofair.options import from_mapping, input_paths, plain
from cardiofair.stages import STAGES

DEFAULT_STUDY = "phantom.yaml"
# ``base: default`` starts from the embedded default study.
EMBEDDED = "default"
# Sections of earlier versions, so an old study file says where its keys went.
MOVED = {"data": "prepare (and split: test, val; report: licence)"}


class ConfigError(CardiofairError):
    """A configuration that cannot run; the message names the key."""


@dataclass(frozen=True)
class StudyConfig:
    """A whole study: ``runs/<name>/`` holds one folder per stage."""

    name: str = "phantom-default"
    runs: str = "runs"
    prepare: settings.PrepareSettings = field(default_factory=settings.PrepareSettings)
    split: settings.SplitSettings = field(default_factory=settings.SplitSettings)
    train: settings.TrainOptions = field(default_factory=settings.TrainOptions)
    masks: settings.MaskSettings = field(default_factory=settings.MaskSettings)
    plan: settings.PlanSettings = field(default_factory=settings.PlanSettings)
    generate: settings.GenerateSettings = field(default_factory=settings.GenerateSettings)
    quality: settings.QualitySettings = field(default_factory=settings.QualitySettings)
    fairness: settings.FairnessSettings = field(default_factory=settings.FairnessSettings)
    report: settings.ReportSettings = field(default_factory=settings.ReportSettings)

    @property
    def folder(self) -> Path:
        """Where this study's stages write."""
        return Path(self.runs) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as saved with the run: every option of every stage, defaults included."""
        return {"name": self.name, "runs": self.runs, **{s.name: plain(getattr(self, s.name)) for s in STAGES}}


def resolve(base: Path, value: str | os.PathLike) -> Path:
    """A path from the configuration: relative paths are relative to the configuration file."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.max_steps=200), got {assignment!r}")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _build(tree: Any, base: Path) -> StudyConfig:
    if not isinstance(tree, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, got {tree!r}")
    known = [f.name for f in fields(StudyConfig)]
    for key in tree:
        if key == "base":
            raise ConfigError("base is a study file's key (a file or 'default'), not a --set")
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (its keys are now in {MOVED[key]})" if key in MOVED else \
                f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key {key!r}{hint}")
    values: dict[str, Any] = {key: str(tree[key]) for key in ("name", "runs") if key in tree}
    try:
        for stage in STAGES:
            values[stage.name] = from_mapping(stage.settings, tree.get(stage.name) or {}, stage.name)
    except SettingsError as error:
        raise ConfigError(str(error)) from None
    config = StudyConfig(**values)
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise ConfigError(f"name must be a plain folder name, got {config.name!r}")
    for stage in STAGES:
        for key, value in input_paths(getattr(config, stage.name)).items():
            if not resolve(base, value).exists():
                raise ConfigError(f"{stage.name}.{key}: {resolve(base, value)} does not exist")
    return config


def default_study() -> str:
    """The embedded default study's YAML (configs/phantom.yaml, shipped inside the package)."""
    return resources.files("cardiofair").joinpath(DEFAULT_STUDY).read_text()


def _read(path: Path | None, chain: tuple[Path | None, ...] = ()) -> Any:
    """One study file's keys over those of its ``base``, read first (recursively)."""
    if path is None:
        text, source, folder = default_study(), "the embedded default study", Path.cwd()
    else:
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        text, source, folder = path.read_text(), str(path), path.parent
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from None
    if not isinstance(tree, dict) or "base" not in tree:
        return tree
    value = tree.pop("base")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: base must be a study file or {EMBEDDED!r}, got {value!r}")
    parent = None if value == EMBEDDED else resolve(folder, value).resolve()
    if parent in chain + (path,):
        raise ConfigError(f"{source}: base {value} leads back to itself")
    merged = _read(parent, chain + (path,))
    if not isinstance(merged, dict):
        raise ConfigError(f"{source}: its base {value} is not a mapping of keys")
    for key, section in tree.items():
        both = isinstance(section, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **section} if both else section
    return merged


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> tuple[StudyConfig, Path]:
    """The validated study configuration (the embedded default without ``path``) with ``--set``
    overrides applied, and the folder its relative paths are relative to (the file's, also for
    keys it takes from its ``base``; the working directory for the embedded default)."""
    path = None if path is None else Path(path).resolve()
    tree = _read(path)
    for assignment in overrides:
        _override(tree, assignment)
    base = Path.cwd() if path is None else path.parent
    return _build(tree, base), base


def config_yaml(config: StudyConfig) -> str:
    """The resolved configuration as YAML, every default written out."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
