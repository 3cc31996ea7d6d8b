"""The study configuration: one YAML file, typed and validated before anything runs.

Every section mirrors one `cardiofair` command and every key one of its options (``max_steps``
is ``--max-steps``), so a stage of a study can always be re-run by hand with the command line
the run records. Pure Python and YAML: a bad configuration fails in well under a second,
before torch is even imported.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from cardiofair.errors import CardiofairError

SOURCES = ("phantom", "ukbb", "acdc", "mnms", "mnms2", "manifest")


class ConfigError(CardiofairError):
    """A configuration that cannot run; the message names the key."""


@dataclass
class DataConfig:
    """`cardiofair prepare` and `cardiofair split`: the cohort and how it is prepared."""

    source: str = "phantom"
    n: int = 2000
    seed: int = 0
    phantom_config: str | None = None
    root: str | None = None
    metadata: str | None = None
    columns: dict[str, str] | None = None
    label_order: str | None = None
    require: list[str] | None = None
    size: int = 64
    fov_mm: float = 150.0
    slices_per_subject: int = 1
    align: str = "none"
    workers: int | None = None
    test: float = 0.2
    val: float = 0.1
    licence: str = "Simulated phantom cohort made by cardiofair: no patient data, no licence restrictions."


@dataclass
class TrainConfig:
    """`cardiofair train`: the generator."""

    preset: str = "cpu"
    stages: str | None = None
    max_steps: int | None = None
    max_minutes: float | None = 10.0
    batch_size: int | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None
    condition: str | None = None
    weights: str | None = None
    sd_config: str | None = None
    mixed_precision: str | None = None
    gradient_checkpointing: bool | None = None
    gradient_accumulation: int | None = None
    use_8bit_adam: bool = False
    num_processes: int = 1
    seed: int = 0


@dataclass
class PlanConfig:
    """`cardiofair plan`: which synthetic records to make."""

    strategy: str = "prevalence"
    attributes: list[str] = field(default_factory=lambda: ["sex", "age"])
    target_prevalence: float | None = 0.25
    positive_diagnosis: str = "heart failure"
    targets: str | None = None
    max_ratio_per_cell: float = 5.0
    max_ratio_overall: float = 1.0
    min_real_support: int = 5
    allow_unseen_cells: bool = False
    mask_policy: str = "matched"


@dataclass
class GenerateConfig:
    """`cardiofair generate`: drawing the planned records."""

    seed: int = 0
    batch_size: int = 32
    augment_masks: bool = False
    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    controlnet_scale: float | None = None


@dataclass
class QualityConfig:
    """`cardiofair evaluate synthetic`: realism, fidelity and privacy."""

    steps: int = 400
    classifier_steps: int = 700
    min_images: int = 20
    counterfactual_pairs: int = 32
    seed: int = 0


@dataclass
class FairnessConfig:
    """`cardiofair evaluate fairness`: the downstream classifier arms."""

    arms: list[str] | None = None
    repeats: int = 5
    attributes: list[str] = field(default_factory=lambda: ["sex", "age", "bmi"])
    positive_diagnosis: str = "heart failure"
    train_prevalence: float | None = None
    threshold_attribute: str = "sex"
    preset: str = "auto"
    device: str = "auto"
    epochs: int | None = None
    patience: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    bootstrap: int = 1000
    seed: int = 0


@dataclass
class ReportConfig:
    """The HTML report."""

    counterfactuals: bool = True


@dataclass
class StudyConfig:
    """A whole study: ``runs/<name>/`` holds one folder per stage."""

    name: str = "phantom-default"
    runs: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def folder(self) -> Path:
        """Where this study's stages write."""
        return Path(self.runs) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as saved with the run."""
        return asdict(self)


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0]).replace('an ', '').replace('a ', '')}s"
    if origin is dict:
        return "a mapping of strings"
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _coerce(value: Any, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(kind)}, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be {_type_name(kind)}, got {value!r}")
        return [_coerce(v, typing.get_args(kind)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be {_type_name(kind)}, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be {_type_name(kind)}, got {value!r}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'the configuration'} must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key {path!r}{hint}")
        kind = hints[key]
        kwargs[key] = _build(kind, value, f"{path}.") if is_dataclass(kind) else _coerce(value, kind, path)
    return cls(**kwargs)


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


def _check(config: StudyConfig, base: Path) -> None:
    data = config.data
    choices = {"data.source": (data.source, SOURCES), "data.align": (data.align, ("none", "rv-left")),
               "data.label_order": (data.label_order, (None, "ukbb", "acdc")),
               "plan.strategy": (config.plan.strategy, ("equalize", "prevalence", "target")),
               "plan.mask_policy": (config.plan.mask_policy, ("copy", "matched", "random")),
               "fairness.preset": (config.fairness.preset, ("auto", "compact", "resnet18")),
               "fairness.device": (config.fairness.device, ("auto", "cpu", "cuda"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {[a for a in allowed if a is not None]}, got {value!r}")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise ConfigError(f"name must be a plain folder name, got {config.name!r}")
    if data.source != "phantom" and not data.root:
        raise ConfigError(f"data.root is required for data.source {data.source!r}: the folder (or, for manifest, "
                          f"the CSV) of your cohort")
    for key in ("root", "metadata", "phantom_config"):
        value = getattr(data, key)
        if value and not resolve(base, value).exists():
            raise ConfigError(f"data.{key}: {resolve(base, value)} does not exist")
    for section, key in (("train", "weights"), ("train", "sd_config"), ("plan", "targets")):
        value = getattr(getattr(config, section), key)
        if value and not resolve(base, value).exists():
            raise ConfigError(f"{section}.{key}: {resolve(base, value)} does not exist")
    if config.train.preset in ("sd21", "sd15") and not config.train.weights:
        raise ConfigError(f"train.weights is required with train.preset {config.train.preset}: a local Stable "
                          f"Diffusion folder or .safetensors file (nothing is downloaded)")
    for key, value in (("data.n", data.n), ("data.size", data.size), ("fairness.repeats", config.fairness.repeats)):
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if not (0 < data.test < 1 and 0 < data.val < 1 and data.test + data.val < 1):
        raise ConfigError(f"data.test and data.val must be in (0, 1) and sum to less than 1, got {data.test}, {data.val}")


def resolve(base: Path, value: str) -> Path:
    """A path from the configuration: relative paths are relative to the configuration file."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def load_config(path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> tuple[StudyConfig, Path]:
    """The validated study configuration (the embedded default without ``path``) with ``--set``
    overrides applied, and the folder its relative paths are relative to."""
    tree: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
        base = path.resolve().parent
    for assignment in overrides:
        _override(tree, assignment)
    config = _build(StudyConfig, tree, "")
    _check(config, base)
    return config, base


def config_yaml(config: StudyConfig) -> str:
    """The resolved configuration as YAML, every default written out."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)

