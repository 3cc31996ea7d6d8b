"""What the stages write, typed: one class per stage's result, holding its file names, what a
reader needs of it as fields, and ``load`` (and ``save`` where the stage itself writes the file).

The stage that computes a result saves it; the report, the app and the printed summaries load
it from here, so its format lives in one place and a result of another version fails with a
message instead of a ``KeyError`` deep in a table. The quality and fairness results are JSON
files whose sections are nested dictionaries (documented on each field). Nothing here imports
numpy, pandas or torch at import, so that reading a result loads no model code and a study file
is checked before pandas loads: the tables of the split, the plan and the synthetic records are
read with pandas when they are loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, TypeVar

from cardiofair.data import MANIFEST
from cardiofair.diagnoses import HEART_FAILURE
from cardiofair.errors import InputError, MissingInputError
from cardiofair.io import atomic_write, json_ready

if TYPE_CHECKING:
    import pandas as pd

Result = TypeVar("Result", bound="_JsonResult")
Model = TypeVar("Model", bound="_ModelResult")


class ResultError(InputError):
    """A result folder that does not hold a finished, readable result of its stage."""


def output_file(folder: str | os.PathLike, name: str, stage: str) -> Path:
    """The file ``name`` in ``stage``'s output ``folder``, with an error that says what to run
    when the folder or the file is missing."""
    if not Path(folder).is_dir():
        raise MissingInputError(f"{folder} is not a folder: give the output folder of `cardiofair {stage}`")
    path = Path(folder) / name
    if not path.is_file():
        raise ResultError(f"{folder} holds no {name}: is it the output folder of `cardiofair {stage}`, "
                          "and did the run finish?")
    return path


def _json_object(folder: str | os.PathLike, name: str, stage: str) -> dict[str, Any]:
    """The JSON object ``name`` in ``stage``'s output ``folder``."""
    path = output_file(folder, name, stage)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ResultError(f"{path} is not valid JSON ({error}); run `cardiofair {stage}` again") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path} is not a {stage} result; run `cardiofair {stage}` again")
    return data


@dataclass(frozen=True)
class _JsonResult:
    """A result stored as one JSON file in its stage's output folder."""

    FILE: ClassVar[str]
    STAGE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, keys in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[Result], data: Mapping[str, Any], source: str = "the result") -> Result:
        """The result of a loaded JSON document; missing sections are an error naming them."""
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ResultError(f"{source} lacks {', '.join(missing)}: it was written by another version of cardiofair; "
                              f"run `cardiofair {cls.STAGE}` again")
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the JSON file into ``folder`` (NaN as null)."""
        return atomic_write(Path(folder) / self.FILE, json.dumps(json_ready(self.to_dict()), indent=2,
                                                                 allow_nan=False) + "\n")

    @classmethod
    def load(cls: type[Result], folder: str | os.PathLike) -> Result:
        """The result in a stage's output ``folder``, with an error that says what to run when
        it is missing or unreadable."""
        return cls.from_dict(_json_object(folder, cls.FILE, cls.STAGE), str(Path(folder) / cls.FILE))


# Results holding a table are not compared or hashed as a whole (eq=False).
@dataclass(frozen=True, eq=False)
class _DatasetResult:
    """A prepared dataset, read from its manifest."""

    FILE: ClassVar[str] = MANIFEST
    STAGE: ClassVar[str]

    @classmethod
    def _manifest(cls, folder: str | os.PathLike) -> pd.DataFrame:
        """The manifest in ``folder``, with an error that says what to run when there is none."""
        from cardiofair.data.records import read_manifest

        output_file(folder, cls.FILE, cls.STAGE)
        return read_manifest(folder)


@dataclass(frozen=True, eq=False)
class SplitResult(_DatasetResult):
    """A prepared dataset's split by subject (:mod:`cardiofair.data.split`), stored as the
    ``split`` column of its manifest."""

    STAGE: ClassVar[str] = "split"

    dataset: Path
    # Subjects per diagnosis (rows) and split (columns), with totals.
    subjects: pd.DataFrame

    @classmethod
    def load(cls, dataset: str | os.PathLike) -> "SplitResult":
        """The split of the prepared dataset ``dataset``, with an error that says what to run when
        it is missing."""
        from cardiofair.data.split import subjects_per_split

        manifest = cls._manifest(dataset)
        if "split" not in manifest.columns:
            raise ResultError(f"{dataset} is not split: run `cardiofair {cls.STAGE} {dataset}`")
        return cls(Path(dataset), subjects_per_split(manifest))


@dataclass(frozen=True)
class _ModelResult:
    """A trained model's folder: its weights, and its card, written last, so that the card's
    presence marks a finished model."""

    FILE: ClassVar[str] = "cardiofair.json"
    STAGE: ClassVar[str]

    folder: Path
    card: dict[str, Any]

    @classmethod
    def load(cls: type[Model], folder: str | os.PathLike) -> Model:
        """The model's card in ``folder``, with an error that says what to run when it is missing
        or the model unfinished."""
        return cls(Path(folder), _json_object(folder, cls.FILE, cls.STAGE))


@dataclass(frozen=True)
class TrainResult(_ModelResult):
    """A trained generator (:mod:`cardiofair.diffusion`): its weights, one folder per component;
    its card holds its preset, size, prompt schema, training cells, training run and default
    sampling."""

    STAGE: ClassVar[str] = "train"
    # The run's own files: its settings, loss curve, checkpoints and validation grids.
    TRAINING: ClassVar[str] = "training"
    # Inside it: the checkpoints a run resumes from, and the validation grids.
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    VALIDATION: ClassVar[str] = "validation"


@dataclass(frozen=True)
class MasksResult(_ModelResult):
    """A mask generator (:mod:`cardiofair.masks.shape_model`): its arrays in :attr:`WEIGHTS`; its
    card holds its kind, components, the variance they keep, the attribute levels it saw and its
    training records."""

    STAGE: ClassVar[str] = "masks"
    WEIGHTS: ClassVar[str] = "shape_model.safetensors"


@dataclass(frozen=True, eq=False)
class PlanResult:
    """The synthesis plan (:mod:`cardiofair.plan`): one row per subgroup cell, how many synthetic
    records it gets and how their masks are found."""

    # Its name in a study's plan folder; by hand, `cardiofair plan --out` names the file.
    FILE: ClassVar[str] = "plan.csv"
    STAGE: ClassVar[str] = "plan"

    path: Path
    plan: pd.DataFrame

    @classmethod
    def load(cls, folder_or_path: str | os.PathLike) -> "PlanResult":
        """The plan CSV at ``folder_or_path`` (or :attr:`FILE` in that folder), checked row by row,
        with an error that says what to run when it is missing."""
        from cardiofair.plan import read_plan

        given = Path(folder_or_path)
        if not given.exists() and not given.parent.is_dir():
            raise MissingInputError(f"{given} does not exist: give the plan CSV that `cardiofair {cls.STAGE}` wrote "
                                    f"(its --out), or the folder that holds its {cls.FILE}")
        path = output_file(given, cls.FILE, cls.STAGE) if given.is_dir() else \
            output_file(given.parent, given.name, cls.STAGE)
        return cls(path, read_plan(path))


@dataclass(frozen=True, eq=False)
class GenerateResult(_DatasetResult):
    """A synthetic dataset (:mod:`cardiofair.generate`): a prepared dataset whose records were
    drawn by the generator, each with its prompt, planned cell, seed and provenance."""

    STAGE: ClassVar[str] = "generate"
    # The run's model, dataset, settings and sampler, which a resumed run must match.
    RUN: ClassVar[str] = "generate-run.json"

    folder: Path
    # The manifest's synthetic rows (a merged dataset also holds real ones).
    records: pd.DataFrame
    # The sampler settings the records were drawn with (None for a dataset `cardiofair generate`
    # did not make, such as `cardiofair sample`'s).
    sampler: dict[str, Any] | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "GenerateResult":
        """The synthetic records in ``folder``, with an error that says what to run when it holds
        no dataset."""
        from cardiofair.data.records import synthetic_records

        records = synthetic_records(cls._manifest(folder))
        run = _json_object(folder, cls.RUN, cls.STAGE) if (Path(folder) / cls.RUN).is_file() else {}
        return cls(Path(folder), records, run.get("sampler"))

    def drawn_with(self, defaults: Any) -> Any:
        """The sampler these records were drawn with: the model's ``defaults`` (a
        ``SamplerSettings``) with what this run chose over them (attribute guidance, say)."""
        return defaults.override(**(self.sampler or {}))


@dataclass(frozen=True)
class QualityResult(_JsonResult):
    """``synthetic_quality.json``: the synthetic images judged beside real references
    (:mod:`cardiofair.metrics.quality`): what was judged, then one section per quality metric
    (:data:`cardiofair.metrics.quality_metrics.METRICS`, where each section's layout is written),
    each holding ``synthetic`` and ``real_reference`` figures side by side; NaN is stored as null."""

    FILE: ClassVar[str] = "synthetic_quality.json"
    STAGE: ClassVar[str] = "quality"
    # Files written beside it.
    CLOSEST_PAIRS: ClassVar[str] = "closest_pairs.png"
    # Per mask: source (synthetic, real held-out, phantom truth), cell and geometry; the report's
    # histograms are drawn from it.
    MASK_GEOMETRY: ClassVar[str] = "mask_geometry_per_mask.csv"
    PER_IMAGE: ClassVar[str] = "synthetic_per_image.csv"

    schema: int
    # The real dataset's path and split sizes (``n_train``, ...), the synthetic set's path and size.
    real: dict[str, Any]
    synthetic: dict[str, Any]
    # The judges: their folder, validation figures and the classes each attribute reads.
    evaluators: dict[str, Any]
    # The attributes that make a subgroup cell, in order.
    cell_attributes: list[str]
    # Each metric's section by its name, in the order they were computed; in the JSON file they
    # follow the fields above as keys of their own.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the fields above, then one key per section."""
        judged = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sections"}
        return {**judged, **self.sections}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the result") -> "QualityResult":
        """The result of a loaded JSON document: every key that is not a field is a section."""
        known = {f.name for f in fields(cls)}
        judged = super().from_dict({k: v for k, v in data.items() if k in known}, source)
        return replace(judged, sections={k: v for k, v in data.items() if k not in known})

    def section(self, name: str) -> dict[str, Any]:
        """A metric's section; an error that says what to run when the file predates the metric."""
        if name not in self.sections:
            raise ResultError(f"{self.FILE} lacks {name}: it was written by another version of cardiofair; "
                              f"run `cardiofair {self.STAGE}` again")
        return self.sections[name]

    @staticmethod
    def by_cell_file(section: str) -> str:
        """The per-cell CSV of a section (``realism_by_cell.csv``)."""
        return QualityResult.by_group_file(section, "cell")

    @staticmethod
    def by_group_file(section: str, column: str) -> str:
        """The CSV of a section per value of ``column`` (``realism_by_vendor.csv``)."""
        return f"{section}_by_{column}.csv"


@dataclass(frozen=True)
class FairnessResult(_JsonResult):
    """``fairness.json``: each arm's classifier by group on the real test set, over repeats,
    and each arm's paired change against the reference arm
    (:mod:`cardiofair.downstream.fairness`)."""

    FILE: ClassVar[str] = "fairness.json"
    STAGE: ClassVar[str] = "fairness"
    SCHEMA: ClassVar[str] = "cardiofair.fairness/2"
    # The tables beside it (docs/fairness.md#output): per group and per attribute over repeats,
    # the arms' paired comparisons, fairlearn's by-group table per repeat, every test prediction,
    # and the learning curves.
    GROUPS: ClassVar[str] = "groups.csv"
    GAPS: ClassVar[str] = "gaps.csv"
    COMPARISONS: ClassVar[str] = "comparisons.csv"
    GROUPS_BY_REPEAT: ClassVar[str] = "groups_by_repeat.csv"
    PREDICTIONS: ClassVar[str] = "predictions.csv"
    TRAINING: ClassVar[str] = "training.csv"

    schema: str
    cardiofair_version: str
    # The stage's settings as run.
    settings: dict[str, Any]
    reference_arm: str
    seeds: list[int]
    # The cohort: splits, the positive diagnosis, the test set and its power, what was left out.
    data: dict[str, Any]
    # {name: {"arm": arm, "dose": dose, "training": [...], "overall": {...},
    #         "attributes": {attribute: {"groups": ..., "gaps": ...}}}}, named ARM@DOSE at a dose other than 1
    arms: dict[str, Any]
    # {arm: the same tree of paired differences against the reference arm}
    comparisons: dict[str, Any] = field(default_factory=dict)
    # The share of the oracle's change each arm reached ({} without an oracle arm).
    oracle_shares: dict[str, Any] = field(default_factory=dict)
    # Arms compared with each other: [{"arm": a, "other": b, "comparisons": the tree of a - b}]
    versus: list[dict[str, Any]] = field(default_factory=list)

    @property
    def positive(self) -> str:
        """What the classifier detected: a name for a set of diagnoses, or one diagnosis."""
        return self.data.get("positive_diagnosis") or self.settings.get("positive_diagnosis", HEART_FAILURE)

    def __post_init__(self) -> None:
        undosed = [name for name, entry in self.arms.items() if "arm" not in entry or "dose" not in entry]
        if undosed:
            raise ResultError(f"the fairness result's arms {undosed} do not say their arm and dose: it was written by "
                              f"another version of cardiofair; run `cardiofair {self.STAGE}` again")

    def arm_dose(self, name: str) -> tuple[str, float]:
        """(the arm, its dose) of the arm called ``name`` in :attr:`arms` and :attr:`comparisons`."""
        return self.arms[name]["arm"], float(self.arms[name]["dose"])

    def versus_trees(self) -> dict[str, dict[str, Any]]:
        """Each pair of arms compared with each other, named ``ARM - OTHER``: its tree of paired
        differences."""
        return {f"{pair['arm']} - {pair['other']}": pair["comparisons"] for pair in self.versus}

    def reference(self) -> dict[str, Any]:
        """The reference arm's tree (the first arm's when the reference arm is absent)."""
        return self.arms.get(self.reference_arm) or next(iter(self.arms.values()))


@dataclass(frozen=True)
class ReportResult:
    """The study on one page (:mod:`cardiofair.report`), with the model card, the datasheet and
    the figures written beside it; the page is written last, so that its presence marks a
    finished report."""

    FILE: ClassVar[str] = "report.html"
    STAGE: ClassVar[str] = "report"
    # Beside the page: the generator's card, the synthetic dataset's datasheet (both Markdown)
    # and a folder of the page's figures, one PNG each.
    MODEL_CARD: ClassVar[str] = "model_card.md"
    DATASHEET: ClassVar[str] = "datasheet.md"
    FIGURES: ClassVar[str] = "figures"

    page: Path
    model_card: Path
    datasheet: Path
    figures: Path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ReportResult":
        """The report in ``folder``, with an error that says what to run when it is missing or
        unfinished."""
        page = output_file(folder, cls.FILE, cls.STAGE)
        return cls(page, *(output_file(folder, name, cls.STAGE) for name in (cls.MODEL_CARD, cls.DATASHEET)),
                   Path(folder) / cls.FIGURES)
