"""What the quality and fairness stages write, typed: one class per result file, holding its
file name, its sections as fields, and ``save``/``load``.

The stage that computes a result saves it; the report, the app and the printed summaries load
it from here, so its format lives in one place and a result of another version fails with a
message instead of a ``KeyError`` deep in a table. The sections are the nested dictionaries of
the JSON file (documented on each field); plain data, no numpy or torch, so that reading a result
loads no model code.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from cardiofair.diagnoses import HEART_FAILURE
from cardiofair.errors import InputError, MissingInputError
from cardiofair.io import atomic_write, json_ready

Result = TypeVar("Result", bound="_JsonResult")


class ResultError(InputError):
    """A result folder that does not hold a finished, readable result of its stage."""


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
        path = Path(folder) / cls.FILE
        if not Path(folder).is_dir():
            raise MissingInputError(f"{folder} is not a folder: give the output folder of `cardiofair {cls.STAGE}`")
        if not path.is_file():
            raise ResultError(f"{folder} holds no {cls.FILE}: is it the output folder of `cardiofair {cls.STAGE}`, "
                              "and did the run finish?")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultError(f"{path} is not valid JSON ({error}); run `cardiofair {cls.STAGE}` again") from None
        if not isinstance(data, dict):
            raise ResultError(f"{path} is not a {cls.STAGE} result; run `cardiofair {cls.STAGE}` again")
        return cls.from_dict(data, str(path))



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
        return f"{section}_by_cell.csv"


@dataclass(frozen=True)
class FairnessResult(_JsonResult):
    """``fairness.json``: each arm's classifier by group on the real test set, over repeats,
    and each arm's paired change against the reference arm
    (:mod:`cardiofair.downstream.fairness`)."""

    FILE: ClassVar[str] = "fairness.json"
    STAGE: ClassVar[str] = "fairness"
    SCHEMA: ClassVar[str] = "cardiofair.fairness/2"

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

