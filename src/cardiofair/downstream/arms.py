"""The experiment arms: one :class:`Arm` object each, in :data:`ARMS` (no torch).

Every arm validates on the same real validation subjects and is tested on the same real test
subjects (:mod:`cardiofair.downstream.cohort`); only what it trains on differs:

- ``real``: the real training records;
- ``real+synthetic``: those plus every synthetic record;
- ``synthetic``: the synthetic records only;
- ``reweight``: the real training records, drawn with weights inverse to their cell's frequency
  (the paper's sampling baseline);
- ``oversample``: the real training records plus duplicates of real records of the planned
  cells, as many per cell as the synthetic dataset (or the plan) adds;
- ``threshold``: the ``real`` model, its decisions post-processed by fairlearn's
  ``ThresholdOptimizer`` (equalized odds) fitted on the validation split;
- ``oracle`` (phantom cohorts): the real training records plus, for every record the synthetic
  dataset (or the plan) adds, a fresh phantom subject of the same cell
  (:mod:`cardiofair.downstream.fresh`): what a perfect generator would give; on a scarcity
  split, the real subjects the split held back from the generator instead;
- ``oracle-only``: as many oracle records of each cell as the ``synthetic`` arm trains on, and
  nothing else: what the synthetic-only arm would reach with perfect records, so that an
  overshoot of ``synthetic`` can be told from what such records really do (refused where the
  oracle cannot match every cell: the held-back subjects of a scarcity split cover one);
- ``group-dro``: the real training records, trained by group DRO over the planned cells
  (Sagawa et al. 2020), the standard in-processing baseline;
- ``synthetic-pretrain``: pretrained on the synthetic records, then fine-tuned on the real ones
  (RoentGen-v2, 2025, found this beat mixing them).

A dosed arm (``real+synthetic``, ``oversample``, ``oracle``) also runs at other doses
(:class:`ArmDose`): the same per-cell counts times the dose. Adding an arm is one more
:class:`Arm` in :data:`ARMS` (and its test): the settings, the command line, the fairness stage
and the report read everything about it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from cardiofair.downstream.cohort import SENSITIVE, Cohort, ExperimentError, dose_rows
from cardiofair.downstream.threshold import equalized_odds_thresholds
from cardiofair.plan import dose_count
from cardiofair.settings import REFERENCE_ARM

if TYPE_CHECKING:
    from cardiofair.settings import FairnessSettings

# What an arm may need beyond the real split; each is refused with its own reason when absent.
SYNTHETIC, ORACLE, CELLS = "synthetic", "oracle", "cells"
# The ceiling every other arm's change is measured against (`oracle_shares`).
ORACLE_ARM = "oracle"


@dataclass
class TrainingSet:
    """Positions of the cohort records an arm trains on (duplicates allowed), optional
    sampling weights, the group of each record for group DRO, the records to pretrain on, and a
    description for the report."""

    rows: np.ndarray
    weights: np.ndarray | None
    info: dict[str, Any]
    groups: np.ndarray | None = None
    pretrain: np.ndarray | None = None


# (cohort, dose, seed, planned cells) -> the arm's training set
Builder = Callable[[Cohort, float, int, "pd.DataFrame | None"], TrainingSet]
# (cohort, validation scores, test scores, the model's own threshold, settings, seed) of the
# reference arm's model -> (test scores, test decisions, what was done)
PostProcessor = Callable[[Cohort, np.ndarray, np.ndarray, float, "FairnessSettings", int],
                         tuple[np.ndarray, np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Arm:
    """One experiment arm, everything about it in one place.

    An arm either trains (``build`` gives its training set, ``trainings`` classifier trainings
    per repeat) or post-processes the reference arm's model of the same seed
    (``post_process``). ``needs`` names what it needs beyond the real split (``synthetic``,
    ``oracle``, ``cells``: the planned cells); ``dosed`` arms also run at ``fairness.doses``;
    ``opt_in`` arms run only when named (each costs as much as another arm, and the default
    study has a time budget); ``colour`` is its colour in every figure.
    """

    name: str
    colour: str
    build: Builder | None = None
    post_process: PostProcessor | None = None
    needs: frozenset[str] = field(default_factory=frozenset)
    dosed: bool = False
    opt_in: bool = False
    trainings: int = 1

    def __post_init__(self) -> None:
        if (self.build is None) == (self.post_process is None):
            raise ValueError(f"arm {self.name!r} must either build a training set or post-process, not both")


@dataclass(frozen=True)
class ArmDose:
    """An arm at a dose (multiples of the planned counts): one column of the results, named
    ``ARM@DOSE`` (the arm's own name at dose 1)."""

    arm: Arm
    dose: float = 1.0

    @property
    def name(self) -> str:
        """How tables and ``fairness.json`` name it: ``oracle@2``, or ``oracle`` at dose 1."""
        return self.arm.name if self.dose == 1.0 else f"{self.arm.name}@{self.dose:g}"


def _described(cohort: Cohort, rows: np.ndarray, weights: np.ndarray | None, sampling: str) -> TrainingSet:
    roles = cohort.table["role"].to_numpy()[rows]
    labels = cohort.table["label"].to_numpy()[rows]
    info = {"n_records": int(len(rows)), "n_real": int((roles == "train").sum()),
            "n_synthetic": int((roles == "synthetic").sum()), "n_oracle": int((roles == "oracle").sum()),
            "prevalence": round(float(labels.mean()), 4), "sampling": sampling}
    return TrainingSet(rows, weights, info)


def _cell_keys(cohort: Cohort, rows: np.ndarray, cells: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The planned cells' columns, and each record's cell key over them."""
    columns = [c for c in cells.columns if c in (*SENSITIVE, "diagnosis")]
    return columns, cohort.table.iloc[rows][columns].astype(str).agg("|".join, axis=1).to_numpy()


def _real(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame | None) -> TrainingSet:
    return _described(cohort, cohort.rows("train"), None, "uniform")


def _real_and_synthetic(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame | None) -> TrainingSet:
    rows = np.concatenate([cohort.rows("train"), dose_rows(cohort, "synthetic", dose)])
    return _described(cohort, rows, None, "uniform")


def _synthetic(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame | None) -> TrainingSet:
    return _described(cohort, dose_rows(cohort, "synthetic", dose), None, "uniform")


def _synthetic_pretrain(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame | None) -> TrainingSet:
    result = _described(cohort, cohort.rows("train"), None, "uniform, after pretraining on the synthetic records")
    result.pretrain = dose_rows(cohort, "synthetic", dose)
    result.info["n_pretrain"] = int(len(result.pretrain))
    return result


def _oracle(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame | None) -> TrainingSet:
    rows = np.concatenate([cohort.rows("train"), dose_rows(cohort, "oracle", dose)])
    return _described(cohort, rows, None, "uniform")


def _oracle_only(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame) -> TrainingSet:
    synthetic, oracle = dose_rows(cohort, "synthetic", 1.0), cohort.rows("oracle")
    _, synthetic_keys = _cell_keys(cohort, synthetic, cells)
    _, oracle_keys = _cell_keys(cohort, oracle, cells)
    chosen, short = [], {}
    for key, wanted in pd.Series(synthetic_keys).value_counts(sort=False).items():
        # Drawn oracle records come in rank order, so the first ones are those of the smallest dose.
        members = oracle[oracle_keys == key][:wanted]
        if len(members) < wanted:
            short[key] = f"{len(members)} of {wanted}"
        chosen.append(members)
    if short:
        # Fewer perfect records than synthetic ones (held-back subjects cover only the scarce cell)
        # would compare the synthetic arm with a classifier that never saw some of its cells.
        raise ExperimentError(f"arm 'oracle-only' needs as many oracle records as the synthetic arm has in each "
                              f"cell, and the oracle holds fewer in {short}: leave it out of --arms")
    return _described(cohort, np.concatenate(chosen), None, "uniform, the synthetic arm's count of oracle records "
                      "per cell")


def _reweight(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame) -> TrainingSet:
    real = cohort.rows("train")
    columns, keys = _cell_keys(cohort, real, cells)
    frequency = pd.Series(keys).map(pd.Series(keys).value_counts()).to_numpy()
    return _described(cohort, real, 1.0 / frequency, f"inverse frequency of cell ({', '.join(columns)})")


def _group_dro(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame) -> TrainingSet:
    real = cohort.rows("train")
    columns, keys = _cell_keys(cohort, real, cells)
    result = _described(cohort, real, None, f"uniform, group DRO over cells ({', '.join(columns)})")
    result.groups = keys
    return result


def _oversample(cohort: Cohort, dose: float, seed: int, cells: pd.DataFrame) -> TrainingSet:
    real = cohort.rows("train")
    columns, keys = _cell_keys(cohort, real, cells)
    rng = np.random.default_rng(seed)
    duplicates, unfilled = [], []
    for cell in cells[cells["synthetic_count"] > 0].to_dict("records"):
        key = "|".join(str(cell[c]) for c in columns)
        members = real[keys == key]
        if len(members) == 0:
            unfilled.append(key)
            continue
        # Cycle through a shuffled order: every member is duplicated as evenly as possible.
        order = rng.permutation(members)
        duplicates.append(np.resize(order, dose_count(int(cell["synthetic_count"]), dose)))
    rows = np.concatenate([real, *duplicates])
    result = _described(cohort, rows, None, f"uniform, duplicates per cell ({', '.join(columns)})")
    result.info.update(n_duplicates=int(len(rows) - len(real)), cells_without_real_records=unfilled)
    return result


def _equalized_odds(cohort: Cohort, val_scores: np.ndarray, test_scores: np.ndarray, threshold: float,
                    settings: FairnessSettings, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    attribute = settings.threshold_attribute
    val, test = cohort.subjects("val"), cohort.subjects("test")
    decisions, probabilities, unadjusted = equalized_odds_thresholds(
        val_scores, val["label"].to_numpy(), val[attribute], test_scores, test[attribute],
        fallback_threshold=threshold, seed=seed)
    info = {"post_processing": f"fairlearn ThresholdOptimizer (equalized_odds, balanced_accuracy_score) by "
            f"{attribute}, fitted on the validation split to the {REFERENCE_ARM!r} model of the same seed",
            "groups_left_unadjusted": unadjusted,
            "unadjusted_test_subjects": int(test[attribute].astype(str).isin(list(unadjusted)).sum())}
    return probabilities, decisions, info


# The order is the tables' and the figures' order; each colour is the arm's in every figure.
ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm(REFERENCE_ARM, "#4c72b0", _real),
    Arm("real+synthetic", "#dd8452", _real_and_synthetic, needs=frozenset({SYNTHETIC}), dosed=True),
    Arm("synthetic", "#55a868", _synthetic, needs=frozenset({SYNTHETIC})),
    Arm("reweight", "#c44e52", _reweight, needs=frozenset({CELLS})),
    Arm("oversample", "#8172b3", _oversample, needs=frozenset({CELLS}), dosed=True),
    Arm("threshold", "#937860", post_process=_equalized_odds, trainings=0),
    Arm(ORACLE_ARM, "#da8bc3", _oracle, needs=frozenset({ORACLE, CELLS}), dosed=True),
    Arm("oracle-only", "#17becf", _oracle_only, needs=frozenset({SYNTHETIC, ORACLE, CELLS}), opt_in=True),
    Arm("group-dro", "#8c8c8c", _group_dro, needs=frozenset({CELLS}), opt_in=True),
    Arm("synthetic-pretrain", "#ccb974", _synthetic_pretrain, needs=frozenset({SYNTHETIC}), opt_in=True,
        trainings=2),
)}


def get_arm(name: str) -> Arm:
    """The arm called ``name``; an unknown name is an :class:`ExperimentError` listing the arms."""
    if name not in ARMS:
        raise ExperimentError(f"unknown arm {name!r}; choose from {list(ARMS)}")
    return ARMS[name]


def chosen_arms(named: tuple[str, ...] | None, synthetic: bool, oracle: bool) -> tuple[Arm, ...]:
    """The arms to run: those ``named``, else every arm the data allow (none that needs a
    synthetic dataset without one, no oracle without a phantom model or held-back subjects) but
    the opt-in ones."""
    if named:
        return tuple(get_arm(name) for name in named)
    return tuple(arm for arm in ARMS.values() if not arm.opt_in and (synthetic or SYNTHETIC not in arm.needs)
                 and (oracle or ORACLE not in arm.needs))


def arm_doses(arms: tuple[Arm, ...], doses: tuple[float, ...]) -> tuple[ArmDose, ...]:
    """Every arm at dose 1, then each dosed arm among them at every other dose."""
    return tuple(ArmDose(arm) for arm in arms) + tuple(ArmDose(arm, d) for d in doses if d != 1.0
                                                      for arm in arms if arm.dosed)


# What a user asks first: does the generator beat the one-line alternatives?
DEFAULT_VERSUS = (("real+synthetic", "reweight"), ("real+synthetic", "oversample"))


def versus_pairs(named: tuple[str, ...] | None, ran: list[str]) -> list[tuple[str, str]]:
    """The (arm, other) pairs to compare with each other: ``named`` as ``ARM:OTHER``, each of whose
    arms must be among those that ``ran``; by default :data:`DEFAULT_VERSUS` where both ran."""
    if named is None:
        return [pair for pair in DEFAULT_VERSUS if set(pair) <= set(ran)]
    pairs = [(arm, other) for arm, _, other in (pair.partition(":") for pair in named)]
    missing = sorted({name for pair in pairs for name in pair} - set(ran))
    if missing:
        raise ExperimentError(f"fairness.versus compares arm(s) {missing} that do not run; the arms that run: {ran}")
    return pairs


def training_set(arm: str | Arm | ArmDose, cohort: Cohort, seed: int, cells: pd.DataFrame | None = None) -> TrainingSet:
    """The training records of an arm that trains (by name, or at a dose as :class:`ArmDose`).
    ``cells`` (from :func:`~cardiofair.downstream.cohort.planned_cells`) defines the cells of the
    arms that need them; ``seed`` draws the oversampled duplicates."""
    chosen = arm if isinstance(arm, ArmDose) else ArmDose(get_arm(arm) if isinstance(arm, str) else arm)
    arm, dose = chosen.arm, chosen.dose
    if arm.build is None:
        raise ExperimentError(f"arm {arm.name!r} trains nothing: it post-processes the {REFERENCE_ARM!r} model")
    if SYNTHETIC in arm.needs and len(cohort.rows("synthetic")) == 0:
        raise ExperimentError(f"arm {arm.name!r} needs a synthetic dataset (--synthetic)")
    if ORACLE in arm.needs and len(cohort.rows("oracle")) == 0:
        raise ExperimentError(f"arm {arm.name!r} needs fresh subjects of the planned cells, drawn from a phantom "
                              f"model")
    if CELLS in arm.needs and cells is None:
        raise ExperimentError(f"arm {arm.name!r} needs the planned cells")
    return arm.build(cohort, dose, seed, cells)
