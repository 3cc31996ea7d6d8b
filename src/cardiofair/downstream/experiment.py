"""Run every arm with the same seeds on the same split, and write the fairness report.

Repeat r of every arm trains with seed ``seed + r``, validates on the real validation subjects
(early stopping, threshold) and predicts the real test subjects; a subject with several slices
gets the mean score of its slices. The ``threshold`` arm post-processes the ``real`` arm's
model of the same repeat. Then :mod:`cardiofair.metrics.fairness` turns the predictions into
per-group metrics, gaps, intervals and paired comparisons against ``real``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from cardiofair import __version__
from cardiofair.data.diagnoses import HEART_FAILURE
from cardiofair.data.records import OutputExistsError, StagingDirectory, atomic_write, json_ready
from cardiofair.downstream.arms import (
    ARMS,
    POST_PROCESSED_ARMS,
    SENSITIVE,
    SYNTHETIC_ARMS,
    Cohort,
    ExperimentError,
    equalized_odds_thresholds,
    load_cohort,
    planned_cells,
    training_set,
)
from cardiofair.downstream.classifier import ClassifierSettings, predict, train_classifier, youden_threshold
from cardiofair.metrics.fairness import RepeatResult, bootstrap_weights, evaluate_repeat, summarise_arms

REFERENCE_ARM = "real"
REPORT_SCHEMA = "cardiofair.fairness/1"


@dataclass(frozen=True)
class ExperimentSettings:
    """Which arms, how often, which groups, and how each classifier is trained."""

    arms: tuple[str, ...] = ("real", "reweight", "oversample", "threshold")
    repeats: int = 5
    seed: int = 0
    attributes: tuple[str, ...] = SENSITIVE
    intersection: tuple[str, ...] = ("sex", "age")
    positive_diagnosis: str = HEART_FAILURE
    train_prevalence: float | None = None
    threshold_attribute: str = "sex"
    n_bootstrap: int = 1000
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ExperimentError(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
        if REFERENCE_ARM not in self.arms:
            raise ExperimentError(f"--arms must include {REFERENCE_ARM!r}: every arm is compared with it")
        if len(set(self.arms)) != len(self.arms):
            raise ExperimentError(f"an arm is listed twice in {list(self.arms)}")
        if self.repeats < 1 or self.n_bootstrap < 1:
            raise ExperimentError("repeats and bootstrap resamples must be at least 1")
        bad = [a for a in (*self.attributes, *self.intersection) if a not in SENSITIVE]
        if bad or not self.attributes:
            raise ExperimentError(f"sensitive attributes must be among {list(SENSITIVE)}, got {bad or 'none'}")
        if len(self.intersection) == 1:
            raise ExperimentError("an intersection needs at least two attributes (or none)")
        if self.threshold_attribute not in self.attributes:
            raise ExperimentError(f"the threshold attribute {self.threshold_attribute!r} must be one of the "
                                  f"attributes {list(self.attributes)}")

    @property
    def seeds(self) -> list[int]:
        """The seed of each repeat, shared by every arm."""
        return [self.seed + r for r in range(self.repeats)]

    def groupings(self) -> dict[str, tuple[str, ...]]:
        """Every grouping the report has: each attribute, and their intersection as ``a&b``."""
        groupings = {a: (a,) for a in self.attributes}
        if self.intersection:
            groupings["&".join(self.intersection)] = tuple(self.intersection)
        return groupings

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings as plain values (the classifier's included), for the report."""
        return asdict(self)


@dataclass
class RunResult:
    """One arm's repeat: test predictions per subject and what training did."""

    predictions: pd.DataFrame
    val_scores: np.ndarray
    info: dict[str, Any]
    history: list[dict] = field(default_factory=list)


def run_experiment(real: str | os.PathLike, out: str | os.PathLike, settings: ExperimentSettings,
                   synthetic: str | os.PathLike | None = None, plan: pd.DataFrame | None = None,
                   overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every arm x repeat; write the report to ``out``; return it.

    ``out`` gets ``fairness.json``, ``predictions.csv``, ``groups.csv``, ``groups_by_repeat.csv``,
    ``gaps.csv``, ``comparisons.csv`` and ``training.csv``, all at once: the directory is built
    under a temporary name and renamed into place, so an interrupted run leaves the old one.
    """
    out = Path(out)
    # Checked again when writing; failing now spares the training.
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    missing = [a for a in settings.arms if a in SYNTHETIC_ARMS] if synthetic is None else []
    if missing:
        raise ExperimentError(f"arm(s) {missing} need a synthetic dataset (--synthetic)")
    with tqdm(unit="record", desc="load", disable=not progress) as loading:
        cohort = load_cohort(real, synthetic, settings.positive_diagnosis, settings.train_prevalence, settings.seed,
                             on_record=loading.update)
    cells = planned_cells(cohort, plan) if {"reweight", "oversample"} & set(settings.arms) else None
    trained_arms = [a for a in settings.arms if a not in POST_PROCESSED_ARMS]
    runs: dict[str, list[RunResult]] = {}
    total = len(trained_arms) * settings.repeats * settings.classifier.max_epochs
    with tqdm(total=total, unit="epoch", desc="fairness", disable=not progress) as bar:
        for arm in trained_arms:
            runs[arm] = []
            for repeat, seed in enumerate(settings.seeds):
                bar.set_description(f"{arm} {repeat + 1}/{settings.repeats}")
                run = _train_arm(arm, cohort, cells, seed, settings, bar)
                runs[arm].append(run)
                bar.update(settings.classifier.max_epochs - run.info["epochs_run"])
    if "threshold" in settings.arms:
        runs["threshold"] = [_post_process(run, cohort, settings, seed)
                             for run, seed in zip(runs[REFERENCE_ARM], settings.seeds)]
    runs = {arm: runs[arm] for arm in settings.arms}
    test = cohort.subjects("test")
    groups = test[list(SENSITIVE)]
    weights = bootstrap_weights(len(test), settings.n_bootstrap, settings.seed)
    results = {arm: [evaluate_repeat(run.predictions["label"], run.predictions["prediction"],
                                     run.predictions["score"], groups, settings.groupings(), weights)
                     for run in arm_runs] for arm, arm_runs in runs.items()}
    report = _report(cohort, runs, results, cells, settings, real, synthetic)
    _write(out, report, _tables(report, runs, results, groups, settings), overwrite)
    return report


def subject_scores(cohort: Cohort, role: str, record_scores: np.ndarray) -> np.ndarray:
    """The mean score of each subject's records, in the order of ``cohort.subjects(role)``."""
    subjects = cohort.table.iloc[cohort.rows(role)]["subject_id"].to_numpy()
    means = pd.Series(record_scores, index=subjects).groupby(level=0).mean()
    return means.reindex(cohort.subjects(role).index).to_numpy()


def _train_arm(arm: str, cohort: Cohort, cells: pd.DataFrame | None, seed: int, settings: ExperimentSettings,
               bar: tqdm) -> RunResult:
    chosen = training_set(arm, cohort, seed, cells)
    labels = cohort.table["label"].to_numpy()
    val_rows, test_rows = cohort.rows("val"), cohort.rows("test")
    trained = train_classifier(cohort.images[chosen.rows], labels[chosen.rows], cohort.images[val_rows],
                               labels[val_rows], settings.classifier, seed, chosen.weights,
                               on_epoch=lambda record: bar.update(1))
    device = settings.classifier.device
    val_scores = subject_scores(cohort, "val", predict(trained.model, cohort.images[val_rows], device))
    threshold = youden_threshold(cohort.subjects("val")["label"].to_numpy(), val_scores)
    scores = subject_scores(cohort, "test", predict(trained.model, cohort.images[test_rows], device))
    info = {**chosen.info, "seed": seed, "best_epoch": trained.best_epoch, "epochs_run": len(trained.history),
            "val_roc_auc": trained.history[trained.best_epoch - 1]["val_roc_auc"], "threshold": threshold}
    return RunResult(_predictions(cohort, scores, (scores >= threshold).astype(int)), val_scores, info,
                     trained.history)


def _post_process(run: RunResult, cohort: Cohort, settings: ExperimentSettings, seed: int) -> RunResult:
    attribute = settings.threshold_attribute
    val, test = cohort.subjects("val"), cohort.subjects("test")
    decisions, probabilities, unadjusted = equalized_odds_thresholds(
        run.val_scores, val["label"].to_numpy(), val[attribute], run.predictions["score"].to_numpy(), test[attribute],
        fallback_threshold=run.info["threshold"], seed=seed)
    info = {"seed": seed, "post_processing": f"fairlearn ThresholdOptimizer (equalized_odds, balanced_accuracy_score) "
            f"by {attribute}, fitted on the validation split to the {REFERENCE_ARM!r} model of the same seed",
            "groups_left_unadjusted": unadjusted,
            "unadjusted_test_subjects": int(test[attribute].astype(str).isin(list(unadjusted)).sum())}
    return RunResult(_predictions(cohort, probabilities, decisions), run.val_scores, info)


def _predictions(cohort: Cohort, scores: np.ndarray, decisions: np.ndarray) -> pd.DataFrame:
    test = cohort.subjects("test")
    return pd.DataFrame({"label": test["label"].to_numpy(), "score": scores, "prediction": decisions},
                        index=test.index)


def _report(cohort: Cohort, runs: dict[str, list[RunResult]], results: dict[str, list[RepeatResult]],
            cells: pd.DataFrame | None, settings: ExperimentSettings, real: str | os.PathLike,
            synthetic: str | os.PathLike | None) -> dict:
    arms, comparisons = summarise_arms(results, REFERENCE_ARM)
    for arm, arm_runs in runs.items():
        arms[arm] = {"training": [run.info for run in arm_runs], **arms[arm]}
    subjects = {role: {"subjects": len(cohort.subjects(role)), "positives": int(cohort.subjects(role)["label"].sum())}
                for role in ("train", "val", "test", "synthetic")}
    data = {"real": str(real), "synthetic": None if synthetic is None else str(synthetic),
            "positive_diagnosis": cohort.positive, "splits": subjects, "excluded_records": len(cohort.excluded),
            "excluded_examples": cohort.excluded[:20], **cohort.info}
    if cells is not None:
        data["planned_cells"] = {"source": str(cells["source"].iloc[0]) if len(cells) else None,
                                 "cells": cells.drop(columns="source").to_dict("records")}
    return {"schema": REPORT_SCHEMA, "cardiofair_version": __version__, "settings": settings.to_dict(),
            "reference_arm": REFERENCE_ARM, "seeds": settings.seeds, "data": data, "arms": arms,
            "comparisons": comparisons}


# --- files --------------------------------------------------------------------------------------


def _entries(tree: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every summary (has ``mean``) or comparison (has ``difference``) in a report tree."""
    for key, value in tree.items():
        if isinstance(value, dict):
            if "mean" in value or "difference" in value:
                yield path + (key,), value
            else:
                yield from _entries(value, path + (key,))


def _where(path: tuple[str, ...]) -> dict[str, str]:
    # ("overall", m) | ("attributes", a, "gaps", m) | ("attributes", a, "groups", g, m)
    if path[0] == "overall":
        return {"attribute": "overall", "group": "", "measure": path[1]}
    return {"attribute": path[1], "group": path[3] if path[2] == "groups" else "", "measure": path[-1]}


def _interval_columns(entry: dict) -> dict[str, Any]:
    return {"interval_low": entry["interval"][0], "interval_high": entry["interval"][1],
            "bootstrap_low": entry["bootstrap_interval"][0], "bootstrap_high": entry["bootstrap_interval"][1]}


def _tables(report: dict, runs: dict[str, list[RunResult]], results: dict[str, list[RepeatResult]],
            groups: pd.DataFrame, settings: ExperimentSettings) -> dict[str, pd.DataFrame]:
    """The CSV files: summaries over repeats per group (groups.csv) and per attribute (gaps.csv),
    paired comparisons, fairlearn's per-group tables of every repeat, predictions, learning curves."""
    summary_rows, comparison_rows, by_repeat, predictions, training = [], [], [], [], []
    for arm, tree in report["arms"].items():
        for path, entry in _entries({k: v for k, v in tree.items() if k != "training"}):
            summary_rows.append({"arm": arm, **_where(path), "mean": entry["mean"], **_interval_columns(entry),
                                 "n_defined": entry["n_defined"], "reason": entry["reason"]})
    for arm, tree in report["comparisons"].items():
        for path, entry in _entries(tree):
            comparison_rows.append({"arm": arm, "reference": REFERENCE_ARM, **_where(path),
                                    "difference": entry["difference"], **_interval_columns(entry),
                                    "p_value": entry["p_value"], "p_holm": entry["p_holm"],
                                    "n_pairs": entry["n_pairs"], "reason": entry["reason"]})
    for arm, arm_results in results.items():
        for repeat, (result, seed) in enumerate(zip(arm_results, settings.seeds)):
            for grouping, table in result.tables.items():
                by_repeat.append(table.reset_index().assign(arm=arm, repeat=repeat, seed=seed, attribute=grouping))
            run = runs[arm][repeat]
            predictions.append(run.predictions.reset_index().assign(arm=arm, repeat=repeat, seed=seed,
                                                                    threshold=run.info.get("threshold")))
            training += [{"arm": arm, "repeat": repeat, "seed": seed, **epoch} for epoch in run.history]
    summary = pd.DataFrame(summary_rows)
    groups_by_repeat = pd.concat(by_repeat, ignore_index=True)
    lead = ["arm", "repeat", "seed", "attribute", "group"]
    predictions = pd.concat(predictions, ignore_index=True).merge(groups, left_on="subject_id", right_index=True)
    return {
        "groups.csv": summary[summary["group"] != ""],
        "gaps.csv": summary[summary["group"] == ""].drop(columns="group"),
        "comparisons.csv": pd.DataFrame(comparison_rows),
        "groups_by_repeat.csv": groups_by_repeat[lead + [c for c in groups_by_repeat.columns if c not in lead]],
        "predictions.csv": predictions[["arm", "repeat", "seed", "subject_id", "label", "score", "prediction",
                                        "threshold", *groups.columns]],
        "training.csv": pd.DataFrame(training, columns=["arm", "repeat", "seed", "epoch", "train_loss", "val_loss",
                                                        "val_roc_auc"]),
    }


def _write(out: Path, report: dict, tables: dict[str, pd.DataFrame], overwrite: bool) -> None:
    with StagingDirectory(out, overwrite=overwrite) as staging:
        for name, table in tables.items():
            atomic_write(staging.tmp / name, table.to_csv(index=False))
        atomic_write(staging.tmp / "fairness.json", json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n")
        staging.commit()


# --- the printed table --------------------------------------------------------------------------


def _cell(entry: dict | None, key: str = "bootstrap_interval", signed: bool = False) -> str:
    if entry is None:
        return "-"
    value = entry.get("mean", entry.get("difference"))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "undefined"
    low, high = entry[key]
    number = f"{value:+.3f}" if signed else f"{value:.3f}"
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return number
    return f"{number} [{low:+.2f}, {high:+.2f}]" if signed else f"{number} [{low:.2f}, {high:.2f}]"


def comparison_table(report: dict) -> str:
    """The printed summary: per arm, key metrics by the threshold attribute with their test-set
    bootstrap intervals; then each arm's paired differences against ``real`` with the
    t-interval over seeds and the Holm-adjusted p-value."""
    settings = report["settings"]
    attribute = settings["threshold_attribute"]
    intersection = "&".join(settings["intersection"])
    reference_arm = report["arms"][REFERENCE_ARM]["attributes"][attribute]
    reference = reference_arm["reference_group"]
    groups = list(reference_arm["groups"])
    test = report["data"]["splits"]["test"]
    columns = {"balanced acc.": ("overall", "balanced_accuracy"), "AUROC": ("overall", "roc_auc")}
    columns.update({f"TPR {g}": ("attributes", attribute, "groups", g, "true_positive_rate") for g in groups})
    signed = {f"TPR {g}-{reference}": ("attributes", attribute, "groups", g, "true_positive_rate_vs_reference")
              for g in groups if g != reference}
    columns.update(signed)
    columns[f"eq. odds diff ({attribute})"] = ("attributes", attribute, "gaps", "equalized_odds_difference")
    if intersection:
        columns[f"worst-group BA ({intersection})"] = ("attributes", intersection, "gaps", "balanced_accuracy_group_min")

    def lookup(tree: dict, path: tuple[str, ...]) -> dict | None:
        for key in path:
            if not isinstance(tree, dict) or key not in tree:
                return None
            tree = tree[key]
        return tree

    first = pd.DataFrame({name: {arm: _cell(lookup(tree, path), signed=name in signed)
                                 for arm, tree in report["arms"].items()} for name, path in columns.items()})
    compared = {name: path for name, path in columns.items() if name == "balanced acc." or name in signed
                or name.startswith(("eq. odds", "worst-group"))}
    rows = {}
    for arm, tree in report["comparisons"].items():
        rows[arm] = {}
        for name, path in compared.items():
            entry = lookup(tree, path)
            text = _cell(entry, "interval", signed=True)
            if entry is not None and entry.get("p_holm") is not None and not np.isnan(entry["p_holm"]):
                text += f" p={entry['p_holm']:.3g}"
            rows[arm][f"d {name}"] = text
    lines = [f"Test set: {test['subjects']} real subjects, {test['positives']} with {report['data']['positive_diagnosis']}; "
             f"{len(report['seeds'])} repeats (seeds {report['seeds'][0]}..{report['seeds'][-1]}); "
             f"reference group for {attribute}: {reference}.",
             "Mean over repeats [95% bootstrap interval over test subjects]:",
             first.to_string()]
    unknown = {name: entry["excluded_unknown"] for name, entry in report["arms"][REFERENCE_ARM]["attributes"].items()
               if entry["excluded_unknown"]}
    if unknown:
        lines.append("Test subjects of unknown attribute, left out of its groups (not of training or overall "
                     "metrics): " + ", ".join(f"{name} {n}" for name, n in unknown.items()))
    unadjusted = sorted({f"{group} ({reason})" for run in report["arms"].get("threshold", {}).get("training", [])
                         for group, reason in run["groups_left_unadjusted"].items()})
    if unadjusted:
        lines.append("threshold arm: the plain threshold is kept for " + ", ".join(unadjusted))
    if report["data"]["excluded_records"]:
        lines.append(f"{report['data']['excluded_records']} records of other diagnoses left out (fairness.json: "
                     f"data.excluded_examples)")
    if rows:
        lines += ["", f"Paired difference against {REFERENCE_ARM!r} over the same seeds "
                  "[95% t-interval over seeds], Holm-adjusted p:", pd.DataFrame(rows).T.to_string()]
    return "\n".join(lines)
